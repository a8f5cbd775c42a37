"""A metric and an executor are each added in one place (one ``register`` call) and the whole
harness picks them up: suite validation, execution, the store, the CSV export, the report's data,
``compare``'s gate and the cost estimate for the metric; ``--executor NAME`` for the executor."""
import concurrent.futures
import math

import pandas as pd
import pytest

from bench import cli
from bench.harness import executors, metrics, runner
from bench.harness.estimate import estimate
from bench.harness.execute import shared_keys
from bench.harness.store import Store
from bench.harness.suite import SuiteError, load_suite
from bench.report import compare as gate
from bench.report.data import load_cells, numeric_columns

SUITE = """
name = "toy"
models = ["gmm2d-vp"]
n = 64
seeds = [0]
steps = [4, 8]
metrics = {metrics}
repeats = 1
warmup = 0
threads = 1
skip_at_floor = false
[[solvers]]
name = "euler"
[[solvers]]
name = "heun"
"""
TOY_COST_S = 123.0


def toy_distance(metric, ctx):
    """Mean distance of each sample to its partner in the exact target set, with its standard error."""
    d = (ctx.x - ctx.target()).flatten(1).norm(dim=1)
    return metrics.MetricResult(float(d.mean()), se=float(d.std() / len(d) ** 0.5))


@pytest.fixture
def toy_metric():
    metric = metrics.register(metrics.Metric("toy", "toy distance", "toy distance", needs=("target",),
                                             measure=toy_distance, cost=lambda m, c: {"metrics": TOY_COST_S}))
    yield metric
    metrics.METRICS.pop("toy", None)


def _suite(tmp_path, metric_names):
    path = tmp_path / "toy.toml"
    path.write_text(SUITE.format(metrics=repr(list(metric_names)).replace("'", '"')))
    return path


def test_a_registered_metric_is_validated_measured_stored_exported_reported_gated_and_costed(tmp_path, toy_metric):
    with pytest.raises(SuiteError, match=r"unknown \['toyy'\]; allowed: .*toy"):
        load_suite(str(_suite(tmp_path, ["toyy"])))
    suite = load_suite(str(_suite(tmp_path, ["toy"])))
    cells = suite.cells()
    assert all(("exact", "gmm2d-vp", 64, 0, 0) in shared_keys(c) for c in cells)  # what the record needs
    assert estimate(cells).metrics_s >= TOY_COST_S * len(cells)  # its own cost, per cell

    store = Store(tmp_path / "toy.sqlite")
    run_id = runner.run_suite(suite, store, progress=False)
    results = store.results(run_id)
    assert len(results) == len(cells)
    for r in results.values():  # measured, stored and read back typed
        assert r.error is None and r.metrics["toy"].value > 0 and r.metrics["toy"].se > 0

    csv = store.to_csv(run_id, tmp_path / "base.csv")
    exported = pd.read_csv(csv)
    assert exported["toy"].notna().all() and exported["toy_se"].notna().all()

    df = load_cells(store, [run_id])
    assert {"toy", "toy_se"} <= set(numeric_columns()) and df["toy"].dtype == float and df["toy"].notna().all()
    assert all(row.result.metrics["toy"].value == row.toy for row in df.itertuples())

    # gated: the same values pass; 50% worse in one head cell is a regression on that metric
    base = gate.load_run_or_export(str(csv))
    assert gate.compare(base, gate.load_run_or_export(run_id, store), time_factor=None)[1] == gate.EXIT_OK
    worse = exported.copy()
    worse.loc[0, "toy"] *= 1.5
    worse.to_csv(tmp_path / "head.csv", index=False)
    table, code = gate.compare(base, gate.load_run_or_export(str(tmp_path / "head.csv")), time_factor=None)
    assert code == gate.EXIT_QUALITY and table[table.verdict == "REGRESSION"]["what"].tolist() == ["toy"]


def test_a_registered_metric_reaches_the_report(tmp_path, toy_metric):
    from bench.report import write_report

    store = Store(tmp_path / "toy.sqlite")
    run_id = runner.run_suite(load_suite(str(_suite(tmp_path, ["toy", "discretization"]))), store, progress=False)
    out = write_report(store, [run_id], out_dir=tmp_path / "report")
    assert toy_metric.label in out["html"].read_text()  # its quality-vs-NFE panel, by its registered label


def test_a_metric_is_refused_where_it_would_clash_or_cannot_be_measured():
    with pytest.raises(metrics.InputError, match="already registered"):
        metrics.register(metrics.Metric("w2", "another W2", "W2", measure=toy_distance))
    with pytest.raises(metrics.InputError, match="column 'mmd2_se'"):
        metrics.register(metrics.Metric("mmd2_se", "x", "x", measure=toy_distance))
    with pytest.raises(metrics.InputError, match="no measure"):
        metrics.register(metrics.Metric("unmeasured", "x", "x"))
    with pytest.raises(metrics.InputError, match="needs 'data'; allowed: reference, target, held_out"):
        metrics.register(metrics.Metric("needy", "x", "x", needs=("data",), measure=toy_distance))
    assert {"w2", "mmd2"} <= set(metrics.METRICS) and not {"mmd2_se", "unmeasured", "needy"} & set(metrics.METRICS)


class ThreadExecutor:
    """Cells one after another in a worker thread (a toy: the interface is all it shows)."""

    name, jobs = "toy", 1
    used = 0

    def __init__(self, address=None, jobs=1):
        ThreadExecutor.used += 1

    def map(self, fn, cells):
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            futures = [(cell, pool.submit(fn, cell)) for cell in cells]
            for cell, future in futures:
                yield cell, future.result()

    def close(self):
        pass


@pytest.fixture
def toy_executor():
    yield executors.register(ThreadExecutor)
    executors.EXECUTORS.pop("toy", None)


def test_a_registered_executor_is_picked_by_name_and_its_results_committed(tmp_path, toy_executor, capsys):
    suite = _suite(tmp_path, ["discretization"])
    local, toy = tmp_path / "local.sqlite", tmp_path / "toy.sqlite"
    assert cli.main(["run", str(suite), "--store", str(local), "--quiet", "--no-report"]) == 0
    assert cli.main(["run", str(suite), "--executor", "toy", "--store", str(toy), "--quiet", "--no-report"]) == 0
    assert ThreadExecutor.used >= 1 and Store(toy).run(1)["executor"] == "toy"
    a, b = (Store(p).cells(1).set_index("key").sort_index() for p in (local, toy))
    assert len(b) == len(load_suite(str(suite)).cells()) and b["error"].isna().all()
    assert (a["discretization"] == b["discretization"]).all() and (a["nfe"] == b["nfe"]).all()
    capsys.readouterr()
    assert cli.main(["run", str(suite), "--executor", "nope", "--store", str(toy), "--quiet", "--no-report"]) == 2
    assert "unknown executor 'nope'; valid: local, ray, process, toy" in capsys.readouterr().err
    assert math.isfinite(a["discretization"].iloc[0])
