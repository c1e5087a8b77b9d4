"""Model bundles: the contract between training (which writes them) and serving (which reads them here).

Layout of a bundle directory (format ``streamrec-bundle/2``)::

    manifest.json   format, version, vocabulary, dimensions, IO contract, sha256 of every ONNX file,
                    training data fingerprint and metrics
    model.onnx      the full-sequence graph:
                      inputs  ``item_seq`` int64 [batch, max_seq_len] (left-padded, 0 = padding, newest last)
                              ``exclude``  int64 [batch, X] (item indices that may not be recommended, 0-padded)
                      outputs ``scores`` float32 [batch, C], ``items`` int64 [batch, C] (best first, excluded
                              items and padding never), and for recurrent models ``state`` float32 [batch, S]
    step.onnx       recurrent models only, the one-event graph:
                      inputs  ``state`` float32 [batch, S], ``item`` int64 [batch], ``recent`` int64
                              [batch, R] (the newest R items, left-padded, the new item last), ``exclude``
                      outputs ``scores``, ``items``, ``state_out`` float32 [batch, S]

Format ``streamrec-bundle/3`` adds external scoring for recurrent models (a ``scoring`` manifest section):
the graphs then only advance the user's state and take the item embeddings as inputs
(``model.onnx``: ``item_seq`` and ``item_vecs`` float32 [batch, L, D] -> ``state``; ``step.onnx``: ``state``,
``item``, ``item_vec`` float32 [batch, D] -> ``state_out``), and the scores are computed by
:mod:`operators.scoring` from::

    item_table.npy    the item embedding table, float16 [V + 1, D] (row 0, padding, zero): the graphs' input
                      embeddings and the scoring table, stored once
    item_index.faiss  optional, large catalogs: an IVF index over the table (inner product, ids = indices)

Format 2 bundles (scoring inside the graphs) are still served as they are.

Item index ``i`` (1-based) is ``item_vocab[i - 1]``; 0 is padding. This module never imports torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from operators.errors import BundleError

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST_NAME",
    "ONNX_NAME",
    "STEP_ONNX_NAME",
    "EMBEDDINGS_NAME",
    "READABLE_FORMATS",
    "TABLE_NAME",
    "INDEX_NAME",
    "INPUT_ITEM_VECS",
    "INPUT_ITEM_VEC",
    "NEIGHBORS_NAME",
    "INPUT_NAME",
    "INPUT_EXCLUDE",
    "INPUT_STATE",
    "INPUT_ITEM",
    "INPUT_RECENT",
    "OUTPUT_SCORES",
    "OUTPUT_ITEMS",
    "OUTPUT_STATE",
    "OUTPUT_STEP_STATE",
    "PAD_INDEX",
    "ModelBundle",
    "file_sha256",
    "load_bundle",
]

BUNDLE_FORMAT = "streamrec-bundle/3"
READABLE_FORMATS = ("streamrec-bundle/2", BUNDLE_FORMAT)
TABLE_NAME = "item_table.npy"
INDEX_NAME = "item_index.faiss"
INPUT_ITEM_VECS = "item_vecs"
INPUT_ITEM_VEC = "item_vec"
MANIFEST_NAME = "manifest.json"
ONNX_NAME = "model.onnx"
STEP_ONNX_NAME = "step.onnx"
EMBEDDINGS_NAME = "item_embeddings.npy"
NEIGHBORS_NAME = "item_neighbors.npz"
INPUT_NAME = "item_seq"
INPUT_EXCLUDE = "exclude"
INPUT_STATE = "state"
INPUT_ITEM = "item"
INPUT_RECENT = "recent"
OUTPUT_SCORES = "scores"
OUTPUT_ITEMS = "items"
OUTPUT_STATE = "state"
OUTPUT_STEP_STATE = "state_out"
PAD_INDEX = 0


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelBundle:
    """A verified bundle, ready to serve."""

    path: Path
    version: str
    model_type: str
    max_seq_len: int
    n_candidates: int
    item_vocab: tuple[str, ...]
    """``item_vocab[i]`` is the raw item id of model index ``i + 1`` (index 0 is padding)."""
    onnx_sha256: str
    popular_items: tuple[str, ...]
    """Most popular training items, best first: the cold-start fallback."""
    manifest: dict[str, Any] = field(repr=False)
    state_size: int = 0
    """Floats of per-user model state (0: the model is stateless and reads the window every event)."""
    recent_len: int = 0
    """How many of the newest items the step graph's ``recent`` input holds."""

    @property
    def onnx_path(self) -> Path:
        """The full-sequence graph."""
        return self.path / ONNX_NAME

    @property
    def step_path(self) -> Path | None:
        """The one-event graph of a recurrent model, else None."""
        return self.path / STEP_ONNX_NAME if self.state_size else None

    @property
    def recurrent(self) -> bool:
        """Whether the model keeps per-user state advanced one step per event."""
        return self.state_size > 0

    @property
    def n_items(self) -> int:
        """Catalog size (padding excluded)."""
        return len(self.item_vocab)

    @property
    def external_scoring(self) -> bool:
        """Format 3: the graphs advance the state, :mod:`operators.scoring` scores (from the item table)."""
        return isinstance(self.manifest.get("scoring"), dict)

    @property
    def index_path(self) -> Path | None:
        """The ANN index over the item table, if the bundle ships one."""
        scoring = self.manifest.get("scoring") or {}
        return self.path / INDEX_NAME if isinstance(scoring.get("index"), dict) else None

    def item_table(self):  # noqa: ANN201 - numpy array, imported lazily
        """The item embedding table ``float16 [V + 1, D]`` of an externally scored bundle (row 0 zero)."""
        import numpy as np

        table = np.load(self.path / TABLE_NAME, allow_pickle=False, mmap_mode="r")
        if table.ndim != 2 or table.shape[0] != self.n_items + 1:
            raise _fail(self.path, f"{TABLE_NAME} has shape {table.shape}; the catalog needs {self.n_items + 1} rows",
                        "Re-export the bundle.")
        return np.asarray(table, dtype=np.float16)

    @property
    def has_embeddings(self) -> bool:
        """Whether the bundle ships item embeddings (diversity, explanations)."""
        return isinstance(self.manifest.get("item_embeddings"), dict) or self.external_scoring

    def item_embeddings(self):  # noqa: ANN201 - numpy array, imported lazily
        """L2-normalised item embeddings ``float32 [V + 1, D]`` (row 0, padding, is zero), or None."""
        if not self.has_embeddings:
            return None
        import numpy as np

        if not isinstance(self.manifest.get("item_embeddings"), dict):  # format 3: from the item table
            emb = self.item_table().astype(np.float32)
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            return np.where(norms > 0, emb / np.maximum(norms, 1e-12), 0.0).astype(np.float16).astype(np.float32)
        emb = np.load(self.path / EMBEDDINGS_NAME, allow_pickle=False).astype(np.float32)
        if emb.shape[0] != self.n_items + 1:
            raise _fail(self.path, f"{EMBEDDINGS_NAME} has {emb.shape[0]} rows; the catalog needs {self.n_items + 1}",
                        "Re-export the bundle.")
        return emb

    def item_neighbors(self):  # noqa: ANN201 - (neighbors int64 [V + 1, N], weights float32 [V + 1, N]) or None
        """Each item's strongest co-occurring items (the served co-occurrence model), row 0 = padding; or None."""
        if not isinstance(self.manifest.get("item_neighbors"), dict):
            return None
        import numpy as np

        with np.load(self.path / NEIGHBORS_NAME, allow_pickle=False) as data:
            neighbors, weights = data["neighbors"].astype(np.int64), data["weights"].astype(np.float32)
        if neighbors.shape[0] != self.n_items + 1 or neighbors.shape != weights.shape:
            raise _fail(self.path, f"{NEIGHBORS_NAME} has shape {neighbors.shape}; the catalog needs "
                                   f"{self.n_items + 1} rows", "Re-export the bundle.")
        return neighbors, weights

    def index_of(self) -> dict[str, int]:
        """Raw item id -> model index."""
        return {item: i + 1 for i, item in enumerate(self.item_vocab)}


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "version": str,
    "model": dict,
    "onnx": dict,
    "item_vocab": list,
    "training": dict,
}


