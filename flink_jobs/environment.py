"""What the job needs from its environment, in one place (argument > environment > default).

Runs on the client (``streamrec run``, ``flink run -py``) and inside Flink's Python workers; it imports
nothing from the checkout's dev tooling (``deploy/``).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
from pathlib import Path

__all__ = ["python_executable", "site_packages", "project_root", "worker_pythonpath", "job_log_dir"]


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
