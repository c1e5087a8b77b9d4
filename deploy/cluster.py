"""A real Flink standalone cluster from the distribution inside the apache-flink wheel, and job submission to it.

``streamrec cluster up`` writes a project-owned ``config.yaml`` (RocksDB, checkpoint and savepoint dirs, the
Prometheus reporter on 127.0.0.1, this interpreter as the Python executable, thread mode), then starts one
JobManager and N TaskManagers with the wheel's ``bin/jobmanager.sh`` / ``bin/taskmanager.sh`` in the
foreground, each in its own process group, and records them in ``<dir>/cluster.json``. ``down`` stops exactly
those process groups (never processes found by name). ``status`` asks the REST API. ``up --ha`` starts a
ZooKeeper server first (the one inside ``flink-dist``, ``bin/zookeeper.sh``) and configures JobManager high
availability with it; ``restart --name`` starts a process that died again (a supervisor's restart: a
TaskManager, or the JobManager, which then recovers its jobs from ZooKeeper and their latest checkpoints);
``add-taskmanager`` adds one.

``streamrec deploy`` submits the job with the wheel's ``bin/flink run -d -py``, shipping the project's code as
a directory with ``-pyfs`` (a copy of the ``operators`` and ``flink_jobs`` packages: the workers import that
copy and the interpreter's site-packages, nothing from a checkout) and the Kafka connector jar with the job
(``pipeline.jars``); ``streamrec stop`` stops a job with a savepoint; ``deploy --from-savepoint`` resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deploy.harness.local_kafka import free_port
from deploy.harness.process import stop_group
from flink_jobs.environment import python_executable, site_packages
from operators.errors import ConfigError, StreamrecError

__all__ = ["ClusterLayout", "cluster_config", "cluster_up", "start_process", "start_taskmanager",
           "cluster_down", "cluster_status",
           "deploy_job", "stop_job", "ship_code", "main_cluster", "main_deploy", "main_stop"]

log = logging.getLogger("streamrec.cluster")

PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.LoopbackPrometheusReporterFactory"
SHIPPED_PACKAGES = ("operators", "flink_jobs")
_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")
_SAVEPOINT = re.compile(r"Savepoint completed\. Path: (\S+)")


def pyflink_home() -> Path:
    """The Flink distribution inside the apache-flink wheel (``bin/``, ``lib/``, ``plugins/``)."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def reporter_jar() -> Path:
    """The loopback Prometheus reporter built by ``make jars`` (``deploy/jvm/reporter``)."""
    from deploy.harness.paths import JVM_TARGET

    jar = Path(os.environ.get("STREAMREC_REPORTER_JAR") or JVM_TARGET.parent / "reporter" / "target"
               / "streamrec-prometheus-reporter.jar")
    if not jar.is_file():
        msg = f"{jar} is missing; run `make jars` first"
        raise ConfigError(msg)
    return jar.resolve()


@dataclass(frozen=True)
class ClusterLayout:
    """Everything a cluster owns lives under one directory."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def plugins(self) -> Path:
        return self.root / "plugins"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def savepoints(self) -> Path:
        return self.root / "savepoints"

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    def read_state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None


def default_cluster_dir() -> Path:
    from deploy.harness.paths import runtime_dir

    return runtime_dir() / "cluster"


def cluster_config(layout: ClusterLayout, *, slots: int, rest_port: int, rpc_port: int, metrics_ports: str,
                   taskmanager_memory: str = "2560m") -> dict[str, object]:
    """The cluster's ``config.yaml`` (flattened keys)."""
    env_opts = ""
    try:
        import yaml

        shipped = yaml.safe_load((pyflink_home() / "conf" / "config.yaml").read_text()) or {}
        env_opts = shipped.get("env", {}).get("java", {}).get("opts", {}).get("all", "")
    except (OSError, ImportError, AttributeError):
        pass
    return {
        "env.java.opts.all": env_opts,
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.rpc.port": rpc_port,
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.memory.process.size": "1024m",
        "jobmanager.execution.failover-strategy": "region",
        # a TaskManager that died is noticed within seconds, not the default 50 s (10 s heartbeats): until then
        # a restart deploys into its slot, fails and restarts again (measured: 6 restarts for 2 kills)
        "heartbeat.interval": "2 s",
        "heartbeat.timeout": "20 s",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.host": "127.0.0.1",
        "taskmanager.numberOfTaskSlots": slots,
        "taskmanager.memory.process.size": taskmanager_memory,
        "taskmanager.memory.managed.fraction": 0.2,
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": rest_port,
        "blob.server.port": "0",
        "parallelism.default": slots,
        "state.backend.type": "rocksdb",
        "execution.checkpointing.incremental": True,
        "execution.checkpointing.dir": layout.checkpoints.as_uri(),
        "execution.checkpointing.savepoint-dir": layout.savepoints.as_uri(),
        "pipeline.max-parallelism": 128,
        "metrics.reporter.prom.factory.class": PROMETHEUS_FACTORY,
        "metrics.reporter.prom.host": "127.0.0.1",
        "metrics.reporter.prom.port": metrics_ports,
        "python.execution-mode": "thread",
        "python.executable": python_executable(),
        "python.client.executable": python_executable(),
        "python.pythonpath": site_packages(),
        "env.log.dir": str(layout.log),
        "env.pid.dir": str(layout.root / "run"),
    }


