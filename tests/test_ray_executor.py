"""Executors whose workers lack the driver's disk (Ray on a cluster), without Ray: the runner makes
each shared result once and sends it; the cluster cost of a dry run; the modules a cell carries.
(tests/test_ray_cluster.py runs the real thing on a multi-node Ray cluster.)"""
import sys

import pytest

from bench import cli
from bench.harness import execute, executors
from bench.harness.estimate import cluster_cost, estimate, schedule_wall
from bench.harness.store import Store
from bench.harness.suite import load_suite

SUITE = """
name = "nodisk"
models = ["gmm2d-vp"]
n = 64
seeds = [0]
steps = [4, 8]
metrics = ["discretization", "sliced_w2"]
repeats = 1
warmup = 0
threads = 1
reference = { ode_rtol = 1e-8, sde_steps = 64 }
[[solvers]]
name = "heun"
[[solvers]]
name = "euler_maruyama"
"""


class FreshWorkers:
    """Runs each task as on a fresh worker of another node: the in-process cache emptied first,
    no disk cache; the shared values come only through ``shared``."""

    name = "fresh-workers"
    shared_disk = False
    jobs = 2
    calls: list = []

    def __init__(self, address=None, jobs=1):
        pass

    def map(self, fn, cells, shared=None):
        for cell in cells:
            execute._CACHE.clear()
            values = shared(cell) if shared is not None else {}
            type(self).calls.append((getattr(fn, "keywords", {}).get("cache_dir"), sorted(k[0] for k in values)))
            yield cell, (fn(cell, shared=values) if values else fn(cell))

    def close(self):
        pass

    def resources(self):
        return {"CPU": 3, "GPU": 0, "nodes": 2}


@pytest.fixture
def fresh_workers():
    FreshWorkers.calls = []
    yield executors.register(FreshWorkers, replace=True)
    executors.EXECUTORS.pop("fresh-workers", None)


def test_shared_results_are_made_once_and_sent(tmp_path, fresh_workers, monkeypatch):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    made = []
    real = execute.ode_reference
    monkeypatch.setattr(execute, "ode_reference", lambda *a, **k: made.append(1) or real(*a, **k))
    local = Store(tmp_path / "local.sqlite")
    from bench.harness.runner import run_suite

    want = local.results(run_suite(load_suite(str(suite)), local, progress=False))
    made.clear()
    store = Store(tmp_path / "driver.sqlite")
    got = store.results(run_suite(load_suite(str(suite)), store, executor="fresh-workers", progress=False))
    assert len(made) == 1  # the ODE reference: made once, though every task starts with an empty cache
    assert all(cache_dir is None for cache_dir, _ in FreshWorkers.calls)  # no task is told the driver's path
    assert any("ode_ref" in kinds and "sde_ref" not in kinds for _, kinds in FreshWorkers.calls)
    assert any("sde_ref" in kinds for _, kinds in FreshWorkers.calls)
    assert list((tmp_path / "driver.sqlite.cache").glob("ode_ref-*.pt"))  # kept by the driver
    assert set(got) == set(want)
    for key, r in want.items():
        assert not got[key].error, got[key].error
        for name, m in r.metrics.items():
            other = got[key].metrics[name]
            assert other.at_floor == m.at_floor and (other.value is None) == (m.value is None), (key, name)
            if m.value is not None:
                assert other.value == pytest.approx(m.value, rel=1e-12, abs=1e-15, nan_ok=True), (key, name)


def test_schedule_wall_is_longest_first():
    assert schedule_wall([3, 3, 2, 2, 2], 2) == 7  # LPT: (3, 2, 2) and (3, 2); the optimum is 6
    assert schedule_wall([5, 1, 1], 8) == 5 and schedule_wall([], 4) == 0
    assert schedule_wall([1.0] * 10, 3) == 4


def test_dry_run_states_the_cluster_cost(tmp_path, fresh_workers, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    assert cli.main(["run", str(suite), "--dry-run", "--executor", "fresh-workers",
                     "--store", str(tmp_path / "x.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "on the cluster (2 nodes, 3 CPUs, 0 GPUs)" in out and "worker-hours (gmm2d-vp " in out
    cells = load_suite(str(suite)).cells()
    est = estimate(cells)
    text = cluster_cost(est, cells, {"CPU": 1, "GPU": 0, "nodes": 1})
    assert f"~{est.total_s / 3600:.2f} worker-hours" in text
    gpu = [c.replace(device="cuda") for c in cells]
    assert "no GPU" in cluster_cost(est, gpu, {"CPU": 4, "GPU": 0})


def test_user_modules_travel_and_installed_ones_do_not(tmp_path, monkeypatch):
    (tmp_path / "my_plugin.py").write_text("X = 1\n")
    pkg = tmp_path / "my_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    cell = load_suite(str(_write(tmp_path))).cells()[0].replace(imports=("my_plugin", "numpy", "bench.zoo"),
                                                                   model="callable:my_pkg.net:fn")
    mods = executors._user_modules(cell)
    assert mods == ["my_plugin", "numpy", "bench.zoo", "my_pkg.net"]
    env = executors._module_env(mods)
    assert env == {"py_modules": sorted([str((tmp_path / "my_plugin.py").resolve()), str(pkg.resolve())])}
    assert executors._module_env(["numpy", "solvers"]) is None
    sys.modules.pop("my_plugin", None)


def _write(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(SUITE)
    return p


def test_a_failed_ray_map_keeps_the_connection():
    """A map that raises (here a task's error) leaves the run's connection and what it put until
    ``close`` (they were shut down and reconnected mid-run before)."""
    ray = pytest.importorskip("ray")
    ex = executors.RayExecutor()
    try:
        with pytest.raises(ValueError):
            list(ex.map(int, ["1", "x", "3"]))
        assert ray.is_initialized()
        assert sorted(r for _, r in ex.map(int, ["4", "5"])) == [4, 5]
    finally:
        ex.close()
    assert not ray.is_initialized()


def test_a_worker_that_cannot_reach_the_driver_is_said_as_such():
    ray = pytest.importorskip("ray")

    class Unreachable:
        exceptions = ray.exceptions

        @staticmethod
        def get(ref):
            raise ray.exceptions.OwnerDiedError("00ff", None, "")

    with pytest.raises(executors.InputError, match="authentication mode"):
        executors._get(Unreachable, None)


def test_an_unreachable_cluster_address_is_refused_at_once():
    """Ray retries a dead address for minutes; the executor probes it first."""
    import socket
    import time

    pytest.importorskip("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(executors.InputError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        executors.RayExecutor(address=f"127.0.0.1:{port}").start([])
    assert time.perf_counter() - t0 < 10
    assert "HOST:PORT" in executors._unreachable("nonsense")
    assert executors._unreachable(None) is None and executors._unreachable("auto") is None
