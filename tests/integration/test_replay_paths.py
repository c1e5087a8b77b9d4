"""``streamrec replay``: the offline path and the streamed path (real broker, the job started with
``streamrec run``) give the same lists for the same events, list for list and score for score: the zero
train/serve-skew guarantee. Run through the console script, as users do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deploy.harness.generator import write_catalog, write_jsonl
from tests.conftest import WORLD

pytestmark = pytest.mark.integration

STREAMREC = str(Path(sys.executable).parent / "streamrec")


def lists(path: Path) -> dict[str, dict]:
    return {doc["event_id"]: doc for doc in map(json.loads, path.read_text("utf-8").splitlines())}


@pytest.fixture(scope="module")
def replays(tmp_path_factory, world_events, trained_bundle):
    root = tmp_path_factory.mktemp("replay")
    log = write_jsonl(world_events, root / "log.jsonl")
    catalog = write_catalog(WORLD, root / "catalog.csv")  # user interests on: per-user, deterministic
    # relative paths, as users type them (the job process runs in a directory of its own). Trending boards reach
    # the streamed job at processing-time moments (the offline loop: every second of event time), so the two
    # paths can only agree list for list with trending off; the in-stream neighbour counts likewise (each of the
    # streamed job's subtasks counts its own users' events in the order they arrive there, the offline loop counts
    # them all in log order: the same neighbours, other weights).
    common = ["replay", "--data", log.name, "--format", "events", "--cutoff", "0.8", "--bundle",
              os.path.relpath(trained_bundle, root), "--max-events", "2500", "--catalog", catalog.name,
              "--trending", "enabled=false", "--rerank", "category_cap=4", "--rerank", "neighbor_refresh=false"]
    out = {}
    for mode, extra in (("offline", ["--offline"]), ("streamed", ["--no-baselines"])):
        proc = subprocess.run([STREAMREC, *common, "--out", mode, *extra], capture_output=True, text=True,
                              timeout=900, cwd=root)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out[mode] = root / mode
    return out


def test_streamed_and_offline_replays_emit_the_same_lists(replays):
    offline = lists(replays["offline"] / "lists-model.jsonl")
    streamed = lists(replays["streamed"] / "lists-model.jsonl")
    assert len(streamed) > 12_000  # every event of the prefix and of the replayed part got a list
    assert streamed.keys() == offline.keys()
    for event_id, doc in streamed.items():
        other = offline[event_id]
        assert doc["items"] == other["items"], event_id
        np.testing.assert_allclose(doc["scores"], other["scores"], atol=1e-6, err_msg=event_id)
        assert doc["strategy"] == other["strategy"]


def test_summaries_account_for_every_event(replays):
    for mode in ("offline", "streamed"):
        summary = json.loads((replays[mode] / "summary.json").read_text("utf-8"))
        assert summary["protocol"] == "next-event" and summary["events_replayed"] == 2500
        assert summary["missing"] == 0 and summary["duplicates"] == 0 and summary["dead_letter"] == 0
        counts = summary["counts"]
        assert counts["lists"] == 2500
        # the generated log repeats items (view -> click -> cart): those events are counted, not scored
        assert counts["repeat_events"] > 0 and counts["scored"] > 500
        assert 0 < summary["model"]["hr@10"] <= 1
    offline = json.loads((replays["offline"] / "summary.json").read_text("utf-8"))
    streamed = json.loads((replays["streamed"] / "summary.json").read_text("utf-8"))
    assert offline["model"]["ndcg@10"] == pytest.approx(streamed["model"]["ndcg@10"], abs=1e-12)
    assert streamed["latency_ms"]["p50"] > 0 and streamed["throughput_eps"] > 0
    # the offline run also served both baselines, through the same code
    assert set(offline["baselines"]) == {"popular", "cooccurrence"}
    # and the served model, trained on this world's taste clusters, beats the popularity list on it
    assert offline["model"]["ndcg@10"] > offline["baselines"]["popular"]["ndcg@10"], offline
    assert len(offline["ci95"]["ndcg@10_model_minus_best_baseline"]) == 2
    assert (replays["offline"] / "report.md").is_file() and (replays["offline"] / "latency_cdf.png").is_file()
