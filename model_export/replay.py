"""Replay evaluation ("next-event", docs/evaluation/protocol.md): what the deployed job would have achieved on a log.

The log is cut by time (``cutoff`` = share of events before the cut). Every event, before and after the cut,
is sent through the serving path in event-time order (ties in training's order, so the job's windows are the
training sequences): events before the cut only fill the users' state, as the deployed job would have seen
them; each event after the cut is scored against the **latest list emitted for its user before it arrived**
(the list its user's previous event produced). An event with no earlier list (a new user) or whose item is
already in the user's history (the exclusion rule makes it unrecommendable by every path) is counted, not
scored. Models and baselines are bundles served by the same code; confidence intervals come from a paired
bootstrap over users.

This module is pure (no Kafka, no Flink): :func:`plan_replay` builds the records, :func:`evaluate` turns the
emitted lists into the summary, :func:`write_report` draws it. ``deploy.replay`` runs the paths.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from model_export.data import item_sort_key
from operators.errors import ConfigError
from operators.offline import OfflineRecord

__all__ = ["ReplayPlan", "EmittedList", "plan_replay", "evaluate", "paired_bootstrap",
           "decode_list", "write_report", "METRIC_KEYS"]

METRIC_KEYS = ("hr@10", "ndcg@10", "mrr@10", "coverage", "ild", "novelty", "repeat_rate", "cold_start_share")
REPEAT_WINDOW = 5
"""repeat_rate: share of a list's items already shown to the same user in one of their previous 5 lists."""


@dataclass(frozen=True)
class ReplayPlan:
    """Every event of the log as a Kafka record, in replay order; the first ``n_prefill`` precede the cut."""

    records: list[OfflineRecord]
    event_ids: list[str]
    users: list[str]
    items: list[str]
    ts: np.ndarray
    n_prefill: int
    cutoff_ts: int
    train: pd.DataFrame = field(repr=False)
    """The events before the cut (what a model may be trained on)."""

    @property
    def n_replayed(self) -> int:
        return len(self.records) - self.n_prefill


@dataclass(frozen=True, slots=True)
class EmittedList:
    """One list the job emitted (decoded from its output record)."""

    items: list[str]
    scores: list[float]
    strategy: str
    latency_ms: float | None = None


_LIST_DECODER = msgspec.json.Decoder()


def decode_list(value: bytes, now_ms: float | None = None) -> tuple[str, EmittedList]:
    """An output record's bytes -> ``(event_id, EmittedList)``; with ``now_ms`` (when it was consumed) the list
    carries its latency from the input record's Kafka timestamp."""
    doc = _LIST_DECODER.decode(value)
    source = doc.get("source_ts")
    latency = now_ms - source if now_ms is not None and source else None
    return doc["event_id"], EmittedList([i["item_id"] for i in doc["items"]], [i["score"] for i in doc["items"]],
                                        doc["strategy"], latency)


def plan_replay(df: pd.DataFrame, cutoff: float, *, max_events: int | None = None) -> ReplayPlan:
    """Order the log (``user_id, item_id, ts, event_type``) for replay and cut it at the ``cutoff`` quantile of
    event time; ``max_events`` keeps only the first events after the cut (quick runs)."""
    if not 0.0 < cutoff < 1.0:
        msg = f"--cutoff must be in (0, 1), got {cutoff}"
        raise ConfigError(msg)
    if df.empty:
        msg = "the event log is empty"
        raise ConfigError(msg)
    ordered = (df.assign(_item=item_sort_key(df["item_id"]))
               .sort_values(["ts", "user_id", "_item"], kind="mergesort").drop(columns="_item")
               .reset_index(drop=True))
    ts = ordered["ts"].to_numpy(dtype=np.int64)
    cutoff_ts = int(ts[min(int(round(cutoff * len(ts))), len(ts) - 1)])  # events at the cut's time go after it
    n_prefill = int(np.searchsorted(ts, cutoff_ts, side="left"))
    if n_prefill == 0 or n_prefill == len(ts):
        msg = f"cut-off {cutoff} leaves nothing on one side ({n_prefill} of {len(ts)} events before it)"
        raise ConfigError(msg)
    if max_events is not None:
        ordered = ordered.iloc[: n_prefill + max_events]
        ts = ts[: len(ordered)]
    encoder = msgspec.json.Encoder()
    users = ordered["user_id"].astype(str).tolist()
    items = ordered["item_id"].astype(str).tolist()
    types = ordered["event_type"].astype(str).tolist()
    event_ids = [f"r{n}" for n in range(len(ordered))]
    records = [
        OfflineRecord(u, encoder.encode({"event_id": e, "user_id": u, "item_id": i, "event_type": t, "ts": int(s)}),
                      n)
        for n, (e, u, i, t, s) in enumerate(zip(event_ids, users, items, types, ts.tolist(), strict=True))
    ]
    return ReplayPlan(records, event_ids, users, items, ts, n_prefill, cutoff_ts,
                      ordered.iloc[:n_prefill].reset_index(drop=True))


