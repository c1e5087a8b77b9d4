"""Where things are: the one module that reads the environment (argument > env > default)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from operators.errors import ConfigError

__all__ = [
    "REPO_ROOT",
    "java_home",
    "java_executable",
    "kafka_broker_classpath",
    "flink_connector_jar",
    "runtime_dir",
    "streamrec_executable",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
JVM_TARGET = REPO_ROOT / "deploy" / "jvm" / "target"


def java_home(explicit: str | None = None) -> str:
    """JAVA_HOME: the argument, else ``$JAVA_HOME``, else derived from ``java`` on PATH."""
    home = explicit or os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return home
    java = shutil.which("java")
    if java:
        return str(Path(java).resolve().parent.parent)
    msg = "no Java found: install OpenJDK 17 and set JAVA_HOME (e.g. /usr/lib/jvm/java-17-openjdk-amd64)"
    raise ConfigError(msg)


def java_executable(explicit_home: str | None = None) -> str:
    """The ``java`` binary of :func:`java_home`."""
    return str(Path(java_home(explicit_home), "bin", "java"))


def _jars_missing(what: Path) -> ConfigError:
    return ConfigError(f"{what} is missing; run `make jars` (mvn -f deploy/jvm/pom.xml package) first")


def kafka_broker_classpath(explicit: str | None = None) -> str:
    """Classpath of the Kafka broker jars fetched by ``make jars``."""
    folder = Path(explicit or os.environ.get("STREAMREC_KAFKA_LIB") or JVM_TARGET / "kafka-broker")
    if not any(folder.glob("kafka_2.13-*.jar")):
        raise _jars_missing(folder)
    return str(folder / "*")


def flink_connector_jar(explicit: str | None = None) -> Path:
    """The shaded Flink Kafka connector jar fetched by ``make jars``."""
    default = JVM_TARGET / "flink-lib" / "flink-sql-connector-kafka.jar"
    jar = Path(explicit or os.environ.get("STREAMREC_CONNECTOR_JAR") or default)
    if not jar.is_file():
        raise _jars_missing(jar)
    return jar.resolve()


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
        raise ConfigError(msg)
    return str(script)
