"""``streamrec run``'s options are generated from ``JobConfig`` (operators/config.py): every setting has one, each
default is the model's, and the file <- environment <- command line layering converts units and paths the same
way on every layer."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from flink_jobs.recommend_job import JOB_OPTIONS, build_arg_parser, config_from_args, parse_job_args
from operators.config import JobConfig
from operators.errors import ConfigError

REQUIRED = ["--bootstrap-servers", "127.0.0.1:9092", "--bundle", "b", "--checkpoint-dir", "ck"]


def test_every_flat_setting_has_an_option_and_no_option_has_a_default_of_its_own():
    flat = {n for n, f in JobConfig.model_fields.items() if n != "extra" and "Config" not in str(f.annotation)}
    assert {o.field for o in JOB_OPTIONS.options} == flat
    flags = {a.dest: a for a in build_arg_parser()._actions}  # noqa: SLF001 - inspecting, not parsing
    for option in JOB_OPTIONS.options:
        assert flags[option.key].default == argparse.SUPPRESS, option.key  # the default comes from the model


def test_the_command_line_with_nothing_but_the_required_gives_the_models_defaults():
    args, _ = parse_job_args(REQUIRED)
    cfg = config_from_args(args)
    want = JobConfig(bootstrap_servers="127.0.0.1:9092", bundle_path=str(Path("b").resolve()),
                     checkpoint_dir=str(Path("ck").resolve()))
    assert cfg == want


def test_units_and_flags_convert_alike_on_every_layer(tmp_path, monkeypatch):
    conf = tmp_path / "job.toml"
    conf.write_text("[job]\nstate_ttl_hours = 2\nfull_checkpoints = true\nonnx_providers = ['CPUExecutionProvider']\n")
    monkeypatch.setenv("STREAMREC_JOB_COMPACTION_PERIOD_HOURS", "0.5")
    cfg = config_from_args(parse_job_args([*REQUIRED, "--config", str(conf), "--micro-batch", "4"])[0])
    assert cfg.state_ttl_ms == 7_200_000 and cfg.compaction_period_ms == 1_800_000
    assert cfg.incremental_checkpoints is False and cfg.onnx_providers == ("CPUExecutionProvider",)
    assert cfg.micro_batch == 4
    monkeypatch.setenv("STREAMREC_JOB_FULL_CHECKPOINTS", "maybe")
    with pytest.raises(ConfigError, match="full_checkpoints = 'maybe': expected true or false"):
        parse_job_args(REQUIRED)


def test_a_missing_required_setting_names_every_way_to_give_it():
    os.environ.pop("STREAMREC_JOB_BUNDLE", None)
    with pytest.raises(ConfigError, match=r"--bundle is required \(or `bundle = ...` in \[job\] of --config, or "
                                          r"STREAMREC_JOB_BUNDLE\)"):
        parse_job_args(["--bootstrap-servers", "h:1", "--checkpoint-dir", "c"])


def test_choices_come_from_the_models_literal_types():
    with pytest.raises(SystemExit):
        build_arg_parser().parse_args([*REQUIRED, "--delivery-guarantee", "twice"])
    args, _ = parse_job_args([*REQUIRED, "--delivery-guarantee", "exactly-once"])
    assert config_from_args(args).batch_size == 1
