"""ONNX export with a dynamic batch axis, torch<->onnxruntime parity checks, and bundle writing.

Every model exports the full-sequence graph (``model.onnx``); recurrent models also export the one-event
graph (``step.onnx``), checked against the full-sequence graph step by step.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model_export.bundle import write_manifest
from model_export.model import NEG, RECURRENT_ARCHS, EncoderHead, EncoderStepHead, ServingHead, StepHead
from operators.bundle import (
    EMBEDDINGS_NAME,
    INDEX_NAME,
    INPUT_EXCLUDE,
    INPUT_ITEM,
    INPUT_ITEM_VEC,
    INPUT_ITEM_VECS,
    INPUT_NAME,
    INPUT_RECENT,
    INPUT_STATE,
    NEIGHBORS_NAME,
    ONNX_NAME,
    OUTPUT_ITEMS,
    OUTPUT_SCORES,
    OUTPUT_STATE,
    OUTPUT_STEP_STATE,
    STEP_ONNX_NAME,
    TABLE_NAME,
    ModelBundle,
    file_sha256,
    load_bundle,
)
from operators.errors import StreamrecError

__all__ = [
    "ExportSpec",
    "ExportParityError",
    "export_bundle",
    "check_parity",
    "check_step_parity",
    "load_serving_head",
    "exclusion_matrix",
    "export_baseline_bundle",
    "write_item_embeddings",
    "add_item_embeddings",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSpec:
    """The ONNX contract, declared once."""

    opset: int = 17
    input_names: tuple[str, str] = (INPUT_NAME, INPUT_EXCLUDE)
    output_names: tuple[str, str] = (OUTPUT_SCORES, OUTPUT_ITEMS)
    step_input_names: tuple[str, ...] = (INPUT_STATE, INPUT_ITEM, INPUT_RECENT, INPUT_EXCLUDE)
    atol: float = 1e-4
    rtol: float = 1e-4
    parity_batches: tuple[int, ...] = (1, 7, 32)


class ExportParityError(StreamrecError):
    """The exported graph disagrees with torch; ``mismatches`` lists every disagreement."""

    def __init__(self, mismatches: list[str]) -> None:
        super().__init__("ONNX parity check failed:\n  - " + "\n  - ".join(mismatches))
        self.mismatches = mismatches


def exclusion_matrix(item_seq: np.ndarray) -> np.ndarray:
    """The served exclusion rule on left-padded rows: every item of the row (0 = padding, harmless)."""
    return np.ascontiguousarray(item_seq, dtype=np.int64)


def _session(path: Path):  # noqa: ANN202
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _compare(
    tag: str, scores: np.ndarray, items: np.ndarray, full: np.ndarray, ref: np.ndarray, spec: ExportSpec
) -> tuple[list[str], float]:
    """Scores close to the reference top-C, items carrying their scores, never padding."""
    if scores.shape != ref.shape or items.shape != ref.shape:
        return [f"{tag}: shapes scores={scores.shape} items={items.shape}, reference {ref.shape}"], float("inf")
    mismatches = []
    diff = float(np.abs(scores - ref).max())
    if not np.allclose(scores, ref, atol=spec.atol, rtol=spec.rtol):
        mismatches.append(f"{tag}: max |score diff| {diff:.3g} > atol {spec.atol}")
    # The items must carry the scores onnxruntime claims (ties may order differently).
    if not np.allclose(np.take_along_axis(full, items, axis=1), scores, atol=spec.atol, rtol=spec.rtol):
        mismatches.append(f"{tag}: returned items do not carry their scores")
    if ((items == 0) & (scores > NEG / 2)).any():  # masked candidates (small catalogs) may tie with padding
        mismatches.append(f"{tag}: padding index 0 among the unmasked candidates")
    return mismatches, diff


def _reference(head: ServingHead, item_seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torch: masked full-catalog scores [B, V + 1] and the top-C scores, computed once."""
    with torch.no_grad():
        seq = torch.from_numpy(item_seq)
        full = (head.full_scores(seq) + head.penalty).scatter(1, seq, -1e9)
        ref = torch.topk(full, head.n_candidates, dim=-1).values
    return full.numpy(), ref.numpy()