def _ild(items: list[str], categories: dict[str, frozenset[str]]) -> float | None:
    """Mean pairwise Jaccard distance of the items' category sets (None without categories)."""
    sets = [categories.get(i) for i in items]
    sets = [s for s in sets if s]
    if len(sets) < 2:
        return None
    total, pairs = 0.0, 0
    for a in range(len(sets)):
        for b in range(a + 1, len(sets)):
            total += 1.0 - len(sets[a] & sets[b]) / len(sets[a] | sets[b])
            pairs += 1
    return total / pairs


def evaluate(plan: ReplayPlan, lists: dict[str, EmittedList], *, k: int = 10, catalog: list[str],
             categories: dict[str, frozenset[str]] | None = None, rejected: set[str] | None = None) -> dict[str, Any]:
    """Score one path's lists. ``catalog``: the items any path may recommend (coverage's denominator);
    popularity (novelty) comes from the events before the cut. ``rejected``: event ids the job answered with a
    dead letter or a quarantine record instead of a list (counted as ``rejected``, not ``missing``)."""
    rejected = rejected or set()
    categories = categories or {}
    train_counts = plan.train.groupby("item_id")["user_id"].nunique()
    n_train_users = max(plan.train["user_id"].nunique(), 1)
    last: dict[str, EmittedList] = {}
    seen: dict[str, set[str]] = {}
    shown: dict[str, deque[set[str]]] = {}
    per_user: dict[str, list[float]] = {}  # user -> [hits, ndcg, rr, scored]
    recommended: set[str] = set()
    novelty, ild, repeat, timeline = [], [], [], []
    counts = {"no_list_yet": 0, "repeat_events": 0, "scored": 0, "lists": 0, "cold_start": 0, "missing": 0,
              "rejected": 0}
    latency = []
    for n in range(len(plan.records)):
        user, item = plan.users[n], plan.items[n]
        replayed = n >= plan.n_prefill
        history = seen.setdefault(user, set())
        if replayed:
            prev = last.get(user)
            if prev is None:
                counts["no_list_yet"] += 1
            elif item in history:
                counts["repeat_events"] += 1
            else:
                counts["scored"] += 1
                top = prev.items[:k]
                rank = top.index(item) if item in top else -1
                acc = per_user.setdefault(user, [0.0, 0.0, 0.0, 0.0])
                if rank >= 0:
                    acc[0] += 1
                    acc[1] += 1.0 / math.log2(rank + 2)
                    acc[2] += 1.0 / (rank + 1)
                acc[3] += 1
                timeline.append((int(plan.ts[n]), rank >= 0, 1.0 / math.log2(rank + 2) if rank >= 0 else 0.0))
        history.add(item)
        emitted = lists.get(plan.event_ids[n])
        if emitted is None:
            counts["rejected" if plan.event_ids[n] in rejected else "missing"] += 1
            continue
        if replayed:
            top = emitted.items[:k]
            counts["lists"] += 1
            counts["cold_start"] += emitted.strategy != "model"
            recommended.update(top)
            novelty.extend(-math.log2(max(train_counts.get(i, 0), 1) / n_train_users) for i in top)
            value = _ild(top, categories)
            if value is not None:
                ild.append(value)
            past = shown.setdefault(user, deque(maxlen=REPEAT_WINDOW))
            if past and top:
                before = set().union(*past)
                repeat.append(sum(i in before for i in top) / len(top))
            past.append(set(top))
            if emitted.latency_ms is not None:
                latency.append(emitted.latency_ms)
        last[user] = emitted
    sums = np.array(list(per_user.values())) if per_user else np.zeros((0, 4))
    scored = max(counts["scored"], 1)
    model = {
        "hr@10": float(sums[:, 0].sum() / scored), "ndcg@10": float(sums[:, 1].sum() / scored),
        "mrr@10": float(sums[:, 2].sum() / scored),
        "coverage": len(recommended & set(catalog)) / max(len(catalog), 1),
        "ild": float(np.mean(ild)) if ild else None,
        "novelty": float(np.mean(novelty)) if novelty else None,
        "repeat_rate": float(np.mean(repeat)) if repeat else 0.0,
        "cold_start_share": counts["cold_start"] / max(counts["lists"], 1),
    }
    return {"metrics": model, "counts": counts, "per_user": {u: v for u, v in per_user.items()},
            "timeline": timeline, "latency_ms": latency, "recommended": recommended}


