"""Training settings, importable without torch (a replay serving a given bundle, ``streamrec config``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from model_export.metrics import DEFAULT_KS
from operators.errors import ConfigError

__all__ = ["DEFAULT_SEEDS", "TrainConfig"]


DEFAULT_SEEDS: tuple[int, ...] = (42, 43, 44)
"""``streamrec train``'s seeds: three, so that no reported figure is one lucky draw (the first is
``TrainConfig.seed``)."""


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (chosen on validation only). These defaults are ``streamrec train``'s: its
    options take them from here (``deploy/cli.py``), so each is defined once."""

    arch: str = "lru"
    max_seq_len: int = 50
    hidden: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 300
    """Upper bound: early stopping (``patience``) and ``max_train_seconds`` end sooner."""
    patience: int = 10
    eval_every: int = 1
    seed: int = 42
    threads: int = 2
    max_train_seconds: float = 540.0
    """Stop starting new epochs after this long (the best epoch so far is kept)."""
    progress: bool = True
    ks: tuple[int, ...] = field(default=DEFAULT_KS)

    def __post_init__(self) -> None:
        for name in ("max_seq_len", "hidden", "n_blocks", "n_heads", "batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                msg = f"{name} must be >= 1, got {getattr(self, name)}"
                raise ConfigError(msg)
        if self.arch not in ("sasrec", "gru4rec", "lru"):
            msg = f"arch must be 'sasrec', 'gru4rec' or 'lru', got {self.arch!r}"
            raise ConfigError(msg)
        if not 0.0 <= self.dropout < 1.0:
            msg = f"dropout must be in [0, 1), got {self.dropout}"
            raise ConfigError(msg)
