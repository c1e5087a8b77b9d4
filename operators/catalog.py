"""The item catalog: each item's categories, for user interests, the per-category cap and diversity metrics.

One loader for every reader (the job, the offline replay and its metrics): a MovieLens ``movies.csv``
(``movieId,title,genres`` with ``a|b|c`` genres; ``(no genres listed)`` is no category) or a CSV with the
columns ``item_id,categories`` (``a|b``), as ``streamrec generate --catalog`` writes for the generator's taste
clusters. Plain ``csv`` (no pandas on the serving side).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from operators.errors import ConfigError

__all__ = ["load_catalog", "catalog_path", "CategoryMatrix", "MAX_CATEGORIES"]

MAX_CATEGORIES = 1024
"""More distinct categories than this are refused (per-user affinity lives in keyed state)."""
_NONE = {"", "(no genres listed)"}


def load_catalog(path: str | Path | None) -> dict[str, frozenset[str]]:
    """``{item_id: categories}``; a directory means its ``movies.csv``; None or a missing file: an empty map.
    A file that exists but has neither column layout fails with what it expected."""
    if path is None:
        return {}
    path = Path(path)
    if path.is_dir():
        path = path / "movies.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        id_col = "movieId" if "movieId" in fields else "item_id" if "item_id" in fields else None
        cat_col = "genres" if "genres" in fields else "categories" if "categories" in fields else None
        if id_col is None or cat_col is None:
            msg = (f"catalog {path}: expected the columns movieId,genres (MovieLens movies.csv) or "
                   f"item_id,categories, got {fields}")
            raise ConfigError(msg)
        return {row[id_col]: frozenset(c for c in (row[cat_col] or "").split("|") if c not in _NONE)
                for row in reader if row.get(id_col)}


def catalog_path(catalog: str | Path | None, data: str | Path, fmt: str) -> str | None:
    """The catalog a command reads: ``catalog`` when given, else MovieLens's ``movies.csv`` beside the ratings
    (``fmt == "movielens"``), else None. One rule for training (item side information) and the replay
    (interests, diversity)."""
    if catalog:
        return str(Path(catalog).resolve())
    if fmt == "movielens":
        root = Path(data)
        found = (root if root.is_dir() else root.parent) / "movies.csv"
        return str(found.resolve()) if found.is_file() else None
    return None


@dataclass(frozen=True)
class CategoryMatrix:
    """The catalog by model catalog index (0 = padding): ``rows`` ``float32 [V + 1, C]``, each item's categories
    with weights summing to 1 (all zeros for an item without a category); ``names`` the categories."""

    names: tuple[str, ...]
    rows: np.ndarray

    @classmethod
    def build(cls, catalog: dict[str, frozenset[str]], vocab: Sequence[str]) -> CategoryMatrix | None:
        """None when no item of ``vocab`` has a category (interests and the cap are then off)."""
        names = sorted({c for item in vocab for c in catalog.get(item, ())})
        if not names:
            return None
        if len(names) > MAX_CATEGORIES:
            msg = (f"the catalog has {len(names)} categories for the model's items; at most {MAX_CATEGORIES} are "
                   "supported (each user's affinity per category is kept in state): group them coarser")
            raise ConfigError(msg)
        code = {c: n for n, c in enumerate(names)}
        rows = np.zeros((len(vocab) + 1, len(names)), dtype=np.float32)
        for i, item in enumerate(vocab, start=1):
            cats = sorted(catalog.get(item, ()))
            if cats:
                rows[i, [code[c] for c in cats]] = 1.0 / len(cats)
        return cls(tuple(names), rows)

    @property
    def n(self) -> int:
        return len(self.names)
