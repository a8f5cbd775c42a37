"""DPM-Solver / DPM-Solver++ family (solvers/dpm_solver.py).

1. Agreement, to float64 rounding, with independent evaluations of the published updates,
   written here in other coordinates: k-diffusion's sigma-space on the denoiser D(x_k, sigma_k)
   (x_k = x / alpha_t, sigma_k = sigma_t / alpha_t = e^{-lambda}) for the published
   "dpmsolver"/"midpoint" forms and the SDE samplers, and the official code's lambda-space
   phi-function form for the "taylor" variants.
2. NFE: counted calls == Sample.nfe == expected_nfe; the DPM-Solver-fast budget rule.
3. SDE variants: strong convergence to a fine-grid run on one Brownian path; moments of the
   final samples approach the exact ones.
(The order fits live in the registry-driven tests/test_convergence.py.)
"""
from __future__ import annotations

import math

import pytest
import torch

import solvers
import solvers.dpm_solver
from bench.zoo.models import load
from solvers import InputError
from solvers.dpm_solver import DPMSolverFast, psi

F64 = torch.float64
NAMES = ["dpm_solver_1", "dpm_solver_2", "dpm_solver_3", "dpm_solver_fast", "dpmpp_2s", "dpmpp_2m",
         "dpmpp_2m_sde", "dpmpp_3m_sde"]


@pytest.fixture(scope="module")
def model():
    return load("gmm2d-vp")


@pytest.fixture(scope="module")
def x_T(model):
    return model.sample_prior(16, generator=torch.Generator().manual_seed(0), dtype=F64)


def _t(v):
    return torch.as_tensor(v, dtype=F64)


# =============================================================================================
# references
# =============================================================================================
class SigmaSpace:
    """k-diffusion's coordinates for a linear SDE: x_k = x / alpha, sigma_k = e^{-lambda},
    "t" = -log sigma_k = lambda, denoiser D(x_k, t) = x0-prediction at x = alpha x_k."""

    def __init__(self, model, times):
        self.m, self.sde = model, model.sde
        self.times = times
        self.lam = self.sde.lam(times)

    def time_of(self, lam):
        return self.sde.t_of_lam(lam)

    def denoise(self, xk, t):
        return self.m(xk * self.sde.alpha(t), t, "x0")

    def eps(self, xk, lam_, t):
        sk = torch.exp(-lam_)
        return (xk - self.denoise(xk, t)) / sk

    def to_k(self, x, k):
        return x / self.sde.alpha(self.times[k])

    def from_k(self, xk, k):
        return xk * self.sde.alpha(self.times[k])


