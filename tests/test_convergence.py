"""Convergence orders, derived from the registry: a newly registered solver (and each of its
declared ``variants``) is order-tested without editing this file.

- deterministic solvers: median per-sample error against a float64 dopri8 solution of the
  probability-flow ODE from the same x_T, dyadic step counts, fitted slope within 0.25 of
  ``declared_order``, on the 2-D and the 64-D mixture;
- stochastic solvers with a strong order: error against a fine-grid Euler-Maruyama solution
  on one shared Brownian path;
- stochastic solvers with a weak order: error of the first two moments with common random
  numbers (same x_T, same Brownian path) against a fine-grid run of the same solver, whose
  moments in turn match the exact target's.
"""
import pytest
import torch
from conftest import case_id, solver_cases

import solvers
from bench.harness.convergence import fit_order, median_error
from bench.harness.reference import ode_reference, sde_reference
from bench.zoo import models

ALL = list(solver_cases())
ODE = [c for c in ALL if not solvers.get(c[0]).is_stochastic(**c[1])
       and solvers.get(c[0]).declared_order(**c[1]) is not None]
STRONG = [c for c in ALL if solvers.get(c[0]).is_stochastic(**c[1])
          and solvers.get(c[0]).declared_order(**c[1]) is not None]
WEAK = [c for c in ALL if solvers.get(c[0]).is_stochastic(**c[1]) and solvers.get(c[0]).weak_order is not None]

MODELS = {"gmm2d-vp": 200, "gmm64-vp": 64}
_REFS = {}


def ode_problem(name):
    if name not in _REFS:
        m = models.load(name)
        x_T = m.sample_prior(MODELS[name], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        _REFS[name] = (m, x_T, ode_reference(m, x_T))
    return _REFS[name]


def step_counts(order):
    # third and higher orders settle into their asymptotic rate only from ~32 steps
    return [16, 32, 64, 128] if order <= 2 else [32, 64, 128, 256]


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("case", ODE, ids=case_id)
def test_deterministic_order(case, model_name):
    name, opts = case
    cls = solvers.get(name)
    order = cls.declared_order(**opts)
    m, x_T, ref = ode_problem(model_name)
    steps = list(getattr(cls, "convergence_steps", None) or step_counts(order))
    errs = [median_error(solvers.sample(m, name, steps=s, x_T=x_T, **opts).x, ref) for s in steps]
    slope = fit_order(steps, errs)
    assert abs(slope - order) <= 0.25, f"{name} {opts} on {model_name}: errors {errs} -> slope {slope:.2f}, declared {order}"


def test_there_are_order_tests_for_every_family():
    names = {c[0] for c in ODE + STRONG + WEAK}
    assert {"euler", "heun", "rk4", "ddim", "euler_maruyama", "ancestral", "reverse_diffusion"} <= names


@pytest.mark.parametrize("case", STRONG, ids=case_id)
def test_strong_order(case):
    name, opts = case
    cls = solvers.get(name)
    order = cls.declared_order(**opts)
    m = models.load("gmm2d-vp")
    x_T = m.sample_prior(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    path = solvers.BrownianPath.for_sde(m.sde, x_T.shape, seed=3, dtype=torch.float64, levy_area=cls.needs_levy)
    ref = sde_reference(m, x_T, path, steps=4096)
    steps = [16, 32, 64, 128]
    errs = [median_error(solvers.sample(m, name, steps=s, grid="uniform", x_T=x_T, brownian=path, **opts).x, ref)
            for s in steps]
    slope = fit_order(steps, errs)
    assert abs(slope - order) <= 0.25, f"{name} {opts}: strong errors {errs} -> slope {slope:.2f}, declared {order}"


def moments(x):
    return x.mean(0), torch.cov(x.T)


@pytest.mark.parametrize("case", WEAK, ids=case_id)
def test_weak_order(case):
    name, opts = case
    cls = solvers.get(name)
    m = models.load("gmm2d-vp", exact_prior=True)
    n = 4000
    x_T = m.sample_prior(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    path = solvers.BrownianPath.for_sde(m.sde, x_T.shape, seed=5, dtype=torch.float64)
    fine = solvers.sample(m, name, steps=1024, x_T=x_T, brownian=path, **opts).x
    mu_f, cov_f = moments(fine)
    # the fine run samples the exact target (within Monte Carlo error)
    mu, cov = m.gmm.moments(m.sde.alpha(m.sde.eps).item(), m.sde.sigma(m.sde.eps).item())
    se = (cov.diag() / n).sqrt()
    assert bool(((mu_f - mu).abs() < 4 * se).all()), f"{name}: fine-grid mean {mu_f} vs exact {mu}"
    torch.testing.assert_close(cov_f, cov, atol=0.08, rtol=0.05)
    steps = [16, 32, 64, 128]
    errs = []
    for s in steps:
        mu_s, cov_s = moments(solvers.sample(m, name, steps=s, x_T=x_T, brownian=path, **opts).x)
        errs.append(float((mu_s - mu_f).norm() + (cov_s - cov_f).norm()))
    slope = fit_order(steps, errs)
    assert abs(slope - cls.weak_order) <= 0.3, f"{name} {opts}: weak errors {errs} -> slope {slope:.2f}"
