"""ONNX export with a dynamic batch axis, a torch<->onnxruntime parity check, and bundle writing."""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model_export.bundle import (
    INPUT_NAME,
    ONNX_NAME,
    OUTPUT_ITEMS,
    OUTPUT_SCORES,
    ModelBundle,
    load_bundle,
    write_manifest,
)
from model_export.model import ServingHead
from operators.errors import StreamrecError

__all__ = ["ExportSpec", "ExportParityError", "export_bundle", "check_parity", "load_serving_head"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSpec:
    """The ONNX contract, declared once."""

    opset: int = 17
    input_name: str = INPUT_NAME
    output_names: tuple[str, str] = (OUTPUT_SCORES, OUTPUT_ITEMS)
    atol: float = 1e-4
    rtol: float = 1e-4
    parity_batches: tuple[int, ...] = (1, 7, 32)


class ExportParityError(StreamrecError):
    """The exported graph disagrees with torch; ``mismatches`` lists every disagreement."""

    def __init__(self, mismatches: list[str]) -> None:
        super().__init__("ONNX parity check failed:\n  - " + "\n  - ".join(mismatches))
        self.mismatches = mismatches


def check_parity(head: ServingHead, onnx_path: Path, inputs: list[np.ndarray], spec: ExportSpec) -> dict:
    """Run torch and onnxruntime on the same inputs; raise one error listing every mismatch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    mismatches: list[str] = []
    names = [o.name for o in session.get_outputs()]
    if names != list(spec.output_names):
        mismatches.append(f"output names {names} != expected {list(spec.output_names)}")
    if [i.name for i in session.get_inputs()] != [spec.input_name]:
        mismatches.append(f"input names {[i.name for i in session.get_inputs()]} != [{spec.input_name!r}]")
    max_diff = 0.0
    head.eval()
    for batch in inputs:
        with torch.no_grad():
            full_t = head.full_scores(torch.from_numpy(batch))  # [B, V + 1], the torch reference, computed once
            ref_scores = torch.topk(full_t + head.penalty, head.n_candidates, dim=-1).values.numpy()
        full = full_t.numpy()
        got = dict(zip(names, session.run(None, {spec.input_name: batch}), strict=True))
        scores = got.get(OUTPUT_SCORES)
        items = got.get(OUTPUT_ITEMS)
        if scores is None or items is None:
            break
        if scores.shape != ref_scores.shape or items.shape != ref_scores.shape:
            mismatches.append(
                f"batch {batch.shape[0]}: shapes scores={scores.shape} items={items.shape}, "
                f"torch {ref_scores.shape}"
            )
            continue
        diff = float(np.abs(scores - ref_scores).max())
        max_diff = max(max_diff, diff)
        if not np.allclose(scores, ref_scores, atol=spec.atol, rtol=spec.rtol):
            mismatches.append(f"batch {batch.shape[0]}: max |score diff| {diff:.3g} > atol {spec.atol}")
        # The items must carry the scores onnxruntime claims (ties may order differently).
        rescored = np.take_along_axis(full, items, axis=1)
        if not np.allclose(rescored, scores, atol=spec.atol, rtol=spec.rtol):
            mismatches.append(f"batch {batch.shape[0]}: returned items do not carry their scores")
        if (items == 0).any():
            mismatches.append(f"batch {batch.shape[0]}: padding index 0 among candidates")
    if mismatches:
        raise ExportParityError(mismatches)
    return {"max_abs_diff": max_diff, "batches": [int(b.shape[0]) for b in inputs]}


def _export(head: ServingHead, example: torch.Tensor, onnx_path: Path, spec: ExportSpec) -> None:
    torch.onnx.export(
        head,
        (example,),
        str(onnx_path),
        input_names=[spec.input_name],
        output_names=list(spec.output_names),
        dynamic_axes={spec.input_name: {0: "batch"}, OUTPUT_SCORES: {0: "batch"}, OUTPUT_ITEMS: {0: "batch"}},
        opset_version=spec.opset,
        dynamo=False,
    )


def export_bundle(
    model: nn.Module,
    out_dir: str | Path,
    *,
    version: str,
    item_vocab: list[str],
    n_candidates: int,
    training: dict[str, Any],
    popular_items: list[str],
    sample_inputs: list[np.ndarray],
    spec: ExportSpec | None = None,
    cooc: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    beta: float = 0.0,
    model_info: dict[str, Any] | None = None,
) -> ModelBundle:
    """Export ``model`` as a verified bundle in ``out_dir`` (written atomically: temp dir, then rename)."""
    spec = spec or ExportSpec()
    out_dir = Path(out_dir)
    n_candidates = min(n_candidates, model.cfg.n_items)
    head = ServingHead(model, n_candidates, cooc=cooc, beta=beta).eval()
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        onnx_path = tmp / ONNX_NAME
        example = torch.from_numpy(sample_inputs[0][:1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            _export(head, example, onnx_path, spec)
        parity = check_parity(head, onnx_path, sample_inputs, spec)

        log.info("onnx parity ok: max |diff| %.3g", parity["max_abs_diff"])
        cfg = model.cfg
        write_manifest(
            tmp,
            version=version,
            model={
                "type": cfg.arch if head.beta == 0 else f"{cfg.arch}+cooccurrence",
                "arch": cfg.arch,
                "max_seq_len": cfg.max_seq_len,
                "hidden": cfg.hidden,
                "n_blocks": cfg.n_blocks,
                "n_heads": cfg.n_heads,
                "blend_beta": head.beta,
                **(model_info or {}),
            },
            item_vocab=item_vocab,
            n_candidates=n_candidates,
            opset=spec.opset,
            training={**training, "parity": parity},
            popular_items=popular_items,
        )
        torch.save(
            {"state_dict": model.state_dict(), "config": asdict(cfg), "cooc": cooc if head.beta > 0 else None,
             "beta": head.beta, "n_candidates": n_candidates},
            tmp / "model.pt",
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp.chmod(0o755)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return load_bundle(out_dir)


def load_serving_head(bundle: ModelBundle) -> ServingHead:
    """Rebuild the exported torch head from a bundle's ``model.pt`` (for parity checks and analysis)."""
    from model_export.model import SASRecConfig, build_model

    saved = torch.load(bundle.path / "model.pt", weights_only=False)
    model = build_model(SASRecConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return ServingHead(model, saved["n_candidates"], cooc=saved["cooc"], beta=saved["beta"]).eval()
