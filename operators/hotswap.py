"""Model hot-swap: a control message names a bundle by version, location and checksum; each subtask loads and
verifies it off the hot path and swaps it in between two events, or refuses it with the reason and keeps
serving the old one. Pure logic, no pyflink (the adapter supplies how a URI is fetched and how a core is built).

The message (``streamrec model publish DIR`` writes it to the control topic, key ``model``)::

    {"type": "model", "version": "<manifest version>", "uri": "/abs/dir | file:///dir | hdfs://... | s3://...",
     "sha256": "<sha256 of the bundle's manifest.json>", "published_ms": 1733000000000}

The manifest carries the sha256 of every other file of the bundle, so one checksum pins the whole bundle.
Verification, in order: the message's fields; the manifest's checksum; :func:`operators.bundle.load_bundle`
(format, vocabulary, every file's checksum); the version the manifest declares; building the serving core
(onnxruntime loads the graphs and checks their input and output names); a smoke inference whose scores must
be finite. Any failure refuses the bundle with a one-line reason.

Per-user state that depends on the model (the recurrent state) carries the tag of the model that wrote it;
after a swap the first event of each user rebuilds it from the window (:class:`operators.serving.ServingCore`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from operators.bundle import MANIFEST_NAME, load_bundle

__all__ = ["CONTROL_MODEL", "CONTROL_SHADOW", "manifest_sha256", "model_message", "parse_model_message",
           "SwapResult", "ModelLoader", "local_path"]

log = logging.getLogger(__name__)

CONTROL_MODEL = "model"
"""``type`` (and record key) of a "serve this bundle" control message."""
CONTROL_SHADOW = "shadow"
"""``type`` (and record key) of a "score this bundle beside the serving one" control message."""


def manifest_sha256(bundle_dir: str | Path) -> str:
    """The checksum a model message pins: sha256 of the bundle's ``manifest.json``."""
    return hashlib.sha256((Path(bundle_dir) / MANIFEST_NAME).read_bytes()).hexdigest()


def model_message(bundle_dir: str | Path, *, uri: str | None = None, kind: str = CONTROL_MODEL,
                  now_ms: int | None = None) -> dict:
    """The control message for a bundle, after verifying it here (a broken bundle is never published)."""
    bundle = load_bundle(bundle_dir)
    return {"type": kind, "version": bundle.version, "uri": uri or str(Path(bundle_dir).resolve()),
            "sha256": manifest_sha256(bundle_dir), "published_ms": int(time.time() * 1000) if now_ms is None
            else now_ms}


def parse_model_message(message: dict) -> tuple[str, str, str]:
    """``(version, uri, sha256)`` of a model message; ValueError with what is wrong."""
    missing = [k for k in ("version", "uri", "sha256") if not isinstance(message.get(k), str) or not message[k]]
    if missing:
        msg = f"model message without {', '.join(missing)} (publish with `streamrec model publish DIR`)"
        raise ValueError(msg)
    sha = message["sha256"].lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        msg = f"sha256 {message['sha256']!r} is not 64 hex digits"
        raise ValueError(msg)
    return message["version"], message["uri"], sha


def local_path(uri: str) -> Path | None:
    """A plain path or ``file:`` URI as a local path; None for any other scheme (fetched by the adapter)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri)
    return None


@dataclass
class SwapResult:
    """The outcome of one model message on one subtask (sent to the control-result topic)."""

    kind: str
    version: str
    ok: bool
    reason: str
    load_ms: float
    sha256: str = ""
    published_ms: int | None = None
    core: Any = field(default=None, repr=False)

    def message(self, subtask: int, now_ms: int) -> dict:
        out = {"type": f"{self.kind}_result", "subtask": subtask, "version": self.version, "ok": self.ok,
               "reason": self.reason, "load_ms": round(self.load_ms, 1), "sha256": self.sha256, "ts": now_ms}
        if self.published_ms is not None:
            out["published_ms"] = self.published_ms
        return out


class ModelLoader:
    """Loads and verifies bundles on a background thread, one at a time; the task thread polls for the
    outcome between events (:meth:`poll` is one attribute read when nothing is loading).

    ``build(path)`` makes the serving core for a bundle directory (raising on a bad one) and ``smoke(core)``
    checks it can score; both run on the loader thread.
    """

    def __init__(self, build: Callable[[Path], Any], smoke: Callable[[Any], None]) -> None:
        self.build = build
        self.smoke = smoke
        self._done: list[SwapResult] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._queue: list[tuple[str, dict, Path | None, str | None]] = []

    @property
    def busy(self) -> bool:
        return self._thread is not None or bool(self._queue)

    def request(self, kind: str, message: dict, fetched: Path | None, fetch_error: str | None = None) -> None:
        """Start verifying ``message`` (already fetched to ``fetched`` when its URI was remote)."""
        self._queue.append((kind, message, fetched, fetch_error))
        self._next()

    def load_now(self, kind: str, message: dict, fetched: Path | None) -> SwapResult:
        """Verify synchronously (a restored job re-establishes its served model before its first list)."""
        return self._verify(kind, message, fetched, None)

    def poll(self) -> list[SwapResult]:
        """Results finished since the last call (usually none)."""
        if not self._done:
            return []
        with self._lock:
            done, self._done = self._done, []
        self._thread = None
        self._next()
        return done

    def _next(self) -> None:
        if self._thread is not None or not self._queue:
            return
        job = self._queue.pop(0)
        self._thread = threading.Thread(target=self._run, args=job, name="streamrec-model-loader", daemon=True)
        self._thread.start()

    def _run(self, kind: str, message: dict, fetched: Path | None, fetch_error: str | None) -> None:
        result = self._verify(kind, message, fetched, fetch_error)
        with self._lock:
            self._done.append(result)

    def _verify(self, kind: str, message: dict, fetched: Path | None, fetch_error: str | None) -> SwapResult:
        t0 = time.perf_counter()
        version = str(message.get("version", ""))
        sha = str(message.get("sha256", ""))
        published = message.get("published_ms") if isinstance(message.get("published_ms"), int) else None

        def refuse(reason: str) -> SwapResult:
            log.error("%s bundle %s refused: %s", kind, version or "?", reason)
            return SwapResult(kind, version, False, reason, (time.perf_counter() - t0) * 1000, sha, published)

        try:
            version, uri, sha = parse_model_message(message)
        except ValueError as exc:
            return refuse(str(exc))
        if fetch_error:
            return refuse(f"cannot fetch {uri}: {fetch_error}")
        path = fetched or local_path(uri)
        if path is None:
            return refuse(f"cannot read {uri}: no filesystem for its scheme here")
        try:
            actual = manifest_sha256(path)
        except OSError as exc:
            return refuse(f"cannot read the bundle's manifest at {uri}: {exc}")
        if actual != sha:
            return refuse(f"checksum mismatch: manifest.json has sha256 {actual}, the message says {sha} "
                          "(the bundle changed after it was published, or the message names another bundle)")
        try:
            declared = load_bundle(path).version
            if declared != version:
                return refuse(f"the manifest says version {declared}, the message {version}")
            core = self.build(path)
            self.smoke(core)
        except Exception as exc:  # noqa: BLE001 - every reason a bundle cannot serve refuses it
            return refuse(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "))
        ms = (time.perf_counter() - t0) * 1000
        log.info("%s bundle %s verified in %.0f ms", kind, version, ms)
        return SwapResult(kind, version, True, "verified", ms, sha, published, core)