def check_parity(head: ServingHead, onnx_path: Path, inputs: list[np.ndarray], spec: ExportSpec) -> dict:
    """Run torch and onnxruntime on the same inputs; raise one error listing every mismatch."""
    session = _session(onnx_path)
    mismatches: list[str] = []
    names = [o.name for o in session.get_outputs()]
    expected_out = [*spec.output_names, *([OUTPUT_STATE] if head.recurrent else [])]
    if names != expected_out:
        mismatches.append(f"output names {names} != expected {expected_out}")
    if [i.name for i in session.get_inputs()] != list(spec.input_names):
        mismatches.append(f"input names {[i.name for i in session.get_inputs()]} != {list(spec.input_names)}")
    max_diff = 0.0
    head.eval()
    for batch in inputs:
        if mismatches and not max_diff:
            break
        got = dict(zip(names, session.run(None, {INPUT_NAME: batch, INPUT_EXCLUDE: exclusion_matrix(batch)}),
                       strict=True))
        full, ref = _reference(head, batch)
        found, diff = _compare(f"batch {batch.shape[0]}", got[OUTPUT_SCORES], got[OUTPUT_ITEMS], full, ref, spec)
        mismatches += found
        max_diff = max(max_diff, diff)
    if mismatches:
        raise ExportParityError(mismatches)
    return {"max_abs_diff": max_diff, "batches": [int(b.shape[0]) for b in inputs]}


def check_step_parity(
    head: ServingHead, onnx_path: Path, step_path: Path, inputs: list[np.ndarray], spec: ExportSpec
) -> dict:
    """Advance the step graph one event at a time from an empty state over each row and compare, after every
    event, its scores and state with the full-sequence graph on the same prefix."""
    full_session, step_session = _session(onnx_path), _session(step_path)
    if [i.name for i in step_session.get_inputs()] != list(spec.step_input_names):
        raise ExportParityError([f"step inputs {[i.name for i in step_session.get_inputs()]} != "
                                 f"{list(spec.step_input_names)}"])

    def run_step(state, item, recent, exclude):  # noqa: ANN001, ANN202
        return step_session.run(None, {INPUT_STATE: state, INPUT_ITEM: item, INPUT_RECENT: recent,
                                       INPUT_EXCLUDE: exclude})

    def run_full(seq, exclude):  # noqa: ANN001, ANN202
        return full_session.run(None, {INPUT_NAME: seq, INPUT_EXCLUDE: exclude})

    return _step_parity(head, run_full, run_step, inputs, spec)


def _step_parity(head: ServingHead, run_full, run_step, inputs: list[np.ndarray], spec: ExportSpec) -> dict:  # noqa: ANN001
    mismatches: list[str] = []
    max_diff = max_state_diff = 0.0
    recent_len = head.recent_len
    for batch in inputs:
        length = batch.shape[1]
        state = np.zeros((batch.shape[0], head.model.state_size), dtype=np.float32)
        for t in range(length):
            prefix = np.zeros_like(batch)
            prefix[:, length - t - 1 :] = batch[:, : t + 1]
            recent = prefix[:, -recent_len:]
            scores, items, state = run_step(state, batch[:, t], recent, exclusion_matrix(prefix))
            if not (prefix != 0).any(axis=1).all():
                continue  # rows still all padding: nothing to compare yet
            f_scores, _, f_state = run_full(prefix, exclusion_matrix(prefix))
            full, _ = _reference(head, prefix)
            found, diff = _compare(f"step {t} of batch {batch.shape[0]}", scores, items, full, f_scores, spec)
            state_diff = float(np.abs(state - f_state).max())
            if state_diff > spec.atol * 10:
                found.append(f"step {t} of batch {batch.shape[0]}: state differs by {state_diff:.3g}")
            mismatches += found[:1]
            max_diff, max_state_diff = max(max_diff, diff), max(max_state_diff, state_diff)
    if mismatches:
        raise ExportParityError(mismatches[:20])
    return {"max_abs_diff": max_diff, "max_state_diff": max_state_diff, "batches": [int(b.shape[0]) for b in inputs]}


