"""Where things are for the tools (argument > environment > default); what the job itself needs from its
environment (Java, the connector jar) is :mod:`flink_jobs.environment`'s, re-exported here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from flink_jobs.environment import JVM_TARGET, flink_connector_jar, jars_missing, java_home
from operators.errors import SetupError

__all__ = [
    "REPO_ROOT",
    "java_home",
    "java_executable",
    "kafka_broker_classpath",
    "flink_connector_jar",
    "runtime_dir",
    "streamrec_executable",
]

REPO_ROOT = Path(__file__).resolve().parents[2]


def java_executable(explicit_home: str | None = None) -> str:
    """The ``java`` binary of :func:`java_home`."""
    return str(Path(java_home(explicit_home), "bin", "java"))


def kafka_broker_classpath(explicit: str | None = None) -> str:
    """Classpath of the Kafka broker jars fetched by ``make jars``."""
    folder = Path(explicit or os.environ.get("STREAMREC_KAFKA_LIB") or JVM_TARGET / "kafka-broker")
    if not any(folder.glob("kafka_2.13-*.jar")):
        raise jars_missing(folder)
    return str(folder / "*")


def runtime_dir(explicit: str | None = None) -> Path:
    """Project-owned directory for broker data, checkpoints and logs (``.streamrec/`` by default)."""
    path = Path(explicit or os.environ.get("STREAMREC_HOME") or REPO_ROOT / ".streamrec")
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def streamrec_executable() -> str:
    """The ``streamrec`` console script installed next to this interpreter (what users type)."""
    script = Path(sys.executable).parent / "streamrec"
    if not script.exists():
        msg = f"{script} is missing; install the project (`make setup`)"
        raise SetupError(msg)
    return str(script)
