"""A small subset of `streamrec faults`, through the console script: kill -9 of the job with a hot standby
taking over, stop with a savepoint (SIGTERM) and resume, poison records between canary events; and on a standalone
cluster, kill -9 of each TaskManager in turn."""

from __future__ import annotations

import json
import subprocess

import pytest

from deploy.harness.paths import streamrec_executable

pytestmark = pytest.mark.integration


def test_kill9_with_standby_savepoint_and_poison_records(trained_bundle, tmp_path):
    out = tmp_path / "faults.json"
    result = subprocess.run(  # noqa: S603 - fixed argv
        [streamrec_executable(), "faults", "--quick", "--scale", "0.15", "--only", "kill9", "--only", "savepoint",
         "--only", "poison",
         "--bundle", str(trained_bundle), "--work", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path,
    )
    assert out.exists(), result.stderr[-3000:]
    doc = json.loads(out.read_text())
    rows = {row["name"]: row for row in doc["scenarios"]}
    kill, poison = rows["kill9"], rows["poison"]
    assert kill["checks"] == {"every event answered": True, "every user's history continues": True,
                              "no task restart": True, "per-user state as in an uninterrupted run": True,
                              "duplicates only from after each kill's last checkpoint": True,
                              "lists flowed again after every kill": True, "every kill mid-stream": True}, kill
    # the bound is what the checkpoints say, not a multiple of the rate: well under the events sent
    assert kill["duplicates"] <= kill["notes"]["duplicates_bound"] < kill["events"] // 2, kill["notes"]
    assert kill["notes"]["kills_mid_stream"] == 3
    assert kill["notes"]["users_compared"] > 50
    assert kill["missing"] == 0 and len(kill["kill_to_first_list_s"]) == 3
    assert kill["events"] == 1500 and kill["lists"] >= 1500
    savepoint = rows["savepoint"]
    assert savepoint["ok"] and savepoint["missing"] == 0, savepoint
    assert savepoint["duplicates"] <= savepoint["notes"]["duplicates_bound"] == 32, savepoint
    assert savepoint["checks"]["health endpoint says RUNNING"] and savepoint["checks"]["stopped with a savepoint"]
    assert "/savepoints/savepoint-" in savepoint["notes"]["resumed_from"]
    assert poison["ok"] and poison["notes"]["malformed"] > 100 and not poison["notes"]["wrong_code"], poison
    assert result.returncode == 0 and doc["ok"], result.stdout[-3000:]
    assert (tmp_path / "faults.md").read_text().startswith("| scenario |")


def test_cluster_taskmanager_kill(trained_bundle, tmp_path):
    """``kill -9`` of each TaskManager of a two-TaskManager standalone cluster in turn, mid-stream, each started
    again at once: Flink restarts the job from its checkpoint, every event is answered, duplicates stay within what
    the checkpoints allow, every user's state is that of an uninterrupted run."""
    out = tmp_path / "faults.json"
    result = subprocess.run(  # noqa: S603 - fixed argv
        [streamrec_executable(), "faults", "--quick", "--scale", "0.5", "--only", "cluster-tm",
         "--bundle", str(trained_bundle), "--work", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path,
    )
    assert out.exists(), result.stderr[-3000:]
    row = json.loads(out.read_text())["scenarios"][0]
    assert row["name"] == "cluster-tm"
    assert row["checks"] == {"every event answered": True, "every user's history continues": True,
                             "per-user state as in an uninterrupted run": True,
                             "duplicates only from after each kill's last checkpoint": True,
                             "the job restarted from a checkpoint after every kill": True,
                             "every kill mid-stream": True, "lists flowed again after every kill": True,
                             "every fault carried out": True}, (row, result.stderr[-4000:])
    assert row["events"] == 2000 and row["missing"] == 0 and row["lists"] >= 2000
    # the bound is what the checkpoints say (a restore from an older one, or from none, would exceed it), below
    # the events sent: each kill replays at most the ~2 s since its last checkpoint and the seconds until the job
    # runs again, the backlog of the outage included
    assert row["duplicates"] <= row["notes"]["duplicates_bound"] < row["events"], row["notes"]
    assert row["notes"]["kills_mid_stream"] == 2 and row["notes"]["restored_from_checkpoint"] >= 2
    assert row["notes"]["users_compared"] > 50 and len(row["kill_to_first_list_s"]) == 2
    assert result.returncode == 0, result.stdout[-3000:]
