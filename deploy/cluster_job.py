"""The job on a local standalone cluster, as one restartable object: what the fault suite's cluster scenarios drive.

``streamrec cluster up`` with N TaskManagers of one slot each, ``streamrec deploy`` at parallelism N (one subtask
of every operator on each TaskManager), and the faults a cluster meets: ``kill -9`` of one TaskManager's (or, with
high availability, the JobManager's) process group and a supervisor starting it again (``streamrec cluster restart
--name``). Its interface is the
local job's (:class:`deploy.faults.Job`): ``start``, ``alive``, ``restarts``, ``checkpoint_bytes``, ``rss``,
``stop``; its logs are the cluster's (``log_text``).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from pathlib import Path

from deploy.cluster import ClusterLayout, cluster_down, cluster_up, deploy_job, start_process
from deploy.harness.flink_log import CHECKPOINT_BYTES, RESTART, RUNNING, completed_checkpoints, log_time_ms
from deploy.harness.job_process import wait_until_serving
from deploy.harness.local_kafka import LocalKafka, free_port
from deploy.harness.process import group_alive, group_rss_mb, kill_group

__all__ = ["ClusterJob"]

log = logging.getLogger(__name__)

_LIVE_STATES = {"CREATED", "INITIALIZING", "RUNNING", "RESTARTING"}


def _roll(path: Path) -> int:
    """``flink-x.log.2`` -> 2 (older), ``flink-x.log`` -> 0 (the current one)."""
    suffix = path.name.rsplit(".log", 1)[1].lstrip(".")
    return int(suffix) if suffix.isdigit() else 0


class ClusterJob:
    """A cluster of ``taskmanagers`` single-slot TaskManagers running the job at that parallelism."""

    def __init__(self, kafka: LocalKafka, work: Path, topics: dict[str, str], job_args: list[str], *,
                 taskmanagers: int = 2, ha: bool = False) -> None:
        self.kafka, self.work, self.topics = kafka, work, topics
        self.job_args = list(job_args)
        self.taskmanagers = taskmanagers
        self.ha = ha
        self.layout = ClusterLayout((work / "cluster").resolve())
        self.rest: str | None = None
        self.job_id: str | None = None
        self.started_at = 0.0
        self.rss_peak = 0.0

    # ------------------------------------------------------------------------------------------------ life
    def start(self, *, wait: bool = True) -> float:
        """Cluster up, job deployed; with ``wait``, until a probe event is answered (seconds since deploy)."""
        metrics = free_port()
        state = cluster_up(self.layout.root, taskmanagers=self.taskmanagers, slots=1, rest_port=free_port(),
                           metrics_ports=f"{metrics}-{metrics + self.taskmanagers + 2}", ha=self.ha)
        self.rest = state["rest"]
        self.started_at = time.monotonic()
        submitted = deploy_job(self.rest, [*self.job_args, "--parallelism", str(self.taskmanagers)],
                               ship_dir=self.work / "ship")
        self.job_id = submitted["job_id"]
        log.info("job %s on the cluster at %s (%d TaskManagers x 1 slot)", self.job_id, self.rest,
                 self.taskmanagers)
        if not wait:
            return 0.0
        took = wait_until_serving(self, self.kafka.bootstrap, self.topics["input"], self.topics["output"],
                                  timeout_s=300)
        # one subtask serving is not the job running: checkpoints start once every task runs (the other
        # TaskManager's Python may still be starting), and a fault before the first one would replay everything
        deadline = time.monotonic() + 180
        while "Completed checkpoint" not in self.log_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        return took

    def job_state(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://{self.rest}/jobs/{self.job_id}", timeout=5) as r:  # noqa: S310
                return json.loads(r.read())["state"]
        except (OSError, ValueError, KeyError):
            return None

    def alive(self) -> bool:
        """The job is live on the cluster: running or restarting (a TaskManager's loss is a restart, not an end), or
        not known yet while a JobManager started again recovers it; not once it has failed or ended."""
        if self.rest is None:
            return False
        jobmanager = next((p for p in self.processes() if p["name"] == "jobmanager"), None)
        if jobmanager is None or not group_alive(jobmanager["pgid"]):
            return self.ha  # with high availability a supervisor starts it again
        state = self.job_state()
        return state is None or state in _LIVE_STATES

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_text(self, kind: str = "standalonesession") -> str:
        """Every log of the cluster's JobManagers (``kind="taskexecutor"``: TaskManagers), the rolled-over files of
        processes started again first (Flink rolls a process's log over to ``.log.1`` at its start)."""
        paths = sorted(self.layout.log.glob(f"flink-*{kind}*.log*"), key=lambda p: (-_roll(p), p.name))
        return "\n".join(p.read_text(errors="replace") for p in paths)

    def processes(self) -> list[dict]:
        state = self.layout.read_state() or {"processes": []}
        return state["processes"]

    def kill(self, name: str) -> None:
        """``kill -9`` of one process group of the cluster (a TaskManager's JVM and the Python it runs in thread
        mode, or the JobManager)."""
        proc = next(p for p in self.processes() if p["name"] == name)
        kill_group(proc["pgid"])
        log.info("%s killed (pgid %d)", name, proc["pgid"])

    def restart(self, name: str) -> float:
        """Start ``name`` again (a supervisor's restart); returns the seconds until it served."""
        return start_process(self.layout.root, name)["ready_s"]

    def checkpoints_since(self, since_ms: int) -> int:
        """Checkpoints completed after ``since_ms`` (epoch ms; the JobManagers' logs)."""
        return sum(done > since_ms for _, done in completed_checkpoints(self.log_text()))

    def running_since(self, since_ms: int) -> list[int]:
        """Epoch ms of every switch of the job to RUNNING after ``since_ms`` (the JobManagers' logs, local time):
        a restart (``RESTARTING -> RUNNING``: the failed attempt's tasks are all cancelled by then) or a recovery
        by a JobManager started again (``CREATED -> RUNNING``)."""
        times = (log_time_ms(m[1]) for m in RUNNING.finditer(self.log_text()))
        return sorted(t for t in times if t > since_ms)

    # ------------------------------------------------------------------------------------------------ report
    def restarts(self) -> int:
        return len(RESTART.findall(self.log_text()))

    def checkpoint_bytes(self) -> int | None:
        sizes = CHECKPOINT_BYTES.findall(self.log_text())
        return int(sizes[-1]) if sizes else None

    def rss(self) -> float:
        """Resident memory of the JobManager and every live TaskManager (MB)."""
        rss = round(sum(group_rss_mb(p["pgid"]) for p in self.processes() if group_alive(p["pgid"])), 1)
        self.rss_peak = max(self.rss_peak, rss)
        return rss

    def stop(self) -> None:
        """Every process group the cluster started (the job with it)."""
        stopped = cluster_down(self.layout.root)
        log.info("cluster stopped: %s", ", ".join(stopped) or "nothing was running")