def paired_bootstrap(a: dict[str, list[float]], b: dict[str, list[float]], column: int = 1, *,
                     samples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Difference of event-weighted means (a - b) of one per-user column (1 = NDCG, 0 = hits) and its 95%
    interval, resampling users with replacement (the same users for both: paired)."""
    users = sorted(set(a) & set(b))
    if not users:
        return float("nan"), float("nan"), float("nan")
    va = np.array([a[u][column] for u in users])
    vb = np.array([b[u][column] for u in users])
    n = np.array([a[u][3] for u in users])
    diff = float((va.sum() - vb.sum()) / n.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(users), size=(samples, len(users)))
    boot = (va[idx].sum(1) - vb[idx].sum(1)) / np.maximum(n[idx].sum(1), 1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return diff, float(lo), float(hi)


def write_report(summary: dict[str, Any], results: dict[str, dict[str, Any]], plan: ReplayPlan,
                 train_popularity: dict[str, int], out: Path) -> Path:
    """``report.md`` and its PNGs in ``out``: metric bars against the baselines, the latency CDF, HR@10 over
    replay time, and coverage / popularity bias of what each path recommended."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    for ax, key in zip(axes, ("hr@10", "ndcg@10", "coverage", "repeat_rate"), strict=True):
        values = [results[n]["metrics"][key] or 0.0 for n in names]
        ax.bar(names, values, color=["tab:blue" if n == "model" else "tab:gray" for n in names])
        ax.set_title(key)
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for n in names:
        lat = np.sort(np.asarray(results[n]["latency_ms"], dtype=float))
        if lat.size:
            ax.plot(lat, np.linspace(0, 1, lat.size), label=n)
    ax.set(xscale="log", xlabel="event -> list latency, ms", ylabel="share of events", title="latency CDF")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for n in names:
        tl = results[n]["timeline"]
        if not tl:
            continue
        ts = np.array([t for t, _, _ in tl])
        hits = np.array([h for _, h, _ in tl], dtype=float)
        bins = np.linspace(ts.min(), ts.max() + 1, 11)
        which = np.clip(np.digitize(ts, bins) - 1, 0, 9)
        rate = [hits[which == b].mean() if (which == b).any() else np.nan for b in range(10)]
        ax.plot(range(1, 11), rate, marker="o", label=n)
    ax.set(xlabel="replay time decile", ylabel="HR@10", title="HR@10 over replay time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "over_time.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ranked = sorted(train_popularity, key=lambda i: -train_popularity[i])
    pct = {item: r / max(len(ranked) - 1, 1) for r, item in enumerate(ranked)}
    for n in names:
        rec = [pct.get(i, 1.0) for i in results[n]["recommended"]]
        if rec:
            ax.hist(rec, bins=20, range=(0, 1), histtype="step", label=f"{n} ({len(rec)} items)")
    ax.set(xlabel="popularity rank percentile before the cut (0 = most popular)",
           ylabel="distinct items recommended", title="coverage and popularity bias")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "popularity_bias.png", dpi=100)
    plt.close(fig)

    lines = [
        "# Replay evaluation (next-event)", "",
        f"Log cut at {summary['cutoff']:.2f} of its events by time; {summary['events_replayed']:,} events replayed "
        f"after {summary['events_prefill']:,} before the cut, {summary['users']:,} users, mode "
        f"`{summary['mode']}`. Each event is scored against the latest list its user had been shown.", "",
        "| path | " + " | ".join(METRIC_KEYS) + " |", "|---" * (len(METRIC_KEYS) + 1) + "|",
    ]
    for n in names:
        m = results[n]["metrics"]
        cells = ["-" if m[key] is None else f"{m[key]:.4f}" for key in METRIC_KEYS]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    ci = summary["differences"]
    lines += ["", "Paired bootstrap over users, model minus the best baseline "
              f"(`{summary['best_baseline']}`), 95% interval:", ""]
    lines += [f"- {key}: {value[1]:+.4f} [{value[0]:+.4f}, {value[2]:+.4f}]" for key, value in ci.items()]
    what = ("event produced -> list consumed" if summary["mode"] == "streamed"
            else "serving time per event, the operator code without Kafka and Flink")
    lat = summary["latency_ms"] or {}
    lines += ["", f"Latency ({what}), model: " + ", ".join(f"{k} {v:.1f} ms" for k, v in lat.items()) + "; "
              f"throughput {summary['throughput_eps']:.0f} events/s; duplicates {summary['duplicates']}, "
              f"missing {summary['missing']}, dead letters {summary['dead_letter']}.", "",
              "![metrics](metrics.png)", "", "![latency](latency_cdf.png)", "", "![over time](over_time.png)", "",
              "![popularity bias](popularity_bias.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), "utf-8")
    return path