def check_served_parity(head: ServingHead, bundle: ModelBundle, inputs: list[np.ndarray], short: list[np.ndarray],
                        spec: ExportSpec) -> dict:
    """A format-3 bundle as the job serves it (:class:`operators.inference.OnnxModel`: the graphs, then
    :mod:`operators.scoring`) against the torch head: the full-sequence path on ``inputs``, then the step path
    event by event on ``short`` (:func:`check_step_parity`'s comparison)."""
    from operators.inference import OnnxModel
    from operators.scoring import ScorerConfig

    # the definition is checked with exact scoring; an ANN index is measured against it (recall), not held to it
    served = OnnxModel(bundle, providers=["CPUExecutionProvider"], scorer_cfg=ScorerConfig(exact_max_items=2**62))
    mismatches: list[str] = []
    max_diff = max_state_diff = 0.0
    for batch in inputs:
        scores, items, state = served.run_full(batch, exclusion_matrix(batch))
        full, ref = _reference(head, batch)
        found, diff = _compare(f"batch {batch.shape[0]}", scores, items, full, ref, spec)
        with torch.no_grad():
            want = head.model.final_state(torch.from_numpy(batch)).numpy()
        state_diff = float(np.abs(state - want).max())
        if state_diff > spec.atol * 10:
            found.append(f"batch {batch.shape[0]}: state differs from torch by {state_diff:.3g}")
        mismatches += found
        max_diff, max_state_diff = max(max_diff, diff), max(max_state_diff, state_diff)
    if mismatches:
        raise ExportParityError(mismatches)
    step = _step_parity(head, served.run_full, served.run_step, short, spec)
    out = {"max_abs_diff": max_diff, "max_state_diff": max_state_diff,
           "batches": [int(b.shape[0]) for b in inputs], "step": step, "scoring": served.scorer.mode}
    if bundle.index_path is not None:
        out["ann_recall"] = ann_recall(served, bundle, inputs)
    return out


def ann_recall(exact, bundle: ModelBundle, inputs: list[np.ndarray]) -> dict:  # noqa: ANN001 - OnnxModel
    """Recall of the ANN path's top-C against exact scoring, on the rows of ``inputs`` (the same graphs)."""
    from operators.inference import OnnxModel

    ann = OnnxModel(bundle, providers=["CPUExecutionProvider"])
    hits = total = 0
    for batch in inputs:
        excl = exclusion_matrix(batch)
        _, e_items, _ = exact.run_full(batch, excl)
        _, a_items, _ = ann.run_full(batch, excl)
        for e, a in zip(e_items.tolist(), a_items.tolist(), strict=True):
            hits += len(set(e) & set(a))
            total += len(e)
    return {"recall_at_candidates": hits / max(total, 1), "rows": sum(int(b.shape[0]) for b in inputs),
            "mode": ann.scorer.mode}


def _export(head: ServingHead, example: torch.Tensor, onnx_path: Path, spec: ExportSpec) -> None:
    outputs = [*spec.output_names, *([OUTPUT_STATE] if head.recurrent else [])]
    torch.onnx.export(
        head,
        (example, example),
        str(onnx_path),
        input_names=list(spec.input_names),
        output_names=outputs,
        dynamic_axes={INPUT_NAME: {0: "batch"}, INPUT_EXCLUDE: {0: "batch", 1: "n_excluded"},
                      **{name: {0: "batch"} for name in outputs}},
        opset_version=spec.opset,
        dynamo=False,
    )


def _export_step(head: ServingHead, step_path: Path, spec: ExportSpec) -> None:
    step = StepHead(head).eval()
    state = torch.zeros((1, head.model.state_size))
    item = torch.ones((1,), dtype=torch.long)
    recent = torch.ones((1, head.recent_len), dtype=torch.long)
    exclude = torch.ones((1, 3), dtype=torch.long)
    torch.onnx.export(
        step,
        (state, item, recent, exclude),
        str(step_path),
        input_names=list(spec.step_input_names),
        output_names=[*spec.output_names, OUTPUT_STEP_STATE],
        dynamic_axes={INPUT_STATE: {0: "batch"}, INPUT_ITEM: {0: "batch"}, INPUT_RECENT: {0: "batch"},
                      INPUT_EXCLUDE: {0: "batch", 1: "n_excluded"}, OUTPUT_SCORES: {0: "batch"},
                      OUTPUT_ITEMS: {0: "batch"}, OUTPUT_STEP_STATE: {0: "batch"}},
        opset_version=spec.opset,
        dynamo=False,
    )


