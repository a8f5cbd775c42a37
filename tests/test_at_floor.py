"""Metrics at their noise floor at a coarser step count are recorded "at floor", not recomputed
(``bench.harness.at_floor``): the rule, the waves, the run against a measure-everything run,
a resumed run, and the report's ranking."""
import json
import math

import pandas as pd
import pytest

from bench.harness import runner
from bench.harness.at_floor import StepSeries, metric_at_floor
from bench.harness.cell import Cell, CellResult
from bench.harness.store import Store
from bench.harness.suite import load_suite
from bench.report.analysis import rank_solvers

SUITE = """
name = "floor"
models = ["gmm2d-vp"]
n = 200
seeds = [0, 1]
steps = [4, 16, 64]
metrics = ["discretization", "exact_kl", "sliced_w2"]
repeats = 1
warmup = 0
threads = 1
reference = {{ ode_rtol = 1e-4, sde_steps = 256 }}
skip_at_floor = {skip}
[[solvers]]
name = "rk4"
[[solvers]]
name = "euler_maruyama"
"""


def _cell(steps=10, seed=0, solver="rk4", stochastic=False, rtol=1e-3):
    return Cell(task="sample", model="gmm2d-vp", solver=solver, options={}, grid=None, budget=None, steps=steps,
                n=10, seed=seed, exact_prior=True, device="cpu", dtype="float32", threads=1,
                metrics=("discretization", "exact_kl", "sliced_w2"), reference={"ode_rtol": rtol},
                solver_meta={"stochastic": stochastic})


def _result(columns) -> CellResult:
    """A finished cell's result from its stored metric columns."""
    return CellResult.from_dict({"metrics": columns})


def test_the_floor_rule_of_each_kind_of_metric():
    det, sto = _cell(), _cell(solver="euler_maruyama", stochastic=True)
    assert metric_at_floor("discretization", _result({"discretization": 0.009}), det)      # <= 10 x ode_rtol
    assert not metric_at_floor("discretization", _result({"discretization": 0.011}), det)
    assert not metric_at_floor("discretization", _result({"discretization": 1e-9}), sto)   # no floor for SDE paths
    assert metric_at_floor("exact_kl", _result({"exact_kl": -0.01, "exact_kl_se": 0.006}), det)  # within 2 se of 0
    assert not metric_at_floor("exact_kl", _result({"exact_kl": 0.013, "exact_kl_se": 0.006}), det)
    assert metric_at_floor("sliced_w2", _result({"sliced_w2": 0.07, "sliced_w2_floor": 0.08}), det)
    assert not metric_at_floor("sliced_w2", _result({"sliced_w2": 0.09, "sliced_w2_floor": 0.08}), det)
    assert not metric_at_floor("sliced_w2", _result({"sliced_w2": math.nan, "sliced_w2_floor": 0.08}), det)
    assert metric_at_floor("sliced_w2", _result({"sliced_w2_at_floor": 1.0}), det)         # already at floor: stays


def test_waves_go_coarsest_first_and_a_metric_is_skipped_only_when_every_seed_was_at_floor():
    cells = [_cell(s, seed) for s in (4, 16, 64) for seed in (0, 1)] + [_cell(8, 0, solver="euler")]
    series = StepSeries(cells)
    assert [sorted({c.steps for c in w}) for w in series.waves(cells)] == [[4, 8], [16], [64]]
    by = {(c.steps, c.seed): c.key for c in cells}
    floor = {"discretization": 1e-3, "exact_kl": 0.5, "exact_kl_se": 0.1, "sliced_w2": 1.0, "sliced_w2_floor": 2.0}
    results = {by[16, 0]: _result(floor), by[16, 1]: _result({**floor, "sliced_w2": 3.0})}
    target = next(c for c in cells if c.steps == 64)
    assert series.at_floor(target, results) == ("discretization",)   # sliced W2 above floor for seed 1
    assert series.at_floor(target, {by[16, 0]: _result(floor)}) == ()  # seed 1 not finished (or failed)
    assert series.at_floor(next(c for c in cells if c.steps == 4), results) == ()  # nothing coarser


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("floor")
    out = {}
    for skip in ("true", "false"):
        path = tmp / f"{skip}.toml"
        path.write_text(SUITE.format(skip=skip))
        store = Store(tmp / f"{skip}.sqlite")
        out[skip] = (load_suite(str(path)), store, runner.run_suite(load_suite(str(path)), store, progress=False))
    return out


