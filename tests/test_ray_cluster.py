"""The Ray executor on a multi-node cluster without a shared disk, on one machine.

A head (no CPUs: it runs no task) and two worker nodes (1 CPU each), each started with
``ray start --block`` and its own ``--temp-dir`` and node IP (127.0.0.x). The worker nodes'
Python processes run a ``sitecustomize`` audit hook that refuses (and logs) any file operation
under the driver's results directory, so a worker that reached for the driver's store or cache
would fail its cell and leave a line in the log. A small suite - a user plugin solver from a
module only the driver has, a tuned grid, ODE and SDE references, exact sets, floors - runs
through the cluster; one worker node is killed (SIGKILL to its process group) when the first
cell is committed; the run must still complete, every cell once, with the metrics of a local run.
"""
import math
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

import solvers  # noqa: E402
from bench.harness import executors  # noqa: E402
from bench.harness.runner import run_suite  # noqa: E402
from bench.harness.store import Store  # noqa: E402
from bench.harness.suite import load_suite  # noqa: E402

RAY = shutil.which("ray", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("ray")
pytestmark = pytest.mark.skipif(RAY is None, reason="the ray command is not installed")

SITECUSTOMIZE = '''
import os, sys
_FORBID = os.environ.get("SDEBENCH_TEST_UNREACHABLE")
_LOG = os.environ.get("SDEBENCH_TEST_UNREACHABLE_LOG")
_EVENTS = ("open", "os.mkdir", "os.listdir", "os.scandir", "os.rename", "os.replace", "os.remove", "os.chmod")
if _FORBID:
    def _refuse(event, args):
        if event in _EVENTS and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(args[0]))
            if path.startswith(_FORBID):
                with open(_LOG, "a") as f:
                    f.write(f"{os.getpid()} {event} {path}\\n")
                raise PermissionError(f"{path}: the driver's disk is unreachable from this node (test)")
    sys.addaudithook(_refuse)
'''

PLUGIN = '''
import solvers
from solvers.ode import Euler


@solvers.register
class PluginEuler(Euler):
    """Euler under another name: a solver only the driver's sys.path has."""
    name = "plugin_euler"
'''

SUITE = """
name = "cluster"
imports = ["sdebench_cluster_plugin"]
models = ["gmm2d-vp"]
exact_prior = true
n = 200
seeds = [0]
steps = [4, 8]
metrics = ["discretization", "exact_kl", "sliced_w2", "mode_tv"]
repeats = 1
warmup = 0
threads = 1
reference = { ode_rtol = 1e-8, sde_steps = 256 }
tune = { n = 16, budget = 8 }
[[solvers]]
name = "plugin_euler"
[[solvers]]
name = "heun"
[[solvers]]
name = "euler_maruyama"
[[solvers]]
name = "heun"
steps = [4]
grids = ["tuned"]
"""


#: Ray >= 2.5x turns token authentication on for `ray start`; the token lives in ~/.ray, which other
#: Ray users of this machine (and earlier runs) share, and a driver holding another one is refused
#: ("InvalidAuthToken"). One machine's throw-away cluster runs without it: nodes and driver alike
#: (tests/conftest.py sets it for the whole session: a process keeps its first ray.init's mode).
NO_TOKEN = {"RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Cluster:
    def __init__(self, root: pathlib.Path, forbid: pathlib.Path):
        self.root, self.procs, self.port = root, {}, _free_port()
        self.address = f"127.0.0.1:{self.port}"
        hook = root / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.log = root / "unreachable.log"
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
                    "SDEBENCH_TEST_UNREACHABLE": str(forbid.resolve()), "SDEBENCH_TEST_UNREACHABLE_LOG": str(self.log),
                    "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1", **NO_TOKEN}

    def start(self, name, *args):
        tmp = pathlib.Path(f"/tmp/sdebench-ray-{os.getpid()}-{name}")  # short: Ray's socket paths are limited
        shutil.rmtree(tmp, ignore_errors=True)
        with open(self.root / f"{name}.log", "w") as log:
            self.procs[name] = (subprocess.Popen([RAY, "start", "--block", f"--temp-dir={tmp}", *args], env=self.env,
                                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True), tmp)

    def kill(self, name):
        proc, _ = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the node's own process group: its raylet and workers
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self):
        for name in reversed(list(self.procs)):
            proc, tmp = self.procs[name]
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    self.kill(name)
            shutil.rmtree(tmp, ignore_errors=True)


