"""Run the recommendation job as a child process in its own process group (MiniCluster inside)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from deploy.harness.kafka_clients import assigned_consumer
from deploy.harness.paths import streamrec_executable
from deploy.harness.process import ManagedProcess
from operators.errors import StreamrecError

__all__ = ["JobProcess", "JobError", "wait_until_serving", "PROBE_USER"]

log = logging.getLogger(__name__)


PROBE_USER = "__streamrec_probe__"
"""The reserved user id of :func:`wait_until_serving`'s probe events (their event ids start with it too):
tools that count lists skip it."""


class JobError(StreamrecError):
    """The job process died or never started serving."""


class JobProcess(ManagedProcess):
    """``streamrec run ARGS --log-dir DIR``: the job exactly as a user starts it (same console script, same
    environment: nothing added), in its own process group.

    Stopped by its process group (SIGTERM, then SIGKILL): the MiniCluster JVM is a child of it.
    """

    name = "job process"

    def __init__(self, args: Sequence[str], log_dir: str | Path) -> None:
        super().__init__()
        self.args = list(args)
        self.log_dir = Path(log_dir).resolve()
        self.started_at = 0.0
        self.command: list[str] | None = None
        """Run ``python COMMAND ARGS`` instead of ``streamrec run ARGS`` (the bench's identity job)."""

    @property
    def log_file(self) -> Path:
        """The job's stdout/stderr."""
        return self.log_dir / "job.out"

    @property
    def task_log(self) -> Path:
        """JSON lines the job's Python code writes inside Flink tasks."""
        return self.log_dir / "streamrec-job.log"

    def start(self) -> JobProcess:
        """Start the process; returns at once (see :func:`wait_until_serving`)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv
            [*([sys.executable, *self.command] if self.command else [streamrec_executable(), "run"]), *self.args,
             "--log-dir", str(self.log_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(self.log_dir),
            start_new_session=True,
        )
        out.close()
        log.info("job process started (pid %d), logs in %s", self.proc.pid, self.log_dir)
        return self

    def log_files(self) -> list[Path]:
        """The job's stdout/stderr."""
        return [self.log_file]


def wait_until_serving(
    job: JobProcess,
    bootstrap: str,
    input_topic: str,
    output_topic: str,
    *,
    timeout_s: float = 180.0,
    probe_user: str = PROBE_USER,
    client_config: dict | None = None,
) -> float:
    """Send probe events until a list for the probe user comes out; returns seconds since start.

    The probe is a valid event of a reserved user id: it proves the whole path (source, state, model,
    sink) works. Consumers that count lists should skip ``probe_user``. ``client_config``: kafka-python
    security settings (a SASL_SSL broker: :meth:`deploy.harness.local_kafka.LocalKafka.client_config`).
    """
    from kafka import KafkaProducer

    client_config = client_config or {}
    consumer = assigned_consumer(bootstrap, [output_topic], from_beginning=False, **client_config)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **client_config)
    deadline = time.monotonic() + timeout_s
    next_probe = 0.0
    n = 0
    try:
        while time.monotonic() < deadline:
            if not job.alive():
                msg = f"job process exited before serving; last output:\n{job.log_tail()}"
                raise JobError(msg)
            if time.monotonic() >= next_probe:
                probe = {"user_id": probe_user, "item_id": "__probe__", "event_type": "view",
                         "ts": int(time.time() * 1000), "event_id": f"{probe_user}-{n}"}
                producer.send(input_topic, key=probe_user.encode(), value=json.dumps(probe).encode())
                producer.flush()
                n += 1
                next_probe = time.monotonic() + 5.0
            for records in consumer.poll(timeout_ms=250).values():
                for record in records:
                    # by event id: with --pseudonymize-users the record key is not the user id
                    if probe_user.encode() in record.value and \
                            json.loads(record.value).get("event_id", "").startswith(probe_user):
                        return time.monotonic() - job.started_at
        msg = f"job did not serve a probe within {timeout_s:.0f}s; last output:\n{job.log_tail()}"
        raise JobError(msg)
    finally:
        producer.close()
        consumer.close()
