"""Each training default is defined once (``model_export.train.TrainConfig``): ``streamrec train`` with no options
trains exactly ``TrainConfig()``, and ``streamrec replay``'s options are ``ReplayConfig``'s defaults."""

from __future__ import annotations

from dataclasses import asdict

from deploy.cli import build_parser
from deploy.replay import ReplayConfig, config_from_args
from deploy.replay import build_parser as replay_parser
from model_export.pipeline import TrainJob
from model_export.train import DEFAULT_SEEDS, TrainConfig


def test_streamrec_train_defaults_are_train_configs():
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o"])
    cli = {"max_seq_len": args.max_seq_len, "hidden": args.hidden, "n_blocks": args.blocks, "dropout": args.dropout,
           "lr": args.lr, "batch_size": args.batch_size, "max_epochs": args.epochs, "patience": args.patience,
           "max_train_seconds": args.max_train_seconds, "arch": args.arch}
    want = asdict(TrainConfig())
    assert cli == {k: want[k] for k in cli}
    seeds = tuple(int(s) for s in args.seeds.split(","))
    assert seeds == TrainJob(data="d", out="o").seeds == DEFAULT_SEEDS and seeds[0] == want["seed"]
    assert len(seeds) >= 3, "a default report over seeds, not one draw"
    assert want["arch"] == "lru", "the served architecture is the default"


def test_streamrec_replay_defaults_are_replay_configs_and_it_trains_streamrec_trains_defaults():
    cfg = config_from_args(replay_parser().parse_args(["--data", "d", "--out", "o"]))
    assert cfg == ReplayConfig(data="d", out="o", fmt=cfg.fmt, cutoff=cfg.cutoff)
    assert cfg.train_config() == TrainConfig(), "one definition of the training defaults"
    given = config_from_args(replay_parser().parse_args(["--data", "d", "--out", "o", "--epochs", "3", "--seed", "7"]))
    assert given.train_config() == TrainConfig(max_epochs=3, seed=7)


def test_streamrec_demo_and_generate_defaults_are_their_configs():
    from deploy.demo import DemoConfig
    from deploy.harness.generator import GeneratorConfig

    demo = build_parser().parse_args(["demo"])
    d = DemoConfig()
    assert (demo.events, demo.rate, demo.malformed_share, demo.top_k) == (d.events, d.rate, d.malformed_share,
                                                                           d.top_k)
    gen = build_parser().parse_args(["generate", "--out", "x"])
    g = GeneratorConfig()
    assert (gen.users, gen.items, gen.seed) == (g.n_users, g.n_items, g.seed)


def test_the_demos_quick_training_differs_from_the_default_only_in_its_length():
    from deploy.harness.demo_bundle import DEMO_TRAINING

    differs = {k for k, v in asdict(TrainConfig(**DEMO_TRAINING)).items() if v != asdict(TrainConfig())[k]}
    assert differs == {"max_epochs", "patience", "max_train_seconds"}
