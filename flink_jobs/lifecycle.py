"""The running job's lifecycle in the ``streamrec run`` process: status watch, health endpoint, graceful stop.

``env.execute()`` would block in Java until the job ends, silently through any number of restarts. Instead
the job is submitted with ``execute_async`` and watched here:

- every change of the job's status is logged (``job RESTARTING (restart 2)``), so a restart loop is visible in
  the job's own output, and the job gives up after ``--max-restarts`` failed attempts (Flink's restart
  strategy) and this process exits 1 with the root cause;
- ``--health-port`` serves ``GET /health`` on 127.0.0.1: JSON ``{"status": "RUNNING", "restarts": 0, ...}``,
  HTTP 200 while the job runs, 503 otherwise (for a supervisor's or Kubernetes' liveness probe);
- SIGTERM or SIGINT stops the job **with a savepoint** under ``<checkpoint-dir>/savepoints`` (state and Kafka
  offsets kept; ``--restore-from latest`` resumes from it) and exits 0.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["watch_job", "savepoint_dir"]

log = logging.getLogger("streamrec.job")

POLL_S = 0.25
SAVEPOINT_TIMEOUT_S = 120


def savepoint_dir(checkpoint_dir: str | Path) -> Path:
    """Where a graceful stop writes its savepoint (and where ``--restore-from latest`` looks too)."""
    return Path(checkpoint_dir) / "savepoints"


class _Health:
    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"status": "STARTING", "restarts": 0, "since_ms": int(time.time() * 1000)}
        self.lock = threading.Lock()

    def update(self, **fields: Any) -> None:
        with self.lock:
            self.doc.update(fields)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.doc)


def _serve_health(health: _Health, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.rstrip("/") not in ("/health", ""):
                self.send_error(404)
                return
            doc = health.snapshot()
            body = json.dumps(doc).encode()
            self.send_response(200 if doc["status"] == "RUNNING" else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # probes every few seconds: not worth a log line
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="streamrec-health", daemon=True).start()
    log.info("health endpoint on http://127.0.0.1:%d/health", server.server_address[1])
    return server


def watch_job(client: Any, *, checkpoint_dir: str, health_port: int | None = None) -> tuple[str, str | None]:
    """Watch a submitted job (a pyflink ``JobClient``) until it ends or this process is asked to stop.

    Returns ``("stopped", savepoint_path)``, ``("finished", None)``, ``("canceled", None)`` or
    ``("failed", None)`` (then ``client.get_job_execution_result().result()`` raises the cause).
    """
    health = _Health()
    health.update(job_id=str(client.get_job_id()))
    server = _serve_health(health, health_port) if health_port is not None else None
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    status_name, restarts = None, 0
    try:
        while True:
            if stop.is_set():
                return "stopped", _stop_with_savepoint(client, checkpoint_dir, health)
            try:
                name = str(client.get_job_status().result()).rsplit(".", 1)[-1]
            except Exception:  # a local job that failed for good takes its MiniCluster with it: the cause is
                return "failed", None  # in the execution result, which the caller raises
            if name != status_name:
                if name == "RESTARTING":
                    restarts += 1
                    log.warning("job RESTARTING (restart %d); the cause is in Flink's log (flink-*.log)", restarts)
                else:
                    log.info("job %s", name)
                status_name = name
                health.update(status=name, restarts=restarts, since_ms=int(time.time() * 1000))
            if name in ("FAILED", "FINISHED", "CANCELED"):
                return name.lower(), None
            stop.wait(POLL_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.shutdown()


def _cancel(client: Any) -> None:
    try:
        client.cancel()
    except Exception as exc:  # the JVM may be going down with this process (its group was signalled)
        log.warning("cancel failed: %s", exc)


def _stop_call(client: Any, directory: str) -> Any:
    """``JobClient.stopWithSavepoint`` as Flink 2.0 declares it (pyflink 2.0's wrapper still passes two
    arguments, which no Java method takes): canonical format, portable across state backends and versions."""
    from pyflink.common.completable_future import CompletableFuture
    from pyflink.java_gateway import get_gateway

    fmt = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    return CompletableFuture(client._j_job_client.stopWithSavepoint(False, directory, fmt), str)


def _stop_with_savepoint(client: Any, checkpoint_dir: str, health: _Health) -> str | None:
    target = savepoint_dir(checkpoint_dir)
    target.mkdir(parents=True, exist_ok=True)
    health.update(status="STOPPING")
    log.info("stopping with a savepoint under %s", target)
    t0 = time.monotonic()
    try:
        future = _stop_call(client, target.as_uri())
    except Exception as exc:  # py4j: say it, and do not leave the job running
        log.error("stop with savepoint could not start (%s): cancelling (resume from the latest checkpoint)", exc)
        _cancel(client)
        return None
    deadline = t0 + SAVEPOINT_TIMEOUT_S
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not future.done():
        log.error("no savepoint after %d s: cancelling (resume from the latest checkpoint)", SAVEPOINT_TIMEOUT_S)
        _cancel(client)
        return None
    try:
        path = str(future.result())
    except Exception as exc:  # e.g. a task failed while snapshotting
        log.error("stop with savepoint failed (%s): cancelling (resume from the latest checkpoint)", exc)
        _cancel(client)
        return None
    log.info("stopped with savepoint %s in %.1f s", path, time.monotonic() - t0)
    return path
