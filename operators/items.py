"""Item identity independent of any model: 64-bit keys of item ids, and a bundle's key -> model index map.

Per-user state stores item *keys* (not model indices), so a user's window survives a model change: a new
bundle maps the same keys to its own indices, and items it does not know map to padding (0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from operators.errors import BundleError

__all__ = ["item_key", "ItemIndex"]


def item_key(item_id: str) -> int:
    """Stable unsigned 64-bit key of an item id (blake2b of its UTF-8 bytes): the same in every process."""
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest(), "little")


class ItemIndex:
    """Maps item keys to a bundle's 1-based item indices (0 = unknown / padding), vectorised."""

    def __init__(self, vocab: Sequence[str]) -> None:
        keys = np.fromiter((item_key(v) for v in vocab), dtype=np.uint64, count=len(vocab))
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._index = (order + 1).astype(np.int64)
        if len(self._keys) > 1 and (self._keys[1:] == self._keys[:-1]).any():
            msg = "two item ids of the vocabulary share a 64-bit key; rename one of them"
            raise BundleError(msg)
        self._by_key = dict(zip(keys.tolist(), range(1, len(vocab) + 1), strict=True))

    def __len__(self) -> int:
        return len(self._keys)

    def index(self, key: int) -> int:
        """One key -> its index, 0 when unknown."""
        return self._by_key.get(key, 0)

    def lookup(self, keys: np.ndarray | Iterable[int]) -> np.ndarray:
        """Keys ``uint64 [N]`` -> indices ``int64 [N]`` (0 for unknown items)."""
        keys = np.asarray(keys, dtype=np.uint64)
        if not len(self._keys) or not keys.size:
            return np.zeros(keys.shape, dtype=np.int64)
        pos = np.searchsorted(self._keys, keys)
        np.minimum(pos, len(self._keys) - 1, out=pos)
        return np.where(self._keys[pos] == keys, self._index[pos], 0)
