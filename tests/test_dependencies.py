"""What the code imports is what pyproject.toml declares: every third-party module the serving packages
(operators, flink_jobs) import comes from a base dependency, and every base dependency is used (imported by
some package, or named here as another's runtime requirement)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = {"operators", "flink_jobs", "model_export", "deploy", "perf", "tests"}
# base dependencies nothing imports by name, with the reason they are there
INDIRECT = {"llvmlite": "numba's compiler", "apache-flink": "imported as pyflink",
            "faiss-cpu": "imported by name through importlib in a regular thread (operators.scoring)"}


def _declared(group: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {re.split(r"[=<>\[ ]", spec, maxsplit=1)[0].lower() for spec in specs}


def _imports(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - OURS - {"__future__"}


def _distributions(modules: set[str]) -> dict[str, set[str]]:
    dists = packages_distributions()
    return {m: {d.lower() for d in dists.get(m, [])} for m in modules}


def test_the_serving_packages_import_only_base_dependencies():
    base = _declared()
    runtime = _declared("cpu") | _declared("gpu")  # onnxruntime: one flavour, chosen at install
    for package in ("operators", "flink_jobs"):
        for module, dists in _distributions(_imports(package)).items():
            assert dists & (base | runtime), f"{package} imports {module} ({dists or 'not installed'}): undeclared"


def test_every_base_dependency_is_imported_or_named_as_indirect():
    used = set()
    for package in OURS - {"tests"}:
        for dists in _distributions(_imports(package)).values():
            used |= dists
    unused = _declared() - used - set(INDIRECT)
    assert not unused, f"declared but never imported: {sorted(unused)} (remove, or say why in INDIRECT)"


def test_deptry_finds_every_import_declared_and_every_declaration_used():
    """deptry over the packages (``[tool.deptry]`` in pyproject.toml): no import of an undeclared package, no
    declared package unused (the exceptions are listed there with their reason), no dev-only package imported."""
    import subprocess

    deptry = Path(sys.executable).parent / "deptry"
    done = subprocess.run([str(deptry), "."], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
