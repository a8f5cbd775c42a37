"""Tuned grids in the harness: suites naming grids, tuning once per tuning key in the driver (kept
in the store's ``grids`` table, never re-tuned on resume or in a later run), grid files, the
store migration 1 -> 2, ``sdebench tune`` and the report section.

``solvers.tune_grid`` is replaced by a counting fake (a perturbed built-in grid) so the tests stay
fast; the real tuner is tested in tests/test_tuning.py."""
import io
import json
import sqlite3

import pytest

import solvers
from bench.cli import main
from bench.harness import tuned
from bench.harness.cell import Cell
from bench.harness.runner import run_suite
from bench.harness.store import SCHEMA_VERSION, Store
from bench.harness.suite import Suite, SuiteError
from bench.report import write_report
from bench.report.document import SECTIONS
from solvers.tuning import TunedGrid, sde_description


@pytest.fixture
def calls(monkeypatch):
    """Replace solvers.tune_grid by a fast fake; the list of its calls."""
    log = []

    def fake(model, solver, *, steps=None, nfe=None, method="search", teacher=None, n=256, seed=0, budget=None,
             **options):
        cls = solvers.get(solver)
        steps = steps if steps is not None else cls.steps_for_nfe(nfe, **options)
        log.append({"model": model.name, "solver": cls.name, "steps": steps, "method": method, "seed": seed, "n": n})
        t = solvers.make_grid(model.sde, steps, "logsnr").clone()
        if steps > 1:
            t[1:-1] = t[1:-1] * 0.97 + t[2:] * 0.03  # not a built-in grid, still decreasing
        return TunedGrid(times=t, solver=cls.name, options=cls.resolve_options(options), steps=steps,
                         nfe=cls.expected_nfe(steps, **options), method=method,
                         objective={"train": 0.01, "test": 0.02},
                         baseline={"grid": "uniform", "train": 0.05, "test": 0.06, "train_all": {"uniform": 0.05}},
                         cost_nfe=1234, wall_s=0.5, model=model.name, sde=sde_description(model.sde, t),
                         data={"seed": seed, "n": n})

    monkeypatch.setattr(solvers, "tune_grid", fake)
    return log


def suite(tmp_path=None, **extra):
    data = {"name": "tt", "models": ["gmm2d-vp"], "n": 32, "nfe": [5], "metrics": ["discretization", "sliced_w2"],
            "repeats": 1, "warmup": 0, "threads": 1, "reference": {"ode_rtol": 1e-6},
            "solvers": [{"name": "euler", "grids": ["uniform", "tuned", "tuned-dp"]},
                        {"name": "euler_maruyama"}]}
    data.update(extra)
    return Suite(data, "<test>")


def run(s, store, **kw):
    return run_suite(s, store, progress=True, stream=io.StringIO(), **kw)


def test_a_grids_list_gives_one_cell_per_grid_and_the_key_names_the_grid_not_its_times():
    cells = suite().cells()
    euler = [c for c in cells if c.solver == "euler"]
    assert [c.grid for c in euler] == ["uniform", "tuned", "tuned-dp"]
    assert len({c.key for c in euler}) == 3 and all(c.times is None for c in cells)
    t = euler[1].replace(times=(1.0, 0.5, 1e-3), tuning={"method": "dp"})
    assert t.key == euler[1].key and "times" not in t.definition()
    back = Cell.from_json(t.to_json())
    assert back.times == (1.0, 0.5, 1e-3) and back.tuning == {"method": "dp"} and back.key == t.key
    # the single grid key still works; a top-level tuned grid skips what cannot be tuned
    assert [c.grid for c in suite(solvers=[{"name": "heun", "grid": "edm"}]).cells()] == ["edm"]
    top = suite(grids=["logsnr", "tuned"], solvers=[{"name": "heun"}, {"name": "euler_maruyama"},
                                                     {"name": "dopri5"}]).cells()
    assert sorted((c.solver, c.grid) for c in top) == [("dopri5", "logsnr"), ("euler_maruyama", "logsnr"),
                                                       ("heun", "logsnr"), ("heun", "tuned")]


