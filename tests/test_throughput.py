"""Throughput: adaptive timing, the disk cache of shared work (reuse, atomic writes), local
parallel workers (--jobs) and the cost estimate (--dry-run)."""
import os
import subprocess
import sys
import time

import pytest
import torch

from bench.harness import cache as cache_mod
from bench.harness import execute, runner, timing
from bench.harness.cache import DiskCache, cache_dir_for
from bench.harness.estimate import estimate
from bench.harness.store import Store
from bench.harness.suite import load_suite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL = """
name = "small"
models = ["gmm2d-vp"]
n = 32
seeds = [0]
nfe = [4, 8]
metrics = ["discretization", "sliced_w2", "energy"]
repeats = 2
warmup = 1
threads = 1
reference = { ode_rtol = 1e-6, sde_steps = 64 }
[[solvers]]
name = "euler"
[[solvers]]
name = "ddim"
eta = [0.0, 1.0]
[[solvers]]
name = "euler_maruyama"
"""


@pytest.fixture
def small(tmp_path):
    p = tmp_path / "small.toml"
    p.write_text(SMALL)
    return p


def _fake_times(monkeypatch, times):
    """time_adaptive sees these durations, one per run; returns the list of runs made."""
    it, made = iter(times), []

    def timed(fn, device):
        made.append(1)
        return fn(), next(it)

    monkeypatch.setattr(timing, "_timed", timed)
    return made


def test_a_long_call_is_timed_once_after_one_warm_up(monkeypatch):
    made = _fake_times(monkeypatch, [2.0, 2.0, 2.0, 2.0])
    _, st = timing.time_adaptive(lambda: 1, repeats=5, warmup=3, shape_key=("long", 1))
    assert len(made) == 2 and st["warmup"] == 1 and st["repeats"] == 1 and st["median_s"] == 2.0
    made = _fake_times(monkeypatch, [2.0])  # the same shape again: warm already
    _, st = timing.time_adaptive(lambda: 1, repeats=5, warmup=3, shape_key=("long", 1))
    assert len(made) == 1 and st["warmup"] == 0 and st["repeats"] == 1


def test_a_short_call_repeats_until_its_median_is_stable_within_the_cap(monkeypatch):
    _fake_times(monkeypatch, [0.01] * 20)
    _, st = timing.time_adaptive(lambda: 1, repeats=10, warmup=1)
    assert st["repeats"] == 3 and st["stable"] and st["rse"] == 0.0  # minimum 3, then stable
    _fake_times(monkeypatch, [0.01] + [0.01, 0.02, 0.005, 0.03, 0.001] * 4)
    _, st = timing.time_adaptive(lambda: 1, repeats=10, warmup=1)
    assert st["repeats"] == 10 and not st["stable"] and st["min_s"] == 0.001 and st["max_s"] == 0.03  # the cap
    _fake_times(monkeypatch, [0.5] * 20)
    _, st = timing.time_adaptive(lambda: 1, repeats=10, warmup=0, budget_s=1.0)
    assert st["repeats"] == 2 and st["warmup"] == 0  # the time budget stops it
    _fake_times(monkeypatch, [0.01] * 5)
    _, st = timing.time_adaptive(lambda: 1, repeats=1, warmup=0)
    assert st["repeats"] == 1  # repeats is an upper bound


def test_disk_cache_writes_atomically_and_checks_its_key(tmp_path, monkeypatch):
    c = DiskCache(tmp_path / "c")
    key = {"kind": "ode_ref", "key": ["ode_ref", "m", 1]}
    value = torch.arange(10.0)
    assert torch.equal(c.get(key, lambda: value), value)
    assert torch.equal(c.get(key, lambda: pytest.fail("made twice")), value)

    def broken_save(obj, f):
        f.write(b"half a fi")
        raise OSError("disk full")

    other = {"kind": "sde_ref", "key": ["sde_ref", "m", 2]}
    monkeypatch.setattr(cache_mod.torch, "save", broken_save)
    with pytest.raises(OSError):
        c.save(other, value)
    assert not c.path(other).exists()  # no half file under the final name
    assert not [p for p in (tmp_path / "c").iterdir() if p.suffix == ".tmp"]  # nor a temporary left behind
    monkeypatch.undo()
    c.path(other).write_bytes(b"garbage")  # unreadable: remade
    assert torch.equal(c.get(other, lambda: value + 1), value + 1)


