"""What the model sees of a user's window: the one definition shared by serving, replay and evaluation.

The window (:class:`operators.state.UserState`) holds the user's most recent interactions in event-time
order (ties keep arrival order), bounded by ``history_len``. Its items, mapped to a bundle's indices
(unknown items dropped), oldest first, are the model's input sequence; every item of the window is excluded
from the user's list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ModelInput", "model_input", "left_pad_row"]


def left_pad_row(values: np.ndarray, length: int) -> np.ndarray:
    """The last ``length`` values, left-padded with 0: ``int64 [length]``."""
    out = np.zeros(length, dtype=np.int64)
    tail = values[-length:]
    if tail.size:
        out[length - tail.size :] = tail
    return out


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One user's model input, built from the window's item indices (0 = unknown to the model)."""

    sequence: np.ndarray
    """Known items, oldest first, unpadded ``int64 [k]``: the full-sequence graph reads its last ``L``."""
    exclude: np.ndarray
    """Item indices that may not be recommended ``int64 [n]``: every item of the window (the exclusion rule)."""
    newest: int
    """Index of the newest interaction's item (0 when the model does not know it)."""

    @property
    def cold(self) -> bool:
        """No item the model knows: the popularity fallback serves the user."""
        return self.sequence.size == 0


def model_input(indices: np.ndarray) -> ModelInput:
    """Window item indices (oldest first, the newest interaction last) -> what the model sees."""
    indices = np.asarray(indices, dtype=np.int64)
    return ModelInput(indices[indices != 0], indices, int(indices[-1]) if indices.size else 0)