@pytest.mark.parametrize("entry, match", [
    ({"name": "euler_maruyama", "grids": ["tuned"]}, "stochastic"),
    ({"name": "dopri5", "grids": ["tuned"]}, "adaptive"),
    ({"name": "euler", "grids": ["nope"]}, "unknown grid"),
    ({"name": "euler", "grids": ["no/such/grid.json"]}, "does not exist"),
    ({"name": "euler", "grids": []}, "non-empty"),
])
def test_bad_grids_are_refused_with_the_key(entry, match):
    with pytest.raises(SuiteError, match=match):
        suite(solvers=[entry])


def test_a_tuned_cell_is_tuned_once_stored_and_not_retuned_on_resume_or_in_a_later_run(tmp_path, calls):
    store = Store(tmp_path / "s.sqlite")
    s = suite()
    rid = run(s, store)
    # "tuned" is "tuned-dp": one tuning, on seeds far from the evaluation's
    assert calls == [{"model": "gmm2d-vp", "solver": "euler", "steps": 5, "method": "dp", "seed": tuned.TUNE_SEED,
                      "n": 256}]
    assert len(store.grids()) == 1
    df = store.cells(rid)
    assert df["error"].isna().all(), df["error"].tolist()
    cells = {c.grid: c for c in map(Cell.from_json, df["cell"]) if c.solver == "euler"}
    for g in ("tuned", "tuned-dp"):
        c = cells[g]
        assert c.times is not None and len(c.times) == 6 and c.tuning["cost_nfe"] == 1234
        assert c.tuning["seed"] == tuned.TUNE_SEED and c.tuning["objective_test"] == 0.02
    assert cells["uniform"].times is None
    row = df[df["grid"] == "tuned"].iloc[0]
    assert row["tune_objective_test"] == 0.02 and row["tune_builtin_test"] == 0.06
    # the tuned cell ran on the tuned times: its error differs from the built-in grids'
    assert row["discretization"] != df[df["grid"] == "uniform"].iloc[0]["discretization"]

    # resume after losing a tuned cell: recomputed from the stored grid, not re-tuned
    store.db.execute("DELETE FROM cells WHERE run_id=? AND grid='tuned'", (rid,))
    run(s, store, resume=rid)
    assert len(calls) == 1 and len(store.cells(rid)) == len(s.cells())
    again = Cell.from_json(store.cells(rid).query("grid == 'tuned'").iloc[0]["cell"])
    assert again.times == cells["tuned"].times and again.tuning["source"] == "store"
    # a later run with the same definition: not re-tuned either; another method or size is
    run(s, store)
    assert len(calls) == 1
    run(suite(solvers=[{"name": "euler", "grids": ["tuned-search"]}]), store)
    run(suite(tune={"n": 64}, solvers=[{"name": "euler", "grids": ["tuned"]}]), store)
    assert [c["method"] for c in calls] == ["dp", "search", "dp"] and calls[-1]["n"] == 64
    assert len(store.grids()) == 3


def test_a_tuned_grid_file_in_a_suite(tmp_path, calls):
    from bench.zoo import models

    g = solvers.tune_grid(models.load("gmm2d-vp"), "euler", nfe=5)
    path = g.save(tmp_path / "g.json")
    store = Store(tmp_path / "s.sqlite")
    rid = run(suite(solvers=[{"name": "euler", "grids": [str(path), "logsnr"]}]), store)
    df = store.cells(rid)
    assert df["error"].isna().all()
    c = Cell.from_json(df[df["grid"] == str(path)].iloc[0]["cell"])
    assert c.times == tuple(g.times.tolist()) and c.tuning["source"] == "file" and len(c.tuning["sha1"]) == 16
    assert len(calls) == 1  # the file is read, not tuned
    # a file of another step count is refused before anything runs
    with pytest.raises(solvers.InputError, match="steps=5"):
        run(suite(nfe=[10], solvers=[{"name": "euler", "grids": [str(path)]}]), store)


