"""What the model sees of a user's window: the one definition shared by training, offline evaluation, the replay
and the job.

The window (:class:`operators.state.UserState`) holds the user's most recent interactions in event-time
order (ties keep arrival order), bounded by ``history_len``, repeats included (a view, a click and a purchase
of one item are three entries). The model's input sequence is the window's items mapped to a bundle's indices,
oldest first, **each item once, at its first occurrence**, items unknown to the model dropped
(:func:`model_sequence`): next-item models are trained on exactly that (:func:`model_export.data.first_interactions`
calls the same :func:`first_occurrences`). An event whose item is already in the window therefore does not
advance a recurrent model (:func:`advances_model`). The exclusion rule (:func:`excluded_items`): no item of the
window may be recommended, nor an item the user purchased (also after it left the window); with
``reshow_viewed`` (re-ranking knob ``viewed_penalty``) an item the window holds only views of stays a candidate
(the re-ranker takes a penalty off its score). Offline evaluation masks the same items (LOO histories carry no
event types: every item of the history, as the job's default rule).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["ModelInput", "model_input", "model_sequence", "first_occurrences", "excluded_items", "viewed_only",
           "advances_model", "left_pad_row", "VIEW_CODE"]


def left_pad_row(values: np.ndarray, length: int) -> np.ndarray:
    """The last ``length`` values, left-padded with 0: ``int64 [length]``."""
    out = np.zeros(length, dtype=np.int64)
    tail = values[-length:]
    if tail.size:
        out[length - tail.size :] = tail
    return out


def first_occurrences(indices: np.ndarray) -> np.ndarray:
    """Positions (ascending) of the first occurrence of each distinct non-zero value of ``indices``."""
    indices = np.asarray(indices)
    known = np.flatnonzero(indices != 0)
    if known.size < 2:
        return known
    _, first = np.unique(indices[known], return_index=True)
    if first.size == known.size:
        return known
    return known[np.sort(first)]


def model_sequence(indices: np.ndarray) -> np.ndarray:
    """Window item indices (oldest first, 0 = unknown) -> the model's input sequence ``int64 [k]``."""
    indices = np.asarray(indices, dtype=np.int64)
    return indices[first_occurrences(indices)]


VIEW_CODE = 0
"""Type code of a view (``EVENT_TYPES[0]``)."""


def viewed_only(indices: np.ndarray, types: np.ndarray) -> np.ndarray:
    """The distinct known items of the window that it holds only views of."""
    viewed = indices[(types == VIEW_CODE) & (indices != 0)]
    if not viewed.size:
        return viewed.astype(np.int64)
    return np.setdiff1d(viewed, indices[types != VIEW_CODE]).astype(np.int64)


def excluded_items(indices: Iterable[int] | np.ndarray, types: np.ndarray | None = None,
                   purchased: np.ndarray | None = None, *, reshow_viewed: bool = False) -> np.ndarray:
    """The exclusion rule: the item indices that may not be recommended to a user whose window (or training
    history) holds ``indices`` (0, padding or unknown, is masked by the model anyway): every one of them, except
    with ``reshow_viewed`` the items the window (``types``: its type codes) holds only views of; and every item
    of ``purchased`` (indices of the user's remembered purchases)."""
    out = np.asarray(indices if isinstance(indices, np.ndarray) else np.fromiter(indices, dtype=np.int64),
                     dtype=np.int64)
    if reshow_viewed and types is not None and out.size:
        out = out[~np.isin(out, viewed_only(out, types))]
    if purchased is not None and purchased.size:
        out = np.concatenate((out, purchased.astype(np.int64)))
    return out


def advances_model(indices: np.ndarray, item: int) -> bool:
    """Whether the event of item ``item`` (just added to the window ``indices``) is a new entry of the model's
    input sequence, i.e. the item is known and occurs in the window only once."""
    return bool(item) and int(np.count_nonzero(indices == item)) == 1


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One user's model input, built from the window's item indices (0 = unknown to the model)."""

    sequence: np.ndarray
    """:func:`model_sequence` of the window, unpadded ``int64 [k]``: the full-sequence graph reads its last ``L``."""
    exclude: np.ndarray
    """:func:`excluded_items` of the window ``int64 [n]``."""
    newest: int
    """Index of the newest interaction's item (0 when the model does not know it)."""
    reshown: np.ndarray | None = None
    """With ``reshow_viewed``: the viewed-only items, candidates the re-ranker penalises (else None)."""

    @property
    def cold(self) -> bool:
        """No item the model knows: the popularity fallback serves the user."""
        return self.sequence.size == 0


def model_input(indices: np.ndarray, types: np.ndarray | None = None, purchased: np.ndarray | None = None, *,
                reshow_viewed: bool = False) -> ModelInput:
    """Window item indices (oldest first, the newest interaction last) -> what the model sees; ``types`` and
    ``purchased`` feed the exclusion rule (:func:`excluded_items`)."""
    indices = np.asarray(indices, dtype=np.int64)
    reshow = reshow_viewed and types is not None
    return ModelInput(model_sequence(indices), excluded_items(indices, types, purchased, reshow_viewed=reshow),
                      int(indices[-1]) if indices.size else 0, viewed_only(indices, types) if reshow else None)
