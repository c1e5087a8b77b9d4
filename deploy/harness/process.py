"""Process-group lifecycle shared by the broker and job runners: start in a new session, stop the group."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["ManagedProcess", "stop_process_group", "stop_group", "group_alive"]

log = logging.getLogger(__name__)


def stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM the process group led by ``proc`` (started with ``start_new_session=True``), then SIGKILL.

    Only that group is signalled, never processes found by name.
    """
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure no child of the group outlives it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM process group ``pgid``, wait until none of its members is left, then SIGKILL: for groups started
    by an earlier command (``streamrec cluster up``), whose leader is not this process's child."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pgid, wait):
            return


def kill_group(pgid: int, timeout_s: float = 30.0) -> bool:
    """``kill -9`` of process group ``pgid`` (a fault, not a stop); True once none of its members is left."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    return _wait_gone(pgid, timeout_s)


def _wait_gone(pgid: int, timeout_s: float, poll_s: float = 0.05) -> bool:
    """Wait until no member of group ``pgid`` is left, collecting its leader when it is this process's child."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reap(pgid)
        if not group_alive(pgid):
            return True
        time.sleep(poll_s)
    return False


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status when it is this process's child (a group leader that exited stays a zombie,
    and a zombie keeps its group alive, until its parent collects it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in a process group (MB), e.g. a job's Python client and its JVM."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return round(total / 1024, 1)


class ManagedProcess:
    """One child process group with one owner: ``start()`` (subclass), ``alive()``, ``log_tail()``, ``stop()``,
    and use as a context manager."""

    name = "process"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start the process (subclasses)."""
        raise NotImplementedError

    def log_files(self) -> list[Path]:
        """Files whose tails explain a failure, oldest source first."""
        return []

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of each log file."""
        chunks: list[str] = []
        for path in self.log_files():
            if path.exists():
                chunks.extend(path.read_text("utf-8", errors="replace").splitlines()[-lines:])
        return "\n".join(chunks)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the whole process group; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stop_process_group(proc, timeout_s)
        log.info("%s stopped (pid %d)", self.name, proc.pid)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