def _frame(store, run_id):
    df = store.cells(run_id).set_index("key").sort_index()
    df["at_floor"] = [tuple(json.loads(c).get("at_floor", ())) for c in df["cell"]]
    return df


def test_skipped_metrics_were_at_floor_for_every_seed_and_the_rest_is_identical(runs):
    skip, full = (_frame(runs[k][1], runs[k][2]) for k in ("true", "false"))
    assert list(skip.index) == list(full.index) and skip["error"].isna().all()
    assert not full["at_floor"].map(len).any()  # skip_at_floor = false measures everything
    skipped = [(key, m) for key, row in skip.iterrows() for m in row["at_floor"]]
    # rk4 reaches the 1e-3 floor by 16 steps: its 64-step errors are not recomputed; EM is never skipped
    assert {(skip.loc[k, "solver"], skip.loc[k, "steps"]) for k, m in skipped if m == "discretization"} == \
        {("rk4", 64)}
    cells = {k: Cell.from_json(c) for k, c in full["cell"].items()}
    results = runs["false"][1].results(runs["false"][2])
    series = StepSeries(cells.values())
    for key, m in skipped:
        assert skip.loc[key, m + "_at_floor"] == 1 and math.isnan(skip.loc[key, m])
        coarser = [k for k, c in cells.items() if series_of(c) == series_of(cells[key]) and
                   c.steps == max(s for s in series.by[series_of(c)] if s < cells[key].steps)]
        assert len(coarser) == 2  # both seeds, each at floor in the measure-everything run
        assert all(metric_at_floor(m, results[k], cells[k]) for k in coarser)
    for m in ("discretization", "exact_kl", "sliced_w2", "sliced_w2_floor", "nfe"):
        measured = skip[m].notna()
        assert skip.loc[measured, m].equals(full.loc[measured, m]), m


def series_of(cell):
    from bench.harness.at_floor import series_key
    return series_key(cell)


def test_a_resumed_run_makes_the_same_at_floor_decisions(runs):
    suite, store, run_id = runs["true"]
    before = _frame(store, run_id)
    store.db.execute("DELETE FROM cells WHERE run_id=? AND steps=64", (run_id,))
    store.db.commit()
    runner.run_suite(suite, store, resume=run_id, progress=False)
    after = _frame(store, run_id)
    assert after["at_floor"].equals(before["at_floor"]) and any(after["at_floor"].map(len))


def test_the_report_ties_at_rank_1_what_is_at_floor_now_or_was_at_fewer_steps():
    rows = pd.DataFrame({"label": ["a", "a", "b", "b", "c", "c"], "nfe": [64] * 6, "steps": [16] * 6,
                         "exact_kl": [math.nan, math.nan, 0.5, 0.6, 0.003, -0.001],
                         "exact_kl_se": [math.nan, math.nan, 0.01, 0.01, 0.002, 0.002],
                         "exact_kl_at_floor": [1.0, 1.0] + [math.nan] * 4, "discretization": [1e-3] * 6,
                         "time_median_s": [0.1] * 6})
    ranked = {r["solver"]: r for r in rank_solvers(rows, "exact_kl")}
    assert ranked["a"]["rank"] == "1=" and "not recomputed" in ranked["a"]["note"]
    assert ranked["c"]["rank"] == "1=" and "within 2 se of 0" in ranked["c"]["note"]  # 0.001 +- 0.0014
    assert ranked["b"]["rank"] == "3"
