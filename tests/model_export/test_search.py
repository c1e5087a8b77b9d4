"""``streamrec train --search``: trials chosen on validation only, pruning, the written configuration re-trains
exactly (model_export/search.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.harness.generator import split_by_time, write_jsonl
from model_export.pipeline import TrainJob, _load, run_training
from model_export.search import SEARCHED, SearchSpace, load_searched, run_search, searched_config, write_search
from model_export.train import TrainConfig, train_model
from operators.errors import ConfigError

SMALL = SearchSpace(hidden=(16, 32), n_blocks=(1, 2), max_seq_len=(10, 20), patience=(2,))
BASE = TrainConfig(max_epochs=6, progress=False, max_train_seconds=60)


@pytest.fixture(scope="module")
def split(world_events: list[dict], tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    history, _ = split_by_time(world_events)
    data = write_jsonl(history, tmp_path_factory.mktemp("search") / "train.jsonl")
    return _load(TrainJob(data=str(data), out="unused"))


@pytest.mark.slow  # trains real models
def test_the_search_keeps_the_best_validation_trial_and_never_scores_the_test_split(split) -> None:  # noqa: ANN001
    data, loo = split
    calls = []

    def train(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - the real trainer, its arguments recorded
        calls.append(kwargs.get("evaluate_test", True))
        result = train_model(*args, **kwargs)
        assert result.test == {}
        return result

    result = run_search(data, loo, BASE, 4, seed=3, space=SMALL, train=train)
    assert calls == [False] * 4
    complete = [r for r in result.trials if r["state"] == "complete"]
    assert len(result.trials) == 4 and complete
    assert result.best_valid_ndcg10 == max(r["valid_ndcg10"] for r in complete)
    best_row = max(complete, key=lambda r: r["valid_ndcg10"])
    assert result.best == {k: best_row[k] for k in SEARCHED}
    # the written configuration trains exactly that model again (same seed: the same validation figure)
    again = train_model(data, loo, searched_config(BASE, result.best).replace(ks=(10,)))
    assert again.valid["ndcg@10"] == pytest.approx(result.best_valid_ndcg10, abs=1e-9)


def test_a_trial_that_falls_behind_is_pruned(split) -> None:  # noqa: ANN001
    """Median pruning: with lr as the only thing that matters to this stand-in trainer (validation = lr per
    epoch), trials below the running median after the warm-up epochs stop early."""
    data, loo = split

    class Result:
        def __init__(self, value: float) -> None:
            self.valid, self.best_epoch = {"ndcg@10": value}, 10

    def train(_data, _split, cfg, *, on_eval, evaluate_test):  # noqa: ANN001, ANN202, ARG001
        for epoch in range(1, 11):
            on_eval(epoch, cfg.lr)
        return Result(cfg.lr)

    result = run_search(data, loo, BASE, 12, seed=0, space=SMALL, train=train)
    states = [r["state"] for r in result.trials]
    assert "pruned" in states and "complete" in states
    pruned = [r for r in result.trials if r["state"] == "pruned"]
    assert all(r["epochs"] < 10 for r in pruned)
    assert result.best["lr"] == max(r["lr"] for r in result.trials if r["state"] == "complete")


def test_search_files_and_refusals(split, tmp_path: Path) -> None:  # noqa: ANN001
    data, loo = split

    class Result:
        def __init__(self, value: float) -> None:
            self.valid, self.best_epoch = {"ndcg@10": value}, 1

    def train(_data, _split, cfg, *, on_eval, evaluate_test):  # noqa: ANN001, ANN202, ARG001
        return Result(cfg.dropout)

    result = run_search(data, loo, BASE, 3, seed=1, space=SMALL, train=train)
    write_search(result, tmp_path)
    doc = json.loads((tmp_path / "search.json").read_text())
    assert doc["best"] == result.best and len(doc["trials"]) == 3
    assert (tmp_path / "search.md").read_text().count("\n| ") == 3 + 1  # header + one row per trial
    assert (tmp_path / "search.png").stat().st_size > 0
    assert load_searched(tmp_path / "search.json", BASE).dropout == result.best["dropout"]
    with pytest.raises(ConfigError, match="unknown fields"):
        searched_config(BASE, {"arch": "sasrec"})
    with pytest.raises(ConfigError, match="at least one trial"):
        run_search(data, loo, BASE, 0, space=SMALL, train=train)


@pytest.mark.slow  # trains real models
def test_train_with_search_exports_the_best_configuration(world_events: list[dict], tmp_path: Path) -> None:
    history, _ = split_by_time(world_events)
    data = write_jsonl(history, tmp_path / "train.jsonl")
    metrics = run_training(TrainJob(data=str(data), out=str(tmp_path / "bundle"), n_candidates=50, seeds=(42,),
                                    train=BASE.replace(max_epochs=3), search_trials=2, report=False,
                                    betas=(0.0, 0.5)))
    doc = json.loads((tmp_path / "bundle" / "search.json").read_text())
    assert metrics["search"]["best"] == doc["best"]
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    exported = manifest["training"]["config"]
    assert {k: exported[k] for k in SEARCHED} == doc["best"]
