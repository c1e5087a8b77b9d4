"""``streamrec train --search N``: a hyper-parameter search over the sequence model, chosen on validation only.

Optuna's TPE sampler proposes a configuration per trial (hidden size, blocks, dropout, learning rate, weight
decay, window length, patience); each trial trains with :func:`model_export.train.train_model` on the same LOO
split the final model uses, reporting validation NDCG@10 after every epoch so the median pruner stops trials
that fall behind the others at the same epoch. The test split is never looked at: a trial's test figures are
not computed. The blend weight with co-occurrence is not searched here: it is chosen on validation after
training, as for every model (:mod:`model_export.pipeline`), so the search picks the model that blends best.

The result (every trial with its parameters, state, best epoch, validation NDCG@10 and seconds; the best
configuration) is written beside the bundle as ``search.json``, ``search.md`` (the table) and ``search.png``
(validation NDCG@10 per trial and the best so far); ``streamrec train --config-from DIR/search.json`` re-trains
exactly that configuration.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from model_export.data import LooSplit, SequenceData
from model_export.train import TrainConfig, train_model
from operators.errors import ConfigError

__all__ = ["SearchSpace", "SearchResult", "run_search", "searched_config", "write_search"]

log = logging.getLogger(__name__)

SEARCHED = ("hidden", "n_blocks", "dropout", "lr", "weight_decay", "max_seq_len", "patience")
"""The :class:`TrainConfig` fields a search sets (``search.json``'s ``best`` holds exactly these)."""


@dataclass(frozen=True)
class SearchSpace:
    """Ranges of the searched hyper-parameters (log scale for the learning rate and weight decay)."""

    hidden: tuple[int, ...] = (32, 64, 96, 128)
    n_blocks: tuple[int, int] = (1, 3)
    dropout: tuple[float, float] = (0.0, 0.5)
    lr: tuple[float, float] = (3e-4, 5e-3)
    weight_decay: tuple[float, float] = (1e-8, 1e-3)
    max_seq_len: tuple[int, ...] = (50, 100, 200)
    patience: tuple[int, ...] = (5, 10, 20)

    def suggest(self, trial: Any, base: TrainConfig) -> TrainConfig:  # noqa: ANN401 - an optuna.Trial
        """The trial's configuration: ``base`` with the searched fields drawn."""
        return base.replace(
            hidden=trial.suggest_categorical("hidden", list(self.hidden)),
            n_blocks=trial.suggest_int("n_blocks", *self.n_blocks),
            dropout=trial.suggest_float("dropout", *self.dropout),
            lr=trial.suggest_float("lr", *self.lr, log=True),
            weight_decay=trial.suggest_float("weight_decay", *self.weight_decay, log=True),
            max_seq_len=trial.suggest_categorical("max_seq_len", list(self.max_seq_len)),
            patience=trial.suggest_categorical("patience", list(self.patience)),
        )


@dataclass
class SearchResult:
    """Every trial and the best configuration (by validation NDCG@10 of the model alone)."""

    best: dict[str, Any]
    best_valid_ndcg10: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"chosen_on": "validation ndcg@10 (test never evaluated)", "seed": self.seed,
                "seconds": self.seconds, "best": self.best, "best_valid_ndcg@10": self.best_valid_ndcg10,
                "trials": self.trials}


