"""A real single-node Apache Kafka (KRaft, broker+controller) on 127.0.0.1, owned by one object.

Used by the demo, the integration tests and the benchmarks::

    with LocalKafka(data_dir) as kafka:
        kafka.create_topics({"events": 4, "recs": 4})
        ... kafka.bootstrap ...

The broker runs from the jars ``make jars`` fetched, in its own process group, on OS-chosen free
ports; :meth:`stop` terminates that group (SIGTERM, then SIGKILL) and nothing else.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from base64 import urlsafe_b64encode
from pathlib import Path

from deploy.paths import java_executable, kafka_broker_classpath
from deploy.process import ManagedProcess
from operators.errors import StreamrecError

__all__ = ["LocalKafka", "BrokerError", "free_port"]

log = logging.getLogger(__name__)
LOG4J_CONFIG = Path(__file__).resolve().parent / "conf" / "kafka-log4j2.properties"


class BrokerError(StreamrecError):
    """The local broker could not be started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalKafka(ManagedProcess):
    """Start, wait for, use and stop one Kafka node."""

    name = "kafka broker"

    def __init__(
        self,
        data_dir: str | Path,
        *,
        port: int | None = None,
        heap: str = "512m",
        wipe: bool = True,
        classpath: str | None = None,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.controller_port = free_port()
        self.heap = heap
        self.wipe = wipe
        self.classpath = classpath or kafka_broker_classpath()

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> str:
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.data_dir / 'data'}",
                "num.partitions=1",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.flush.interval.messages=9223372036854775807",
                "",
            ]
        )

    def _java(self, *args: str, log_name: str) -> list[str]:
        logs = self.data_dir / "logs"
        return [
            java_executable(),
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1" if log_name == "format" else "-XX:+UseStringDeduplication",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={logs}",
            "-cp",
            self.classpath,
            *args,
        ]

    def start(self, timeout_s: float = 60.0) -> LocalKafka:
        """Format storage (fresh), start the broker, wait until it answers metadata requests."""
        if self.proc is not None:
            return self
        if self.wipe and self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text(self._properties(), "utf-8")
        if not (self.data_dir / "data" / "meta.properties").exists():
            cluster_id = "-"
            while cluster_id.startswith("-"):  # as Kafka's Uuid.randomUuid: "-..." would parse as an option
                cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            fmt = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), "--standalone",
                           log_name="format"),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if fmt.returncode != 0:
                msg = f"kafka storage format failed ({fmt.returncode}): {fmt.stderr[-2000:] or fmt.stdout[-2000:]}"
                raise BrokerError(msg)
        out = (self.data_dir / "logs" / "stdout.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            self._java("kafka.Kafka", str(props), log_name="server"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_tail(30)
                self.proc = None
                msg = f"kafka broker exited during start-up; last log lines:\n{tail}"
                raise BrokerError(msg)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    pass
            except OSError as exc:
                last_error = exc
                time.sleep(0.2)
                continue
            try:
                admin = self.admin()
                admin.list_topics()
                admin.close()
                log.info("kafka broker ready at %s (pid %d, data %s)", self.bootstrap, self.proc.pid, self.data_dir)
                return self
            except Exception as exc:  # kafka-python raises many types while the broker boots
                last_error = exc
                time.sleep(0.3)
        self.stop()
        msg = f"kafka broker not ready after {timeout_s:.0f}s ({last_error}); see {self.data_dir / 'logs'}"
        raise BrokerError(msg)

    def kill(self) -> None:
        """SIGKILL the broker's process group (a crash: no clean shutdown, nothing flushed on purpose)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        log.info("kafka broker killed (pid %d)", proc.pid)

    def restart(self, timeout_s: float = 60.0) -> LocalKafka:
        """Start again on the same data directory and ports (after :meth:`kill` or :meth:`stop`): topics,
        records and committed offsets survive."""
        if self.proc is not None:
            self.stop()
        wipe, self.wipe = self.wipe, False
        try:
            return self.start(timeout_s)
        finally:
            self.wipe = wipe

    def log_files(self) -> list[Path]:
        """The broker's stdout and its log4j file."""
        return [self.data_dir / "logs" / name for name in ("stdout.log", "server.log")]

    def admin(self):  # noqa: ANN201 - kafka-python has no type hints
        """A new admin client (caller closes it)."""
        from kafka.admin import KafkaAdminClient

        return KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)

    def create_topics(self, topics: dict[str, int], timeout_s: float = 30.0) -> None:
        """Create topics ``{name: partitions}`` that do not exist yet, and wait for their leaders."""
        from kafka import KafkaConsumer
        from kafka.admin import NewTopic

        admin = self.admin()
        try:
            existing = set(admin.list_topics())
            new = [NewTopic(name, parts, 1) for name, parts in topics.items() if name not in existing]
            if new:
                admin.create_topics(new)
        finally:
            admin.close()
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            deadline = time.monotonic() + timeout_s
            for name, parts in topics.items():
                while len(consumer.partitions_for_topic(name) or ()) < parts:
                    if time.monotonic() > deadline:
                        msg = f"topic {name} has no leaders after {timeout_s}s"
                        raise BrokerError(msg)
                    time.sleep(0.1)
        finally:
            consumer.close()
