"""Each default is defined once, in its settings model: the commands' options are generated from the models
(``operators.settings.ModelOptions``) with no default of their own, so ``streamrec train`` with no options trains
exactly ``TrainConfig()``, ``streamrec replay`` replays ``ReplayConfig``'s and trains ``TrainConfig``'s, and the
demo and the generator run ``DemoConfig()`` and ``GeneratorConfig()``; a ``--config`` file's table and
``STREAMREC_<SECTION>_<KEY>`` come between the defaults and the command line."""

from __future__ import annotations

import argparse

import pytest

from deploy.cli import build_parser
from deploy.demo import DEMO_OPTIONS, DemoConfig
from deploy.harness.generator import GENERATE_OPTIONS, GeneratorConfig
from deploy.replay import REPLAY_OPTIONS, ReplayConfig, config_from_args
from deploy.replay import build_parser as replay_parser
from model_export.pipeline import TrainJob
from model_export.settings import DEFAULT_SEEDS, TRAIN_OPTIONS, TrainConfig
from operators.errors import ConfigError


def _subparser_actions(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return {a.dest: a for a in sub.choices[command]._actions}  # noqa: SLF001 - inspecting, not parsing


@pytest.mark.parametrize(("command", "options"), [("train", TRAIN_OPTIONS), ("demo", DEMO_OPTIONS),
                                                  ("generate", GENERATE_OPTIONS)])
def test_no_generated_option_has_a_default_of_its_own(command, options):
    actions = _subparser_actions(command)
    for option in options.options:
        assert actions[option.key].default == argparse.SUPPRESS, f"{command} --{option.key}"


def test_streamrec_train_with_no_options_trains_train_configs_defaults():
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o"])
    assert TrainConfig(**TRAIN_OPTIONS.fields(TRAIN_OPTIONS.layered(args, {}, {}))) == TrainConfig()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    assert seeds == TrainJob(data="d", out="o").seeds == DEFAULT_SEEDS and seeds[0] == TrainConfig().seed
    assert len(seeds) >= 3, "a default report over seeds, not one draw"
    assert args.arch == TrainConfig().arch == "lru", "the served architecture is the default"


def test_train_settings_layer_file_then_environment_then_command_line(tmp_path):
    conf = tmp_path / "train.toml"
    conf.write_text("[train]\nhidden = 96\nblocks = 1\nlr = 0.001\nepochs = 50\n")
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--config", str(conf), "--lr", "0.004"])
    values = TRAIN_OPTIONS.layered(args, {"train": {"hidden": 96, "blocks": 1, "lr": 0.001, "epochs": 50}},
                                   {"STREAMREC_TRAIN_EPOCHS": "70"})
    cfg = TrainConfig(**TRAIN_OPTIONS.fields(values))
    assert (cfg.hidden, cfg.n_blocks, cfg.lr, cfg.max_epochs) == (96, 1, 0.004, 70)
    with pytest.raises(ConfigError, match=r"unknown \[train\] key\(s\) \['hiden'\]"):
        TRAIN_OPTIONS.layered(args, {"train": {"hiden": 8}}, {})
    with pytest.raises(ConfigError, match=r"train.dropout=1.5: Input should be less than 1"):
        TrainConfig(**TRAIN_OPTIONS.fields(TRAIN_OPTIONS.layered(args, {"train": {"dropout": 1.5}}, {})))


def test_streamrec_replay_defaults_are_replay_configs_and_it_trains_streamrec_trains_defaults():
    cfg = config_from_args(replay_parser().parse_args(["--data", "d", "--out", "o"]))
    assert cfg == ReplayConfig(data="d", out="o")
    assert cfg.train_config() == TrainConfig(), "one definition of the training defaults"
    given = config_from_args(replay_parser().parse_args(["--data", "d", "--out", "o", "--epochs", "3", "--seed", "7",
                                                         "--no-baselines", "--format", "movielens"]))
    assert given.train_config() == TrainConfig(max_epochs=3, seed=7)
    assert not given.baselines and given.fmt == "movielens"
    assert {o.key for o in REPLAY_OPTIONS.options} >= {"format", "no_baselines", "cutoff", "top_k"}


def test_streamrec_demo_and_generate_defaults_are_their_configs():
    demo = build_parser().parse_args(["demo"])
    assert DemoConfig(**DEMO_OPTIONS.fields(DEMO_OPTIONS.layered(demo, {}, {}))) == DemoConfig()
    quiet = build_parser().parse_args(["demo", "--quiet", "--events", "50"])
    cfg = DemoConfig(**DEMO_OPTIONS.fields(DEMO_OPTIONS.layered(quiet, {}, {})))
    assert not cfg.print_lists and cfg.events == 50
    gen = build_parser().parse_args(["generate", "--out", "x", "--users", "30"])
    assert GeneratorConfig(**GENERATE_OPTIONS.fields(GENERATE_OPTIONS.layered(gen, {}, {}))) == GeneratorConfig(
        n_users=30)


def test_the_demos_quick_training_differs_from_the_default_only_in_its_length():
    from deploy.harness.demo_bundle import DEMO_TRAINING

    base = TrainConfig().model_dump()
    differs = {k for k, v in TrainConfig(**DEMO_TRAINING).model_dump().items() if v != base[k]}
    assert differs == {"max_epochs", "patience", "max_train_seconds"}