def _wait_for(cond, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class _Counting(executors.RayExecutor):
    """The Ray executor, keeping its traffic figures after the run."""

    name = "ray-counting"
    last: dict = {}

    def close(self):
        type(self).last = dict(self.traffic)
        super().close()


class _KillOnFirstCell:
    """A progress stream that kills a worker node when the first cell is committed."""

    def __init__(self, cluster, node):
        self.cluster, self.node, self.lines, self.killed_at = cluster, node, [], None

    def write(self, text):
        self.lines.append(text)
        if self.killed_at is None and text.startswith("[") and " elapsed" in text:
            self.killed_at = len(self.lines)
            self.cluster.kill(self.node)

    def flush(self):
        pass


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    mods = tmp_path / "user_modules"
    mods.mkdir()
    (mods / "sdebench_cluster_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(mods))
    yield
    sys.modules.pop("sdebench_cluster_plugin", None)
    solvers.registry._REGISTRY.pop("plugin_euler", None)  # registered in this process by the local run


def test_cluster_without_shared_disk_survives_a_lost_node(tmp_path, plugin, monkeypatch):
    for k, v in NO_TOKEN.items():
        monkeypatch.setenv(k, v)
    suite_file = tmp_path / "cluster.toml"
    suite_file.write_text(SUITE)
    suite = load_suite(str(suite_file))
    local = Store(tmp_path / "local" / "store.sqlite")
    local_run = run_suite(suite, local, progress=False)
    expected = local.results(local_run)

    driver_dir = tmp_path / "driver"  # the driver's store and cache: unreachable from the workers
    cluster = _Cluster(tmp_path, driver_dir)
    executors.register(_Counting, replace=True)
    t0 = time.monotonic()
    try:
        cluster.start("head", "--head", f"--port={cluster.port}", "--num-cpus=0", "--node-ip-address=127.0.0.1",
                      "--include-dashboard=false")
        _wait_for(lambda: _connect(cluster.address), 120, "the head node")
        for i in (1, 2):
            cluster.start(f"node{i}", f"--address={cluster.address}", "--num-cpus=1",
                          f"--node-ip-address=127.0.0.{i + 1}")
        _wait_for(lambda: ray.cluster_resources().get("CPU", 0) >= 2, 120, "two worker nodes")
        ray.shutdown()  # the run connects itself, with the runtime environment that carries the plugin
        started = time.monotonic() - t0
        store = Store(driver_dir / "store.sqlite")
        stream = _KillOnFirstCell(cluster, "node2")
        run_id = run_suite(load_suite(str(suite_file)), store, executor="ray-counting", address=cluster.address,
                           stream=stream)
        wall = time.monotonic() - t0 - started
        results = store.results(run_id)
        status = store.run(run_id)["status"]
        rows = store.db.execute("SELECT key, COUNT(*) FROM cells WHERE run_id=? GROUP BY key", (run_id,)).fetchall()
        touched = cluster.log.read_text() if cluster.log.exists() else ""
        _connect(cluster.address)  # the hook works: a worker that reaches for the driver's disk is refused
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # _probe travels by value
        probe = ray.get(ray.remote(num_cpus=1)(_probe).remote(str(store.path)))
    finally:
        ray.shutdown()
        cluster.stop()
        executors.EXECUTORS.pop("ray-counting", None)
    assert stream.killed_at is not None, "the worker node was never stopped"
    assert not touched, "a worker reached for the driver's disk:\n" + touched
    assert probe.startswith("PermissionError") and str(store.path) in cluster.log.read_text()
    assert status == "complete" and set(results) == set(expected)
    assert all(n == 1 for _, n in rows), "a cell was committed twice"
    failed = {k: r.error for k, r in results.items() if r.error}
    assert not failed, failed
    for key, want in expected.items():
        got = results[key]
        assert got.nfe == want.nfe
        for name, m in want.metrics.items():
            a, b = m.value, got.metrics[name].value
            assert m.at_floor == got.metrics[name].at_floor, (key, name)
            assert (a is None and b is None) or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9), \
                (key, name, a, b)
    traffic = _Counting.last
    assert traffic["shared"] > 0  # the references and sets reached the workers through Ray
    per_cell = (traffic["args"] + traffic["results"]) / max(traffic["tasks"], 1)
    print(f"\ncluster: {started:.0f} s to start, run {wall:.0f} s; {len(results)} cells; per task "
          f"{per_cell / 1024:.1f} KiB (arguments + result), shared results sent once: {traffic['shared'] / 1024:.0f} KiB "
          f"in all; {traffic}")


def _probe(path) -> str:
    try:
        open(path, "rb").close()
        return "opened"
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def _connect(address) -> bool:
    try:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        return True
    except Exception:
        return False
