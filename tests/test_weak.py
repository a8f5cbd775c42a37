"""Weak errors against exact expectations (bench.harness.weak) and the SDE reference on the solver's
own refined grid (bench.harness.reference), checked against closed forms:

- the test functions' exact expectations under a Gaussian mixture against a large exact sample;
- the coupled two-level estimator on a single Gaussian under the VP SDE against Euler-Maruyama's
  exact output law (its map is affine, so its output is Gaussian with closed-form mean/covariance);
- a sampler with its noise scaled by 1.1 is flagged "differs" by the weak order fit, Euler-Maruyama
  is not;
- Euler-Maruyama's strong order on the EDM mixture against the refined reference is consistent
  with 1, and the reference's own error estimate is below the solver's errors.
"""
import functools
import math

import pytest
import torch

import solvers
from bench.harness import metrics, weak
from bench.harness.formulas import per_sample_error
from bench.harness.reference import reference_grid, sde_reference_pair
from bench.harness.verdicts import fit_order_asymptotic
from bench.zoo import models


def _gauss_model():
    gmm = models.GaussianMixture(weights=[1.0], means=[[0.7, -0.4]], covs=[[[0.5, 0.2], [0.2, 0.3]]])
    return models.ExactModel(gmm, solvers.VP(), name="gauss2d-vp", exact_prior=True)


