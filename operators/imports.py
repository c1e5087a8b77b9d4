"""Importing native extensions safely inside Flink's thread mode.

Task threads run Python on thread states that pemja creates, which ``PyGILState_Ensure`` does not recognise:
an extension whose initialisation calls it deadlocks on the GIL its own thread holds (seen with pyflink 2.0.2 and
onnxruntime 1.31 at import). The same trap rules out numba's ordinary ``@njit`` functions on the per-event path:
its runtime releases every array argument through ``PyGILState_Ensure`` (``pyobject_dtor``), and on a task
thread whose GIL-state thread state is not the current one (seen in the job at parallelism 2) the first compiled
call hangs the task; :mod:`operators.kernels` therefore compiles a ``cfunc`` over raw buffers, imported (and
compiled) through this module.
A ``threading.Thread`` has a regular thread state, so the work completes there; one lock
makes the other subtasks of the same worker wait until it is done (a module is in ``sys.modules`` before it is
initialised, and another thread would see it half-made).
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType

__all__ = ["import_in_regular_thread"]

_LOCK = threading.Lock()
_READY: set[str] = set()


def import_in_regular_thread(name: str) -> ModuleType:
    """``import name`` in a fresh regular thread, once per
    process; later calls return the loaded module at the cost of a set lookup."""
    if name in _READY:
        return sys.modules[name]
    with _LOCK:
        if name not in _READY:
            errors: list[BaseException] = []

            def target() -> None:
                try:
                    importlib.import_module(name)
                except BaseException as exc:  # re-raised in the caller's thread
                    errors.append(exc)

            thread = threading.Thread(target=target, name=f"import-{name}", daemon=True)
            thread.start()
            thread.join()
            if errors:
                raise errors[0]
            _READY.add(name)
    return sys.modules[name]

