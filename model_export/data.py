"""Event logs -> per-user item sequences, the LOO-5core protocol (docs/evaluation/protocol.md).

Sources: MovieLens ``ratings.csv`` (userId, movieId, rating, timestamp in seconds) and the project's
own event format (JSON lines of the event contract). Events are ordered per user by
``(timestamp, item)``; item index 0 is reserved for padding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from operators.errors import ConfigError, EventValidationError
from operators.events import SourcePosition, parse_event
from operators.window import first_occurrences, left_pad_row

__all__ = [
    "DataFormat",
    "SequenceData",
    "LooSplit",
    "load_interactions",
    "load_movielens",
    "load_event_log",
    "k_core",
    "build_sequences",
    "loo_split",
    "first_interactions",
    "left_pad",
]

DataFormat = Literal["movielens", "events"]
COLUMNS = ["user_id", "item_id", "ts", "event_type"]


def load_movielens(path: str | Path) -> pd.DataFrame:
    """Read MovieLens ratings (a directory holding ``ratings.csv`` or the file itself).

    Ratings of movies absent from ``movies.csv`` (when it is there) are dropped (the protocol's step 1).
    """
    path = Path(path)
    ratings = path / "ratings.csv" if path.is_dir() else path
    if not ratings.is_file():
        msg = f"MovieLens ratings not found at {ratings}; pass --data DIR holding ratings.csv"
        raise ConfigError(msg)
    df = pd.read_csv(ratings, dtype={"userId": "int64", "movieId": "int64", "timestamp": "int64"})
    movies = ratings.parent / "movies.csv"
    if movies.is_file():
        known = pd.read_csv(movies, usecols=["movieId"], dtype={"movieId": "int64"})["movieId"]
        df = df[df["movieId"].isin(known)]
    return pd.DataFrame(
        {
            "user_id": df["userId"].astype(str).to_numpy(),
            "item_id": df["movieId"].astype(str).to_numpy(),
            "ts": df["timestamp"].to_numpy(dtype=np.int64) * 1000,
            "event_type": "rating",
        }
    )


def load_event_log(path: str | Path, *, now_ms: int = 32_503_680_000_000) -> pd.DataFrame:
    """Read a JSON-lines log of the event contract; invalid lines are skipped and counted in ``attrs``."""
    path = Path(path)
    if not path.is_file():
        msg = f"event log not found at {path}; pass --data FILE.jsonl"
        raise ConfigError(msg)
    rows: list[tuple[str, str, int, str]] = []
    invalid = 0
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                event = parse_event(
                    line.rstrip(b"\n"), source=SourcePosition(str(path), 0, line_no), now_ms=now_ms
                )
            except EventValidationError:
                invalid += 1
                continue
            rows.append((event.user_id, event.item_id, event.ts, event.event_type))
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs["invalid_lines"] = invalid
    return df


def load_interactions(path: str | Path, fmt: DataFormat) -> pd.DataFrame:
    """Load either source into columns ``user_id, item_id, ts, event_type``."""
    if fmt == "movielens":
        return load_movielens(path)
    if fmt == "events":
        return load_event_log(path)
    msg = f"unknown data format {fmt!r}; use 'movielens' or 'events'"
    raise ConfigError(msg)


def item_sort_key(items: pd.Series) -> pd.Series:
    """Numeric order when every id is an integer (MovieLens), else lexicographic."""
    numeric = pd.to_numeric(items, errors="coerce")
    return numeric if not numeric.isna().any() else items


def order_events(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by ``(user, timestamp, item)``; the tie-break on item matters when timestamps repeat."""
    keyed = df.assign(_item_key=item_sort_key(df["item_id"]))
    keyed = keyed.sort_values(["user_id", "ts", "_item_key"], kind="mergesort")
    return keyed.drop(columns="_item_key").reset_index(drop=True)


def k_core(df: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """Iteratively drop items and users with fewer than ``k`` events until both hold."""
    while True:
        item_counts = df["item_id"].map(df["item_id"].value_counts())
        df = df[item_counts >= k]
        user_counts = df["user_id"].map(df["user_id"].value_counts())
        df = df[user_counts >= k]
        if df.empty or (
            df["item_id"].value_counts().min() >= k and df["user_id"].value_counts().min() >= k
        ):
            return df.reset_index(drop=True)


def left_pad(sequences: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Last ``length`` items of each sequence, left-padded with 0: ``[B, length]`` int64."""
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for row, seq in enumerate(sequences):
        out[row] = left_pad_row(np.asarray(seq, dtype=np.int64), length)  # the job's padding, one definition
    return out


def first_interactions(df: pd.DataFrame) -> pd.DataFrame:
    """Each user's first interaction with each item, in event order: the model's input sequence as the job
    builds it from a window (:func:`operators.window.first_occurrences`, the one definition both use).

    For event logs a view, click and purchase of one item are one "item" for next-item prediction, and an
    event of an item already in the user's window does not advance the served model. Apply before
    :func:`k_core` so that the core is computed on what the model will see.
    """
    ordered = order_events(df)
    if ordered.empty:
        return ordered
    codes = pd.factorize(ordered["item_id"])[0].astype(np.int64) + 1  # 0 is "unknown" to first_occurrences
    users = ordered["user_id"].to_numpy()
    bounds = np.concatenate([[0], np.flatnonzero(users[1:] != users[:-1]) + 1, [len(ordered)]])
    keep = np.concatenate([s + first_occurrences(codes[s:e]) for s, e in zip(bounds[:-1], bounds[1:], strict=True)])
    return ordered.iloc[keep].reset_index(drop=True)


@dataclass(frozen=True)
class SequenceData:
    """Per-user item-index sequences, oldest first, and the vocabulary that maps them back."""

    item_vocab: list[str]
    """``item_vocab[i]`` is the raw id of index ``i + 1``."""
    user_ids: list[str]
    sequences: list[np.ndarray]
    fingerprint: str
    n_events: int

    @property
    def n_items(self) -> int:
        """Catalog size, padding excluded."""
        return len(self.item_vocab)

    @property
    def n_users(self) -> int:
        """Number of users."""
        return len(self.user_ids)


def build_sequences(df: pd.DataFrame, *, dedupe: bool = False) -> SequenceData:
    """Build ordered per-user sequences.

    Args:
        df: Columns ``user_id, item_id, ts``.
        dedupe: Keep only each user's first interaction with an item (see :func:`first_interactions`).
    """
    df = first_interactions(df) if dedupe else order_events(df)
    items = df["item_id"].drop_duplicates()
    vocab = items.iloc[np.argsort(item_sort_key(items).to_numpy(), kind="mergesort")].tolist()
    index = {item: i + 1 for i, item in enumerate(vocab)}
    codes = df["item_id"].map(index).to_numpy(dtype=np.int64)
    users = df["user_id"].to_numpy()
    boundaries = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], boundaries]) if len(df) else np.array([], dtype=np.int64)
    ends = np.concatenate([boundaries, [len(df)]]) if len(df) else np.array([], dtype=np.int64)
    digest = hashlib.sha256()
    digest.update(json.dumps(vocab).encode())
    digest.update(df["user_id"].str.cat(sep="\x1f").encode())
    digest.update(codes.tobytes())
    digest.update(df["ts"].to_numpy(dtype=np.int64).tobytes())
    return SequenceData(
        item_vocab=vocab,
        user_ids=[str(users[s]) for s in starts],
        sequences=[codes[s:e] for s, e in zip(starts, ends, strict=True)],
        fingerprint=digest.hexdigest(),
        n_events=int(len(df)),
    )


@dataclass(frozen=True)
class LooSplit:
    """Leave-one-out: last item = test target, second-to-last = validation target, rest = train.

    ``valid_inputs[u]`` is the training sequence; ``test_inputs[u]`` includes the validation item.
    Users with fewer than 3 items have no validation/test targets (none exist after 5-core).
    """

    train: list[np.ndarray]
    valid_inputs: list[np.ndarray]
    valid_targets: np.ndarray
    test_inputs: list[np.ndarray]
    test_targets: np.ndarray


def loo_split(data: SequenceData) -> LooSplit:
    """Split every user's sequence leave-one-out (the protocol's step 4)."""
    short = [u for u, s in zip(data.user_ids, data.sequences, strict=True) if len(s) < 3]
    if short:
        msg = f"{len(short)} users have fewer than 3 events (e.g. {short[:3]}); apply k_core first"
        raise ConfigError(msg)
    return LooSplit(
        train=[s[:-2] for s in data.sequences],
        valid_inputs=[s[:-2] for s in data.sequences],
        valid_targets=np.array([s[-2] for s in data.sequences], dtype=np.int64),
        test_inputs=[s[:-1] for s in data.sequences],
        test_targets=np.array([s[-1] for s in data.sequences], dtype=np.int64),
    )
