"""Adaptive solvers (torchdiffeq pairs, adaptive_sde, torchsde's adaptive loop) and torchsde's
fixed-step solvers on the shared Brownian path."""
import math

import pytest
import torch
from conftest import CountingFn

import solvers
import solvers.adaptive as A
from bench.harness.convergence import fit_order, median_error
from bench.harness.reference import ode_reference, sde_reference
from bench.zoo import models
from solvers import InputError, ScoreModel

ODE = [n for n in solvers.available("ode") if issubclass(solvers.get(n), A.TorchdiffeqODE)]
ADAPTIVE_TOL = [n for n in solvers.available() if solvers.get(n).adaptive
                and {"rtol", "atol"} <= set(solvers.get(n).option_defaults())]




def counted(name="gmm2d-vp"):
    exact = models.load(name)
    fn = CountingFn(exact.fn)
    return ScoreModel(fn, exact.sde, "eps", shape=(exact.gmm.d,), name=name), fn


_ODE_PROBLEM = {}


def ode_problem():
    if not _ODE_PROBLEM:
        m = models.load("gmm2d-vp")
        x_T = m.sample_prior(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        _ODE_PROBLEM["p"] = (m, x_T, ode_reference(m, x_T))
    return _ODE_PROBLEM["p"]


def test_the_torchdiffeq_pairs_are_registered():
    assert set(ODE) == {"dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2"}
    for name in ODE:
        cls = solvers.get(name)
        assert cls.adaptive and cls.order is None and cls.expected_nfe(5) is None
        with pytest.raises(InputError, match="adaptive"):
            cls.steps_for_nfe(100)


@pytest.mark.parametrize("name", ODE)
def test_ode_error_and_nfe_follow_the_tolerance(name):
    """Tighter tolerance: more NFE (counted = reported = 2 + per-attempt x attempts) and a
    smaller error against a float64 dopri8 solution from the same x_T."""
    m, x_T, ref = ode_problem()
    cls = solvers.get(name)
    nfes, errs = [], []
    for tol in (1e-2, 1e-4, 1e-6):
        model, fn = counted()
        out = solvers.sample(model, name, x_T=x_T, rtol=tol, atol=tol)
        st = out.stats
        assert out.nfe == fn.calls == st["nfe"] == 2 + cls.nfe_per_attempt * (st["accepted"] + st["rejected"])
        assert st["accepted"] >= 1 and out.times.tolist() == pytest.approx([m.sde.T, m.sde.eps], rel=1e-6)
        nfes.append(out.nfe)
        errs.append(median_error(out.x, ref))
    assert nfes[0] < nfes[1] < nfes[2], (name, nfes)
    assert errs[0] > errs[1] > errs[2], (name, errs)
    assert errs[2] < 1e-3, (name, errs)


def test_dopri5_at_tight_tolerance_matches_the_reference_and_lands_on_output_times():
    m, x_T, ref = ode_problem()
    out = solvers.sample(m, "dopri5", x_T=x_T, rtol=1e-9, atol=1e-9)
    assert median_error(out.x, ref) < 1e-8
    grid = solvers.make_grid(m.sde, 4, "logsnr")
    traj = solvers.sample(m, "dopri5", times=grid, x_T=x_T, rtol=1e-9, atol=1e-9, return_trajectory=True)
    assert traj.trajectory.shape == (5, 64, 2)
    mid = ode_reference(m, x_T, grid[2].item())
    assert median_error(traj.trajectory[2], mid) < 1e-7
    per_sample = solvers.sample(m, "dopri5", x_T=x_T, rtol=1e-5, atol=1e-5, norm="sample")
    batch = solvers.sample(m, "dopri5", x_T=x_T, rtol=1e-5, atol=1e-5)
    assert per_sample.nfe >= batch.nfe
    worst = lambda x: float((x - ref).norm(dim=1).max())  # noqa: E731
    assert worst(per_sample.x) <= worst(batch.x)


@pytest.mark.parametrize("name", ADAPTIVE_TOL)
def test_every_adaptive_solver_spends_more_as_the_tolerance_tightens(name):
    model, fn = counted()
    x_T = model.sample_prior(32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    nfes = []
    for tol in (1e-1, 1e-2, 1e-3):
        out = solvers.sample(model, name, x_T=x_T, seed=0, rtol=tol, atol=tol)
        nfes.append(out.nfe)
        assert bool(torch.isfinite(out.x).all())
    assert nfes == sorted(nfes) and nfes[0] < nfes[-1], (name, nfes)
    assert sum(nfes) == fn.calls


# ---- adaptive_sde --------------------------------------------------------------------------------

def test_counter_brownian_path_is_a_brownian_motion_keyed_by_the_seed():
    p = solvers.CounterBrownianPath((20000, 2), t0=0.0, t1=1.0, seed=1, dtype=torch.float64)
    w3, w7, w1 = p.value(0.3), p.value(0.7), p.value(1.0)
    se = math.sqrt(2 / 40000)  # relative standard error of a variance estimate
    assert abs(w3.var().item() / 0.3 - 1) < 5 * se
    assert abs((w7 - w3).var().item() / 0.4 - 1) < 5 * se
    assert abs(w1.var().item() - 1) < 5 * se
    assert abs(((w7 - w3) * w3).mean().item()) < 5 * math.sqrt(0.3 * 0.4 / 40000)  # independent increments
    small = p.increment(0.5 + 1e-6, 0.5)
    assert abs(small.var().item() / 1e-6 - 1) < 5 * se
    # per-sample times agree with batch-wide ones; the query order does not matter
    t = torch.rand(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    q = solvers.CounterBrownianPath((20000, 2), t0=0.0, t1=1.0, seed=1, dtype=torch.float64)
    torch.testing.assert_close(q.value(t), p.value(t), rtol=0, atol=0)
    torch.testing.assert_close(p.value(torch.full((20000,), 0.3, dtype=torch.float64)), w3, rtol=0, atol=0)
    rows = torch.tensor([5, 17])
    torch.testing.assert_close(p.value(t[rows], rows), p.value(t)[rows], rtol=0, atol=0)
    other = solvers.CounterBrownianPath((20000, 2), t0=0.0, t1=1.0, seed=2, dtype=torch.float64).value(0.3)
    assert abs((other * w3).mean().item()) < 5 * 0.3 / math.sqrt(40000)
    # increments over a coarse step are the sum of those over the fine steps inside it
    torch.testing.assert_close(p.increment(0.9, 0.1), p.increment(0.9, 0.4) + p.increment(0.4, 0.1))


def test_adaptive_sde_error_decreases_as_the_tolerance_tightens():
    """Strong error against fine-grid Euler-Maruyama on one shared CounterBrownianPath."""
    m = models.load("gmm2d-vp")
    x_T = m.sample_prior(100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    path = solvers.CounterBrownianPath.for_sde(m.sde, x_T.shape, seed=3, dtype=torch.float64)
    ref = sde_reference(m, x_T, path, steps=2048)
    errs, nfes = [], []
    for tol in (1e-1, 1e-2, 1e-3):
        model, fn = counted()
        out = solvers.sample(model, "adaptive_sde", x_T=x_T, brownian=path, rtol=tol, atol=tol)
        st = out.stats
        assert out.nfe == fn.calls == 2 * st["iterations"]
        assert st["accepted"] >= 100 * 5 and st["max_steps_per_sample"] <= st["iterations"]
        assert st["brownian"] == "shared CounterBrownianPath"
        errs.append(median_error(out.x, ref))
        nfes.append(out.nfe)
    assert nfes[0] < nfes[1] < nfes[2], nfes
    assert errs[0] > 1.5 * errs[1] > 2.25 * errs[2], errs
    assert errs[2] < 0.01, errs


def test_adaptive_sde_outputs_at_grid_times_and_uses_its_seed():
    # exact eps of N(0, 0.25 I) data, elementwise: a batch-invariant model (the mixture's einsum rounds
    # differently for other batch sizes, and this solver evaluates the samples not yet finished)
    sde = solvers.VP()
    net = lambda x, t: x * (sde.sigma(t) / (0.25 * sde.alpha(t) ** 2 + sde.sigma(t) ** 2))[:, None]  # noqa: E731
    m = solvers.ScoreModel(net, sde, prediction="eps", shape=(2,))
    x_T = m.sample_prior(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = solvers.make_grid(m.sde, 3, "uniform")
    a = solvers.sample(m, "adaptive_sde", times=grid, x_T=x_T, seed=1, return_trajectory=True)
    assert a.trajectory.shape == (4, 50, 2) and a.nfe % 2 == 0
    assert a.stats["brownian"] == "own CounterBrownianPath(seed=1)"
    # a run stopped at grid[2] is the first part of the run through grid[3]
    b = solvers.sample(m, "adaptive_sde", times=grid[:3], x_T=x_T, seed=1, return_trajectory=True)
    torch.testing.assert_close(b.x, a.trajectory[2], rtol=0, atol=0)
    c = solvers.sample(m, "adaptive_sde", times=grid, x_T=x_T, seed=2)
    assert not torch.equal(a.x, c.x)


def test_adaptive_sde_samples_the_target():
    """Moments of adaptive_sde samples from the exact p_T match those of the exact p_eps."""
    m = models.load("gmm2d-vp", exact_prior=True)
    n = 2000
    out = solvers.sample(m, "adaptive_sde", n=n, seed=4, dtype=torch.float64, rtol=1e-2, atol=1e-2)
    mu, cov = m.gmm.moments(m.sde.alpha(m.sde.eps).item(), m.sde.sigma(m.sde.eps).item())
    se = (cov.diag() / n).sqrt()
    assert bool(((out.x.mean(0) - mu).abs() < 4 * se).all())
    torch.testing.assert_close(torch.cov(out.x.T), cov, atol=0.1, rtol=0.05)


# ---- torchsde ------------------------------------------------------------------------------------

def test_torchsde_euler_and_milstein_are_euler_maruyama_on_the_shared_path():
    m = models.load("gmm2d-vp")
    x_T = m.sample_prior(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    path = solvers.BrownianPath.for_sde(m.sde, x_T.shape, seed=3, dtype=torch.float64)
    grid = solvers.make_grid(m.sde, 25, "logsnr")
    em = solvers.sample(m, "euler_maruyama", times=grid, x_T=x_T, brownian=path).x
    for name in ("torchsde_euler", "torchsde_milstein"):
        torch.testing.assert_close(solvers.sample(m, name, times=grid, x_T=x_T, brownian=path).x, em,
                                   rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def strong_problem():
    m = models.load("gmm2d-vp")
    x_T = m.sample_prior(100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    path = solvers.BrownianPath.for_sde(m.sde, x_T.shape, seed=3, dtype=torch.float64, levy_area=True)
    return m, x_T, path, sde_reference(m, x_T, path, steps=4096)


def test_torchsde_srk_converges_with_strong_order_one_and_a_half(strong_problem):
    m, x_T, path, ref = strong_problem
    steps = [16, 32, 64, 128]
    outs = [solvers.sample(m, "torchsde_srk", steps=s, grid="uniform", x_T=x_T, brownian=path) for s in steps]
    assert all("brownian" not in o.stats and o.nfe == 2 * s for o, s in zip(outs, steps))
    errs = [median_error(o.x, ref) for o in outs]
    em = median_error(solvers.sample(m, "euler_maruyama", steps=128, grid="uniform", x_T=x_T, brownian=path).x, ref)
    assert abs(fit_order(steps, errs) - 1.5) <= 0.25, errs
    assert errs[-1] < em / 5, (errs, em)
    # by default the loop's path carries Levy area; given a path without it, the solver builds its
    # own (a different Brownian motion) and says so
    assert "brownian" not in solvers.sample(m, "torchsde_srk", steps=8, x_T=x_T, seed=3).stats
    plain = solvers.BrownianPath.for_sde(m.sde, x_T.shape, seed=3, dtype=torch.float64)
    out = solvers.sample(m, "torchsde_srk", steps=8, x_T=x_T, seed=3, brownian=plain)
    assert "levy_area=True" in out.stats["brownian"]


@pytest.fixture(scope="module")
def plain_problem():
    m = models.load("gmm2d-vp")
    x_T = m.sample_prior(100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    path = solvers.BrownianPath.for_sde(m.sde, x_T.shape, seed=3, dtype=torch.float64)
    return m, x_T, path, sde_reference(m, x_T, path, steps=2048)


def test_torchsde_reversible_heun_converges_to_the_euler_maruyama_solution(plain_problem):
    m, x_T, path, ref = plain_problem
    errs = [median_error(solvers.sample(m, "torchsde_reversible_heun", steps=s, grid="uniform", x_T=x_T,
                                        brownian=path).x, ref) for s in (512, 2048)]
    assert errs[1] < errs[0] / 10 and errs[1] < 0.03, errs


def test_torchsde_adaptive_error_decreases_with_the_tolerance(plain_problem):
    m, x_T, path, ref = plain_problem
    errs = []
    for tol in (1e-1, 1e-2):
        out = solvers.sample(m, "torchsde_adaptive", x_T=x_T, brownian=path, rtol=tol, atol=tol)
        assert out.stats["accepted"] + out.stats["rejected"] == out.stats["attempted"] >= 1
        errs.append(median_error(out.x, ref))
    assert errs[0] > 2 * errs[1], errs


# ---- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, opts, match", [
    ("dopri5", dict(rtol=0.0), "option rtol must be a finite number > 0, got 0.0"),
    ("dopri5", dict(atol=-1e-3), "atol must be a finite number > 0"),
    ("dopri5", dict(norm="max"), "norm must be one of 'rms', 'sample', got 'max'"),
    ("dopri5", dict(rtl=1e-3), "unknown option.*rtl.*valid options: atol"),
    ("adaptive_sde", dict(rtol=float("nan")), "rtol must be a finite number > 0, got nan"),
    ("adaptive_sde", dict(safety=1.5), r"safety must be a number in \(0, 1\], got 1.5"),
    ("adaptive_sde", dict(h_init=0.0), "h_init must be a finite number > 0"),
    ("torchsde_adaptive", dict(method="heun"), "method must be one of 'euler', 'milstein'"),
    ("torchsde_adaptive", dict(atol=0.0), "atol must be a finite number > 0"),
])
def test_bad_options_get_a_clear_error(name, opts, match):
    m = models.load("gmm2d-vp")
    with pytest.raises(InputError, match=match):
        solvers.sample(m, name, n=4, **opts)


def test_adaptive_sde_reports_an_unreachable_tolerance():
    m = models.load("gmm2d-vp")
    with pytest.raises(InputError, match="max_iters=3 reached"):
        solvers.sample(m, "adaptive_sde", n=4, rtol=1e-6, atol=1e-6, max_iters=3)
    exact = models.load("gmm2d-vp")
    bad = ScoreModel(lambda x, t: torch.where(t[:, None] < 0.5, exact.fn(x, t) / 0.0, exact.fn(x, t)),
                     exact.sde, shape=(2,), name="blowup")
    with pytest.raises(solvers.NonFiniteError, match="step size underflow.*t=0.5"):
        solvers.sample(bad, "adaptive_sde", n=4, dtype=torch.float64)


def test_adaptive_sde_declares_per_sample_noise():
    assert solvers.get("adaptive_sde").per_sample_noise and not solvers.get("euler_maruyama").per_sample_noise
