"""Hostile input, second pass (issue 25): sizes beyond memory, outputs over inputs, concurrent
store creation, the resume command, tuned-grid files, damaged stores, the compare gate at the
floor, absurd tolerances, recommend's ranking, a store after a full disk, planted pickles,
tuning against NaN, diffusers configs, runs whose every cell failed, read-only stores, and the
layering of ``bench``. Each case is one clear line (exit 2) or correct behaviour, and nothing
stored is damaged. Tiny suites (n=16, one model, 2 step counts)."""
import ast
import json
import math
import multiprocessing
import os
import pathlib
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile

import pandas as pd
import pytest
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from cli_helpers import BASE, EULER, call, interrupt_at_second_cell, run_cli, suite_file

import solvers
from bench.harness import estimate as estimate_mod
from bench.harness import runner as runner_mod
from bench.harness.cache import DiskCache
from bench.harness.store import Store, StoreError
from bench.harness.suite import Suite, SuiteError, load_suite
from bench.report import ci
from bench.report.compare import compare
from bench.zoo import adapters, models
from solvers import InputError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def one_line(err):
    """One error line (argparse's usage lines above it aside)."""
    return sum("error:" in line for line in err.strip().splitlines()) == 1


@pytest.fixture
def store_path(tmp_path, capsys):
    """A store with one finished run (2 cells)."""
    assert run_cli(tmp_path, capsys)[0] == 0
    return tmp_path / "s.sqlite"


# --------------------------------------------------------------------------------------------
# 1. sizes: checked against memory before anything is allocated
# --------------------------------------------------------------------------------------------

def test_the_estimate_measures_on_a_small_batch_and_scales(monkeypatch):
    real, seen = models.load, []

    def load(name, **kw):
        m = real(name, **kw)
        fn = m.fn

        def recorded(x, t, *a, **k):
            seen.append(len(x))
            return fn(x, t, *a, **k)

        m.fn = recorded
        return m

    monkeypatch.setattr(estimate_mod.models, "load", load)
    cells = [load_suite_text(BASE.replace("n = 16", f"n = {n}") + EULER).cells()[0] for n in (1000, 200_000)]
    small, large = (estimate_mod.estimate([c]).solve_s for c in cells)
    assert max(seen) <= estimate_mod.CAL_N  # never the cell's batch of 200,000
    assert large > 20 * small  # scaled to the batch, not measured at it


def test_a_path_query_costs_the_same_first_time_as_after(monkeypatch):
    """The first measurement of a Brownian path query is returned scaled like the cached one
    (a loop variable once overwrote the batch size there: the first stochastic cell of each path
    kind was costed at 1000x its path queries, and quick's estimate said 20 minutes for 2)."""
    clock = iter(range(10**6))
    monkeypatch.setattr(estimate_mod.time, "perf_counter", lambda: float(next(clock)))
    cal, cls = estimate_mod._Calibration(), solvers.get("euler_maruyama")
    first = cal.path_step_s(cls, "gmm2d-vp", (1000, 2))
    assert first == cal.path_step_s(cls, "gmm2d-vp", (1000, 2)) == pytest.approx(1 / 16)
    assert cal.path_step_s(cls, "gmm2d-vp", (4000, 2)) == pytest.approx(first * 4000 / estimate_mod.CAL_N)


def load_suite_text(text):
    return Suite(tomllib.loads(text), "<test>", text)


@pytest.mark.parametrize("argv,needle", [
    (["run", "SUITE", "--n", "1000000000", "--dry-run"], "--n"),
    (["run", "SUITE", "--n", "1000000001", "--dry-run"], "--n"),
    (["sample", "gmm2d-vp", "euler", "--n", "1000000001"], "--n"),
    (["sample", "gmm2d-vp", "euler", "--n", "100000000"], "memory"),
    (["sample", "gmm2d-vp", "euler", "--steps", "1000000000", "--n", "8"], "--steps"),  # limits.STEPS_MAX
    (["likelihood", "gmm64-vp", "--n", "1000000"], "memory"),
    (["demo", "--n", "1000000000"], "memory"),
    (["tune", "gmm2d-vp", "euler", "--nfe", "10000000"], "--nfe"),  # limits.STEPS_MAX
    (["tune", "gmm2d-vp", "euler", "--nfe", "1000000", "--n", "100000"], "memory"),
    (["recommend", "gmm2d-vp", "--nfe", "5", "--n", "1000000000", "--solvers", "euler"], "memory"),
], ids=["run dry-run n 1e9", "run n beyond max", "sample n beyond max", "sample n 1e8", "sample steps 1e9",
        "likelihood n 1e6 64-d", "demo n 1e9", "tune nfe 1e7", "tune nfe 1e6 n 1e5",
        "recommend n 1e9"])
def test_sizes_beyond_memory_are_refused_before_allocation(argv, needle, tmp_path, capsys):
    argv = [str(suite_file(tmp_path)) if a == "SUITE" else a for a in argv]
    store = tmp_path / "s.sqlite"
    extra = ["--store", store] if argv[0] in ("run", "recommend") else []
    code, _, err = call([*argv, *extra], capsys)
    assert code == 2 and needle in err and one_line(err), err
    assert not store.exists()


