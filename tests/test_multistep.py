"""UniPC, DEIS (tAB) and iPNDM (solvers/multistep.py).

1. Agreement, to float64 rounding, with independent evaluations of the published updates,
   written here in the coordinates of the original code: UniPC in the official lambda-space
   form (B(h), the R matrix and rhos solved per step, h*phi_k by the official recurrence,
   the official warm-up / final-step loop); DEIS with coefficients from scipy.integrate.quad
   of rho'(tau) l_j(tau) (rho' = g^2 / (2 sigma alpha), Lagrange basis as a product);
   iPNDM in EDM sigma space (x / alpha, sigma / alpha, d = (x - D) / sigma) with the AB
   table or numpy-integrated Lagrange polynomials.
2. NFE: out.nfe == expected_nfe == calls counted by a wrapper of the network.
3. Options, order schedules and declared orders.
Convergence orders are measured by the registry-driven tests/test_convergence.py.
"""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

import solvers
import solvers.multistep
from bench.zoo import models

TOL = 1e-10


@pytest.fixture(scope="module")
def model():
    return models.load("gmm2d-vp")


@pytest.fixture(scope="module")
def x_T(model):
    return model.sample_prior(16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


class Schedule:
    """alpha, sigma, lambda at a float time straight from the SDE, and the raw network."""

    def __init__(self, model):
        self.sde, self.fn = model.sde, model.fn

    def alpha(self, t):
        return float(self.sde.alpha(float(t)))

    def sigma(self, t):
        return float(self.sde.sigma(float(t)))

    def lam(self, t):
        return float(self.sde.lam(float(t)))

    def eps(self, x, t):
        return self.fn(x, torch.full((x.shape[0],), float(t), dtype=x.dtype))

    def x0(self, x, t):
        return (x - self.sigma(t) * self.eps(x, t)) / self.alpha(t)


# --- 1a. UniPC: the official multistep_uni_pc_bh_update and sample loop ------------------

def unipc_update(S, x, ms, ts, t, order, variant, corrector):
    """One official-style UniPC update to time t from the history (ms, ts), newest last."""
    t0, m0 = ts[-1], ms[-1]
    h = S.lam(t) - S.lam(t0)
    rks, D1s = [], []
    for k in range(1, order):
        rk = (S.lam(ts[-(k + 1)]) - S.lam(t0)) / h
        rks.append(rk)
        D1s.append((ms[-(k + 1)] - m0) / rk)
    rks.append(1.0)
    hh = -h  # data prediction
    h_phi_1 = math.expm1(hh)
    B_h = hh if variant == "bh1" else math.expm1(hh)
    R, b = [], []
    h_phi_k, fact = h_phi_1 / hh - 1, 1
    for i in range(1, order + 1):
        R.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * fact / B_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    R, b = torch.tensor(R, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    x_lin = S.sigma(t) / S.sigma(t0) * x - S.alpha(t) * h_phi_1 * m0
    x_t = x_lin
    if D1s:
        rhos_p = [0.5] if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
        x_t = x_lin - S.alpha(t) * B_h * sum(r * d for r, d in zip(rhos_p, D1s))
    if not corrector:
        return x_t, None
    model_t = S.x0(x_t, t)
    rhos_c = [0.5] if order == 1 else torch.linalg.solve(R, b).tolist()
    corr = sum(r * d for r, d in zip(rhos_c[:-1], D1s)) + rhos_c[-1] * (model_t - m0)
    return x_lin - S.alpha(t) * B_h * corr, model_t


def unipc_reference(model, x, times, order, variant="bh1", use_corrector=True, lower_order_final=True):
    """The official multistep loop (steps >= order); use_corrector=False is UniP alone."""
    S, ts_all = Schedule(model), times.tolist()
    steps = len(ts_all) - 1
    ts, ms = [ts_all[0]], [S.x0(x, ts_all[0])]
    for step in range(1, order):  # warm-up, lower orders
        t = ts_all[step]
        x, m_t = unipc_update(S, x, ms, ts, t, step, variant, use_corrector)
        ts.append(t)
        ms.append(S.x0(x, t) if m_t is None else m_t)
    for step in range(order, steps + 1):
        t = ts_all[step]
        p = min(order, steps + 1 - step) if lower_order_final else order
        x, m_t = unipc_update(S, x, ms, ts, t, p, variant, use_corrector and step != steps)
        ts, ms = ts[1:] + [t], ms[1:] + [None]
        if step < steps:
            ms[-1] = S.x0(x, t) if m_t is None else m_t
    return x


@pytest.mark.parametrize("opts", [
    {}, {"order": 1}, {"order": 3}, {"variant": "bh2"}, {"order": 3, "variant": "bh2"},
    {"use_corrector": False}, {"order": 3, "use_corrector": False, "variant": "bh2"},
    {"order": 3, "lower_order_final": False}, {"order": 2, "lower_order_final": False},
])
@pytest.mark.parametrize("steps", [3, 7])
def test_unipc_matches_official_update(model, x_T, opts, steps):
    out = solvers.sample(model, "unipc", steps=steps, x_T=x_T, **opts)
    full = {**solvers.get("unipc").option_defaults(), **opts}
    ref = unipc_reference(model, x_T, out.times, full["order"], full["variant"],
                          full["use_corrector"], full["lower_order_final"])
    assert (out.x - ref).abs().max().item() < TOL
    # the default grid is uniform in lambda
    lam = model.sde.lam(out.times)
    torch.testing.assert_close(lam.diff(), lam.diff().mean().expand(steps), rtol=1e-9, atol=0)


def test_unipc_corrector_changes_the_result(model, x_T):
    """The corrector and B(h) are live (guards the agreement test against a dead branch)."""
    a = solvers.sample(model, "unipc", steps=6, x_T=x_T).x
    b = solvers.sample(model, "unipc", steps=6, x_T=x_T, use_corrector=False).x
    c = solvers.sample(model, "unipc", steps=6, x_T=x_T, variant="bh2").x
    assert (a - b).abs().max().item() > 1e-3 and (a - c).abs().max().item() > 1e-4


# --- 1b. DEIS tAB: coefficients by adaptive quadrature of the exact weight ---------------

def lagrange(tau, nodes, j):
    return math.prod((tau - nodes[k]) / (nodes[j] - nodes[k]) for k in range(len(nodes)) if k != j)


def deis_reference(model, x, times, order, lower_order_final=False):
    S, t = Schedule(model), times.tolist()
    sde, steps = model.sde, len(t) - 1

    def rho_dot(tau):  # d(sigma/alpha)/dt = g^2 / (2 sigma alpha)
        return float(sde.g2(tau)) / (2 * S.sigma(tau) * S.alpha(tau))

    eps = []
    for i in range(steps):
        p = min(order, i + 1, steps - i if lower_order_final else order)
        eps.append(S.eps(x, t[i]))
        nodes = [t[i - j] for j in range(p)]
        out = S.alpha(t[i + 1]) / S.alpha(t[i]) * x
        for j in range(p):
            c, _ = quad(lambda tau, nodes=nodes, j=j: rho_dot(tau) * lagrange(tau, nodes, j), t[i], t[i + 1],
                        epsabs=1e-15, epsrel=1e-13, limit=200)
            out = out + S.alpha(t[i + 1]) * c * eps[-1 - j]
        x = out
    return x


@pytest.mark.parametrize("opts", [{}, {"order": 1}, {"order": 2}, {"lower_order_final": True}])
def test_deis_matches_quadrature_of_lagrange_basis(model, x_T, opts):
    steps = 6
    out = solvers.sample(model, "deis", steps=steps, x_T=x_T, **opts)
    full = {**solvers.get("deis").option_defaults(), **opts}
    ref = deis_reference(model, x_T, out.times, full["order"], full["lower_order_final"])
    assert (out.x - ref).abs().max().item() < TOL
    # default grid: uniform in sqrt(t)
    torch.testing.assert_close(out.times.sqrt().diff(), out.times.sqrt().diff().mean().expand(steps),
                               rtol=1e-9, atol=0)


def test_deis_order1_is_ddim(model, x_T):
    a = solvers.sample(model, "deis", steps=5, x_T=x_T, order=1).x
    b = solvers.sample(model, "ddim", steps=5, x_T=x_T, grid="quadratic").x
    assert (a - b).abs().max().item() < TOL


# --- 1c. iPNDM in EDM sigma space ----------------------------------------------------------

AB_TABLE = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12],
            4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


def lagrange_integral(sig, j, a, b):
    """int_a^b of the Lagrange basis polynomial j through the points sig (numpy)."""
    others = [s for k, s in enumerate(sig) if k != j]
    poly = np.polynomial.Polynomial.fromroots(others) if others else np.polynomial.Polynomial([1.0])
    poly = poly / np.prod([sig[j] - s for s in others])
    F = poly.integ()
    return F(b) - F(a)


def ipndm_reference(model, x, times, order, variant):
    S, t = Schedule(model), times.tolist()
    al = [S.alpha(v) for v in t]
    sig = [S.sigma(v) / S.alpha(v) for v in t]  # EDM sigma
    xk, ds = x / al[0], []                     # EDM state x / alpha
    for i in range(len(t) - 1):
        denoised = S.x0(al[i] * xk, t[i])
        ds.append((xk - denoised) / sig[i])
        p = min(order, i + 1)
        dt = sig[i + 1] - sig[i]
        if variant == "fixed":
            coef = AB_TABLE[p]
        else:
            pts = [sig[i - j] for j in range(p)]
            coef = [lagrange_integral(pts, j, sig[i], sig[i + 1]) / dt for j in range(p)]
            if p == 2:  # diff-sampler ipndm_v, order 2, in closed form
                r = dt / (sig[i] - sig[i - 1])
                assert abs(coef[0] - (2 + r) / 2) < 1e-12 and abs(coef[1] + r / 2) < 1e-12
        xk = xk + dt * sum(c * d for c, d in zip(coef, reversed(ds[-p:])))
    return al[-1] * xk


@pytest.mark.parametrize("opts", [{}, {"order": 2}, {"order": 3}, {"variant": "variable"},
                                  {"variant": "variable", "order": 2}, {"variant": "variable", "order": 3}])
def test_ipndm_matches_sigma_space_adams_bashforth(model, x_T, opts):
    steps = 7
    out = solvers.sample(model, "ipndm", steps=steps, x_T=x_T, **opts)
    full = {**solvers.get("ipndm").option_defaults(), **opts}
    ref = ipndm_reference(model, x_T, out.times, full["order"], full["variant"])
    assert (out.x - ref).abs().max().item() < TOL
    # default grid: EDM rho = 7 in sigma = sigma_t / alpha_t
    s = torch.exp(-model.sde.lam(out.times)) ** (1 / 7)
    torch.testing.assert_close(s.diff(), s.diff().mean().expand(steps), rtol=1e-9, atol=0)


def test_ipndm_variable_equals_fixed_on_a_grid_uniform_in_sigma(model, x_T):
    s = torch.linspace(math.exp(-float(model.sde.lam(model.sde.T))),
                       math.exp(-float(model.sde.lam(model.sde.eps))), 9, dtype=torch.float64)
    times = model.sde.t_of_lam(-torch.log(s))
    times[0], times[-1] = model.sde.T, model.sde.eps
    a = solvers.sample(model, "ipndm", times=times, x_T=x_T, variant="fixed").x
    b = solvers.sample(model, "ipndm", times=times, x_T=x_T, variant="variable").x
    c = solvers.sample(model, "ipndm", steps=8, x_T=x_T, variant="fixed").x  # EDM grid
    d = solvers.sample(model, "ipndm", steps=8, x_T=x_T, variant="variable").x
    assert (a - b).abs().max().item() < 1e-9
    assert (c - d).abs().max().item() > 1e-4  # and they differ on a non-uniform grid


# --- 2. NFE --------------------------------------------------------------------------------

class Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


NFE_CASES = [("unipc", {}), ("unipc", {"order": 3}), ("unipc", {"use_corrector": False}),
             ("unipc", {"order": 3, "lower_order_final": False, "denoise": True}),
             ("deis", {}), ("deis", {"order": 1, "lower_order_final": True}),
             ("ipndm", {}), ("ipndm", {"variant": "variable", "denoise": True})]


@pytest.mark.parametrize("name,opts", NFE_CASES)
def test_nfe_is_counted_and_expected(model, name, opts):
    counter = Counting(model.fn)
    wrapped = solvers.ScoreModel(counter, model.sde, "eps", shape=(2,), name="counted")
    cls = solvers.get(name)
    for steps in (1, 2, 3, 5, 8):
        counter.calls = 0
        out = solvers.sample(wrapped, name, steps=steps, n=4, dtype=torch.float64, **opts)
        assert out.nfe == cls.expected_nfe(steps, **opts) == counter.calls == steps + int(opts.get("denoise", False))
        assert bool(torch.isfinite(out.x).all())


# --- 3. options, schedules, declared orders -----------------------------------------------

def test_order_schedules(model):
    times = solvers.make_grid(model.sde, 6, "logsnr")
    u = solvers.get("unipc")(model, times, order=3)
    assert u.orders == [1, 2, 3, 3, 2, 1]
    assert [c is None for c in u.cc] == [False] * 5 + [True]  # no corrector on the last step
    assert solvers.get("unipc")(model, times, order=3, lower_order_final=False).orders == [1, 2, 3, 3, 3, 3]
    assert solvers.get("deis")(model, times).orders == [1, 2, 3, 3, 3, 3]
    assert solvers.get("ipndm")(model, times).orders == [1, 2, 3, 4, 4, 4]
    assert solvers.get("ipndm")(model, times, lower_order_final=True).orders == [1, 2, 3, 3, 2, 1]
    short = solvers.get("unipc")(model, solvers.make_grid(model.sde, 2, "logsnr"), order=3)
    assert short.orders == [1, 1]


@pytest.mark.parametrize("name,opts", [
    ("unipc", {"order": 4}), ("unipc", {"order": 0}), ("unipc", {"variant": "bh3"}),
    ("unipc", {"use_corrector": 1}), ("unipc", {"eta": 0.5}),
    ("deis", {"order": 4}), ("deis", {"use_corrector": True}), ("deis", {"variant": "bh1"}),
    ("ipndm", {"order": 5}), ("ipndm", {"variant": "bh1"}), ("ipndm", {"order": 2.0}),
])
def test_bad_options_are_input_errors(model, name, opts):
    with pytest.raises(solvers.InputError):
        solvers.sample(model, name, steps=4, n=2, **opts)


def test_declared_orders():
    u, d, p = solvers.get("unipc"), solvers.get("deis"), solvers.get("ipndm")
    assert (u.declared_order(), u.declared_order(order=3), u.declared_order(use_corrector=False)) == (3, 4, 2)
    assert [d.declared_order(order=k) for k in (1, 2, 3)] == [1, 2, 3] and d.declared_order() == 3
    assert [p.declared_order(order=k) for k in (1, 2, 3, 4)] == [1, 2, 2, 2] and p.declared_order() == 2
    assert [p.declared_order(order=k, variant="variable") for k in (1, 2, 3, 4)] == [1, 2, 3, 4]
    assert (u.default_grid, d.default_grid, p.default_grid) == ("logsnr", "quadratic", "edm")
    for cls in (u, d, p):
        assert not cls.is_stochastic() and cls.kind == "ode"
        assert cls.__doc__.splitlines()[0].strip()
        for v in cls.variants:
            cls.resolve_options(v)


@pytest.mark.parametrize("name", ["unipc", "deis", "ipndm"])
def test_float32_run_follows_float64(model, x_T, name):
    a = solvers.sample(model, name, steps=10, x_T=x_T).x
    b = solvers.sample(model, name, steps=10, x_T=x_T.float())
    assert b.x.dtype == torch.float32
    assert (b.x.double() - a).abs().max().item() < 1e-3