def _rest(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback REST API
        return json.loads(response.read())


def _flink_env(**extra: str) -> dict[str, str]:
    """The environment the wheel's ``bin/`` scripts run with: this Java and interpreter, no ``PYTHONPATH`` (the
    workers' path comes from ``python.pythonpath`` and the job's shipped code)."""
    from deploy.harness.paths import java_home

    env = dict(os.environ, JAVA_HOME=java_home(), PYFLINK_PYTHON=python_executable(), **extra)
    env.pop("PYTHONPATH", None)
    return env


def _environment(layout: ClusterLayout) -> dict[str, str]:
    return _flink_env(FLINK_CONF_DIR=str(layout.conf), FLINK_LOG_DIR=str(layout.log),
                      FLINK_PLUGINS_DIR=str(layout.plugins), FLINK_LIB_DIR=str(layout.lib),
                      FLINK_PID_DIR=str(layout.root / "run"))


def _alive(pid: int, layout: ClusterLayout) -> bool:
    """Whether ``pid`` still runs and is ours (started with this cluster's ``FLINK_CONF_DIR``), not a zombie."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return status != "Z" and f"FLINK_CONF_DIR={layout.conf}".encode() in environ.split(b"\0")


def _script(name: str) -> list[str]:
    """The wheel's script (and arguments) that runs the process ``name`` in the foreground."""
    if name == "zookeeper":
        return ["zookeeper.sh", "start-foreground", "1"]
    if name == "jobmanager":
        return ["jobmanager.sh", "start-foreground"]
    if name.startswith("taskmanager-"):
        return ["taskmanager.sh", "start-foreground"]
    msg = f"unknown cluster process {name!r} (zookeeper, jobmanager or taskmanager-N)"
    raise ConfigError(msg)


def _exited(pid: int) -> bool:
    """Whether a process this command started has exited (gone, or a zombie). Not :func:`_alive`: right after
    the fork the child may not have exec'd yet, and its environment is still this process's (no
    ``FLINK_CONF_DIR``), so that check would call a starting process dead (seen under load)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _start(layout: ClusterLayout, name: str) -> dict:
    script, *args = _script(name)
    out = (layout.log / f"{name}.out").open("ab")
    proc = subprocess.Popen(  # noqa: S603 - the wheel's own script
        ["bash", str(pyflink_home() / "bin" / script), *args], env=_environment(layout),
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=layout.root)
    out.close()
    return {"name": name, "pid": proc.pid, "pgid": proc.pid}


def _zookeeper(layout: ClusterLayout) -> dict[str, object]:
    """A single ZooKeeper server on 127.0.0.1 (the one inside ``flink-dist``, run by the wheel's
    ``bin/zookeeper.sh``) for JobManager high availability: writes ``zoo.cfg``, returns Flink's HA settings."""
    port = free_port()
    data = layout.root / "zookeeper"
    data.mkdir(parents=True, exist_ok=True)
    (layout.conf / "zoo.cfg").write_text(
        "# written by `streamrec cluster up --ha`\n"
        f"tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={data}\nclientPort={port}\n"
        "clientPortAddress=127.0.0.1\nadmin.enableServer=false\n")
    return {
        "high-availability.type": "zookeeper",
        "high-availability.zookeeper.quorum": f"127.0.0.1:{port}",
        "high-availability.zookeeper.path.root": "/flink",
        "high-availability.cluster-id": "/streamrec",
        "high-availability.storageDir": (layout.root / "ha").as_uri(),
        "high-availability.jobmanager.port": str(free_port()),
        # a JobManager started again leads once the dead one's ZooKeeper session has expired: 10 s, not 60 s
        # (the server caps it at 20 ticks: 40 s, measured as the JobManager's 40 s to come back)
        "high-availability.zookeeper.client.session-timeout": "10 s",
    }


def _wait_port(address: str, timeout_s: float) -> bool:
    import socket

    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def cluster_up(root: Path, *, taskmanagers: int = 1, slots: int = 2, rest_port: int = 8081,
               metrics_ports: str = "9250-9270", timeout_s: float = 180.0, ha: bool = False) -> dict:
    """Write the config, start the JobManager and TaskManagers (and, with ``ha``, a ZooKeeper server first: a
    JobManager that dies and is started again recovers its jobs from their latest checkpoints), wait until
    every slot has registered."""
    import yaml

    layout = ClusterLayout(root.resolve())
    state = layout.read_state()
    if state and any(_alive(p["pid"], layout) for p in state["processes"]):
        msg = (f"a cluster from {layout.root} is already running (REST {state['rest']}); "
               "`streamrec cluster down` first")
        raise ConfigError(msg)
    if taskmanagers < 1 or slots < 1:
        msg = f"--taskmanagers and --slots must be at least 1 (got {taskmanagers}, {slots})"
        raise ConfigError(msg)
    t0 = time.monotonic()
    for folder in (layout.conf, layout.log, layout.checkpoints, layout.savepoints, layout.root / "run"):
        folder.mkdir(parents=True, exist_ok=True)
    plugin = layout.plugins / "metrics-prometheus-loopback"
    shutil.rmtree(layout.plugins, ignore_errors=True)
    plugin.mkdir(parents=True)
    for jar in [reporter_jar(), *(pyflink_home() / "plugins" / "metrics-prometheus").glob("*.jar")]:
        shutil.copy2(jar, plugin / jar.name)
    # lib/: the wheel's lib/ plus flink-python (in the wheel's opt/; Python operators need it on the cluster's
    # classpath), as symbolic links
    shutil.rmtree(layout.lib, ignore_errors=True)
    layout.lib.mkdir()
    for jar in [*(pyflink_home() / "lib").glob("*.jar"), *(pyflink_home() / "opt").glob("flink-python-*.jar")]:
        (layout.lib / jar.name).symlink_to(jar)
    for name in ("log4j-console.properties", "logback-console.xml", "log4j-cli.properties", "log4j.properties"):
        shutil.copy2(pyflink_home() / "conf" / name, layout.conf / name)
    config = cluster_config(layout, slots=slots, rest_port=rest_port, rpc_port=free_port(),
                            metrics_ports=metrics_ports)
    processes = []
    if ha:
        config.update(_zookeeper(layout))
        processes.append(_start(layout, "zookeeper"))
        if not _wait_port(str(config["high-availability.zookeeper.quorum"]), 60):
            for proc in processes:
                stop_group(proc["pgid"])
            msg = f"ZooKeeper did not listen within 60 s; see {layout.log}"
            raise StreamrecError(msg)
    (layout.conf / "config.yaml").write_text(
        "# written by `streamrec cluster up`; edit the command's options, not this file\n"
        + yaml.safe_dump(config, sort_keys=False, width=100_000))
    processes.append(_start(layout, "jobmanager"))
    processes += [_start(layout, f"taskmanager-{n}") for n in range(taskmanagers)]
    rest = f"127.0.0.1:{rest_port}"
    state = {"rest": rest, "taskmanagers": taskmanagers, "slots": slots, "processes": processes,
             "metrics_ports": metrics_ports, "ha": ha, "started": time.time()}
    layout.state_file.write_text(json.dumps(state, indent=1))
    deadline = time.monotonic() + timeout_s
    overview: dict = {}
    while time.monotonic() < deadline:
        dead = [p["name"] for p in processes if _exited(p["pid"])]
        if dead:
            cluster_down(layout.root)
            msg = f"{', '.join(dead)} exited during start-up; see {layout.log}"
            raise StreamrecError(msg)
        try:
            overview = _rest(f"http://{rest}/overview")
            if overview.get("slots-total", 0) >= taskmanagers * slots:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    else:
        cluster_down(layout.root)
        msg = f"the cluster did not register {taskmanagers * slots} slots within {timeout_s:.0f} s; see {layout.log}"
        raise StreamrecError(msg)
    state["start_s"] = round(time.monotonic() - t0, 1)
    layout.state_file.write_text(json.dumps(state, indent=1))
    return {**state, "overview": overview, "dir": str(layout.root)}


def start_process(root: Path, name: str, timeout_s: float = 120.0) -> dict:
    """Start a process of the running cluster under ``root`` again after it died (what a supervisor does): a
    TaskManager (also a new name: one more TaskManager) or, with ``--ha``, the JobManager. Records it in
    ``cluster.json`` and waits until it serves: a TaskManager registered, the JobManager's REST API answering.
    Returns the process with ``ready_s``."""
    layout = ClusterLayout(root.resolve())
    state = layout.read_state()
    if not state or not any(_alive(p["pid"], layout) for p in state["processes"]):
        msg = f"no running cluster in {layout.root}; `streamrec cluster up` first"
        raise ConfigError(msg)
    _script(name)  # a known kind of process
    if any(p["name"] == name and _alive(p["pid"], layout) for p in state["processes"]):
        msg = f"{name} is running; `streamrec cluster status` lists the processes"
        raise ConfigError(msg)
    if name == "jobmanager" and not state.get("ha"):
        msg = ("a JobManager started again without high availability has lost its jobs; "
               "`streamrec cluster up --ha` keeps them (ZooKeeper)")
        raise ConfigError(msg)
    rest = state["rest"]
    try:  # a killed TaskManager stays listed until its heartbeats time out: wait for an id not seen before
        known = {tm["id"] for tm in _rest(f"http://{rest}/taskmanagers")["taskmanagers"]}
    except (OSError, ValueError):
        known = set()
    proc = _start(layout, name)
    listed = any(p["name"] == name for p in state["processes"])  # in its place: `down` stops in reverse order
    state["processes"] = ([proc if p["name"] == name else p for p in state["processes"]] if listed
                          else [*state["processes"], proc])
    state["taskmanagers"] = sum(p["name"].startswith("taskmanager-") for p in state["processes"])
    layout.state_file.write_text(json.dumps(state, indent=1))
    t0, deadline = time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _exited(proc["pid"]):
            msg = f"{name} exited during start-up; see {layout.log}"
            raise StreamrecError(msg)
        try:
            if name == "jobmanager":
                _rest(f"http://{rest}/overview")
                return {**proc, "ready_s": round(time.monotonic() - t0, 1)}
            if {tm["id"] for tm in _rest(f"http://{rest}/taskmanagers")["taskmanagers"]} - known:
                return {**proc, "ready_s": round(time.monotonic() - t0, 1)}
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    msg = f"{name} did not get ready within {timeout_s:.0f} s; see {layout.log}"
    raise StreamrecError(msg)


def start_taskmanager(root: Path, name: str | None = None, timeout_s: float = 120.0) -> dict:
    """One more TaskManager (``name`` None) or ``name`` again after it died: :func:`start_process`."""
    if name is None:
        state = ClusterLayout(root.resolve()).read_state() or {"processes": []}
        name = f"taskmanager-{sum(p['name'].startswith('taskmanager-') for p in state['processes'])}"
    return start_process(root, name, timeout_s)


def cluster_down(root: Path, timeout_s: float = 30.0) -> list[str]:
    """Stop the process groups ``cluster up`` started (TaskManagers first; SIGTERM, then SIGKILL); returns the
    names stopped."""
    layout = ClusterLayout(root.resolve())
    state = layout.read_state()
    if not state:
        return []
    stopped = []
    for proc in reversed(state["processes"]):
        if _alive(proc["pid"], layout):  # not a recycled pid
            stop_group(proc["pgid"], timeout_s)
            stopped.append(proc["name"])
    layout.state_file.unlink(missing_ok=True)
    return stopped


def cluster_status(root: Path) -> dict:
    """Processes (alive or not), the REST overview and the jobs, or ``running: false``."""
    layout = ClusterLayout(root.resolve())
    state = layout.read_state()
    if not state:
        return {"running": False, "dir": str(layout.root)}
    procs = [{**p, "alive": _alive(p["pid"], layout)} for p in state["processes"]]
    out: dict = {"running": any(p["alive"] for p in procs), "dir": str(layout.root), "rest": state["rest"],
                 "processes": procs}
    try:
        out["overview"] = _rest(f"http://{state['rest']}/overview")
        out["jobs"] = [{"id": j["jid"], "name": j["name"], "state": j["state"]}
                       for j in _rest(f"http://{state['rest']}/jobs/overview")["jobs"]]
    except (OSError, ValueError) as exc:
        out["rest_error"] = str(exc)
    return out


# ---------------------------------------------------------------------------------------------------- jobs
def ship_code(into: Path) -> Path:
    """A copy of the packages the workers run (``operators``, ``flink_jobs``), in a directory named by their
    content hash; returned for ``-pyfs``."""
    from flink_jobs.environment import project_root

    root = Path(project_root())
    files = sorted(p for pkg in SHIPPED_PACKAGES for p in (root / pkg).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc",))
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    target = into / f"streamrec-code-{digest.hexdigest()[:12]}"
    if not target.exists():
        staging = into / f".{target.name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        for path in files:
            dest = staging / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        staging.rename(target)
    return target


def _flink_cli(args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    from deploy.harness.paths import runtime_dir

    env = _flink_env(FLINK_LOG_DIR=str(runtime_dir() / "flink-client-log"))
    return subprocess.run(["bash", str(pyflink_home() / "bin" / "flink"), *args], env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=timeout_s, check=False)


_PATH_OPTIONS = ("--bundle", "--checkpoint-dir", "--catalog", "--item-rules", "--config", "--connector-jar")


def _absolute_paths(job_args: list[str]) -> list[str]:
    """The cluster's processes do not share the caller's working directory: file options become absolute."""
    out = list(job_args)
    for i, arg in enumerate(out):
        for option in _PATH_OPTIONS:
            if arg == option and i + 1 < len(out) and "://" not in out[i + 1]:
                out[i + 1] = str(Path(out[i + 1]).expanduser().resolve())
            elif arg.startswith(option + "=") and "://" not in arg:
                out[i] = f"{option}={Path(arg.split('=', 1)[1]).expanduser().resolve()}"
    return out


def deploy_job(jobmanager: str, job_args: list[str], *, from_savepoint: str | None = None,
               ship_dir: Path | None = None, timeout_s: float = 300.0) -> dict:
    """``flink run -d -py`` with the shipped code; returns the job id and the submission time."""
    from deploy.harness.paths import flink_connector_jar, runtime_dir

    code = ship_code(ship_dir or runtime_dir() / "ship")
    args = _absolute_paths(job_args)
    if not any(a == "--connector-jar" or a.startswith("--connector-jar=") for a in args):
        # the shipped code is a copy outside the checkout: name the checkout's jar (`make jars`) for the client
        args += ["--connector-jar", str(flink_connector_jar())]
    if from_savepoint:
        args += ["--restore-from", from_savepoint]
    t0 = time.monotonic()
    proc = _flink_cli(["run", "-d", "-m", jobmanager, "-pyclientexec", python_executable(), "-pyexec",
                       python_executable(), "-pyfs", str(code), "-py", str(code / "flink_jobs" / "recommend_job.py"),
                       *args], timeout_s)
    text = proc.stdout + proc.stderr
    found = _JOB_ID.search(text)
    if proc.returncode != 0 or not found:
        tail = "\n".join(text.strip().splitlines()[-30:])
        msg = f"`flink run` to {jobmanager} failed (exit {proc.returncode}):\n{tail}"
        raise StreamrecError(msg)
    return {"job_id": found.group(1), "submit_s": round(time.monotonic() - t0, 1), "code": str(code)}


def stop_job(jobmanager: str, job_id: str, savepoint_dir: str, timeout_s: float = 300.0) -> dict:
    """``flink stop --savepointPath``: the job's sources stop, a savepoint is taken, the job ends."""
    target = savepoint_dir if "://" in savepoint_dir else str(Path(savepoint_dir).expanduser().resolve())
    t0 = time.monotonic()
    proc = _flink_cli(["stop", "-m", jobmanager, "--savepointPath", target, job_id], timeout_s)
    text = proc.stdout + proc.stderr
    found = _SAVEPOINT.search(text)
    if proc.returncode != 0 or not found:
        tail = "\n".join(text.strip().splitlines()[-30:])
        msg = f"`flink stop` of {job_id} failed (exit {proc.returncode}):\n{tail}"
        raise StreamrecError(msg)
    path = found.group(1)
    local = Path(path.removeprefix("file:"))
    size = sum(p.stat().st_size for p in local.rglob("*") if p.is_file()) if local.exists() else None
    return {"savepoint": path, "stop_s": round(time.monotonic() - t0, 1), "bytes": size}


# ---------------------------------------------------------------------------------------------------- CLI
def main_cluster(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="streamrec cluster", description="a local Flink standalone cluster")
    p.add_argument("action", choices=["up", "down", "status", "add-taskmanager", "restart"],
                   help="add-taskmanager: start one more TaskManager; restart --name N: start a process that died "
                        "again (a TaskManager, or with --ha the JobManager)")
    p.add_argument("--name", default=None, help="restart: the process (e.g. taskmanager-1 or jobmanager, as "
                                                "`status` lists them)")
    p.add_argument("--ha", action="store_true", help="up: JobManager high availability with a local ZooKeeper "
                                                     "(a JobManager started again recovers the jobs)")
    p.add_argument("--dir", default=None, help="where the cluster's config, logs, checkpoints and savepoints "
                                               "live (default: .streamrec/cluster)")
    p.add_argument("--taskmanagers", type=int, default=1)
    p.add_argument("--slots", type=int, default=2, help="task slots per TaskManager")
    p.add_argument("--rest-port", type=int, default=8081, help="JobManager REST port (on 127.0.0.1)")
    p.add_argument("--metrics-ports", default="9250-9270",
                   help="Prometheus endpoint port range (127.0.0.1; one port per JobManager/TaskManager)")
    args = p.parse_args(argv)
    root = Path(args.dir) if args.dir else default_cluster_dir()
    try:
        if args.action == "up":
            state = cluster_up(root, taskmanagers=args.taskmanagers, slots=args.slots, rest_port=args.rest_port,
                               metrics_ports=args.metrics_ports, ha=args.ha)
            print(json.dumps({k: state[k] for k in ("rest", "taskmanagers", "slots", "start_s", "dir")}))
            print(f"cluster up in {state['start_s']} s: REST and web UI http://{state['rest']}, "
                  f"`streamrec deploy --jobmanager {state['rest']} ...`", file=sys.stderr)
            return 0
        if args.action in ("add-taskmanager", "restart"):
            if args.action == "restart" and not args.name:
                p.error("restart needs --name (see `streamrec cluster status`)")
            started = start_taskmanager(root) if args.action == "add-taskmanager" else start_process(root, args.name)
            print(json.dumps({k: started[k] for k in ("name", "pid", "ready_s")}))
            return 0
        if args.action == "down":
            stopped = cluster_down(root)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
            return 0
        status = cluster_status(root)
        print(json.dumps(status, indent=1))
        return 0 if status["running"] else 3
    except StreamrecError as err:
        print(f"streamrec: error: {err}", file=sys.stderr)
        return 2


def main_deploy(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="streamrec deploy", description="submit the job to a Flink cluster (detached); every other option is "
                                             "a job option, as for `streamrec run`")
    p.add_argument("--jobmanager", required=True, metavar="HOST:PORT", help="the JobManager's REST address")
    p.add_argument("--from-savepoint", default=None, metavar="PATH", help="resume from this savepoint")
    args, job_args = p.parse_known_args(argv)
    try:
        result = deploy_job(args.jobmanager, job_args, from_savepoint=args.from_savepoint)
    except StreamrecError as err:
        print(f"streamrec: error: {err}", file=sys.stderr)
        return 2
    print(result["job_id"])
    print(f"submitted in {result['submit_s']} s; stop with `streamrec stop --jobmanager {args.jobmanager} "
          f"--savepoint DIR {result['job_id']}`", file=sys.stderr)
    return 0


def main_stop(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="streamrec stop", description="stop a job on a cluster with a savepoint")
    p.add_argument("--jobmanager", required=True, metavar="HOST:PORT")
    p.add_argument("--savepoint", required=True, metavar="DIR", help="directory (or URI) for the savepoint")
    p.add_argument("job_id")
    args = p.parse_args(argv)
    try:
        result = stop_job(args.jobmanager, args.job_id, args.savepoint)
    except StreamrecError as err:
        print(f"streamrec: error: {err}", file=sys.stderr)
        return 2
    print(result["savepoint"])
    print(f"stopped with a savepoint in {result['stop_s']} s ({result['bytes']} bytes); resume with "
          f"`streamrec deploy --from-savepoint {result['savepoint']} ...`", file=sys.stderr)
    return 0
