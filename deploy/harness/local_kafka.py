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

from deploy.harness.paths import java_executable, kafka_broker_classpath
from deploy.harness.process import ManagedProcess
from operators.errors import StreamrecError

__all__ = ["LocalKafka", "BrokerError", "free_port"]

log = logging.getLogger(__name__)
LOG4J_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "kafka-log4j2.properties"


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
        sasl_ssl: tuple[str, str] | None = None,
    ) -> None:
        """``sasl_ssl=(user, password)``: the client listener speaks SASL_SSL with SCRAM-SHA-512 only (a CA and
        a certificate for 127.0.0.1 are generated with the JDK's keytool; clients trust :attr:`ca_file`), and
        that user exists; the broker itself logs in as a generated admin."""
        super().__init__()
        self.sasl_ssl = sasl_ssl
        self._admin_password = uuid.uuid4().hex
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.controller_port = free_port()
        self.heap = heap
        self.wipe = wipe
        self.classpath = classpath or kafka_broker_classpath()

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM) clients trust when the broker speaks TLS."""
        return self.tls_dir / "ca.pem"

    def client_config(self) -> dict[str, object]:
        """kafka-python settings of the configured client user (empty for PLAINTEXT)."""
        if self.sasl_ssl is None:
            return {}
        user, password = self.sasl_ssl
        return {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": user,
                "sasl_plain_password": password, "ssl_cafile": str(self.ca_file)}

    def _make_certificates(self) -> None:
        """A throw-away CA and a broker certificate (SAN IP 127.0.0.1), with the JDK's keytool."""
        import shutil as _shutil

        keytool = str(Path(java_executable()).with_name("keytool"))
        if not Path(keytool).exists():
            keytool = _shutil.which("keytool") or "keytool"
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        store_pass = self._admin_password
        ca, broker = self.tls_dir / "ca.p12", self.tls_dir / "broker.p12"
        common = ["-storetype", "PKCS12", "-storepass", store_pass, "-keypass", store_pass, "-noprompt"]
        steps = [
            ["-genkeypair", "-alias", "ca", "-dname", "CN=streamrec test CA", "-ext", "bc:c", "-keyalg", "RSA",
             "-keysize", "2048", "-validity", "30", "-keystore", str(ca)],
            ["-exportcert", "-rfc", "-alias", "ca", "-keystore", str(ca), "-file", str(self.ca_file)],
            ["-genkeypair", "-alias", "broker", "-dname", "CN=127.0.0.1", "-keyalg", "RSA", "-keysize", "2048",
             "-validity", "30", "-keystore", str(broker)],
            ["-certreq", "-alias", "broker", "-keystore", str(broker), "-file", str(self.tls_dir / "broker.csr")],
            ["-gencert", "-rfc", "-alias", "ca", "-keystore", str(ca), "-infile", str(self.tls_dir / "broker.csr"),
             "-outfile", str(self.tls_dir / "broker.pem"), "-ext", "san=ip:127.0.0.1", "-validity", "30"],
            ["-importcert", "-alias", "ca", "-file", str(self.ca_file), "-keystore", str(broker)],
            ["-importcert", "-alias", "broker", "-file", str(self.tls_dir / "broker.pem"), "-keystore", str(broker)],
        ]
        for step in steps:
            done = subprocess.run([keytool, *step, *common], capture_output=True, text=True, timeout=60,  # noqa: S603
                                  check=False)
            if done.returncode != 0:
                msg = f"keytool {step[0]} failed: {done.stderr.strip() or done.stdout.strip()}"
                raise BrokerError(msg)

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    def _security_properties(self) -> list[str]:
        if self.sasl_ssl is None:
            return [
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ]
        store = self.tls_dir / "broker.p12"
        return [
            f"listeners=SASL_SSL://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{self.port}",
            "inter.broker.listener.name=SASL_SSL",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="admin" password="{self._admin_password}";',
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={store}",
            f"ssl.keystore.password={self._admin_password}",
            f"ssl.key.password={self._admin_password}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.ca_file}",
            "ssl.client.auth=none",
        ]

    def _properties(self) -> str:
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                *self._security_properties(),
                "controller.listener.names=CONTROLLER",
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
        if self.sasl_ssl is not None and not self.ca_file.exists():
            self._make_certificates()
            props.write_text(self._properties(), "utf-8")
        if not (self.data_dir / "data" / "meta.properties").exists():
            scram = []
            if self.sasl_ssl is not None:  # SCRAM users exist from the start (KRaft: set at format time)
                user, password = self.sasl_ssl
                scram = ["--add-scram", f"SCRAM-SHA-512=[name=admin,password={self._admin_password}]",
                         "--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
            cluster_id = "-"
            while cluster_id.startswith("-"):  # as Kafka's Uuid.randomUuid: "-..." would parse as an option
                cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            fmt = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), "--standalone",
                           *scram, log_name="format"),
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

        return KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000, **self.client_config())

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
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, **self.client_config())
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