def test_exact_expectations_match_a_large_exact_sample():
    m = models.load("gmm2d-vp")
    phi = weak.phi_set(m)
    x = m.exact_sample(400_000, m.sde.eps, generator=torch.Generator().manual_seed(1))
    v = phi(x)
    mc, se = v.mean(0), v.std(0) / math.sqrt(len(v))
    exact = weak.target_expectations(m, phi)
    assert phi.count == 2 + 3 + 2 * weak.N_FOURIER == len(exact)
    assert bool(((mc - exact).abs() <= 4 * se).all()), (mc - exact) / se
    # standardized: first moments 0, second moments 1
    torch.testing.assert_close(exact[:2], torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(exact[[2, 4]], torch.ones(2, dtype=torch.float64), atol=1e-12, rtol=0)


def _em_output_law(m, steps):
    """Mean and covariance of Euler-Maruyama's output on a single Gaussian (affine steps), from
    x_T ~ the exact p_T, propagated step by step in closed form."""
    sde, gmm = m.sde, m.gmm
    mu, S = gmm.means[0], gmm.covs[0]
    eye = torch.eye(2, dtype=torch.float64)
    t = solvers.make_grid(sde, steps, "uniform")
    aT, sT = float(sde.alpha(t[0])), float(sde.sigma(t[0]))
    mean, cov = aT * mu, aT**2 * S + sT**2 * eye
    for i in range(steps):
        ti, h = t[i], float(t[i + 1] - t[i])
        a, s = float(sde.alpha(ti)), float(sde.sigma(ti))
        C_inv = torch.linalg.inv(a**2 * S + s**2 * eye)
        f, g2 = float(sde.f(ti)), float(sde.g2(ti))
        # x' = (1 + h f) x + h g2 / s * eps,  eps = s C^-1 (x - a mu),  + sqrt(g2 |h|) z
        A = (1 + h * f) * eye + h * g2 * C_inv
        shift = -h * g2 * C_inv @ (a * mu)
        mean, cov = A @ mean + shift, A @ cov @ A.T + g2 * -h * eye
    return mean, cov


def _path(m, x_T, seed):
    """One Brownian path for every grid of a test (torchsde's fast mode: consistent within the object)."""
    return solvers.BrownianPath.for_sde(m.sde, x_T.shape, seed=seed, dtype=torch.float64)


@functools.cache
def _fine_bias(model_name, fine_steps, n):
    m = _gauss_model() if model_name == "gauss" else models.load(model_name, exact_prior=True)
    return weak.fine_weak_bias(m, weak.phi_set(m), fine_steps, n=n)


def test_weak_estimator_against_euler_maruyama_closed_form():
    m = _gauss_model()
    phi = weak.phi_set(m)
    target = weak.target_expectations(m, phi)
    steps, n, fine_steps = 8, 2000, 128
    x_T = m.sample_prior(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    path = _path(m, x_T, 4)
    fine = weak.fine_solution(m, x_T, path, fine_steps)
    x = solvers.sample(m, "euler_maruyama", steps=steps, grid="uniform", x_T=x_T, brownian=path).x
    bias = _fine_bias("gauss", fine_steps, 10_000)
    diff, diff_se = weak.weak_difference(phi, x, fine)
    est, se = diff + bias["bias"], (diff_se**2 + bias["se"] ** 2).sqrt()
    mean, cov = _em_output_law(m, steps)
    truth = weak.exact_expectations(phi, [1.0], mean[None], cov[None]) - target
    assert float(truth.abs().max()) > 10 * float(se.max()), "the test needs a weak error well above the noise"
    assert bool(((est - truth).abs() <= 4 * se).all()), ((est - truth) / se, truth)
    # the coupling lowers the noise even at 8 steps (at finer steps the pairs get closer still)
    plain_se = weak.weak_difference(phi, x, None)[1]
    assert float(diff_se.mean()) < 0.75 * float(plain_se.mean())
    value, err, i = weak.combine(diff, diff_se, bias["bias"], bias["se"])
    assert abs(value - float(truth.abs().max())) <= 4 * err


class _LoudEulerMaruyama(solvers.get("euler_maruyama")):
    """Euler-Maruyama with its noise scaled by 1.1 (a planted bug: weak error O(1), not O(h))."""

    name = "test_loud_euler_maruyama"

    def setup(self):
        super().setup()
        self.c = [1.1 * c for c in self.c]


def _weak_errors(name, steps, n=1000, fine_steps=256):
    m = models.load("gmm2d-vp", exact_prior=True)
    phi = weak.phi_set(m)
    x_T = m.sample_prior(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    path = _path(m, x_T, 1)
    fine = weak.fine_solution(m, x_T, path, fine_steps)
    bias = _fine_bias("gmm2d-vp", fine_steps, 80_000)
    out = []
    for s in steps:
        x = solvers.sample(m, name, steps=s, grid="uniform", x_T=x_T, brownian=path).x
        value, se, _ = weak.combine(*weak.weak_difference(phi, x, fine), bias["bias"], bias["se"])
        out.append((value, se))
    return out


@pytest.fixture
def loud_solver():
    """The planted solver, registered for one test only (the registry-driven tests must not see it)."""
    solvers.register(_LoudEulerMaruyama)
    yield
    solvers.registry._REGISTRY.pop(_LoudEulerMaruyama.name, None)


@pytest.mark.parametrize("name, expect", [("euler_maruyama", "ok"), ("test_loud_euler_maruyama", "differs")])
def test_weak_order_fit_flags_scaled_noise(name, expect, loud_solver):
    steps = [8, 16, 32, 64]
    res = _weak_errors(name, steps)
    kept = [(s, v) for s, (v, se) in zip(steps, res) if v > metrics.WEAK_SE * se]
    fit = fit_order_asymptotic([s for s, _ in kept], [v for _, v in kept], declared=1.0)
    assert fit["status"] == expect, (name, res, fit)


def test_refined_reference_em_strong_order_on_edm():
    m = models.load("gmm2d-edm", exact_prior=True)
    x_T = m.sample_prior(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cls = solvers.get("euler_maruyama")
    path = _path(m, x_T, 2)
    steps, errs, ref_errs = [8, 16, 32, 64], [], []
    for s in steps:
        g = reference_grid(m.sde, cls, steps=s, sde_steps=512)
        assert g["id"] == "edm" and (len(g["fine"]) - 1) % s == 0
        ref, half = sde_reference_pair(m, x_T, path, g)
        x = solvers.sample(m, "euler_maruyama", steps=s, x_T=x_T, brownian=path).x
        errs.append(float(per_sample_error(x, ref).median()))
        ref_errs.append(float(per_sample_error(half, ref).median()))
    assert all(e > 3 * r for e, r in zip(errs, ref_errs)), (errs, ref_errs)
    fit = fit_order_asymptotic(steps, errs, declared=1.0)
    assert fit["status"] == "ok", (errs, fit)


def test_reference_grid_contains_the_solver_grid():
    sde = solvers.EDM()
    cls = solvers.get("euler_maruyama")
    for steps in (5, 10, 16, 50):
        g = reference_grid(sde, cls, steps=steps, sde_steps=2048)
        coarse = solvers.make_grid(sde, steps, "edm")
        r = g["refine"]
        assert r >= 4 and steps * r >= 2048 and len(g["fine"]) - 1 == steps * r
        torch.testing.assert_close(g["fine"][::r], coarse, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g["half"][:: r // 2], coarse, rtol=1e-12, atol=1e-12)
    times = torch.tensor([80.0, 5.0, 0.3, 0.002], dtype=torch.float64)
    g = reference_grid(sde, cls, steps=None, sde_steps=64, times=times)
    assert g["id"].startswith("times:") and torch.equal(g["fine"][:: g["refine"]], times)
