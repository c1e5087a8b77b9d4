"""ONNX inference over a verified model bundle (onnxruntime; CUDA first where it loads, else CPU).

:class:`OnnxModel` runs the bundle's graphs: the full-sequence graph (any model; for recurrent models it also
returns the serving state, which is how state is rebuilt) and the one-event step graph of recurrent models.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from operators.bundle import (
    INPUT_EXCLUDE,
    INPUT_ITEM,
    INPUT_ITEM_VEC,
    INPUT_ITEM_VECS,
    INPUT_NAME,
    INPUT_RECENT,
    INPUT_STATE,
    OUTPUT_ITEMS,
    OUTPUT_SCORES,
    OUTPUT_STATE,
    OUTPUT_STEP_STATE,
    ModelBundle,
)
from operators.errors import BundleError

__all__ = ["OnnxModel", "DEFAULT_PROVIDERS", "import_onnxruntime"]

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")


def import_onnxruntime():  # noqa: ANN201 - the module
    """Import onnxruntime (in a regular thread the first time: :mod:`operators.imports`)."""
    from operators.imports import import_in_regular_thread

    return import_in_regular_thread("onnxruntime")


def _io_error(bundle: ModelBundle, name: str, got: tuple[list[str], list[str]], want: tuple[list, list]) -> BundleError:
    return BundleError(
        f"model bundle {bundle.path}: {name} has inputs={got[0]} outputs={got[1]}, expected inputs={want[0]} "
        f"outputs={want[1]}. Re-export the model with this version of streamrec (`streamrec train`)."
    )


class OnnxModel:
    """The bundle's graphs in onnxruntime sessions. Create in ``open()`` of a Flink function, never in
    ``__init__`` (functions are pickled); one instance is safe to share between threads."""

    def __init__(
        self,
        bundle: ModelBundle,
        *,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        intra_op_threads: int = 1,
        scorer_cfg=None,  # noqa: ANN001 - operators.scoring.ScorerConfig
    ) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        available = set(ort.get_available_providers())
        wanted = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        self.bundle = bundle

        def session(path, inputs: list[str], outputs: list[str]):  # noqa: ANN001, ANN202
            try:
                sess = ort.InferenceSession(str(path), options, providers=wanted)
            except Exception as exc:  # onnxruntime raises its own untyped errors
                msg = f"model bundle {bundle.path}: onnxruntime cannot load {path.name}: {exc}"
                raise BundleError(msg) from exc
            got = ([i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()])
            if got != (inputs, outputs):
                raise _io_error(bundle, path.name, got, (inputs, outputs))
            return sess

        self.scorer = None
        self.step = None
        if bundle.external_scoring:  # format 3: the graphs advance the state, operators.scoring scores
            from operators.scoring import Scorer, ScorerConfig

            scoring = bundle.manifest["scoring"]
            neighbors = bundle.item_neighbors() if float(scoring.get("beta", 0.0)) > 0 else None
            self.scorer = Scorer(
                bundle.item_table(), bundle.n_candidates,
                neighbors=None if neighbors is None else neighbors[0],
                weights=None if neighbors is None else neighbors[1],
                decay=scoring.get("decay"), beta=float(scoring.get("beta", 0.0)), index_path=bundle.index_path,
                cfg=scorer_cfg or ScorerConfig())
            self._table = self.scorer.table16
            self._dim = self.scorer.dim
            self.full = session(bundle.onnx_path, [INPUT_NAME, INPUT_ITEM_VECS], [OUTPUT_STATE])
            self.step = session(bundle.step_path, [INPUT_STATE, INPUT_ITEM, INPUT_ITEM_VEC], [OUTPUT_STEP_STATE])
        else:
            full_out = [OUTPUT_SCORES, OUTPUT_ITEMS, *([OUTPUT_STATE] if bundle.recurrent else [])]
            self.full = session(bundle.onnx_path, [INPUT_NAME, INPUT_EXCLUDE], full_out)
            if bundle.step_path is not None:
                self.step = session(bundle.step_path, [INPUT_STATE, INPUT_ITEM, INPUT_RECENT, INPUT_EXCLUDE],
                                    [OUTPUT_SCORES, OUTPUT_ITEMS, OUTPUT_STEP_STATE])
        self.active_provider: str = self.full.get_providers()[0]
        self.vocab = np.asarray(("<pad>",) + bundle.item_vocab, dtype=object)
        log.info(
            "onnx sessions ready: bundle=%s version=%s provider=%s items=%d recurrent=%s",
            bundle.path, bundle.version, self.active_provider, bundle.n_items, bundle.recurrent,
        )

    def run_full(
        self, item_seq: np.ndarray, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``item_seq [B, L]``, ``exclude [B, X]`` -> (scores [B, C], item indices [B, C], state [B, S] or None)."""
        if self.scorer is not None:
            vecs = self._table[item_seq].astype(np.float32)
            (state,) = self.full.run(None, {INPUT_NAME: item_seq, INPUT_ITEM_VECS: vecs})
            scores, items = self.scorer.score(state[:, -self._dim:], item_seq, exclude)
            return scores, items, state
        out = self.full.run(None, {INPUT_NAME: item_seq, INPUT_EXCLUDE: exclude})
        return out[0], out[1], (out[2] if len(out) > 2 else None)

    def run_step(
        self, state: np.ndarray, item: np.ndarray, recent: np.ndarray, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One event per row: -> (scores [B, C], item indices [B, C], new state [B, S])."""
        if self.step is None:
            msg = f"model {self.bundle.version} is not recurrent: it has no step graph"
            raise BundleError(msg)
        if self.scorer is not None:
            new_state = self.advance(state, item)
            scores, items = self.scorer.score(new_state[:, -self._dim:], recent, exclude)
            return scores, items, new_state
        scores, items, new_state = self.step.run(
            None, {INPUT_STATE: state, INPUT_ITEM: item, INPUT_RECENT: recent, INPUT_EXCLUDE: exclude}
        )
        return scores, items, new_state

    def advance(self, state: np.ndarray, item: np.ndarray) -> np.ndarray:
        """Format 3 only: the step graph alone, ``state [B, S], item [B] -> state_out [B, S]`` (no scoring)."""
        vec = self._table[item].astype(np.float32)
        (new_state,) = self.step.run(None, {INPUT_STATE: state, INPUT_ITEM: item, INPUT_ITEM_VEC: vec})
        return new_state