def _optuna():  # noqa: ANN202 - the module
    try:
        import optuna
    except ImportError:
        msg = "streamrec train --search needs optuna: install the train extra (pip install 'streamrec[train]')"
        raise ConfigError(msg) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def run_search(data: SequenceData, split: LooSplit, base: TrainConfig, trials: int, *, seed: int = 0,
               timeout_s: float | None = None, space: SearchSpace | None = None,
               train: Callable[..., Any] = train_model) -> SearchResult:
    """``trials`` trials of TPE (seeded) with median pruning on validation NDCG@10 per epoch."""
    if trials < 1:
        msg = f"--search needs at least one trial, got {trials}"
        raise ConfigError(msg)
    optuna = _optuna()
    space = space or SearchSpace()
    rows: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:  # noqa: ANN401
        cfg = space.suggest(trial, base).replace(progress=False, ks=(10,))
        started = time.perf_counter()
        row: dict[str, Any] = {"trial": trial.number, **{k: getattr(cfg, k) for k in SEARCHED}}
        rows.append(row)

        def on_eval(epoch: int, valid_ndcg10: float) -> None:
            trial.report(valid_ndcg10, epoch)
            row["epochs"], row["last_valid_ndcg@10"] = epoch, valid_ndcg10
            if trial.should_prune():
                row["state"], row["seconds"] = "pruned", time.perf_counter() - started
                raise optuna.TrialPruned

        result = train(data, split, cfg, on_eval=on_eval, evaluate_test=False)
        value = float(result.valid["ndcg@10"])
        row.update(state="complete", best_epoch=result.best_epoch, valid_ndcg10=value,
                   seconds=time.perf_counter() - started)
        return value

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5))
    started = time.perf_counter()
    bar = tqdm(total=trials, desc="search", unit="trial", disable=not base.progress)

    def progress(study: Any, trial: Any) -> None:  # noqa: ANN401, ARG001 - optuna's callback signature
        bar.update()
        row = rows[-1] if rows else {}
        best = max((r["valid_ndcg10"] for r in rows if r.get("state") == "complete"), default=float("nan"))
        last = row.get("valid_ndcg10", row.get("last_valid_ndcg@10", 0.0))
        bar.set_postfix_str(f"last {row.get('state', '?')} {last:.4f}, best valid ndcg@10 {best:.4f}")

    try:
        study.optimize(objective, n_trials=trials, timeout=timeout_s, catch=(), callbacks=[progress])
    finally:
        bar.close()
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        msg = "every search trial was pruned or failed; widen --search or the time budget"
        raise ConfigError(msg)
    best = study.best_trial
    params = {k: getattr(space.suggest(optuna.trial.FixedTrial(best.params), base), k) for k in SEARCHED}
    return SearchResult(best=params, best_valid_ndcg10=float(best.value), trials=rows, seed=seed,
                        seconds=time.perf_counter() - started)


def searched_config(base: TrainConfig, best: dict[str, Any]) -> TrainConfig:
    """``base`` with a search's best parameters (only the searched fields; anything else is refused)."""
    unknown = set(best) - set(SEARCHED)
    if unknown:
        msg = f"a search configuration sets unknown fields {sorted(unknown)}; expected a subset of {SEARCHED}"
        raise ConfigError(msg)
    return base.replace(**best)


def load_searched(path: str | Path, base: TrainConfig) -> TrainConfig:
    """``base`` with the best configuration of a ``search.json``."""
    doc = json.loads(Path(path).read_text("utf-8"))
    if "best" not in doc:
        msg = f"{path} has no 'best' configuration (is it a streamrec search.json?)"
        raise ConfigError(msg)
    return searched_config(base, doc["best"])


def write_search(result: SearchResult, out: Path) -> None:
    """``search.json``, ``search.md`` (every trial) and ``search.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "search.json").write_text(json.dumps(result.to_json(), indent=1), "utf-8")
    cols = ["trial", "state", *SEARCHED, "epochs", "best_epoch", "valid_ndcg10", "seconds"]
    lines = ["# Hyper-parameter search (validation NDCG@10; the test split is not evaluated)", "",
             f"Best: {json.dumps(result.best)} -> valid NDCG@10 {result.best_valid_ndcg10:.4f} "
             f"({len(result.trials)} trials, {result.seconds:.0f} s, TPE seed {result.seed})", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in result.trials:
        cells = []
        for c in cols:
            v = row.get(c, row.get("last_valid_ndcg@10") if c == "valid_ndcg10" else "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    (out / "search.md").write_text("\n".join(lines) + "\n", "utf-8")
    _plot(result, out / "search.png")


def _plot(result: SearchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    best = -1.0
    xs, ys, bests = [], [], []
    for row in result.trials:
        value = row.get("valid_ndcg10", row.get("last_valid_ndcg@10"))
        if value is None:
            continue
        xs.append(row["trial"])
        ys.append(value)
        if row.get("state") == "complete":
            best = max(best, value)
        bests.append(best if best >= 0 else None)
    colors = ["tab:blue" if r.get("state") == "complete" else "tab:grey" for r in result.trials
              if r.get("valid_ndcg10", r.get("last_valid_ndcg@10")) is not None]
    ax.scatter(xs, ys, c=colors, label="trial (grey: pruned, value at pruning)")
    ax.step(xs, [b if b is not None else float("nan") for b in bests], where="post", color="tab:red",
            label="best so far")
    ax.set(xlabel="trial", ylabel="valid NDCG@10", title="streamrec train --search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(result: SearchResult) -> dict[str, Any]:
    """What ``metrics.json`` carries of a search."""
    return {"trials": len(result.trials), "best": result.best, "best_valid_ndcg@10": result.best_valid_ndcg10,
            "seconds": result.seconds, "pruned": sum(r.get("state") == "pruned" for r in result.trials),
            "base": {k: v for k, v in TrainConfig().model_dump().items() if k in SEARCHED}}