def test_a_version_1_store_is_migrated_to_2_with_a_grids_table(tmp_path):
    path = tmp_path / "v1.sqlite"
    store = Store(path)
    rid = store.start_run(suite(solvers=[{"name": "euler"}]), "local")
    store.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE grids")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = Store(path)
    assert SCHEMA_VERSION == 2 and store.version == 2
    assert store.run(rid)["suite"] == "tt"
    assert store.grid("x") is None
    assert store.add_grid("x", {"model": "m", "solver": "euler", "steps": 5}, {"times": [1.0, 0.0], "cost_nfe": 3})
    assert not store.add_grid("x", {}, {})
    assert store.grid("x")["grid"]["cost_nfe"] == 3
    store.close()
    assert Store(path).version == 2  # idempotent


def test_sdebench_tune_prints_the_table_writes_the_grid_and_refuses_to_overwrite(tmp_path, calls, capsys,
                                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["tune", "gmm2d-vp", "euler", "--nfe", "5", "--n", "4"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    path = tmp_path / "results" / "grids" / "gmm2d-vp_euler_nfe5_dp.json"
    assert path.exists() and f"grid written to {path.relative_to(tmp_path)}" in out
    for word in ("uniform", "logsnr", "edm", "quadratic", "tuned (dp)", "held-out error", "tuning NFE", "1234"):
        assert word in out
    assert "tuning euler on gmm2d-vp" in err and "teacher" in err
    assert solvers.load_grid(path).steps == 5 and calls[-1]["method"] == "dp"
    assert main(argv) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(argv + ["--force"]) == 0
    other = tmp_path / "mine.json"
    assert main(argv + ["--out", str(other), "--method", "search"]) == 0 and json.loads(other.read_text())["method"] == "search"
    assert main(["tune", "gmm2d-vp", "euler_maruyama", "--nfe", "5", "--n", "4", "--out", str(tmp_path / "x.json")]) == 2


def test_the_report_has_a_tuned_vs_built_in_section_with_its_table(tmp_path, calls):
    store = Store(tmp_path / "s.sqlite")
    rid = run(suite(), store)
    out = write_report(store, [rid], tmp_path / "rep", trajectories=False)
    assert ("tuned-grids", "Tuned vs built-in grids") in SECTIONS
    ids = [s[0] for s in SECTIONS]
    assert ids.index("tuned-grids") == ids.index("best-solver") + 1
    md = out["markdown"].read_text()
    assert "## Tuned vs built-in grids" in md and "| tuning NFE |" in md and "tuned-dp" in md
    assert (tmp_path / "rep" / "fig-tuned-grids.png").exists()
    assert 'id="tuned-grids"' in out["html"].read_text()


def test_jobs_2_tunes_the_missing_grids_in_parallel_with_the_serial_result(tmp_path):
    """Real tuning (dp on a few x_T): the workers' grids equal the serial driver's, and are stored."""
    s = suite(models=["gmm2d-vp"], nfe=[4], tune={"n": 8, "budget": 8},
              solvers=[{"name": "euler", "grids": ["tuned"]}, {"name": "heun", "grids": ["tuned"]}])
    times = {}
    for jobs in (1, 2):
        store = Store(tmp_path / f"j{jobs}.sqlite")
        stream = io.StringIO()
        rid = run_suite(s, store, progress=True, stream=stream, jobs=jobs)
        cells = store.cells(rid)
        assert cells["error"].isna().all(), cells["error"].tolist()
        times[jobs] = {c.solver: c.times for c in map(Cell.from_json, cells["cell"])}
        assert ("tuning 2 grids on 2 workers" in stream.getvalue()) == (jobs == 2)
        assert len(store.db.execute("SELECT key FROM grids").fetchall()) == 2
    assert times[1] == times[2] and all(t is not None for t in times[2].values())