@pytest.mark.parametrize("text,key", [
    (BASE + 'grids = ["tuned"]\ntune = { n = 1000000000 }\n' + EULER, "tune.n"),
    (BASE + 'grids = ["tuned"]\n[[solvers]]\nname = "euler"\nsteps = [100000]\n', "tune.n"),
    (BASE + "[[likelihood]]\nn = 1000000001\n", "likelihood[0].n"),
    (BASE.replace('["gmm2d-vp"]', '["gmm64-vp"]') + "[[likelihood]]\nn = 10000000\n", "likelihood.n"),
    (BASE.replace("n = 16", "n = 100000") + 'metrics = ["mmd2"]\n' + EULER, "n"),
], ids=["tune n 1e9", "tuned 1e5 steps", "likelihood n beyond max", "likelihood 64-d n 1e7", "mmd2 n 1e5"])
def test_suite_sizes_are_checked_at_validation(text, key, tmp_path):
    text = text.replace('metrics = ["sliced_w2"]\nrepeats', "repeats") if "mmd2" in text else text
    with pytest.raises(SuiteError) as info:
        load_suite(str(suite_file(tmp_path, text)))
    assert f": {key}" in str(info.value) and "tiny.toml" in str(info.value)


# --------------------------------------------------------------------------------------------
# 2-4, 11: one-line refusals of the new commands
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    (["tune", "cifar10-unet-timing", "euler", "--nfe", "5", "--n", "2"], "timing-only"),
    (["recommend", "cifar10-unet-timing", "--nfe", "5", "--solvers", "euler"], "timing-only"),
    (["likelihood", "gmm2d-vp", "--rtol", "1e-30", "--atol", "1e-30", "--n", "8"], "--rtol"),
    (["likelihood", "gmm2d-vp", "--atol", "1e-20", "--n", "8"], "--atol"),
    (["tune", "gmm2d-vp", "euler", "--nfe", "0"], "--nfe"),
    (["tune", "gmm2d-vp", "euler", "--nfe", "4", "--n", "1"], "--n"),
    (["tune", "gmm2d-vp", "euler", "--nfe", "4", "--seed", "-1"], "--seed"),
    (["recommend", "gmm2d-vp", "--nfe", "0"], "--nfe"),
    (["run", "SUITE", "--jobs", "0"], "--jobs"),
    (["import-benchmark", "FILE", "--suite", " "], "--suite"),
    (["run", "SUITE", "--jobs", "1000"], "--jobs"),
    (["history", "--out", "FILE"], "--out"),
], ids=["tune timing-only", "recommend timing-only", "likelihood rtol 1e-30", "likelihood atol 1e-20",
        "tune nfe 0", "tune n 1", "tune seed -1", "recommend nfe 0", "run jobs 0", "import empty suite",
        "run jobs 1000", "history out a file"])
def test_new_commands_refuse_bad_values_in_one_line(argv, needle, tmp_path, capsys):
    argv = [str(suite_file(tmp_path)) if a == "SUITE" else str(bench_file(tmp_path)) if a == "FILE" else a
            for a in argv]
    if argv[0] == "history":
        Store(tmp_path / "s.sqlite").close()
    code, _, err = call([*argv, *(["--store", tmp_path / "s.sqlite"] if argv[0] in ("run", "recommend", "history",
                                                                                     "import-benchmark") else [])],
                        capsys)
    assert code == 2 and needle in err and one_line(err), err


def test_likelihood_tolerances_in_a_suite_are_bounded_too(tmp_path):
    with pytest.raises(SuiteError, match=r"likelihood\[0\].rtol"):
        load_suite(str(suite_file(tmp_path, BASE + "[[likelihood]]\nrtol = 1e-30\n")))


def test_history_of_a_missing_store_creates_nothing(tmp_path, capsys):
    typo = tmp_path / "typo.sqlite"
    code, _, err = call(["history", "--store", typo, "--out", tmp_path / "h"], capsys)
    assert code == 2 and "no results store" in err and str(typo) in err
    assert not typo.exists() and not (tmp_path / "h").exists()


# --------------------------------------------------------------------------------------------
# 4. import-benchmark: every entry checked before anything is written
# --------------------------------------------------------------------------------------------

def bench_file(tmp_path, **change):
    entry = {"name": "test_euler[2-8]", "fullname": "bench/perf/x.py::test_euler[2-8]", "group": "gmm2d-vp",
             "params": {"steps": 2, "batch": 8},
             "stats": {"median": 0.01, "min": 0.009, "max": 0.02, "mean": 0.011, "stddev": 0.001, "iqr": 0.001,
                       "rounds": 5, "total": 0.05},
             "extra_info": {"nfe": 2, "overhead": 1.3}}
    for path, value in change.items():
        *parents, leaf = path.split("__")
        d = entry
        for k in parents:
            d = d[k]
        d[leaf] = value
    data = {"benchmarks": [entry], "commit_info": {"id": "abc123", "dirty": False},
            "machine_info": {"node": "h", "cpu": {"brand_raw": "cpu"}}, "datetime": "2026-01-01T00:00:00"}
    p = tmp_path / "bench.json"
    p.write_text(json.dumps(data))
    return p


