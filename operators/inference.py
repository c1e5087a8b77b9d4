"""ONNX inference over a verified model bundle (onnxruntime; CUDA first where it loads, else CPU)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from model_export.bundle import INPUT_NAME, OUTPUT_ITEMS, OUTPUT_SCORES, PAD_INDEX, ModelBundle
from operators.errors import BundleError

__all__ = ["OnnxScorer", "encode_sequences", "DEFAULT_PROVIDERS"]

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")


def encode_sequences(
    histories: Sequence[Sequence[str]], index_of: dict[str, int], max_len: int
) -> np.ndarray:
    """Map item-id histories to a left-padded int64 matrix ``[B, max_len]`` (newest item last).

    Items outside the model's vocabulary are dropped (the model cannot represent them).
    """
    out = np.full((len(histories), max_len), PAD_INDEX, dtype=np.int64)
    for row, history in enumerate(histories):
        known = [index_of[item] for item in history if item in index_of][-max_len:]
        if known:
            out[row, max_len - len(known) :] = known
    return out


class OnnxScorer:
    """Runs a bundle's ONNX model. Create in ``open()`` of a Flink function, never in ``__init__``."""

    def __init__(
        self,
        bundle: ModelBundle,
        *,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        intra_op_threads: int = 1,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        available = set(ort.get_available_providers())
        wanted = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(bundle.onnx_path), options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            msg = f"model bundle {bundle.path}: onnxruntime cannot load {bundle.onnx_path.name}: {exc}"
            raise BundleError(msg) from exc
        names_in = [i.name for i in self.session.get_inputs()]
        names_out = [o.name for o in self.session.get_outputs()]
        if names_in != [INPUT_NAME] or sorted(names_out) != sorted([OUTPUT_SCORES, OUTPUT_ITEMS]):
            msg = (
                f"model bundle {bundle.path}: ONNX IO is inputs={names_in} outputs={names_out}, expected "
                f"inputs=[{INPUT_NAME!r}] outputs=[{OUTPUT_SCORES!r}, {OUTPUT_ITEMS!r}]. Re-export the model."
            )
            raise BundleError(msg)
        self.bundle = bundle
        self.active_provider: str = self.session.get_providers()[0]
        self._index_of = bundle.index_of()
        self._vocab = np.asarray(("<pad>",) + bundle.item_vocab, dtype=object)
        log.info(
            "onnx session ready: bundle=%s version=%s provider=%s items=%d",
            bundle.path, bundle.version, self.active_provider, bundle.n_items,
        )

    def encode(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """Histories of raw item ids -> model input."""
        return encode_sequences(histories, self._index_of, self.bundle.max_seq_len)

    def score_batch(self, item_seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model: ``[B, L]`` int64 -> (scores ``[B, C]``, raw item ids ``[B, C]``), best first."""
        scores, items = self.session.run([OUTPUT_SCORES, OUTPUT_ITEMS], {INPUT_NAME: item_seq})
        return scores, self._vocab[items]