def _fail(path: Path, problem: str, fix: str) -> BundleError:
    return BundleError(f"model bundle {path}: {problem}. {fix}")


def load_bundle(path: str | Path, *, verify_checksum: bool = True) -> ModelBundle:
    """Load and verify a bundle directory.

    Checks that the manifest exists and is complete, that the format is known, that the vocabulary
    matches the declared catalog size and has no duplicates, and that the ONNX file's sha256 equals
    the manifest's.

    Raises:
        BundleError: Saying what is wrong and how to fix it.
    """
    root = Path(path).expanduser().resolve()
    retrain = "Re-create it with `streamrec train --out DIR` (or restore the original bundle)."
    if not root.is_dir():
        raise _fail(
            root, "directory does not exist", "Pass --bundle pointing at a directory made by `streamrec train`."
        )
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise _fail(root, f"{MANIFEST_NAME} is missing", retrain)
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise _fail(root, f"{MANIFEST_NAME} is not readable JSON ({exc})", retrain) from None
    if not isinstance(manifest, dict):
        raise _fail(root, f"{MANIFEST_NAME} must hold a JSON object", retrain)
    problems = [
        f"'{key}' missing or not a {kind.__name__ if isinstance(kind, type) else kind}"
        for key, kind in _REQUIRED.items()
        if not isinstance(manifest.get(key), kind)
    ]
    if problems:
        raise _fail(root, f"manifest incomplete: {'; '.join(problems)}", retrain)
    if manifest["format"] not in READABLE_FORMATS:
        raise _fail(
            root,
            f"unknown bundle format {manifest['format']!r} (this job reads {READABLE_FORMATS})",
            "Export the model with this version of streamrec.",
        )
    model, onnx_info = manifest["model"], manifest["onnx"]
    try:
        max_seq_len = int(model["max_seq_len"])
        n_items = int(model["n_items"])
        n_candidates = int(onnx_info["n_candidates"])
        expected_sha = str(onnx_info["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(root, f"manifest field missing or invalid: {exc}", retrain) from None
    vocab = tuple(str(v) for v in manifest["item_vocab"])
    if len(vocab) != n_items:
        raise _fail(root, f"vocabulary has {len(vocab)} items but model.n_items is {n_items}", retrain)
    if len(set(vocab)) != len(vocab):
        raise _fail(root, "vocabulary holds duplicate item ids", retrain)
    if max_seq_len < 1 or n_candidates < 1:
        raise _fail(root, f"max_seq_len={max_seq_len} and n_candidates={n_candidates} must be >= 1", retrain)
    onnx_path = root / ONNX_NAME
    if not onnx_path.is_file():
        raise _fail(root, f"{ONNX_NAME} is missing", retrain)
    step = manifest.get("step") or {}
    state_size = int(step.get("state_size", 0)) if isinstance(step, dict) else 0
    files = {ONNX_NAME: expected_sha}
    recent_len = int(step.get("recent_len", 0)) if state_size else 0
    if state_size and not (0 < state_size <= 65_535 and recent_len >= 1):
        raise _fail(root, f"step graph declares state_size={state_size}, recent_len={recent_len}; need "
                          "0 < state_size <= 65535 and recent_len >= 1", retrain)
    if state_size:
        if not (root / STEP_ONNX_NAME).is_file():
            raise _fail(root, f"{STEP_ONNX_NAME} is missing (the manifest declares a recurrent model)", retrain)
        files[STEP_ONNX_NAME] = str(step.get("sha256"))
    for key, name in (("item_neighbors", NEIGHBORS_NAME),):
        entry = manifest.get(key)
        if isinstance(entry, dict):
            if not (root / name).is_file():
                raise _fail(root, f"{name} is missing (the manifest declares it)", retrain)
            files[name] = str(entry.get("sha256"))
    emb = manifest.get("item_embeddings")
    if isinstance(emb, dict):
        if not (root / EMBEDDINGS_NAME).is_file():
            raise _fail(root, f"{EMBEDDINGS_NAME} is missing (the manifest declares item embeddings)", retrain)
        files[EMBEDDINGS_NAME] = str(emb.get("sha256"))
    scoring = manifest.get("scoring")
    if isinstance(scoring, dict):
        if not state_size:
            raise _fail(root, "a scoring section needs a recurrent model (a step graph)", retrain)
        for key, name in (("table", TABLE_NAME), ("index", INDEX_NAME)):
            entry = scoring.get(key)
            if key == "table" and not isinstance(entry, dict):
                raise _fail(root, "the scoring section names no item table", retrain)
            if isinstance(entry, dict):
                if not (root / name).is_file():
                    raise _fail(root, f"{name} is missing (the manifest declares it)", retrain)
                files[name] = str(entry.get("sha256"))
        if float(scoring.get("beta", 0.0)) > 0 and NEIGHBORS_NAME not in files:
            raise _fail(root, "the scoring section blends co-occurrence but the bundle has no item neighbours",
                        retrain)
    if verify_checksum:
        for name, sha in files.items():
            actual = file_sha256(root / name)
            if actual != sha:
                raise _fail(
                    root,
                    f"sha256 of {name} is {actual} but the manifest says {sha}: "
                    "the file was modified or replaced after export",
                    retrain,
                )
    return ModelBundle(
        path=root,
        version=str(manifest["version"]),
        model_type=str(model.get("type", "unknown")),
        max_seq_len=max_seq_len,
        n_candidates=n_candidates,
        item_vocab=vocab,
        onnx_sha256=expected_sha,
        popular_items=tuple(str(v) for v in manifest.get("popular_items", [])),
        manifest=manifest,
        state_size=state_size,
        recent_len=recent_len,
    )
