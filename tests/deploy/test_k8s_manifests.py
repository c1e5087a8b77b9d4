"""The Kubernetes manifests, validated offline: the FlinkDeployment against the Flink Kubernetes Operator's own
CRD schema (from the operator's API jar on Maven Central, fetched by ``make jars``: deploy/jvm/pom.xml), its job
arguments against the job's own parser, and the Dockerfile against the versions the project pins."""

from __future__ import annotations

import re
import tomllib
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from deploy.harness.paths import JVM_TARGET, REPO_ROOT
from flink_jobs.recommend_job import build_arg_parser

K8S = REPO_ROOT / "deploy" / "k8s"
OPERATOR_JAR = JVM_TARGET / "k8s" / "flink-kubernetes-operator-api.jar"


def crd_schema(version: str = "v1beta1") -> dict:
    assert OPERATOR_JAR.is_file(), f"{OPERATOR_JAR} is missing: run `make jars`"
    with zipfile.ZipFile(OPERATOR_JAR) as jar:
        crd = yaml.safe_load(jar.read("META-INF/fabric8/flinkdeployments.flink.apache.org-v1.yml"))
    assert crd["spec"]["names"]["kind"] == "FlinkDeployment"
    [found] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return found["schema"]["openAPIV3Schema"]


def deployment() -> dict:
    return yaml.safe_load((K8S / "flinkdeployment.yaml").read_text())


@pytest.mark.slow  # reads the Maven-built artefacts (make jars)
def test_the_flink_deployment_matches_the_operator_crd_but_for_the_flink_2_version():
    doc = deployment()
    assert doc["apiVersion"] == "flink.apache.org/v1beta1" and doc["kind"] == "FlinkDeployment"
    errors = sorted(jsonschema.Draft7Validator(crd_schema()).iter_errors(doc), key=lambda e: list(e.path))
    # The newest operator API the registry serves (1.10.0) predates Flink 2.0; operator 1.11+ accepts v2_0.
    # Every other field must validate.
    assert [(list(e.path), e.validator) for e in errors] == [(["spec", "flinkVersion"], "enum")], [
        f"{list(e.path)}: {e.message}" for e in errors]
    spec = doc["spec"]
    assert spec["job"]["upgradeMode"] == "savepoint" and spec["job"]["parallelism"] >= 1
    conf = spec["flinkConfiguration"]
    assert conf["python.execution-mode"] == "thread" and conf["state.backend.type"] == "rocksdb"
    assert conf["execution.checkpointing.savepoint-dir"] and conf["execution.checkpointing.dir"]
    assert conf["metrics.reporter.prom.port"] == "9249"
    # a broken manifest is caught: an unknown upgrade mode and a negative replica count
    bad = deployment()
    bad["spec"]["job"]["upgradeMode"] = "sometimes"
    bad["spec"]["jobManager"]["replicas"] = "one"
    paths = {tuple(e.path) for e in jsonschema.Draft7Validator(crd_schema()).iter_errors(bad)}
    assert ("spec", "job", "upgradeMode") in paths and ("spec", "jobManager", "replicas") in paths


def test_the_job_arguments_parse_and_name_the_mounted_volumes():
    spec = deployment()["spec"]
    args = spec["job"]["args"]
    assert args[args.index("-py") + 1].endswith("site-packages/flink_jobs/recommend_job.py")
    job_args = args[args.index("-py") + 2:]
    parsed, unknown = build_arg_parser().parse_known_args(job_args)
    assert not unknown and int(parsed.parallelism) == spec["job"]["parallelism"]
    mounts = {m["mountPath"] for c in spec["podTemplate"]["spec"]["containers"] for m in c["volumeMounts"]}
    assert any(parsed.bundle.startswith(m) for m in mounts) and any(parsed.checkpoint_dir.startswith(m)
                                                                   for m in mounts)
    conf = spec["flinkConfiguration"]
    assert conf["execution.checkpointing.dir"] == "file://" + parsed.checkpoint_dir


@pytest.mark.slow  # reads the Maven-built artefacts (make jars)
def test_the_dockerfile_pins_the_projects_flink_and_python():
    pins = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    flink = next(d.split("==")[1] for d in pins["dependencies"] if d.startswith("apache-flink=="))
    docker = (K8S / "Dockerfile").read_text()
    assert f"FLINK_IMAGE=flink:{flink}-" in docker and f"flink-python-{flink}.jar" in docker
    assert "python3.11" in docker and pins["requires-python"].startswith(">=3.11")
    wheel = re.search(r"streamrec-([0-9.]+)-py3-none-any\.whl", docker).group(1)
    assert wheel == pins["version"]
    assert f"flink-python-{flink}.jar" in deployment()["spec"]["job"]["jarURI"]
    assert (JVM_TARGET / "flink-lib" / "flink-sql-connector-kafka.jar").is_file()
    assert Path("deploy/jvm/target/flink-lib/flink-sql-connector-kafka.jar").name in docker
