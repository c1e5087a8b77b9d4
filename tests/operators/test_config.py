import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from operators.config import JobConfig
from operators.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
BASE = {"bootstrap_servers": "127.0.0.1:9092", "bundle_path": "/b", "checkpoint_dir": "/c"}


def test_defaults_are_valid():
    cfg = JobConfig(**BASE)
    assert cfg.delivery_guarantee == "at-least-once"
    assert cfg.to_dict()["top_k"] == 20


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bootstrap_servers": "localhost"}, "is not a host:port list"),
        ({"top_k": 0}, "job.top_k=0: Input should be greater than or equal to 1 (use e.g. --top-k 20)"),
        ({"history_len": -1}, "job.history_len=-1: Input should be greater than or equal to 1"),
        ({"history_len": 70_000}, "job.history_len=70000: Input should be less than or equal to 65535"),
        ({"micro_batch": 0}, "job.micro_batch=0: Input should be greater than or equal to 1 (use 1 (off)"),
        ({"quarantine_topic": "streamrec.dead-letter"}, "quarantine_topic='streamrec.dead-letter' must differ"),
        ({"top_kk": 3}, "job.top_kk=3: Extra inputs are not permitted"),
        ({"output_topic": "streamrec.events"}, "topics must differ"),
        ({"input_topic": "has space"}, "must be a non-empty name without spaces"),
        ({"delivery_guarantee": "twice"}, "Input should be 'at-least-once', 'exactly-once' or 'none'"),
        ({"startup_mode": "yesterday"}, "Input should be 'group-offsets', 'earliest-offset' or"),
        ({"onnx_providers": ()}, "name at least one provider"),
        ({"control_topic": "streamrec.events"}, "topics must differ"),
        ({"catalog_path": "/nonexistent/movies.csv"}, "does not exist; pass a MovieLens movies.csv"),
    ],
)
def test_bad_values_fail_with_the_fix(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        JobConfig(**{**BASE, **changes})


def run_job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flink_jobs.recommend_job", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120, check=False)


def test_job_fails_fast_on_bad_config(trained_bundle, tmp_path):
    result = run_job("--bootstrap-servers", "nohost", "--bundle", str(trained_bundle),
                     "--checkpoint-dir", str(tmp_path))
    assert result.returncode == 2
    assert "bootstrap_servers='nohost': is not a host:port list" in result.stderr


def test_job_fails_fast_on_tampered_bundle(trained_bundle, tmp_path):
    bundle = shutil.copytree(trained_bundle, tmp_path / "bundle")
    with (bundle / "model.onnx").open("r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    result = run_job("--bootstrap-servers", "127.0.0.1:9", "--bundle", str(bundle), "--checkpoint-dir",
                     str(tmp_path / "ck"))
    assert result.returncode == 2
    assert "sha256 of model.onnx is" in result.stderr
    assert "Re-create it with `streamrec train" in result.stderr


def test_job_ignores_unknown_arguments_but_not_missing_ones(tmp_path):
    result = run_job("--bundle", "x", "--checkpoint-dir", str(tmp_path), "--flink-extra", "1")
    assert result.returncode == 2
    assert "--bootstrap-servers" in result.stderr


def test_restore_from_latest_picks_the_newest_complete_checkpoint(tmp_path):
    import os

    from flink_jobs.recommend_job import latest_checkpoint, resolve_restore

    assert latest_checkpoint(tmp_path) is None and resolve_restore("latest", tmp_path) is None
    for job, chk, mtime in (("a" * 32, 3, 100), ("b" * 32, 7, 200), ("b" * 32, 8, 300)):
        (tmp_path / job / f"chk-{chk}").mkdir(parents=True)
        meta = tmp_path / job / f"chk-{chk}" / "_metadata"
        meta.write_bytes(b"x")
        os.utime(meta, ns=(mtime * 10**9, mtime * 10**9))
    (tmp_path / ("b" * 32) / "chk-9").mkdir(parents=True)  # cut short by a crash: no _metadata
    assert resolve_restore("latest", tmp_path) == str(tmp_path / ("b" * 32) / "chk-8")
    assert resolve_restore(None, tmp_path) is None
    assert resolve_restore(str(tmp_path / ("a" * 32) / "chk-3"), tmp_path) == str(tmp_path / ("a" * 32) / "chk-3")
    with pytest.raises(ConfigError, match="no such checkpoint or savepoint"):
        resolve_restore(str(tmp_path / "nope"), tmp_path)


def test_job_options_come_from_the_config_file_then_the_environment_then_the_command_line(tmp_path, monkeypatch):
    from flink_jobs.recommend_job import parse_job_args

    conf = tmp_path / "job.toml"
    conf.write_text('[job]\nbootstrap_servers = "127.0.0.1:9092"\nbundle = "b"\ncheckpoint_dir = "ck"\n'
                    'top_k = 7\nhistory_len = 50\nstate_ttl_hours = 2.5\npseudonymize_users = true\n'
                    'onnx_providers = ["CPUExecutionProvider"]\n[rerank]\nrepeat_window = 2\n')
    monkeypatch.setenv("STREAMREC_JOB_HISTORY_LEN", "60")
    monkeypatch.setenv("STREAMREC_JOB_TOP_K", "8")
    args, _ = parse_job_args(["--config", str(conf), "--top-k", "9"])
    assert (args.bootstrap_servers, args.bundle, args.checkpoint_dir) == ("127.0.0.1:9092", "b", "ck")
    assert (args.top_k, args.history_len, args.state_ttl_hours) == (9, 60, 2.5)  # CLI > env > file
    assert args.pseudonymize_users is True and args.onnx_providers == "CPUExecutionProvider"


def test_an_unknown_job_key_names_the_valid_ones(tmp_path):
    from flink_jobs.recommend_job import parse_job_args

    conf = tmp_path / "job.toml"
    conf.write_text('[job]\ntopk = 7\n')
    with pytest.raises(ConfigError, match=r"unknown \[job\] key\(s\) \['topk'\]; valid keys: .*'top_k'"):
        parse_job_args(["--config", str(conf)])


def test_print_defaults_is_a_config_file(tmp_path):
    """`streamrec config --print-defaults` prints TOML that the job reads back (once the required keys are set)."""
    import tomllib

    from flink_jobs.recommend_job import parse_job_args

    out = subprocess.run([sys.executable, "-m", "deploy.cli", "config", "--print-defaults"], capture_output=True,
                         text=True, check=True).stdout
    doc = tomllib.loads(out)
    assert set(doc) == {"job", "rerank", "interests", "trending", "abuse", "kafka", "train", "replay", "demo",
                        "generate"} and doc["job"]["top_k"] == 20
    conf = tmp_path / "defaults.toml"
    conf.write_text(out.replace("# bootstrap_servers = ...  (required)", 'bootstrap_servers = "h:1"')
                    .replace("# bundle = ...  (required)", 'bundle = "b"')
                    .replace("# checkpoint_dir = ...  (required)", 'checkpoint_dir = "c"'))
    args, _ = parse_job_args(["--config", str(conf)])
    assert args.top_k == 20 and args.bootstrap_servers == "h:1"


def test_flink_conf_options_are_not_taken_for_the_config_file():
    from flink_jobs.recommend_job import parse_job_args

    args, _ = parse_job_args(["--bootstrap-servers", "h:1", "--bundle", "b", "--checkpoint-dir", "c",
                              "--conf", "python.pythonpath=/nonexistent"])
    assert args.config is None and args.conf == ["python.pythonpath=/nonexistent"]


def test_interest_and_trending_knobs_are_layered_and_bad_ones_name_the_key(tmp_path, monkeypatch):
    from flink_jobs.recommend_job import config_from_args, parse_job_args

    conf = tmp_path / "job.toml"
    conf.write_text('[job]\nbootstrap_servers = "127.0.0.1:9092"\nbundle = "b"\ncheckpoint_dir = "ck"\n'
                    '[interests]\nshort_term_minutes = 30\n[trending]\nboost = 0.5\ntop_n = 20\n')
    monkeypatch.setenv("STREAMREC_TRENDING_TOP_N", "25")
    args, _ = parse_job_args(["--config", str(conf), "--trending", "boost=0.7"])
    cfg = config_from_args(args)
    assert cfg.interests.short_term_minutes == 30 and cfg.trending.top_n == 25 and cfg.trending.boost == 0.7
    args, _ = parse_job_args(["--config", str(conf), "--interests", "weight_view=5"])
    with pytest.raises(ConfigError, match=r"weight_view=5.0 is above weight_click=1.0"):
        config_from_args(args)
    args, _ = parse_job_args(["--config", str(conf), "--trending", "half_life_minutes=-1"])
    with pytest.raises(ConfigError, match=r"trending.half_life_minutes=.-1.: Input should be greater than 0"):
        config_from_args(args)


def test_micro_batching_is_on_by_default_and_off_with_exactly_once():
    from operators.config import DEFAULT_MICRO_BATCH

    assert JobConfig(**BASE).batch_size == DEFAULT_MICRO_BATCH > 1
    assert JobConfig(**{**BASE, "delivery_guarantee": "exactly-once"}).batch_size == 1
    assert JobConfig(**{**BASE, "micro_batch": 1}).batch_size == 1
    with pytest.raises(ConfigError, match="exactly-once"):
        JobConfig(**{**BASE, "micro_batch": 8, "delivery_guarantee": "exactly-once"})
