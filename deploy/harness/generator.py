"""Synthetic event streams with realistic structure, for the demo, tests and benchmarks.

Structure: Zipf item popularity; items grouped in taste clusters, each cluster an ordered "series"
(so there is sequential signal: the next item is often the one after the current one); users with a
few dominant clusters; sessions (minutes apart inside, hours between); a view -> click ->
add_to_cart -> purchase funnel; occasional ratings; and a configurable share of malformed records
of every kind the job must dead-letter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field, model_validator

from operators.errors import ConfigError
from operators.settings import ModelOptions, Option, Settings

__all__ = [
    "GeneratorConfig",
    "GeneratedRecord",
    "generate_events",
    "item_categories",
    "write_catalog",
    "split_by_time",
    "to_records",
    "write_jsonl",
]

MALFORMED_KINDS = {
    "bad_json": "bad_json",
    "missing_field": "missing_field",
    "wrong_type": "schema_violation",
    "bad_event_type": "schema_violation",
    "absurd_timestamp": "absurd_timestamp",
    "oversized": "oversized",
    "not_object": "schema_violation",
    "bad_encoding": "bad_encoding",
    # poison: records that once passed validation and failed every task downstream, or were accepted wrongly
    "surrogate_id": "bad_encoding",
    "float_id": "bad_id",
    "huge_id": "bad_id",
    "control_char_id": "bad_id",
    "nan_value": "non_finite_number",
    "deep_nesting": "too_deep",
    "huge_number": "number_too_large",
}
"""Every kind of malformed record :func:`to_records` mixes in, and the dead-letter code the job must give it."""


class GeneratorConfig(Settings):
    """Shape of the generated stream; the seed makes it reproducible (``streamrec generate``'s options and the
    ``[generate]`` table of a config file come from here)."""

    SECTION: ClassVar[str] = "generate"

    n_users: int = Field(2_000, ge=1, description="users")
    n_items: int = Field(1_000, ge=1, description="items")
    n_clusters: int = Field(20, ge=1, description="taste clusters (the items' categories)")
    sessions_per_user: float = Field(4.0, gt=0.0, description="mean sessions per user")
    session_len: float = Field(6.0, gt=0.0, description="mean events per session")
    zipf_a: float = Field(1.1, gt=0.0, description="Zipf exponent of item popularity")
    p_next_in_series: float = Field(0.55, ge=0.0, le=1.0, description="chance the next item continues a series")
    p_same_cluster: float = Field(0.35, ge=0.0, le=1.0, description="chance the next item stays in the cluster")
    start_ms: int = Field(1_767_225_600_000, description="first event time (2026-01-01T00:00:00Z)")
    span_ms: int = Field(14 * 24 * 3_600_000, ge=1, description="time the stream spans")
    seed: int = Field(7, description="random seed")
    user_prefix: str = Field("u", description="user id prefix")
    item_prefix: str = Field("i", description="item id prefix")

    @model_validator(mode="after")
    def _clusters(self) -> GeneratorConfig:
        if self.n_clusters > self.n_items:
            msg = f"n_clusters ({self.n_clusters}) cannot exceed n_items ({self.n_items})"
            raise ValueError(msg)
        return self


GENERATE_OPTIONS = ModelOptions(GeneratorConfig, "generate", [
    Option("n_users", name="users"),
    Option("n_items", name="items"),
])
"""``streamrec generate``'s options of :class:`GeneratorConfig` (``[generate]`` in ``--config``)."""


