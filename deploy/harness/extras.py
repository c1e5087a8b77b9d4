"""Which optional extra a command needs (``pyproject.toml``'s ``[project.optional-dependencies]``), checked before
the import that would fail: a machine without it gets a :class:`~operators.errors.SetupError` saying what to
install, not a ``ModuleNotFoundError`` from deep inside.

- ``train`` (torch, Optuna, the ONNX exporter's requirements): ``streamrec train``, and every command that trains
  a model when it has none: ``replay`` without ``--bundle``, ``demo``, ``bench`` and ``faults`` without a demo
  bundle yet (``--bundle`` or an existing one needs nothing more than the serving install);
- ``cpu`` or ``gpu`` (onnxruntime): everything that serves;
- ``dev``: tests, lint, the docs site.
"""

from __future__ import annotations

import importlib.util

from operators.errors import SetupError

__all__ = ["EXTRA_OF", "require"]

EXTRA_OF = {"torch": "train", "optuna": "train", "onnxscript": "train", "onnxruntime": "cpu",
            "pytest": "dev", "mkdocs": "dev"}


def require(module: str, what: str) -> None:
    """Fail with the fix when ``module`` (from the extra :data:`EXTRA_OF` names) is not installed."""
    if importlib.util.find_spec(module) is None:
        extra = EXTRA_OF[module]
        msg = (f"{what} needs {module}, from the `{extra}` extra: pip install 'streamrec[{extra}]' "
               "(a checkout: `make setup` installs cpu,train,dev)")
        raise SetupError(msg)