def _export_encoders(head: ServingHead, root: Path, spec: ExportSpec) -> None:
    """Format 3: ``model.onnx`` (item_seq, item_vecs -> state) and ``step.onnx`` (state, item, item_vec ->
    state_out), the item table outside both."""
    model = head.model
    d, length = model.cfg.hidden, model.cfg.max_seq_len
    seq = torch.ones((1, length), dtype=torch.long)
    torch.onnx.export(
        EncoderHead(model).eval(), (seq, torch.zeros((1, length, d))), str(root / ONNX_NAME),
        input_names=[INPUT_NAME, INPUT_ITEM_VECS], output_names=[OUTPUT_STATE],
        dynamic_axes={INPUT_NAME: {0: "batch"}, INPUT_ITEM_VECS: {0: "batch"}, OUTPUT_STATE: {0: "batch"}},
        opset_version=spec.opset, dynamo=False,
    )
    torch.onnx.export(
        EncoderStepHead(head).eval(),
        (torch.zeros((1, model.state_size)), torch.ones((1,), dtype=torch.long), torch.zeros((1, d))),
        str(root / STEP_ONNX_NAME),
        input_names=[INPUT_STATE, INPUT_ITEM, INPUT_ITEM_VEC], output_names=[OUTPUT_STEP_STATE],
        dynamic_axes={INPUT_STATE: {0: "batch"}, INPUT_ITEM: {0: "batch"}, INPUT_ITEM_VEC: {0: "batch"},
                      OUTPUT_STEP_STATE: {0: "batch"}},
        opset_version=spec.opset, dynamo=False,
    )


@contextmanager
def _quiet_tracer():  # noqa: ANN202 - a context manager
    """The tracer's notes on shapes and constant folding are not actionable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        yield


@contextmanager
def _atomic_dir(out_dir: Path):  # noqa: ANN202 - a context manager yielding the temporary directory
    """Write a bundle into a temporary sibling directory, then replace ``out_dir`` with it in one rename (a
    reader never sees half a bundle); on error nothing is left behind."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.chmod(0o755)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
    ann_index: bool | None = None,
) -> ModelBundle:
    """Export ``model`` as a verified bundle in ``out_dir`` (written atomically: temp dir, then rename).

    A recurrent model is exported in format 3 (:mod:`operators.bundle`): graphs that advance the state, the
    item table once (float16; the model's table is rounded to it first, so torch, the graphs and the scorer
    compute on the same numbers), scoring by :mod:`operators.scoring`; with ``ann_index`` (default: catalogs
    above :data:`operators.scoring.EXACT_MAX_ITEMS`) an ANN index over the table. Other models keep the
    scores inside the graph (format 2 layout)."""
    spec = spec or ExportSpec()
    out_dir = Path(out_dir)
    n_candidates = min(n_candidates, model.cfg.n_items)
    if model.cfg.arch in RECURRENT_ARCHS:
        return _export_recurrent(model, out_dir, version=version, item_vocab=item_vocab, n_candidates=n_candidates,
                                 training=training, popular_items=popular_items, sample_inputs=sample_inputs,
                                 spec=spec, cooc=cooc, beta=beta, model_info=model_info, ann_index=ann_index)
    head = ServingHead(model, n_candidates, cooc=cooc, beta=beta).eval()
    with _atomic_dir(out_dir) as tmp:
        onnx_path = tmp / ONNX_NAME
        example = torch.from_numpy(sample_inputs[0][:1])
        with _quiet_tracer():
            _export(head, example, onnx_path, spec)
        parity = check_parity(head, onnx_path, sample_inputs, spec)
        log.info("onnx parity ok: max |diff| %.3g", parity["max_abs_diff"])
        cfg = model.cfg
        emb_info = write_item_embeddings(tmp, model.item_emb.weight.detach().numpy())
        neighbors_info = write_item_neighbors(tmp, cooc[0], cooc[1]) if cooc is not None else None
        write_manifest(
            tmp,
            version=version,
            model=_model_doc(cfg, head.beta, model_info),
            item_vocab=item_vocab,
            n_candidates=n_candidates,
            opset=spec.opset,
            training={**training, "parity": parity},
            popular_items=popular_items,
            item_embeddings=emb_info,
            item_neighbors=neighbors_info,
        )
        torch.save(
            {"state_dict": model.state_dict(), "config": asdict(cfg), "cooc": cooc if head.beta > 0 else None,
             "beta": head.beta, "n_candidates": n_candidates},
            tmp / "model.pt",
        )
    return load_bundle(out_dir)