def test_a_second_run_reads_every_reference_from_the_disk_cache(small, tmp_path, monkeypatch):
    suite = load_suite(str(small))
    store = Store(tmp_path / "s.sqlite")
    execute._CACHE.clear()  # references made by earlier tests in this process would not reach the disk
    first = runner.run_suite(suite, store, progress=False)
    cache = cache_dir_for(store.path)
    assert {p.name.split("-")[0] for p in cache.glob("*.pt")} >= {"ode_ref", "sde_ref", "exact", "floor"}
    execute._CACHE.clear()  # a new process, as far as execution can tell

    def no(*a, **k):
        raise AssertionError("reference solved again")

    monkeypatch.setattr(execute, "ode_reference", no)
    monkeypatch.setattr(execute, "sde_reference_pair", no)
    assert estimate(suite.cells(), cache).reference_s == 0.0  # the estimate knows it is cached
    second = runner.run_suite(suite, store, progress=False)
    a, b = store.cells(first).set_index("key"), store.cells(second).set_index("key")
    assert b["error"].isna().all()
    assert a["discretization"].equals(b.loc[a.index, "discretization"])
    assert a["energy_floor"].equals(b.loc[a.index, "energy_floor"])


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def test_jobs_2_gives_the_same_cells_and_errors_as_jobs_1(small, tmp_path):
    stores = {}
    for jobs in (1, 2):
        stores[jobs] = tmp_path / f"j{jobs}.sqlite"
        r = _cli("run", str(small), "--store", str(stores[jobs]), "--jobs", str(jobs), "--quiet", "--no-report")
        assert r.returncode == 0, r.stderr
    one, two = (Store(stores[j]).cells(1).set_index("key").sort_index() for j in (1, 2))
    assert list(one.index) == list(two.index) and len(one) == 8
    assert two["error"].isna().all()
    for col in ("discretization", "sliced_w2", "energy", "energy_floor", "nfe"):
        assert one[col].equals(two[col]), col
    assert set(two["time_jobs"]) == {2} and set(one["time_jobs"]) == {1}


def test_jobs_make_the_shared_results_up_front_so_cells_only_read_them(small, tmp_path):
    store = tmp_path / "j2.sqlite"
    r = _cli("run", str(small), "--store", str(store), "--jobs", "2", "--no-report")
    assert r.returncode == 0, r.stderr
    assert "shared results: " in r.stderr and "made on 2 workers" in r.stderr, r.stderr
    names = {p.name.split("-")[0] for p in cache_dir_for(store).glob("*.pt")}
    assert names >= {"ode_ref", "sde_ref", "exact", "floor"}
    cells = Store(store).cells(1)
    assert cells["error"].isna().all()
    # every cell found its references on disk: reading costs milliseconds, making them does not
    assert cells["time_reference_s"].max() < 0.1, cells["time_reference_s"].max()
    # ... and the time spent making them up front is counted for the first cell needing each
    assert cells["time_upfront_reference_s"].notna().sum() >= 1 and cells["time_upfront_reference_s"].sum() > 0
    assert "references" in r.stdout and "idle workers" in r.stdout
    assert "2 workers x" in r.stdout


def test_dry_run_prints_an_estimate_and_creates_no_run(small, tmp_path):
    store = tmp_path / "dry.sqlite"
    r = _cli("run", str(small), "--store", str(store), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "8 cells" in r.stdout and "estimate ~" in r.stdout
    assert not store.exists() and not cache_dir_for(store).exists()


def test_the_estimate_measures_with_the_cells_threads_and_restores_the_callers(small, monkeypatch):
    from bench.harness import estimate as estimate_mod

    seen = []
    monkeypatch.setattr(estimate_mod, "_cell_cost", lambda *a: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        estimate(load_suite(str(small)).cells())
        assert set(seen) == {1} and torch.get_num_threads() == 2  # the suite's threads = 1, the caller's kept
    finally:
        torch.set_num_threads(before)


def test_a_wave_is_dispatched_dearest_first_when_there_is_an_estimate():
    class C:
        def __init__(self, key):
            self.key = key

    cells = [C(k) for k in "abcd"]
    costed = runner.Progress(4, enabled=False, costs={"a": 1.0, "b": 5.0, "c": 2.0})
    assert [c.key for c in runner._Committer(None, 1, costed, {}).longest_first(cells)] == ["b", "c", "a", "d"]
    bare = runner.Progress(4, enabled=False)  # --quiet: no estimate, the suite's order
    assert [c.key for c in runner._Committer(None, 1, bare, {}).longest_first(cells)] == list("abcd")


def test_start_brings_the_process_workers_up_before_the_first_map():
    from bench.harness.executors import ProcessExecutor

    ex = ProcessExecutor(jobs=2)
    try:
        t0 = time.perf_counter()
        ex.start([])
        assert time.perf_counter() - t0 < 1.0  # returns at once: the driver estimates meanwhile
        deadline = time.perf_counter() + 120
        while len(ex._pool._processes) < 2 and time.perf_counter() < deadline:
            time.sleep(0.05)
        assert len(ex._pool._processes) == 2  # up before the first map, not at the first cell
        assert sorted(r for _, r in ex.map(abs, [-1, -2])) == [1, 2]
    finally:
        ex.close()
