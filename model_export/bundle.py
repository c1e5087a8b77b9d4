"""Writing model bundles; the contract itself (names, layout, reader) lives in :mod:`operators.bundle`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from operators.bundle import (
    BUNDLE_FORMAT,
    INPUT_EXCLUDE,
    INPUT_ITEM,
    INPUT_ITEM_VEC,
    INPUT_ITEM_VECS,
    INPUT_NAME,
    INPUT_RECENT,
    INPUT_STATE,
    MANIFEST_NAME,
    ONNX_NAME,
    OUTPUT_ITEMS,
    OUTPUT_SCORES,
    OUTPUT_STATE,
    OUTPUT_STEP_STATE,
    PAD_INDEX,
    STEP_ONNX_NAME,
    file_sha256,
)

__all__ = ["write_manifest"]


def write_manifest(
    root: Path,
    *,
    version: str,
    model: dict[str, Any],
    item_vocab: list[str],
    n_candidates: int,
    opset: int,
    training: dict[str, Any],
    popular_items: list[str],
    state_size: int = 0,
    recent_len: int = 0,
    item_embeddings: dict[str, Any] | None = None,
    item_neighbors: dict[str, Any] | None = None,
    scoring: dict[str, Any] | None = None,
) -> Path:
    """Write ``manifest.json`` next to the exported graphs (whose sha256 it records)."""
    seq = ["batch", model["max_seq_len"]]
    outputs = {
        OUTPUT_SCORES: {"dtype": "float32", "shape": ["batch", n_candidates]},
        OUTPUT_ITEMS: {"dtype": "int64", "shape": ["batch", n_candidates]},
    }
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "version": version,
        "model": {**model, "n_items": len(item_vocab)},
        "onnx": {
            "file": ONNX_NAME,
            "sha256": file_sha256(root / ONNX_NAME),
            "opset": opset,
            "n_candidates": n_candidates,
            "inputs": {INPUT_NAME: {"dtype": "int64", "shape": seq},
                       INPUT_EXCLUDE: {"dtype": "int64", "shape": ["batch", "n_excluded"]}},
            "outputs": {**outputs, **({OUTPUT_STATE: {"dtype": "float32", "shape": ["batch", state_size]}}
                                      if state_size else {})},
            "padding_index": PAD_INDEX,
        },
        "item_vocab": item_vocab,
        "popular_items": popular_items,
        "training": training,
    }
    if scoring:  # format 3: the graphs advance the state; operators.scoring scores from the item table
        onnx = manifest["onnx"]
        onnx["inputs"] = {INPUT_NAME: {"dtype": "int64", "shape": seq},
                          INPUT_ITEM_VECS: {"dtype": "float32", "shape": [*seq, scoring["table"]["dim"]]}}
        onnx["outputs"] = {OUTPUT_STATE: {"dtype": "float32", "shape": ["batch", state_size]}}
        manifest["scoring"] = scoring
    if item_embeddings:
        manifest["item_embeddings"] = item_embeddings
    if item_neighbors:
        manifest["item_neighbors"] = item_neighbors
    if state_size:
        state_in = {"dtype": "float32", "shape": ["batch", state_size]}
        if scoring:  # format 3: the item's embedding in, the state out
            inputs = {INPUT_STATE: state_in, INPUT_ITEM: {"dtype": "int64", "shape": ["batch"]},
                      INPUT_ITEM_VEC: {"dtype": "float32", "shape": ["batch", scoring["table"]["dim"]]}}
            step_outputs = {OUTPUT_STEP_STATE: state_in}
        else:
            inputs = {INPUT_STATE: state_in, INPUT_ITEM: {"dtype": "int64", "shape": ["batch"]},
                      INPUT_RECENT: {"dtype": "int64", "shape": ["batch", recent_len]},
                      INPUT_EXCLUDE: {"dtype": "int64", "shape": ["batch", "n_excluded"]}}
            step_outputs = {**outputs, OUTPUT_STEP_STATE: state_in}
        manifest["step"] = {"file": STEP_ONNX_NAME, "sha256": file_sha256(root / STEP_ONNX_NAME),
                            "state_size": state_size, "recent_len": recent_len, "inputs": inputs,
                            "outputs": step_outputs}
    path = root / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=1, sort_keys=False), "utf-8")
    return path