def _model_doc(cfg: Any, beta: float, extra: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest's ``model`` section (both formats)."""
    return {"type": cfg.arch if beta == 0 else f"{cfg.arch}+cooccurrence", "arch": cfg.arch,
            "max_seq_len": cfg.max_seq_len, "hidden": cfg.hidden, "n_blocks": cfg.n_blocks, "n_heads": cfg.n_heads,
            "blend_beta": beta, **(extra or {})}


def _export_recurrent(model: nn.Module, out_dir: Path, *, version: str, item_vocab: list[str], n_candidates: int,
                      training: dict[str, Any], popular_items: list[str], sample_inputs: list[np.ndarray],
                      spec: ExportSpec, cooc: tuple[np.ndarray, np.ndarray, np.ndarray] | None, beta: float,
                      model_info: dict[str, Any] | None, ann_index: bool | None) -> ModelBundle:
    from operators.scoring import EXACT_MAX_ITEMS, build_ann_index

    model = copy.deepcopy(model).eval()
    with torch.no_grad():  # the served table is float16: torch's reference computes on the same values
        model.item_emb.weight.copy_(model.item_emb.weight.half().float())
        model.item_emb.weight[0].zero_()
    head = ServingHead(model, n_candidates, cooc=cooc, beta=beta).eval()
    cfg = model.cfg
    with _atomic_dir(out_dir) as tmp:
        with _quiet_tracer():
            _export_encoders(head, tmp, spec)
        table = model.item_emb.weight.detach().numpy().astype(np.float16)
        np.save(tmp / TABLE_NAME, table, allow_pickle=False)
        scoring: dict[str, Any] = {
            "table": {"file": TABLE_NAME, "sha256": file_sha256(tmp / TABLE_NAME), "dtype": "float16",
                      "dim": int(table.shape[1])},
            "beta": head.beta,
            "decay": [float(x) for x in cooc[2]] if cooc is not None and head.beta > 0 else None,
        }
        if ann_index if ann_index is not None else len(item_vocab) > EXACT_MAX_ITEMS:
            info = build_ann_index(table, tmp / INDEX_NAME)
            scoring["index"] = {"file": INDEX_NAME, "sha256": file_sha256(tmp / INDEX_NAME), **info}
        neighbors_info = write_item_neighbors(tmp, cooc[0], cooc[1]) if cooc is not None else None
        with torch.no_grad():
            lam_re, lam_im, _ = zip(*(block.lru.coefficients() for block in model.blocks), strict=True)
            modulus = max(float(torch.sqrt(r**2 + i**2).max()) for r, i in zip(lam_re, lam_im, strict=True))
        model_doc = _model_doc(cfg, head.beta, {"state_size": model.state_size, "max_abs_lambda": modulus,
                                                "memory_beyond_window": modulus ** cfg.max_seq_len,
                                                **(model_info or {})})

        def manifest(parity: dict | None) -> None:
            write_manifest(tmp, version=version, model=model_doc, item_vocab=item_vocab, n_candidates=n_candidates,
                           opset=spec.opset, training={**training, **({"parity": parity} if parity else {})},
                           popular_items=popular_items, state_size=model.state_size, recent_len=head.recent_len,
                           item_neighbors=neighbors_info, scoring=scoring)

        manifest(None)
        short = [s[:, -min(s.shape[1], 24) :] for s in sample_inputs[:2]]
        short = [np.pad(s, ((0, 0), (cfg.max_seq_len - s.shape[1], 0))) for s in short]
        parity = check_served_parity(head, load_bundle(tmp), sample_inputs, short, spec)
        log.info("served parity ok (%s scoring): max |diff| %.3g, step %.3g", parity["scoring"],
                 parity["max_abs_diff"], parity["step"]["max_abs_diff"])
        manifest(parity)
        # the item table is in item_table.npy (exactly: it was rounded to float16 above)
        state = {k: v for k, v in model.state_dict().items() if k != "item_emb.weight"}
        torch.save({"state_dict": state, "config": asdict(cfg), "cooc": NEIGHBORS_NAME if head.beta > 0 else None,
                    "beta": head.beta, "n_candidates": n_candidates, "item_table": TABLE_NAME}, tmp / "model.pt")
    return load_bundle(out_dir)


def write_item_embeddings(root: Path, weights: np.ndarray) -> dict[str, Any]:
    """``item_embeddings.npy``: the item embedding table L2-normalised, float16 (row 0, padding, zero), for
    diversity and explanations at serving time (no torch there). Returns its manifest entry."""
    emb = np.asarray(weights, dtype=np.float32).copy()
    emb[0] = 0.0
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = np.where(norms > 0, emb / np.maximum(norms, 1e-12), 0.0).astype(np.float16)
    np.save(root / EMBEDDINGS_NAME, emb, allow_pickle=False)
    return {"file": EMBEDDINGS_NAME, "sha256": file_sha256(root / EMBEDDINGS_NAME), "dim": int(emb.shape[1]),
            "dtype": "float16", "normalized": True}


def write_item_neighbors(root: Path, neighbors: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
    """``item_neighbors.npz``: the served co-occurrence neighbour lists (int32 indices, float32 weights), for the
    cold-start path of users with one or two known items (no ONNX call needed). Returns its manifest entry."""
    np.savez(root / NEIGHBORS_NAME, neighbors=np.asarray(neighbors, dtype=np.int32),
             weights=np.asarray(weights, dtype=np.float32))
    return {"file": NEIGHBORS_NAME, "sha256": file_sha256(root / NEIGHBORS_NAME), "per_item": int(neighbors.shape[1])}


def add_item_embeddings(bundle_dir: str | Path) -> ModelBundle:
    """Add item embeddings to a bundle exported before they existed (from its ``model.pt``)."""
    import json

    from operators.bundle import MANIFEST_NAME

    root = Path(bundle_dir)
    saved = torch.load(root / "model.pt", weights_only=False)
    info = write_item_embeddings(root, saved["state_dict"]["item_emb.weight"].numpy())
    manifest = json.loads((root / MANIFEST_NAME).read_text("utf-8"))
    manifest["item_embeddings"] = info
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1), "utf-8")
    return load_bundle(root)


