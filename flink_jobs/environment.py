"""What the job needs from its environment, in one place (argument > environment > default).

Runs on the client (``streamrec run``, ``flink run -py``) and inside Flink's Python workers; it imports
nothing from the checkout's dev tooling (``deploy/``).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from operators.errors import SetupError

__all__ = ["python_executable", "site_packages", "project_root", "worker_pythonpath", "job_log_dir", "java_home",
           "flink_connector_jar", "JVM_TARGET"]

JVM_TARGET = Path(__file__).resolve().parents[1] / "deploy" / "jvm" / "target"
"""Where ``make jars`` (Maven, ``deploy/jvm/pom.xml``) puts the JVM artefacts of a checkout."""


def python_executable() -> str:
    """The interpreter that runs the job and its Python workers (this one)."""
    return sys.executable


def site_packages() -> str:
    """This interpreter's site-packages: where pemja, pyflink, onnxruntime live."""
    return sysconfig.get_paths()["purelib"]


def project_root() -> str:
    """The directory holding the ``operators`` and ``flink_jobs`` packages (a checkout, or site-packages)."""
    import operators

    return str(Path(operators.__file__).resolve().parent.parent)


def worker_pythonpath(existing: str | None = None) -> str:
    """``PYTHONPATH`` for thread-mode workers: Flink's embedded interpreter does not read the virtualenv's
    ``site`` configuration, so it must be told where pemja and the project are."""
    paths = [project_root(), site_packages()]
    for path in (existing or "").split(os.pathsep):
        if path and path not in paths:
            paths.append(path)
    return os.pathsep.join(paths)


def job_log_dir() -> Path:
    """Where Python code running inside Flink tasks logs: ``$FLINK_LOG_DIR`` (set by Flink's scripts and by
    ``streamrec run --log-dir``), else the system temp directory."""
    return Path(os.environ.get("FLINK_LOG_DIR") or tempfile.gettempdir())


def java_home(explicit: str | None = None) -> str:
    """JAVA_HOME: the argument, else ``$JAVA_HOME``, else derived from ``java`` on PATH."""
    home = explicit or os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return home
    java = shutil.which("java")
    if java:
        return str(Path(java).resolve().parent.parent)
    msg = "no Java found: install OpenJDK 17 and set JAVA_HOME (e.g. /usr/lib/jvm/java-17-openjdk-amd64)"
    raise SetupError(msg)


def jars_missing(what: Path) -> SetupError:
    """The error for a JVM artefact that ``make jars`` should have built."""
    return SetupError(f"{what} is missing; run `make jars` (mvn -f deploy/jvm/pom.xml package) first")


def flink_connector_jar(explicit: str | None = None) -> Path:
    """The shaded Flink Kafka connector jar: the argument, else ``$STREAMREC_CONNECTOR_JAR``, else the one
    ``make jars`` fetched."""
    default = JVM_TARGET / "flink-lib" / "flink-sql-connector-kafka.jar"
    jar = Path(explicit or os.environ.get("STREAMREC_CONNECTOR_JAR") or default)
    if not jar.is_file():
        raise jars_missing(jar)
    return jar.resolve()
