# streamrec: one command sets everything up; repeated runs reuse what is installed.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS ?= cpu,train,dev
JARS_STAMP := deploy/jvm/target/.jars-ok
comma := ,
VENV_STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: setup venv jars demo test test-fast test-integration lint docs bench clean-runtime

setup: venv jars

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-* && touch $@

jars: $(JARS_STAMP)

$(JARS_STAMP): deploy/jvm/pom.xml deploy/jvm/reporter/pom.xml $(wildcard deploy/jvm/reporter/src/main/java/org/apache/flink/metrics/prometheus/*.java) | venv
	mvn -q -B -f deploy/jvm/pom.xml package
	mvn -q -B -f deploy/jvm/reporter/pom.xml package -Dpyflink.home="$$($(PY) -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')"
	@touch $@

demo: setup
	$(VENV)/bin/streamrec demo

test: setup
	$(PY) -m pytest tests

# the fast tier: no training, no JVM, no Maven-built artefacts (tests/conftest.py says what is slow)
test-fast: venv
	$(PY) -m pytest tests -m "not slow" -q

test-integration: setup
	$(PY) -m pytest tests/integration

lint: venv
	$(VENV)/bin/ruff check operators model_export flink_jobs deploy perf tests docs
	$(VENV)/bin/lint-imports

# the documentation site (docs/, mkdocs.yml) into .streamrec/site; strict: a broken link or page fails the build
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: setup
	$(PY) -m perf.bench_onnx
	$(VENV)/bin/streamrec bench

clean-runtime:
	rm -rf .streamrec/run