def load_serving_head(bundle: ModelBundle) -> ServingHead:
    """Rebuild the exported torch head from a bundle's ``model.pt`` (for parity checks and analysis)."""
    from model_export.model import SASRecConfig, build_model

    saved = torch.load(bundle.path / "model.pt", weights_only=False)
    model = build_model(SASRecConfig(**saved["config"]))
    state = saved["state_dict"]
    cooc = saved["cooc"]
    if "item_table" in saved:  # format 3: the item table and the neighbours are stored once, in their files
        state = {**state, "item_emb.weight": torch.from_numpy(bundle.item_table().astype(np.float32))}
        if cooc is not None:
            neighbors, weights = bundle.item_neighbors()
            cooc = (neighbors, weights, np.asarray(bundle.manifest["scoring"]["decay"], dtype=np.float32))
    model.load_state_dict(state)
    return ServingHead(model, saved["n_candidates"], cooc=cooc, beta=saved["beta"]).eval()


def export_baseline_bundle(
    head: nn.Module,
    out_dir: str | Path,
    *,
    version: str,
    kind: str,
    item_vocab: list[str],
    training: dict[str, Any],
    popular_items: list[str],
    sample_inputs: list[np.ndarray],
    spec: ExportSpec | None = None,
) -> ModelBundle:
    """Export a baseline head (:func:`model_export.baselines.popular_head`, ``cooccurrence_head``) as a bundle
    the job serves like any full-sequence model (parity-checked the same way)."""
    spec = spec or ExportSpec()
    out_dir = Path(out_dir)
    with _atomic_dir(out_dir) as tmp:
        onnx_path = tmp / ONNX_NAME
        with _quiet_tracer():
            _export(head, torch.from_numpy(sample_inputs[0][:1]), onnx_path, spec)  # type: ignore[arg-type]
        parity = check_parity(head, onnx_path, sample_inputs, spec)  # type: ignore[arg-type]
        write_manifest(tmp, version=version, model={"type": kind, "arch": kind, "max_seq_len": head.seq_len},
                       item_vocab=item_vocab, n_candidates=head.n_candidates, opset=spec.opset,
                       training={**training, "parity": parity}, popular_items=popular_items)
    return load_bundle(out_dir)
