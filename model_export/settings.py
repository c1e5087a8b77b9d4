"""Training settings, importable without torch (a replay serving a given bundle, ``streamrec config``)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from model_export.metrics import DEFAULT_KS
from operators.settings import ModelOptions, Option, Settings

__all__ = ["DEFAULT_SEEDS", "TrainConfig", "TRAIN_OPTIONS", "Arch"]


DEFAULT_SEEDS: tuple[int, ...] = (42, 43, 44)
"""``streamrec train``'s seeds: three, so that no reported figure is one lucky draw (the first is
``TrainConfig.seed``)."""

Arch = Literal["lru", "sasrec", "gru4rec"]
Positive = Annotated[int, Field(ge=1)]


class TrainConfig(Settings):
    """Training hyper-parameters (chosen on validation only): ``streamrec train``'s defaults, its options and the
    ``[train]`` table of a config file are generated from here, so each is defined once.

    The defaults are the best trial of an 11-trial search on ml-latest-small (``perf/results/search``: window,
    blocks, dropout, learning rate, weight decay) with the item side information on, and a hidden size of 64
    where the search had 128: over three seeds of ``streamrec train`` 64 reads higher on validation (NDCG@10
    0.1131 ± 0.0005 against 0.1088 ± 0.0007) at the previous default's step cost (128 costs 1.4-1.8x per event
    on a 10,000-item catalog). Checked on a generated log (``perf/results/model-experiments``)."""

    SECTION: ClassVar[str] = "train"

    arch: Arch = Field("lru", description="lru (recurrent, served one step per event), sasrec, gru4rec")
    max_seq_len: Positive = Field(100, description="training windows' length (a recurrent model is served over "
                                                  "the whole stream)")
    hidden: Positive = Field(64, description="embedding and hidden size")
    n_blocks: Positive = Field(1, description="recurrent (or attention) blocks")
    n_heads: Positive = Field(1, description="attention heads (sasrec)")
    dropout: float = Field(0.254, ge=0.0, lt=1.0, description="dropout")
    lr: float = Field(3.86e-3, gt=0.0, description="Adam's learning rate")
    weight_decay: float = Field(1.76e-7, ge=0.0, description="Adam's weight decay")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing of the full-softmax "
                                                                    "next-item cross-entropy (0: none)")
    item_features: bool = Field(True, description="item side information (the catalog's categories; MovieLens: "
                                                  "genres from movies.csv) as an additive item embedding of the "
                                                  "lru, folded into its item table for export (serving unchanged)")
    batch_size: Positive = Field(128, description="sequences per batch")
    max_epochs: Positive = Field(300, description="upper bound: early stopping (patience) and max_train_seconds "
                                                  "end sooner")
    patience: Positive = Field(10, description="epochs without validation NDCG@10 gain before stopping")
    eval_every: Positive = Field(1, description="epochs between validations")
    seed: int = Field(42, description="the random seed (streamrec train: the first of --seeds)")
    threads: Positive = Field(2, description="torch threads")
    max_train_seconds: float = Field(540.0, gt=0.0, description="stop starting new epochs after this long, per "
                                                                "model and seed (the best epoch so far is kept)")
    progress: bool = Field(True, description="a progress bar per epoch")
    ks: tuple[int, ...] = Field(DEFAULT_KS, description="cut-offs of the reported metrics")


TRAIN_OPTIONS = ModelOptions(TrainConfig, "train", [
    Option("n_blocks", name="blocks"),
    Option("max_epochs", name="epochs"),
    Option("item_features", name="no_item_features", invert=True,
           help="train without the item side information (the catalog's categories)"),
], exclude=("arch", "seed", "progress", "ks"))
"""``streamrec train``'s options of :class:`TrainConfig` (``[train]`` in ``--config``, ``STREAMREC_TRAIN_*``); the
architecture(s) and seeds are options of the command (``--arch lru,sasrec``, ``--seeds 42,43,44``)."""
