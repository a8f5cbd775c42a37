"""Timing-only suites (metrics = [] or ["time"]): cells measure NFE, wall time, overhead and memory
only; cifar10-unet-timing (random weights) runs in one and is refused in a suite asking for quality."""
import pytest
from cli_helpers import call

from bench.harness.store import Store
from bench.harness.suite import SuiteError, load_suite

TIMING = ('name = "timing"\nmodels = ["cifar10-unet-timing", "gmm2d-vp"]\nn = 2\nsteps = [2]\nmetrics = {metrics}\n'
          'repeats = 1\nwarmup = 0\nthreads = 1\n[[solvers]]\nname = "euler"\n')


def _suite(tmp_path, metrics='["time"]', extra=""):
    p = tmp_path / "timing.toml"
    p.write_text(TIMING.format(metrics=metrics) + extra)
    return p


@pytest.mark.parametrize("metrics", ['["time"]', "[]"])
def test_timing_only_suite_has_no_quality_metrics(tmp_path, metrics):
    suite = load_suite(str(_suite(tmp_path, metrics)))
    assert suite.metrics == [] and all(c.metrics == () for c in suite.cells())


@pytest.mark.parametrize("metrics, why", [
    ('["sliced_w2"]', "timing-only (random weights): quality metrics ['sliced_w2'] are refused"),
    ('["time", "discretization"]', "'time' means timing only"),
])
def test_quality_metrics_are_refused_with_the_timing_only_model(tmp_path, metrics, why):
    with pytest.raises(SuiteError, match="metrics: ") as e:
        load_suite(str(_suite(tmp_path, metrics)))
    assert why in str(e.value) and "\n" not in str(e.value)


def test_likelihood_of_the_timing_only_model_is_refused(tmp_path):
    extra = '[[likelihood]]\nmodels = ["cifar10-unet-timing"]\nsolver = "dopri5"\n'
    with pytest.raises(SuiteError, match="cifar10-unet-timing has no exact samples or data"):
        load_suite(str(_suite(tmp_path, extra=extra)))


def test_timing_only_suite_runs_reports_and_compares(tmp_path, capsys):
    suite, store = _suite(tmp_path), tmp_path / "s.sqlite"
    for _ in range(2):
        code, out, err = call(["run", suite, "--store", store, "--quiet", "--no-report"], capsys)
        assert code == 0, err
    cells = Store(store).cells(1)
    assert set(cells["model"]) == {"cifar10-unet-timing", "gmm2d-vp"}
    assert cells["error"].isna().all() and (cells["nfe"] == 2).all()
    for col in ("time_median_s", "time_peak_mem_bytes", "time_overhead"):
        assert (cells[col] > 0).all(), col
    assert not [k for k in cells.columns if k.startswith(("discretization", "sliced_w2", "mmd2"))]
    code, out, err = call(["report", "1", "2", "--store", store, "--out", tmp_path / "rep"], capsys)
    assert code == 0, err
    assert "cifar10-unet-timing" in (tmp_path / "rep" / "report.md").read_text()
    code, out, err = call(["compare", "1", "2", "--store", store, "--no-time"], capsys)
    assert code == 0 and "no regression" in out, out + err


def test_the_estimate_counts_the_float32_only_network(tmp_path):
    """The U-Net runs in float32 only: the estimate's float64 figure for it is 2x its float32 one
    (it was an exception swallowed into 0 s, and the run's first ETA was nonsense)."""
    from bench.harness import estimate

    cells = [c for c in load_suite(str(_suite(tmp_path))).cells() if c.model == "cifar10-unet-timing"]
    est = estimate.estimate(cells)
    assert est.solve_s > 0 and est.cells[cells[0].key] > 0