def ref_singlestep_eps(model, times, x, orders, r=None):
    """DPM-Solver-1/2/3 steps (k-diffusion's DPMSolver.dpm_solver_{1,2,3}_step form)."""
    S = SigmaSpace(model, times)
    xk = S.to_k(x, 0)
    sig = lambda lam_: torch.exp(-lam_)  # noqa: E731
    for i, o in enumerate(orders):
        lt, ln = S.lam[i], S.lam[i + 1]
        h = ln - lt
        e = S.eps(xk, lt, times[i])
        if o == 1:
            xk = xk - sig(ln) * h.expm1() * e
        elif o == 2:
            r1 = 0.5 if r is None else r[0]
            s1 = lt + r1 * h
            u1 = xk - sig(s1) * (r1 * h).expm1() * e
            e1 = S.eps(u1, s1, S.time_of(s1))
            xk = xk - sig(ln) * h.expm1() * e - sig(ln) / (2 * r1) * h.expm1() * (e1 - e)
        else:
            r1, r2 = (1 / 3, 2 / 3) if r is None else r
            s1, s2 = lt + r1 * h, lt + r2 * h
            u1 = xk - sig(s1) * (r1 * h).expm1() * e
            e1 = S.eps(u1, s1, S.time_of(s1))
            u2 = (xk - sig(s2) * (r2 * h).expm1() * e
                  - sig(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (e1 - e))
            e2 = S.eps(u2, s2, S.time_of(s2))
            xk = xk - sig(ln) * h.expm1() * e - sig(ln) / r2 * (h.expm1() / h - 1) * (e2 - e)
    return S.from_k(xk, len(orders))


def ref_dpmpp_2s(model, times, x):
    """k-diffusion's sample_dpmpp_2s_ancestral with eta = 0 (r = 1/2)."""
    S = SigmaSpace(model, times)
    xk = S.to_k(x, 0)
    sig = lambda lam_: torch.exp(-lam_)  # noqa: E731
    for i in range(len(times) - 1):
        lt, ln = S.lam[i], S.lam[i + 1]
        h = ln - lt
        d = S.denoise(xk, times[i])
        s = lt + 0.5 * h
        x2 = (sig(s) / sig(lt)) * xk - (-h * 0.5).expm1() * d
        d2 = S.denoise(x2, S.time_of(s))
        xk = (sig(ln) / sig(lt)) * xk - (-h).expm1() * d2
    return S.from_k(xk, len(times) - 1)


def ref_dpmpp_multistep(model, times, x, *, eta=0.0, kind="midpoint", orders=None, brownian=None):
    """k-diffusion's sample_dpmpp_2m (eta = 0), sample_dpmpp_2m_sde and sample_dpmpp_3m_sde;
    ``orders`` caps the order of each step (default: 2M's warm-up 1, 2, 2, ...)."""
    S = SigmaSpace(model, times)
    xk = S.to_k(x, 0)
    n = len(times) - 1
    orders = [min(2, i + 1) for i in range(n)] if orders is None else orders
    d_1 = d_2 = h_1 = h_2 = None
    for i in range(n):
        lt, ln = S.lam[i], S.lam[i + 1]
        sk, skn = torch.exp(-lt), torch.exp(-ln)
        d = S.denoise(xk, times[i])
        h = ln - lt
        he = h * (eta + 1)
        xk = skn / sk * (-h * eta).exp() * xk + (-he).expm1().neg() * d
        if orders[i] == 3:
            r0, r1 = h_1 / h, h_2 / h
            d1_0, d1_1 = (d - d_1) / r0, (d_1 - d_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_2 = he.neg().expm1() / he + 1
            phi_3 = phi_2 / he - 0.5
            xk = xk + phi_2 * d1 - phi_3 * d2
        elif orders[i] == 2:
            r = h_1 / h
            if kind == "heun":
                xk = xk + ((-he).expm1().neg() / (-he) + 1) * (1 / r) * (d - d_1)
            else:
                xk = xk + 0.5 * (-he).expm1().neg() * (1 / r) * (d - d_1)
        if eta > 0:
            z = brownian.normal(float(times[i]), float(times[i + 1]))
            xk = xk + z * skn * (-2 * h * eta).expm1().neg().sqrt()
        d_1, d_2, h_1, h_2 = d, d_1, h, h_1
    return S.from_k(xk, n)


def ref_taylor(model, times, x, *, kind, r1=None, r2=None):
    """The official code's solver_type="taylor" updates (lambda-space, original x)."""
    sde = model.sde
    lam, la, sg = sde.lam(times), torch.log(sde.alpha(times)), sde.sigma(times)
    M = (lambda x_, t: model(x_, t, "eps")) if kind in ("dpm2", "dpm3") else (lambda x_, t: model(x_, t, "x0"))
    prev = None
    for i in range(len(times) - 1):
        h = lam[i + 1] - lam[i]
        s, t = times[i], times[i + 1]
        m0 = M(x, s)
        if kind == "dpm2":
            s1 = sde.t_of_lam(lam[i] + r1 * h)
            u = torch.exp(torch.log(sde.alpha(s1)) - la[i]) * x - sde.sigma(s1) * torch.expm1(r1 * h) * m0
            m1 = M(u, s1)
            x = (torch.exp(la[i + 1] - la[i]) * x - sg[i + 1] * torch.expm1(h) * m0
                 - (1 / r1) * sg[i + 1] * (torch.expm1(h) / h - 1) * (m1 - m0))
        elif kind == "dpm3":
            s1, s2 = sde.t_of_lam(lam[i] + r1 * h), sde.t_of_lam(lam[i] + r2 * h)
            u1 = torch.exp(torch.log(sde.alpha(s1)) - la[i]) * x - sde.sigma(s1) * torch.expm1(r1 * h) * m0
            m1 = M(u1, s1)
            u2 = (torch.exp(torch.log(sde.alpha(s2)) - la[i]) * x - sde.sigma(s2) * torch.expm1(r2 * h) * m0
                  - r2 / r1 * sde.sigma(s2) * (torch.expm1(r2 * h) / (r2 * h) - 1) * (m1 - m0))
            m2 = M(u2, s2)
            D1_0, D1_1 = (m1 - m0) / r1, (m2 - m0) / r2
            D1 = (r2 * D1_0 - r1 * D1_1) / (r2 - r1)
            D2 = 2 * (D1_1 - D1_0) / (r2 - r1)
            phi_1 = torch.expm1(h)
            phi_2 = phi_1 / h - 1
            phi_3 = phi_2 / h - 0.5
            x = (torch.exp(la[i + 1] - la[i]) * x - sg[i + 1] * phi_1 * m0
                 - sg[i + 1] * phi_2 * D1 - sg[i + 1] * phi_3 * D2)
        elif kind == "pp2s":
            s1 = sde.t_of_lam(lam[i] + r1 * h)
            u = sde.sigma(s1) / sg[i] * x - sde.alpha(s1) * torch.expm1(-r1 * h) * m0
            m1 = M(u, s1)
            at = sde.alpha(t)
            x = sg[i + 1] / sg[i] * x - at * torch.expm1(-h) * m0 + (1 / r1) * at * (torch.expm1(-h) / h + 1) * (m1 - m0)
        elif kind == "pp2m":
            at = sde.alpha(t)
            phi_1 = torch.expm1(-h)
            x_new = sg[i + 1] / sg[i] * x - at * phi_1 * m0
            if prev is not None:
                r0 = (lam[i] - lam[i - 1]) / h
                x_new = x_new + at * (phi_1 / h + 1) * (m0 - prev) / r0
            x, prev = x_new, m0
    return x


def _close(a, b, tol=1e-10):
    err = (a - b).abs().max().item()
    assert err < tol, f"max abs difference {err:.3e}"


# =============================================================================================
# 1. agreement with the published updates
# =============================================================================================
@pytest.mark.parametrize("name, opts, orders, r", [
    ("dpm_solver_1", {}, [1] * 7, None),
    ("dpm_solver_2", {}, [2] * 7, None),
    ("dpm_solver_2", {"r1": 0.4}, [2] * 7, (0.4,)),
    ("dpm_solver_3", {}, [3] * 7, None),
    ("dpm_solver_3", {"r1": 0.25, "r2": 0.6}, [3] * 7, (0.25, 0.6)),
])
def test_singlestep_matches_published(model, x_T, name, opts, orders, r):
    out = solvers.sample(model, name, steps=7, x_T=x_T, **opts)
    _close(out.x, ref_singlestep_eps(model, out.times, x_T, orders, r))


@pytest.mark.parametrize("nfe, order, orders", [
    (12, 3, [3, 3, 3, 2, 1]), (13, 3, [3, 3, 3, 3, 1]), (14, 3, [3, 3, 3, 3, 2]),
    (9, 2, [2, 2, 2, 2, 1]), (10, 2, [2] * 5), (5, 1, [1] * 5),
])
def test_fast_matches_published_schedule(model, x_T, nfe, order, orders):
    assert DPMSolverFast.schedule(nfe, order) == orders
    steps = DPMSolverFast.steps_for_nfe(nfe, nfe=nfe, order=order)
    assert steps == len(orders)
    out = solvers.sample(model, "dpm_solver_fast", steps=steps, x_T=x_T, nfe=nfe, order=order)
    assert out.nfe == nfe
    _close(out.x, ref_singlestep_eps(model, out.times, x_T, orders))


def test_fast_default_budget(model, x_T):
    # nfe=None: 3 steps - 1 evaluations, orders [3, ..., 3, 2]: DPM-Solver-3 steps then one DPM-Solver-2
    out = solvers.sample(model, "dpm_solver_fast", steps=5, x_T=x_T)
    assert out.nfe == 14
    _close(out.x, ref_singlestep_eps(model, out.times, x_T, [3, 3, 3, 3, 2]))
    two = solvers.sample(model, "dpm_solver_fast", steps=5, x_T=x_T, order=2)
    _close(two.x, solvers.sample(model, "dpm_solver_2", steps=5, x_T=x_T).x, 1e-13)


def test_dpmpp_2s_matches_published(model, x_T):
    out = solvers.sample(model, "dpmpp_2s", steps=7, x_T=x_T)
    _close(out.x, ref_dpmpp_2s(model, out.times, x_T))


@pytest.mark.parametrize("grid", ["logsnr", "edm"])  # edm: unequal lambda steps (r != 1)
@pytest.mark.parametrize("steps", [6, 12])
def test_dpmpp_2m_matches_published(model, x_T, grid, steps):
    out = solvers.sample(model, "dpmpp_2m", steps=steps, x_T=x_T, grid=grid)
    # official rule: the last step is first order below 10 steps
    orders = [1] + [2] * (steps - 1)
    low = orders[:-1] + [1] if steps < 10 else orders
    _close(out.x, ref_dpmpp_multistep(model, out.times, x_T, orders=low))
    off = solvers.sample(model, "dpmpp_2m", steps=steps, x_T=x_T, grid=grid, lower_order_final=False)
    _close(off.x, ref_dpmpp_multistep(model, out.times, x_T, orders=orders))


@pytest.mark.parametrize("name, opts, kind", [
    ("dpm_solver_2", {"solver_type": "taylor", "r1": 0.4}, dict(kind="dpm2", r1=0.4)),
    ("dpm_solver_3", {"solver_type": "taylor"}, dict(kind="dpm3", r1=1 / 3, r2=2 / 3)),
    ("dpm_solver_3", {"solver_type": "taylor", "r1": 0.3, "r2": 0.8}, dict(kind="dpm3", r1=0.3, r2=0.8)),
    ("dpmpp_2s", {"solver_type": "taylor", "r1": 0.6}, dict(kind="pp2s", r1=0.6)),
    ("dpmpp_2m", {"solver_type": "taylor", "lower_order_final": False}, dict(kind="pp2m")),
])
def test_taylor_variants_match_official(model, x_T, name, opts, kind):
    out = solvers.sample(model, name, steps=7, x_T=x_T, grid="edm", **opts)
    _close(out.x, ref_taylor(model, out.times, x_T, **kind))


THIRD = [1, 2, 3, 3, 3, 3, 3, 3]


@pytest.mark.parametrize("name, opts, ref", [
    ("dpmpp_2m_sde", {}, dict(eta=1.0)),
    ("dpmpp_2m_sde", {"solver_type": "heun", "eta": 0.5}, dict(eta=0.5, kind="heun")),
    ("dpmpp_2m_sde", {"eta": 0.0, "solver_type": "heun"}, dict(eta=0.0, kind="heun")),
    ("dpmpp_2m_sde", {"lower_order_final": True}, dict(eta=1.0, orders=[1] + [2] * 6 + [1])),
    ("dpmpp_3m_sde", {}, dict(eta=1.0, kind="heun", orders=THIRD)),
    ("dpmpp_3m_sde", {"eta": 0.0}, dict(eta=0.0, kind="heun", orders=THIRD)),
    # the official lower-order final steps below 10 steps: orders min(3, steps - i)
    ("dpmpp_3m_sde", {"lower_order_final": True}, dict(eta=1.0, kind="heun", orders=[1, 2, 3, 3, 3, 3, 2, 1])),
])
def test_sde_matches_k_diffusion(model, x_T, name, opts, ref):
    bp = solvers.BrownianPath.for_sde(model.sde, x_T.shape, seed=3, dtype=F64)
    out = solvers.sample(model, name, steps=8, x_T=x_T, grid="edm", brownian=bp, **opts)
    _close(out.x, ref_dpmpp_multistep(model, out.times, x_T, brownian=bp, **ref))


def test_special_cases_agree(model, x_T):
    # DPM-Solver-1 is DDIM (eta = 0); DPM-Solver++(2M) SDE with eta = 0 is DPM-Solver++(2M)
    a = solvers.sample(model, "dpm_solver_1", steps=9, x_T=x_T, grid="uniform").x
    _close(a, solvers.sample(model, "ddim", steps=9, x_T=x_T, grid="uniform").x, 1e-12)
    for lof in (True, False):
        b = solvers.sample(model, "dpmpp_2m", steps=7, x_T=x_T, lower_order_final=lof).x
        c = solvers.sample(model, "dpmpp_2m_sde", steps=7, x_T=x_T, eta=0.0, lower_order_final=lof).x
        _close(b, c, 1e-13)


def test_psi_series_matches_closed_form():
    for k, f in ((2, lambda z: (math.expm1(z) - z) / z), (3, lambda z: (math.expm1(z) - z - z * z / 2) / (z * z))):
        for z in (0.0999, -0.0999, 0.1, 0.5, -2.0):
            assert psi(k, z) == pytest.approx(f(z), rel=1e-12)
        assert psi(k, 1e-9) == pytest.approx(1e-9 / math.factorial(k), rel=1e-8)  # psi_k(z) ~ z / k!


def test_float32_runs_close_to_float64(model, x_T):
    for name in NAMES:  # deterministic forms (a float32 Brownian path draws other numbers)
        opts = {"eta": 0.0} if name.endswith("_sde") else {}
        a = solvers.sample(model, name, steps=10, x_T=x_T, **opts).x
        b = solvers.sample(model, name, steps=10, x_T=x_T.float(), **opts).x
        assert b.dtype == torch.float32
        assert (a - b.double()).abs().max().item() < 1e-3, name


# =============================================================================================
# 2. NFE
# =============================================================================================
@pytest.mark.parametrize("name, opts", [
    ("dpm_solver_1", {}), ("dpm_solver_2", {}), ("dpm_solver_3", {"denoise": True}), ("dpm_solver_fast", {}),
    ("dpm_solver_fast", {"order": 2}), ("dpmpp_2s", {}), ("dpmpp_2m", {}), ("dpmpp_2m_sde", {}),
    ("dpmpp_3m_sde", {"denoise": True}),
])
def test_nfe_counted(name, opts):
    m = load("gmm2d-vp")
    calls = []
    inner = m.fn
    m.fn = lambda x, t: calls.append(1) or inner(x, t)
    cls = solvers.get(name)
    for steps in (1, 2, 3, 7, 12):
        calls.clear()
        out = solvers.sample(m, name, steps=steps, n=3, dtype=F64, **opts)
        assert out.nfe == len(calls) == cls.expected_nfe(steps, **opts), (name, steps)


def test_fast_budget_rule():
    for budget in range(1, 20):
        k = DPMSolverFast.steps_for_nfe(budget, nfe=budget)
        assert k == budget // 3 + 1 and DPMSolverFast.expected_nfe(k, nfe=budget) == budget
        assert sum(DPMSolverFast.schedule(budget, 3)) == budget
        k2 = DPMSolverFast.steps_for_nfe(budget, nfe=budget, order=2)
        assert k2 == budget // 2 + budget % 2 and DPMSolverFast.expected_nfe(k2, nfe=budget, order=2) == budget
        # without nfe: the most steps whose default budget (3 steps - 1) fits
        k0 = DPMSolverFast.steps_for_nfe(budget)
        assert DPMSolverFast.expected_nfe(k0) <= budget if k0 else budget < 2
        assert DPMSolverFast.expected_nfe(k0 + 1) > budget
    assert DPMSolverFast.declared_order() == 3
    assert DPMSolverFast.declared_order(nfe=14) == 3 and DPMSolverFast.declared_order(nfe=12) == 2
    assert DPMSolverFast.declared_order(order=2) == 2


# =============================================================================================
# options
# =============================================================================================
@pytest.mark.parametrize("name, steps, opts", [
    ("dpm_solver_fast", 5, {"nfe": 12, "order": 2}),   # nfe=12, order 2 takes 6 steps
    ("dpm_solver_fast", 4, {"nfe": 14}),               # 14 NFE take 5 steps
    ("dpm_solver_fast", 4, {"nfe": 0}),
    ("dpm_solver_fast", 4, {"nfe": True}),
    ("dpm_solver_fast", 4, {"order": 4}),
    ("dpm_solver_fast", 4, {"order": 1, "solver_type": "taylor"}),
    ("dpm_solver_2", 4, {"solver_type": "rk"}),
    ("dpm_solver_2", 4, {"r1": 0.0}),
    ("dpm_solver_3", 4, {"r1": 0.7, "r2": 0.5}),
    ("dpmpp_2m", 4, {"eta": 1.0}),                     # unknown option
    ("dpmpp_2m_sde", 4, {"eta": -0.5}),
    ("dpmpp_2m_sde", 4, {"solver_type": "euler"}),
    ("dpmpp_3m_sde", 4, {"solver_type": "heun"}),      # unknown option: 3M has one form
])
def test_bad_options(model, x_T, name, steps, opts):
    with pytest.raises(InputError):
        solvers.sample(model, name, steps=steps, x_T=x_T, **opts)


def test_fast_nfe_contradicting_steps_in_expected_nfe():
    with pytest.raises(InputError):
        DPMSolverFast.expected_nfe(4, nfe=14)
    with pytest.raises(InputError):
        DPMSolverFast.steps_for_nfe(10, nfe=12)


def test_metadata():
    for name in NAMES:
        cls = solvers.get(name)
        assert cls.default_grid == "logsnr"
        assert cls.__doc__.split("\n")[0].strip()
    assert solvers.get("dpmpp_2m_sde").is_stochastic() and not solvers.get("dpmpp_2m_sde").is_stochastic(eta=0.0)
    assert solvers.get("dpmpp_2m_sde").declared_order() is None
    assert solvers.get("dpmpp_2m_sde").declared_order(eta=0.0) == 2
    d3 = solvers.get("dpm_solver_3")
    assert d3.declared_order() == d3.declared_order(r1=0.25, solver_type="taylor") == 3
    assert d3.declared_order(r2=0.75) == d3.declared_order(r2=0.75, solver_type="taylor") == 2
    assert solvers.get("dpmpp_3m_sde").declared_order(eta=0.0) == 2


# =============================================================================================
# 3. SDE variants
# =============================================================================================
@pytest.mark.parametrize("name, opts", [("dpmpp_2m_sde", {}), ("dpmpp_3m_sde", {})])
def test_sde_strong_convergence(model, name, opts):
    x0 = model.sample_prior(64, generator=torch.Generator().manual_seed(5), dtype=F64)
    bp = solvers.BrownianPath.for_sde(model.sde, x0.shape, seed=0, dtype=F64)
    fine = solvers.sample(model, name, steps=256, x_T=x0, brownian=bp, **opts).x
    errs = [(solvers.sample(model, name, steps=s, x_T=x0, brownian=bp, **opts).x - fine).norm(dim=1).median().item()
            for s in (8, 32, 128)]
    assert errs[0] > 2 * errs[1] > 4 * errs[2], errs
    assert errs[2] < 0.03, errs
    # the same seed gives the same samples, another seed others
    a, b, c = (solvers.sample(model, name, steps=16, x_T=x0, seed=sd, **opts).x for sd in (0, 0, 1))
    assert (a - b).abs().max() == 0 and (a - c).abs().max() > 1e-2


@pytest.mark.parametrize("name, opts", [("dpmpp_2m_sde", {}), ("dpmpp_3m_sde", {})])
def test_sde_moments_converge(name, opts):
    m = load("gmm2d-vp", exact_prior=True)
    x0 = m.sample_prior(4000, generator=torch.Generator().manual_seed(1), dtype=F64)
    eps = m.sde.eps
    mu, cov = m.gmm.moments(float(m.sde.alpha(eps)), float(m.sde.sigma(eps)))

    def err(steps):
        x = solvers.sample(m, name, steps=steps, x_T=x0, seed=3, **opts).x
        return (x.mean(0) - mu).norm().item() + (torch.cov(x.T) - cov).norm().item()

    coarse, fine = err(4), err(64)
    # Monte Carlo floor with 4000 samples: ~0.02 (mean) + ~0.04 (covariance)
    assert fine < 0.12 and coarse > 2 * fine, (coarse, fine)