def _world(cfg: GeneratorConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Item popularity and each item's taste cluster (the first draws of the seeded generator)."""
    popularity = 1.0 / np.arange(1, cfg.n_items + 1) ** cfg.zipf_a
    rng.shuffle(popularity)
    popularity /= popularity.sum()
    cluster_of = rng.integers(0, cfg.n_clusters, size=cfg.n_items)
    cluster_of[: cfg.n_clusters] = np.arange(cfg.n_clusters)  # no empty cluster
    return popularity, cluster_of


def item_categories(cfg: GeneratorConfig) -> dict[str, str]:
    """Each generated item's category (its taste cluster, ``c<n>``), as :func:`generate_events` draws them."""
    _, cluster_of = _world(cfg, np.random.default_rng(cfg.seed))
    return {f"{cfg.item_prefix}{i}": f"c{c}" for i, c in enumerate(cluster_of.tolist())}


def write_catalog(cfg: GeneratorConfig, path: str | Path) -> Path:
    """The catalog CSV (``item_id,categories``, :func:`operators.catalog.load_catalog`) of the generated items."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{item},{cat}\n" for item, cat in item_categories(cfg).items())
    path.write_text("item_id,categories\n" + rows, encoding="utf-8")
    return path


def generate_events(cfg: GeneratorConfig) -> list[dict]:
    """Valid events of the contract, sorted by ``ts`` (users interleaved, as a live stream)."""
    rng = np.random.default_rng(cfg.seed)
    popularity, cluster_of = _world(cfg, rng)
    members = [np.flatnonzero(cluster_of == c) for c in range(cfg.n_clusters)]
    position = np.empty(cfg.n_items, dtype=np.int64)
    for series in members:
        position[series] = np.arange(len(series))
    member_pop = [popularity[m] / popularity[m].sum() for m in members]

    events: list[dict] = []
    for u in range(cfg.n_users):
        taste = rng.dirichlet(np.full(cfg.n_clusters, 0.15))
        user = f"{cfg.user_prefix}{u}"
        n_sessions = 1 + rng.poisson(max(cfg.sessions_per_user - 1, 0))
        starts = np.sort(rng.integers(cfg.start_ms, cfg.start_ms + cfg.span_ms, size=n_sessions))
        for t0 in starts:
            cluster = rng.choice(cfg.n_clusters, p=taste)
            item = int(rng.choice(members[cluster], p=member_pop[cluster]))
            t = int(t0)
            for _ in range(1 + rng.poisson(max(cfg.session_len - 1, 0))):
                events.extend(_funnel(rng, user, f"{cfg.item_prefix}{item}", t))
                t += int(rng.integers(5_000, 180_000))
                roll = rng.random()
                series = members[cluster_of[item]]
                if roll < cfg.p_next_in_series and position[item] + 1 < len(series):
                    item = int(series[position[item] + 1])
                elif roll < cfg.p_next_in_series + cfg.p_same_cluster:
                    c = cluster_of[item]
                    item = int(rng.choice(members[c], p=member_pop[c]))
                else:
                    item = int(rng.choice(cfg.n_items, p=popularity))
    events.sort(key=lambda e: (e["ts"], e["user_id"]))
    for n, event in enumerate(events):
        event["event_id"] = f"e{cfg.seed}-{n}"
    return events


def _funnel(rng: np.random.Generator, user: str, item: str, t: int) -> Iterator[dict]:
    yield {"user_id": user, "item_id": item, "event_type": "view", "ts": t}
    if rng.random() < 0.3:
        t += int(rng.integers(1_000, 20_000))
        yield {"user_id": user, "item_id": item, "event_type": "click", "ts": t}
        if rng.random() < 0.25:
            t += int(rng.integers(1_000, 60_000))
            yield {"user_id": user, "item_id": item, "event_type": "add_to_cart", "ts": t, "value": 1.0}
            if rng.random() < 0.4:
                t += int(rng.integers(1_000, 60_000))
                price = round(float(rng.uniform(2, 200)), 2)
                yield {"user_id": user, "item_id": item, "event_type": "purchase", "ts": t, "value": price}
    elif rng.random() < 0.03:
        rating = float(rng.integers(1, 6))
        yield {"user_id": user, "item_id": item, "event_type": "rating", "ts": t + 500, "value": rating}


@dataclass(frozen=True, slots=True)
class GeneratedRecord:
    """One Kafka record to produce: key, value, and what the job must make of it."""

    key: bytes | None
    value: bytes
    valid: bool
    kind: str
    event: dict | None


def _malformed(rng: np.random.Generator, base: dict, kind: str) -> bytes:
    doc = dict(base)
    if kind == "bad_json":
        return json.dumps(doc).encode()[:-3] + b"{,"
    if kind == "missing_field":
        doc.pop(str(rng.choice(["user_id", "item_id", "event_type", "ts"])))
    elif kind == "wrong_type":
        doc["ts"] = "yesterday"
    elif kind == "bad_event_type":
        doc["event_type"] = "teleport"
    elif kind == "absurd_timestamp":
        doc["ts"] = doc["ts"] // 1000  # seconds sent as milliseconds
    elif kind == "oversized":
        doc["blob"] = "x" * 20_000
    elif kind == "not_object":
        return json.dumps([doc]).encode()
    elif kind == "bad_encoding":
        return b"\xff\xfe" + json.dumps(doc).encode("utf-16-le")
    elif kind == "surrogate_id":
        doc[str(rng.choice(["user_id", "item_id", "event_id"]))] = "p\ud800u"  # json.dumps writes the escape
    elif kind == "float_id":
        return json.dumps(doc).replace(json.dumps(doc["user_id"]), "7.0", 1).encode()
    elif kind == "huge_id":
        return json.dumps(doc).replace(json.dumps(doc["item_id"]), "1" * 200, 1).encode()
    elif kind == "control_char_id":
        doc["item_id"] = f"{doc['item_id']}\x00\u202e"
    elif kind == "nan_value":
        doc["value"] = float("nan")  # json.dumps writes the non-JSON literal NaN
    elif kind == "deep_nesting":
        return json.dumps(doc)[:-1].encode() + b', "x": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    elif kind == "huge_number":
        return json.dumps(doc)[:-1].encode() + b', "n": ' + b"9" * 5000 + b"}"
    return json.dumps(doc).encode()


def to_records(events: list[dict], *, malformed_share: float = 0.0, seed: int = 11) -> list[GeneratedRecord]:
    """Serialise events, mixing in ``malformed_share`` malformed records of every kind."""
    if not 0.0 <= malformed_share < 1.0:
        msg = f"malformed_share must be in [0, 1), got {malformed_share}"
        raise ConfigError(msg)
    rng = np.random.default_rng(seed)
    records: list[GeneratedRecord] = []
    n_bad = 0
    for event in events:
        records.append(
            GeneratedRecord(event["user_id"].encode(), json.dumps(event).encode(), True, "valid", event)
        )
        if malformed_share and rng.random() < malformed_share / (1 - malformed_share):
            kind = list(MALFORMED_KINDS)[n_bad % len(MALFORMED_KINDS)]
            n_bad += 1
            records.append(GeneratedRecord(event["user_id"].encode(), _malformed(rng, event, kind), False, kind, None))
    return records


def write_jsonl(events: list[dict], path: str | Path) -> Path:
    """Write events as JSON lines (the ``events`` training format)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for event in events:
            fh.write(json.dumps(event) + "\n")
    return path


def split_by_time(events: list[dict], train_share: float = 0.8) -> tuple[list[dict], list[dict]]:
    """Split a ts-sorted stream at the ``train_share`` quantile of event time: (before, from then on)."""
    if not 0.0 < train_share < 1.0:
        msg = f"train_share must be in (0, 1), got {train_share}"
        raise ConfigError(msg)
    if not events:
        return [], []
    cut = events[min(int(len(events) * train_share), len(events) - 1)]["ts"]
    return [e for e in events if e["ts"] < cut], [e for e in events if e["ts"] >= cut]
