"""bench.harness.verdicts: paired differences, bootstrap intervals, tied rankings, order fits over the
asymptotic range (synthetic data where it suffices; real solvers on gmm2d-vp for the order
verdicts, including a planted wrong solver)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

import solvers
from bench.harness.metrics import discretization_error, sliced_wasserstein
from bench.harness.reference import ode_reference
from bench.harness.verdicts import bootstrap_interval, fit_order_asymptotic, paired_difference, tied_ranking
from bench.zoo import models


# --- paired difference -------------------------------------------------------------------
def test_paired_difference_is_the_paired_t_test():
    rng = np.random.default_rng(0)
    common = rng.normal(0, 5, 400)          # large shared noise (same x_T)
    a = common + rng.normal(0, 0.2, 400) + 0.1
    b = common + rng.normal(0, 0.2, 400)
    r = paired_difference(a, b)
    ref = stats.ttest_rel(a, b)
    assert r["test"] == "paired t-test" and r["n"] == 400
    assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-6)
    assert r["value"] == pytest.approx(float((a - b).mean()))
    assert r["low"] < 0.1 < r["high"] and r["p_value"] < 1e-6
    # the same values unpaired cannot separate them
    se_unpaired = math.hypot(a.std(ddof=1), b.std(ddof=1)) / math.sqrt(400)
    assert abs(r["value"]) / se_unpaired < 1


def test_paired_difference_accepts_tensors_and_checks_lengths():
    r = paired_difference(torch.ones(10) + torch.arange(10) * 1e-3, torch.ones(10))
    assert r["value"] == pytest.approx(4.5e-3)
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


# --- bootstrap ---------------------------------------------------------------------------
def test_bootstrap_stderr_of_a_mean_matches_the_formula():
    x = np.random.default_rng(1).normal(0, 2, 500)
    r = bootstrap_interval(np.mean, x, n_boot=500, seed=0)
    assert r["value"] == pytest.approx(x.mean())
    assert r["stderr"] == pytest.approx(x.std(ddof=1) / math.sqrt(500), rel=0.15)
    assert r["low"] < x.mean() < r["high"]


def test_bootstrap_paired_sliced_w2_difference():
    """Two samplers on shared x_T against one exact set: the paired bootstrap of the SW2
    difference is tighter than the spread of either SW2 alone."""
    m = models.load("gmm2d-vp", exact_prior=True)
    x_T = m.sample_prior(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xa = solvers.sample(m, "heun", steps=20, x_T=x_T).x
    xb = solvers.sample(m, "euler", steps=2, x_T=x_T).x
    y = m.exact_sample(400, m.sde.eps, generator=torch.Generator().manual_seed(1))

    def sw(x, y):
        return sliced_wasserstein(x, y, projections=64)

    diff = bootstrap_interval(lambda a, b, y: sw(a, y) - sw(b, y), xa, xb, y, n_boot=50, seed=0)
    single = bootstrap_interval(sw, xa, y, n_boot=50, seed=0)
    assert diff["high"] < 0  # heun at 20 steps is closer than euler at 2, and the interval says so
    assert diff["stderr"] < single["stderr"]
    with pytest.raises(ValueError):
        bootstrap_interval(sw, xa, y[:10])


# --- rankings ----------------------------------------------------------------------------
def test_tied_ranking_groups_what_the_errors_cannot_separate():
    rows = tied_ranking([("a", 1.0, 0.1), ("b", 1.1, 0.1), ("c", 2.0, 0.1), ("d", 2.05, 0.1),
                         ("e", 3.0, 0.01), ("f", math.nan, 0.1)])
    assert [(r["name"], r["rank"]) for r in rows] == [("a", "1="), ("b", "1="), ("c", "3="), ("d", "3="),
                                                      ("e", "5"), ("f", "-")]
    assert rows[1]["test"].startswith("z-test") and rows[1]["p_value"] > 0.05
    up = tied_ranking([("a", 1.0, 0.1), ("b", 5.0, 0.1)], lower_is_better=False)
    assert [r["name"] for r in up] == ["b", "a"] and [r["rank"] for r in up] == ["1", "2"]


def test_tied_ranking_uses_paired_values_on_shared_inputs():
    rng = np.random.default_rng(2)
    common = rng.normal(0, 3, 1000)
    a, b = common + 0.05 + rng.normal(0, 0.1, 1000), common + rng.normal(0, 0.1, 1000)
    entries = [{"name": n, "value": float(v.mean()), "stderr": float(v.std(ddof=1) / math.sqrt(1000)),
                "per_sample": v} for n, v in (("a", a), ("b", b))]
    paired = tied_ranking(entries)
    assert [(r["name"], r["rank"]) for r in paired] == [("b", "1"), ("a", "2")]
    assert paired[1]["test"] == "paired t-test" and paired[1]["vs"] == "b" and paired[1]["p_value"] < 1e-6
    unpaired = tied_ranking([{k: v for k, v in e.items() if k != "per_sample"} for e in entries])
    assert [r["rank"] for r in unpaired] == ["1=", "1="]


# --- order fits: synthetic ---------------------------------------------------------------
STEPS = [4, 8, 16, 32, 64, 128]


def test_fit_order_on_a_clean_power_law():
    r = fit_order_asymptotic(STEPS, [3.0 * n**-2 for n in STEPS], declared=2)
    assert r["status"] == "ok" and r["slope"] == pytest.approx(2.0) and r["points"] == 6
    assert r["range"] == (4, 128)


def test_fit_order_drops_floor_and_pre_asymptotic_points():
    # a coarse regime (slope ~0.3) then order 3, then the reference floor
    errs = [0.5, 0.4, 0.32, 0.32 * 2**-3, 0.32 * 4**-3, 0.32 * 8**-3, 0.32 * 16**-3, 1e-12]
    steps = [2, 4, 8, 16, 32, 64, 128, 256]
    r = fit_order_asymptotic(steps, errs, declared=3, floor=1e-10)
    assert r["status"] == "ok" and r["range"] == (8, 128) and r["slope"] == pytest.approx(3.0)


def test_fit_order_says_pre_asymptotic_when_slopes_have_not_settled():
    errs = [1.0, 0.9, 0.3, 0.02]  # local slopes 0.15, 1.6, 3.9
    r = fit_order_asymptotic([5, 10, 20, 50], errs, declared=2)
    assert r["status"] == "pre-asymptotic at these steps" and r["points"] == 2
    # faster than declared on a settled range: not a defect either
    r = fit_order_asymptotic(STEPS, [n**-3.8 for n in STEPS], declared=3)
    assert r["status"] == "pre-asymptotic at these steps" and "above the declared" in r["note"]


def test_fit_order_flags_a_settled_lower_order():
    r = fit_order_asymptotic(STEPS, [n**-1.0 * (1 + 0.3 / n) for n in STEPS], declared=2)
    assert r["status"] == "differs" and r["high"] < 1.5
    assert fit_order_asymptotic(STEPS, [n**-1.0 for n in STEPS])["status"] == "no declared order"


def test_fit_order_interval_from_least_squares_and_from_local_slopes():
    rng = np.random.default_rng(3)
    errs = [n**-2.0 * math.exp(rng.normal(0, 0.02)) for n in STEPS]
    r = fit_order_asymptotic(STEPS, errs, declared=2)
    res = stats.linregress(np.log(STEPS), -np.log(errs))
    half = stats.t.ppf(0.975, len(STEPS) - 2) * res.stderr
    assert r["slope"] == pytest.approx(res.slope) and r["high"] - r["slope"] == pytest.approx(half)
    r3 = fit_order_asymptotic([10, 20, 40], [1.0, 0.25, 0.25 * 2**-2.2], declared=2)
    assert r3["points"] == 3 and r3["high"] - r3["low"] == pytest.approx(2 * 0.2)


# --- order fits: real solvers on gmm2d-vp ------------------------------------------------
class DroppedStageHeun(solvers.get("heun")):
    """A planted bug: Heun whose second stage is dropped (so Euler), still declaring order 2."""

    name = "planted_heun"

    def step(self, i, x):
        return torch.add(x, self.drift(x, i), alpha=self.h[i])


@pytest.fixture(scope="module")
def gmm2d_problem():
    m = models.load("gmm2d-vp", exact_prior=True)
    x_T = m.sample_prior(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return m, x_T, ode_reference(m, x_T, rtol=1e-10, atol=1e-10)


def _errors(problem, solver, steps):
    m, x_T, ref = problem
    return [discretization_error(solvers.sample(m, solver, steps=s, x_T=x_T).x, ref) for s in steps]


def test_planted_wrong_solver_differs(gmm2d_problem):
    steps = [8, 16, 32, 64, 128, 256]
    r = fit_order_asymptotic(steps, _errors(gmm2d_problem, DroppedStageHeun, steps),
                             declared=DroppedStageHeun.order, floor=1e-9)
    assert r["status"] == "differs", r
    assert r["low"] < 1.0 < r["high"] + r["allowance"]


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "rk4", "dpm_solver_3", "deis", "unipc"])
def test_correct_solvers_at_quick_suite_budgets_are_not_flagged(gmm2d_problem, name):
    cls = solvers.get(name)
    steps = [k for k in (cls.steps_for_nfe(b) for b in (5, 10, 20, 50)) if k > 0]
    r = fit_order_asymptotic(steps, _errors(gmm2d_problem, name, steps), declared=cls.order, floor=1e-9)
    assert r["status"] in ("ok", "pre-asymptotic at these steps"), r