@pytest.mark.parametrize("change,needle", [
    ({"extra_info__nfe": math.nan}, "extra_info.nfe"),
    ({"stats__rounds": "5"}, "stats.rounds"),
    ({"params__steps": math.inf}, "params.steps"),
    ({"stats__median": -1.0}, "stats.median"),
    ({"params": [1, 2]}, "params"),
], ids=["nfe NaN", "rounds text", "steps Infinity", "negative time", "params a list"])
def test_import_benchmark_refuses_bad_values_and_records_nothing(change, needle, tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    code, _, err = call(["import-benchmark", bench_file(tmp_path, **change), "--store", store], capsys)
    assert code == 2 and needle in err and "bench.json" in err and one_line(err), err
    s = Store(store)
    assert s.runs().empty  # no 0-cell "complete" run left behind to block a re-import
    s.close()
    code, out, _ = call(["import-benchmark", bench_file(tmp_path), "--store", store], capsys)
    assert code == 0 and "1 benchmark cell" in out


def test_import_benchmark_of_an_empty_list_is_refused(tmp_path, capsys):
    p = tmp_path / "empty.json"
    p.write_text(json.dumps({"benchmarks": []}))
    code, _, err = call(["import-benchmark", p, "--store", tmp_path / "s.sqlite"], capsys)
    assert code == 2 and "empty" in err


# --------------------------------------------------------------------------------------------
# 5. outputs never overwrite the store or an input
# --------------------------------------------------------------------------------------------

def _contents(store):
    s = Store(store, create=False)
    try:
        return s.runs().drop(columns=["status"]).to_json(), s.cells(1).to_json()
    finally:
        s.close()


def test_outputs_that_would_overwrite_the_store_or_an_input_are_refused(store_path, tmp_path, capsys):
    before = _contents(store_path)
    base = tmp_path / "base.csv"
    assert call(["export", "1", "--csv", base, "--store", store_path], capsys)[0] == 0
    base_bytes = base.read_bytes()
    cases = [(["compare", "1", "1", "--summary", store_path], "--summary"),
             (["compare", "1", "1", "--junit", store_path], "--junit"),
             (["export", "1", "--csv", store_path], "--csv"),
             (["export", "1", "--csv", str(store_path) + "-wal"], "--csv"),
             (["compare", base, "1", "--junit", base], "--junit"),
             (["compare", "1", base, "--summary", base], "--summary"),
             (["compare", "1", "1", "--junit", tmp_path / "x.md", "--summary", tmp_path / "x.md"], "one file")]
    other = tmp_path / "other.sqlite"
    shutil.copy(store_path, other)
    cases.append((["export", "1", "--csv", other], "SQLite"))
    for argv, needle in cases:
        code, _, err = call([*argv, "--store", store_path], capsys)
        assert code == 2 and needle in err and one_line(err), (argv, err)
    assert _contents(store_path) == before and base.read_bytes() == base_bytes
    code, _, err = call(["tune", "gmm2d-vp", "euler", "--nfe", "4", "--out", other, "--force"], capsys)
    assert code == 2 and "SQLite" in err


# --------------------------------------------------------------------------------------------
# 6. two processes creating one new store at once
# --------------------------------------------------------------------------------------------

def _create_stores(root, barrier, k, queue):
    from bench.harness.store import Store

    errors = []
    for i in range(k):
        barrier.wait()
        try:
            Store(pathlib.Path(root) / f"s{i}.sqlite").close()
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
    queue.put(errors)


def test_two_processes_creating_one_new_store_both_succeed(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, queue, k = ctx.Barrier(2), ctx.Queue(), 60
    procs = [ctx.Process(target=_create_stores, args=(str(tmp_path), barrier, k, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    errors = sum((queue.get(timeout=300) for _ in procs), [])
    for p in procs:
        p.join(60)
    assert errors == []
    s = Store(tmp_path / "s0.sqlite")
    assert s.version == 2 and s.runs().empty
    s.close()


# --------------------------------------------------------------------------------------------
# 7. the resume command printed on Ctrl-C resumes the run
# --------------------------------------------------------------------------------------------

def test_the_resume_command_carries_every_override_and_works(tmp_path, capsys, monkeypatch):
    text = BASE.replace('["gmm2d-vp"]', '["gmm2d-vp", "gmm2d-ve"]') + EULER
    suite = suite_file(tmp_path, text)
    real = interrupt_at_second_cell(monkeypatch)
    code, _, err = run_cli(tmp_path, capsys, "--n", "32", "--models", "gmm2d-ve", "--threads", "1", suite=suite)
    assert code == 130 and len(err.strip().splitlines()) == 1
    command = err.split("resume with: ", 1)[1].strip()
    assert "--n 32" in command and "--models gmm2d-ve" in command and "--threads 1" in command
    monkeypatch.setattr(runner_mod, "execute_cell", real)
    argv = shlex.split(command)
    assert argv[:2] == ["sdebench", "run"]
    assert call(argv[1:], capsys)[0] == 0
    s = Store(tmp_path / "s.sqlite")
    cells, run = s.cells(1), s.run(1)
    s.close()
    assert run["status"] == "complete" and len(cells) == 2 and set(cells["n"]) == {32}


# --------------------------------------------------------------------------------------------
# 8. tuned-grid files are checked at suite validation
# --------------------------------------------------------------------------------------------

def _grid_file(tmp_path, model="gmm2d-ve", steps=2, times=None, name="g.json"):
    m = models.load(model)
    t = solvers.make_grid(m.sde, steps) if times is None else torch.tensor(times, dtype=torch.float64)
    from solvers.tuning import sde_description

    g = solvers.TunedGrid(times=t, solver="euler", options={}, steps=steps, nfe=steps, method="dp",
                          objective={"train": 0.1, "test": 0.1}, baseline={"grid": "uniform", "train": 0.2,
                                                                            "test": 0.2, "train_all": {}},
                          cost_nfe=0, wall_s=0.0, model=model, sde=sde_description(m.sde, t))
    return g.save(tmp_path / name)


@pytest.mark.parametrize("make,needle", [
    (lambda p: _grid_file(p, "gmm2d-ve"), "SDE"),
    (lambda p: _grid_file(p, "gmm2d-vp", steps=3), "steps=3"),
    (lambda p: _patched(_grid_file(p, "gmm2d-vp"), times=[0.5, 0.9, 1e-3]), "decreasing"),
], ids=["another SDE", "other steps", "times not decreasing"])
def test_suite_grid_files_are_validated_against_the_model(make, needle, tmp_path, capsys):
    path = make(tmp_path)
    text = BASE.replace("steps = [2, 4]", "steps = [2]") + f'[[solvers]]\nname = "euler"\ngrid = "{path}"\n'
    with pytest.raises(SuiteError) as info:
        load_suite(str(suite_file(tmp_path, text)))
    assert needle in str(info.value) and "tiny.toml" in str(info.value) and str(path) in str(info.value)
    code, _, err = run_cli(tmp_path, capsys, suite=suite_file(tmp_path, text))
    assert code == 2 and not (tmp_path / "s.sqlite").exists()


def _patched(path, **change):
    d = json.loads(path.read_text())
    d.update(change)
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("error,code,needle", [(InputError("tuned grid file 'g.json': changed"), 2, "g.json"),
                                               (KeyboardInterrupt(), 130, "resume with: sdebench run")],
                         ids=["a grid file changed since validation", "Ctrl-C while tuning"])
def test_a_run_whose_grids_fail_to_resolve_is_not_left_running(error, code, needle, tmp_path, capsys, monkeypatch):
    def broken(*a, **kw):
        raise error

    monkeypatch.setattr(runner_mod, "resolve_grids", broken)
    got, _, err = run_cli(tmp_path, capsys)
    assert got == code and needle in err
    s = Store(tmp_path / "s.sqlite")
    assert s.run(1)["status"] == "interrupted"
    s.close()


def test_recommend_with_tuned_grids_prints_a_command_that_reproduces_the_winner(tmp_path, capsys):
    code, out, _ = call(["recommend", "gmm2d-vp", "--nfe", "4", "--solvers", "euler", "--tune", "--n", "64",
                         "--quiet", "--no-report", "--store", tmp_path / "r.sqlite"], capsys)
    assert code == 0
    command = next(line for line in out.splitlines() if line.startswith("reproduce: ")).split(": ", 1)[1]
    argv = shlex.split(command)
    assert call(argv[1:], capsys)[0] == 0  # a tuned winner's grid is written to a file sample reads
    grid = argv[argv.index("--grid") + 1]
    code, _, err = call(["sample", "gmm2d-vp", "euler", "--grid", grid, "--steps", "9", "--n", "8"], capsys)
    assert code == 2 and "--steps 9 contradicts" in err  # never silently another number of steps


# --------------------------------------------------------------------------------------------
# 9. damaged rows and versions: one line naming the store and what is damaged
# --------------------------------------------------------------------------------------------

def _damage(store, sql):
    db = sqlite3.connect(store)
    db.execute(sql)
    db.commit()
    db.close()


@pytest.mark.parametrize("column", ["metrics", "timing", "cell"])
@pytest.mark.parametrize("command", ["export", "report", "compare", "resume"])
def test_a_damaged_cell_is_one_line_naming_the_store_and_the_cell(column, command, store_path, tmp_path, capsys):
    _damage(store_path, f"UPDATE cells SET {column}='{{not json' WHERE rowid=(SELECT MIN(rowid) FROM cells)")
    argv = {"export": ["export", "1", "--csv", tmp_path / "x.csv"], "report": ["report", "1", "--out", tmp_path / "r"],
            "compare": ["compare", "1", "1"],
            "resume": ["run", suite_file(tmp_path), "--resume", "1", "--no-report", "--quiet"]}[command]
    code, _, err = call([*argv, "--store", store_path], capsys)
    assert code == 2 and one_line(err), err
    assert str(store_path) in err and "damaged" in err and f"column {column}" in err and "run 1 cell" in err


def test_a_damaged_tuned_grid_row_is_a_store_error(store_path):
    s = Store(store_path)
    s.add_grid("k1", {"model": "gmm2d-vp"}, {"times": [1.0, 0.001]})
    s.db.execute("UPDATE grids SET grid='{x' WHERE key='k1'")
    with pytest.raises(StoreError, match="tuned grid k1: column grid"):
        s.grid("k1")
    s.close()


@pytest.mark.parametrize("command", ["list", "export", "run", "history"])
def test_a_negative_schema_version_is_one_line(command, store_path, tmp_path, capsys):
    _damage(store_path, "PRAGMA user_version = -1")
    argv = {"list": ["list", "runs"], "export": ["export", "1"], "history": ["history", "--out", tmp_path / "h"],
            "run": ["run", suite_file(tmp_path), "--no-report", "--quiet"]}[command]
    code, _, err = call([*argv, "--store", store_path], capsys)
    assert code == 2 and "schema version" in err and "-1" in err and str(store_path) in err and one_line(err)


# --------------------------------------------------------------------------------------------
# 10. compare: a value recorded at its floor is at the floor, not a NaN regression
# --------------------------------------------------------------------------------------------

def _frame(**cols):
    row = {"key": "k1", "model": "gmm2d-vp", "solver": "euler", "options": "{}", "budget": None, "steps": 4,
           "seed": 0, "nfe": 4, "time_median_s": 0.1, **cols}
    return pd.DataFrame([row]).set_index("key")


@pytest.mark.parametrize("base,head,code,verdict", [
    ({"sliced_w2": 0.69, "sliced_w2_floor": 0.8}, {"sliced_w2": math.nan, "sliced_w2_at_floor": 1.0,
                                                  "sliced_w2_floor": 0.8}, 0, None),
    ({"sliced_w2": math.nan, "sliced_w2_at_floor": 1.0, "sliced_w2_floor": 0.8},
     {"sliced_w2": 0.7, "sliced_w2_floor": 0.8}, 0, None),
    ({"sliced_w2": 2.0, "sliced_w2_floor": 0.8}, {"sliced_w2": math.nan, "sliced_w2_at_floor": 1.0,
                                                 "sliced_w2_floor": 0.8}, 0, "improved"),
    ({"sliced_w2": math.nan, "sliced_w2_at_floor": 1.0, "sliced_w2_floor": 0.8},
     {"sliced_w2": 2.0, "sliced_w2_floor": 0.8}, 1, "REGRESSION"),
    ({"exact_kl": 0.5, "exact_kl_se": 0.01}, {"exact_kl": math.nan, "exact_kl_at_floor": 1.0}, 0, None),
], ids=["base below, head at floor", "base at floor, head below", "head reached the floor",
        "head left the floor", "exact_kl at floor (no floor value)"])
def test_compare_reads_values_recorded_at_the_floor(base, head, code, verdict):
    table, got = compare(_frame(**base), _frame(**head))
    assert got == code, table
    assert (verdict is None and table.empty) or verdict in set(table["verdict"])


@pytest.mark.parametrize("content,needle", [
    (b"format,key,model,solver,nfe,sliced_w2\n", "no cells"),
    (b"format,key,model,solver,nfe,sliced_w2\n1,k1,gmm2d-vp,euler,4,abc\n", "sliced_w2"),
    (b"format,key,model,solver,nfe\n1,k1,gmm2d-vp,euler,four\n", "nfe"),
    (b"format,key,nfe\n1,k1,4\n", "model"),
], ids=["header only", "text metric", "text nfe", "no model column"])
def test_compare_refuses_an_empty_or_malformed_baseline(content, needle, store_path, tmp_path, capsys):
    bad = tmp_path / "base.csv"
    bad.write_bytes(content)
    code, _, err = call(["compare", bad, "1", "--store", store_path], capsys)
    assert code == 2 and needle in err and str(bad) in err and one_line(err), err


def test_compare_refuses_a_run_without_cells(store_path, capsys):
    s = Store(store_path)
    s.db.execute("INSERT INTO runs (uuid, suite, status, started) VALUES ('u', 'tiny', 'complete', '2026')")
    s.close()
    code, _, err = call(["compare", "2", "1", "--store", store_path], capsys)
    assert code == 2 and "no cells" in err


# --------------------------------------------------------------------------------------------
# JUnit and summary: labels with steps and grid; a changed definition reported one way
# --------------------------------------------------------------------------------------------

def test_ci_outputs_label_steps_and_grid_and_report_a_changed_definition_once(store_path, tmp_path, capsys):
    assert run_cli(tmp_path, capsys, "--n", "32", store=store_path)[0] == 0
    junit, summary = tmp_path / "j.xml", tmp_path / "s.md"
    code, out, _ = call(["compare", "1", "2", "--store", store_path, "--no-time", "--junit", junit,
                         "--summary", summary], capsys)
    assert code == 1 and "definition" in out
    xml, md = junit.read_text(), summary.read_text()
    assert "steps=2" in xml and "steps=4" in xml and "steps=2" in md
    assert xml.count("<testcase") == 2 and xml.count("<failure") == 2 and "definition" in xml
    assert "### Missing cells (0)" in md and "### New cells (0)" in md and "definition" in md
    verdicts = ci.per_cell(*(pd.read_csv(p).set_index("key") for p in _exports(store_path, tmp_path, capsys)))
    assert {v.status() for v in verdicts} == {"regression"} and len(verdicts) == 2
    grid_text = BASE + '[[solvers]]\nname = "euler"\ngrid = "logsnr"\n'
    assert run_cli(tmp_path, capsys, suite=suite_file(tmp_path, grid_text, "g.toml"), store=store_path)[0] == 0
    call(["compare", "3", "3", "--store", store_path, "--junit", junit], capsys)
    assert "grid=logsnr" in junit.read_text()


def _exports(store, tmp_path, capsys):
    out = []
    for r in ("1", "2"):
        p = tmp_path / f"run{r}.csv"
        assert call(["export", r, "--csv", p, "--store", store], capsys)[0] == 0
        out.append(p)
    return out


# --------------------------------------------------------------------------------------------
# 12. recommend: a metric that resolves the candidates; unresolved never above resolved
# --------------------------------------------------------------------------------------------

def _row(solver, value, se, at_floor=False, time_s=0.01):
    return {"solver": solver, "value": value, "stderr": se, "at_floor": at_floor, "time_median_s": time_s,
            "nfe": 6, "steps": 6, "floor": math.nan}


def test_recommend_never_ranks_an_unresolved_value_above_a_resolved_one():
    from bench.cli.recommend import rank

    rows = [_row("a", 0.72, 0.6, at_floor=True, time_s=0.001), _row("b", 0.43, 0.17), _row("c", 0.9, 0.05),
            _row("d", math.nan, math.nan)]
    out = rank(rows, "exact_kl")  # a (unresolved) first before: the fastest of rank 1
    assert [(r["solver"], r["rank"]) for r in out] == [("b", "1="), ("a", "1="), ("c", "3"), ("d", "-")]
    assert "unresolved" in out[1]["note"]
    alone = rank([_row("a", 0.72, 0.6, at_floor=True), _row("e", 0.01, 0.001, at_floor=True)], "exact_kl")
    assert [r["rank"] for r in alone] == ["1=", "1="]


def test_recommend_ranks_by_the_metric_that_resolves_the_candidates():
    from bench.cli.recommend import choose

    floor = [_row(f"euler grid={g}", 0.05, 0.01, at_floor=True, time_s=t) for g, t in (("logsnr", 0.001),
                                                                                       ("tuned", 0.002))]
    disc = [_row("euler grid=logsnr", 0.081, 0.004), _row("euler grid=tuned", 0.020, 0.002)]
    entries = [{"metric": "sliced_w2", "tables": {6: floor}}, {"metric": "discretization", "tables": {6: disc}}]
    metric, table, resolved = choose(entries, 6)
    assert metric == "discretization" and resolved == {"sliced_w2": 0, "discretization": 2}
    assert table[0]["solver"] == "euler grid=tuned"
    both = [{"metric": "exact_kl", "tables": {6: disc}}, {"metric": "discretization", "tables": {6: disc}}]
    assert choose(both, 6)[0] == "exact_kl"  # equal resolution: the preferred metric


# --------------------------------------------------------------------------------------------
# 13. a store whose file is shorter than its header says, with its log intact, is readable
# --------------------------------------------------------------------------------------------

def test_a_checkpoint_cut_short_with_the_log_intact_is_not_called_truncated(store_path, tmp_path, capsys):
    s = Store(store_path)  # held open: the log keeps its frames, as after a checkpoint cut short
    s.db.execute("PRAGMA wal_autocheckpoint=0")
    assert run_cli(tmp_path, capsys, store=store_path)[0] == 0
    data = bytearray(store_path.read_bytes())
    wal = pathlib.Path(str(store_path) + "-wal").read_bytes()
    s.close()
    pages = len(data) // int.from_bytes(data[16:18], "big")
    data[28:32] = (pages + 50).to_bytes(4, "big")  # the header claims pages the file does not hold
    data[92:96] = data[24:28]
    copies = {}
    for name, with_log in (("checked", True), ("read", True), ("alone", False)):
        (tmp_path / name).mkdir()
        copies[name] = tmp_path / name / "s.sqlite"
        copies[name].write_bytes(bytes(data))
        if with_log:
            pathlib.Path(str(copies[name]) + "-wal").write_bytes(wal)
    db = sqlite3.connect(copies["checked"])
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"  # SQLite reads those pages from the log
    db.close()
    code, out, err = call(["list", "runs", "--store", copies["read"]], capsys)
    assert code == 0 and out.count("complete") == 2, err
    code, _, err = call(["list", "runs", "--store", copies["alone"]], capsys)  # without its log: truncated
    assert code == 2 and "truncated" in err


# --------------------------------------------------------------------------------------------
# 14. a pickle planted in the shared cache never runs
# --------------------------------------------------------------------------------------------

class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_planted_pickle_in_the_cache_does_not_run(tmp_path):
    cache, key = DiskCache(tmp_path / "cache"), {"kind": "ode_ref", "model": "gmm2d-vp"}
    marker = tmp_path / "pwned"
    torch.save({"key": cache._canonical(key), "value": _Planted(str(marker))}, cache.path(key))
    assert cache.get(key, lambda: torch.ones(3)).tolist() == [1.0, 1.0, 1.0]  # unreadable: remade
    assert not marker.exists()
    assert cache.load(key).tolist() == [1.0, 1.0, 1.0]  # and what it stores is read back
    cache.save({"kind": "floor"}, {"sliced_w2": 0.5, "n": 3, "t": torch.zeros(2)})
    assert cache.load({"kind": "floor"})["sliced_w2"] == 0.5


# --------------------------------------------------------------------------------------------
# 15. tuning against NaN, strict JSON, exact_kl sizes
# --------------------------------------------------------------------------------------------

def test_tune_grid_refuses_a_teacher_that_gives_nan():
    m = models.load("gmm2d-vp")
    with pytest.raises(InputError, match="teacher .* non-finite"):
        solvers.tune_grid(m, "euler", steps=3, method="dp", n=8, teacher=lambda x: x * math.nan)


def test_a_tuned_grid_never_writes_bare_nan_into_json(tmp_path):
    path = _grid_file(tmp_path, "gmm2d-vp")
    g = solvers.load_grid(path)
    g.objective["test"] = math.nan
    g.baseline["train_all"] = {"uniform": math.inf, "logsnr": 0.3}
    text = g.save(tmp_path / "nan.json").read_text()

    def strict(c):
        raise ValueError(f"bare {c} in JSON")

    d = json.loads(text, parse_constant=strict)
    assert d["objective"]["test"] is None and d["baseline"]["train_all"]["uniform"] is None
    assert solvers.load_grid(tmp_path / "nan.json").steps == g.steps


@pytest.mark.parametrize("kw,needle", [({"n": 0}, "n must"), ({"n": 1}, "n must"), ({"batch": 0}, "batch"),
                                       ({"batch": 2.5}, "batch"), ({"x_T": torch.zeros(0, 2)}, "x_T")],
                         ids=["n 0", "n 1", "batch 0", "batch float", "x_T empty"])
def test_exact_kl_sizes_are_clear_errors(kw, needle):
    from bench.harness.exact import exact_kl

    with pytest.raises(InputError, match=needle):
        exact_kl(models.load("gmm2d-vp", exact_prior=True), "euler", steps=2, **kw)


# --------------------------------------------------------------------------------------------
# 16. from_diffusers: bad config values name the file and the key
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config,needle", [
    ({"num_train_timesteps": -5}, "num_train_timesteps"), ({"num_train_timesteps": "abc"}, "num_train_timesteps"),
    ({"num_train_timesteps": 10**12}, "num_train_timesteps"), ({"beta_start": "x"}, "beta_start"),
    ({"beta_end": math.nan}, "beta_end"), ({"trained_betas": ["a"]}, "trained_betas"),
    ({"prediction_type": 3}, "prediction_type"), ([1, 2], "JSON object"),
], ids=["timesteps -5", "timesteps text", "timesteps 1e12", "beta_start text", "beta_end nan", "trained text",
        "prediction int", "a list"])
def test_from_diffusers_config_errors_name_the_file_and_the_key(config, needle, tmp_path):
    path = tmp_path / "scheduler_config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(InputError) as info:
        adapters.from_diffusers(lambda x, k: x, scheduler=path)
    assert needle in str(info.value) and str(path) in str(info.value)
    if isinstance(config, dict):
        with pytest.raises(InputError, match=needle):
            adapters.betas_from_config(config)


# --------------------------------------------------------------------------------------------
# a run whose every cell failed; a cache that cannot be written
# --------------------------------------------------------------------------------------------

def test_a_run_whose_every_cell_failed_exits_1_and_is_marked_failed(tmp_path, capsys, monkeypatch):
    from bench.harness.cell import CellResult

    def failing(cell, **_):
        return CellResult(error="RuntimeError: no space left")

    monkeypatch.setattr(runner_mod, "execute_cell", failing)
    code, out, err = run_cli(tmp_path, capsys)
    assert code == 1 and "every cell of run 1 failed" in err and "no space left" in err and one_line(err)
    s = Store(tmp_path / "s.sqlite")
    assert s.run(1)["status"] == "failed" and s.cell_counts(1) == (2, 2)
    s.close()
    code, out, _ = call(["list", "runs", "--store", tmp_path / "s.sqlite"], capsys)
    assert "failed" in out


def test_a_cache_path_that_cannot_be_written_is_refused_before_the_run(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    cache = tmp_path / "s.sqlite.cache"
    cache.write_text("x")  # a file where the cache directory goes: every cell would fail on it
    code, _, err = run_cli(tmp_path, capsys, store=store)
    assert code == 2 and one_line(err) and str(cache) in err, err
    s = Store(store)
    assert s.runs().empty
    s.close()


# --------------------------------------------------------------------------------------------
# read-only stores: read-only commands read an intact store in a read-only directory
# --------------------------------------------------------------------------------------------

def test_read_only_commands_read_a_store_in_a_read_only_directory(tmp_path, capsys):
    work = pathlib.Path(tempfile.mkdtemp(dir="/tmp"))  # every reader can traverse it (tmp_path may be 0700)
    try:
        work.chmod(0o777)
        ro = work / "ro"
        ro.mkdir()
        suite = suite_file(work)
        subprocess.run([sys.executable, "-m", "bench.cli", "run", str(suite), "--store", str(ro / "s.sqlite"),
                        "--no-report", "--quiet"], check=True, cwd=ROOT, capture_output=True)
        assert sorted(p.name for p in ro.iterdir() if p.name.startswith("s.sqlite")) == ["s.sqlite",
                                                                                          "s.sqlite.cache"]
        for p in [*ro.rglob("*"), ro]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        out = work / "out"
        out.mkdir()
        out.chmod(0o777)
        code = ("import sys\nfrom bench import cli\ns = sys.argv[1]; o = sys.argv[2]\n"
                "for argv in (['list', 'runs'], ['export', '1', '--csv', o + '/x.csv'], ['compare', '1', '1'],"
                " ['report', '1', '--out', o + '/r'], ['history', '--out', o + '/h']):\n"
                "    print('RC', argv[0], cli.main(argv + ['--store', s]), flush=True)\n")
        drop = "-dac_override,-dac_read_search,-fowner"  # root: file permissions apply as to anyone
        prefix = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"] if os.geteuid() == 0 else []
        if prefix and not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a directory read-only")
        r = subprocess.run([*prefix, sys.executable, "-c", code, str(ro / "s.sqlite"), str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
        codes = dict(line.split()[1:] for line in r.stdout.splitlines() if line.startswith("RC "))
        assert codes == {"list": "0", "export": "0", "compare": "0", "report": "0", "history": "0"}, r.stderr
        assert sorted(p.name for p in ro.iterdir() if p.name.startswith("s.sqlite")) == ["s.sqlite",
                                                                                          "s.sqlite.cache"]
    finally:
        for p in work.rglob("*"):
            p.chmod(0o777)
        shutil.rmtree(work)


# --------------------------------------------------------------------------------------------
# issue 23: layering (cli > report > harness > zoo > solvers) and one run-id parser
# --------------------------------------------------------------------------------------------

LAYERS = ["solvers", "bench.zoo", "bench.harness", "bench.report", "bench.cli"]


def _layer(module: str) -> int:
    return max((i for i, name in enumerate(LAYERS) if module == name or module.startswith(name + ".")), default=-1)


def test_no_module_imports_from_a_higher_layer():
    bad = []
    for path in [*(ROOT / "bench").rglob("*.py"), *(ROOT / "solvers").rglob("*.py")]:
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        own = _layer(module)
        if own < 0:  # bench itself, bench.perf: outside the layers
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            bad += [f"{module} imports {n}" for n in names if _layer(n) > own]
    assert bad == [], bad


@pytest.mark.parametrize("ref,needle", [("abc", "'abc' is not a run id"), ("0", "'0' is not a run id"),
                                        ("-3", "'-3'"), ("99", "no run 99"), ("latest", None), ("1", None)])
def test_run_references_are_parsed_in_one_place(ref, needle, store_path, capsys):
    s = Store(store_path)
    if needle is None:
        assert s.resolve_run(ref) == 1
    else:
        with pytest.raises(InputError, match=needle):
            s.resolve_run(ref)
    s.close()
    for argv in (["export", ref], ["report", ref, "--out", store_path.parent / "r"], ["compare", ref, "1"]):
        code, _, err = call([*argv, "--store", store_path], capsys)
        assert (code == 0) == (needle is None) and (needle is None or needle in err), (argv, err)


# --------------------------------------------------------------------------------------------
# leftovers of the second pass: step counts past limits.STEPS_MAX, unwritable output paths
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["sample", "gmm2d-vp", "euler", "--steps", "50000000"],
                                  ["recommend", "gmm2d-vp", "--nfe", "2000000"],
                                  ["tune", "gmm2d-vp", "euler", "--nfe", "10000000"],
                                  ["demo", "--nfe", "10", "5000000"]])
def test_step_counts_beyond_the_limit_are_refused_at_once(argv, capsys):
    code, _, err = call(argv, capsys)
    assert code == 2 and "in [1, 1000000]" in err


def test_a_suite_with_too_many_steps_is_refused_before_a_store(tmp_path, capsys):
    suite = suite_file(tmp_path, BASE.replace("steps = [2, 4]", "steps = [2, 10000000]") + EULER)
    code, _, err = run_cli(tmp_path, capsys, suite=suite)
    assert code == 2 and "steps" in err and "1000000" in err and not (tmp_path / "s.sqlite").exists()


def test_an_unwritable_output_names_its_path(tmp_path, capsys):
    code, _, _ = run_cli(tmp_path, capsys)
    assert code == 0
    (tmp_path / "afile").write_text("")
    code, _, err = call(["report", "1", "--store", tmp_path / "s.sqlite", "--out", tmp_path / "afile" / "x"], capsys)
    assert code == 2 and f"{tmp_path / 'afile' / 'x'}: Not a directory" in err and "Errno" not in err


def test_a_suite_of_too_many_cells_is_refused_before_building_them(tmp_path, capsys):
    seeds = "seeds = [" + ", ".join(map(str, range(60000))) + "]\n"
    code, _, err = run_cli(tmp_path, capsys, suite=suite_file(tmp_path, BASE + seeds + EULER))
    assert code == 2 and "seeds: defines about 120,000 cells" in err and not (tmp_path / "s.sqlite").exists()
