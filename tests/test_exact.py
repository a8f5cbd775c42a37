"""bench.harness.exact: exact KL of deterministic samplers (checked against closed forms on Gaussian
data), cross-entropy gap and mode-weight error."""
import math

import pytest
import torch

import solvers
from bench.harness.exact import (
    GaussianData,
    cross_entropy_gap,
    entropy,
    exact_kl,
    gaussian_kl,
    jacobian_logdet,
    linear_map_factor,
    mode_weight_error,
    responsibilities,
)
from bench.harness.verdicts import paired_difference
from bench.zoo import models
from bench.zoo.models import ExactModel, GaussianMixture


def tan_grid(sde, steps, c=1.0):
    """rho_i = c tan(linear in arctan(rho / c)), rho = sigma / alpha: the closed-form grid for
    N(0, c^2 I) data."""
    rho = [float(torch.exp(-sde.lam(t))) for t in (sde.T, sde.eps)]
    u = torch.linspace(math.atan(rho[0] / c), math.atan(rho[1] / c), steps + 1, dtype=torch.float64)
    times = sde.t_of_lam(-torch.log(c * torch.tan(u)))
    times[0], times[-1] = sde.T, sde.eps
    return times


def grid(sde, kind, steps=10, c=1.0):
    return tan_grid(sde, steps, c) if kind == "tan" else solvers.make_grid(sde, steps, kind)


def closed_form_kl(model, solver, times, **options):
    """KL(N(0, m^2 v_T I) || N(0, v_eps I)) for the solver's scalar map x -> m x."""
    m = linear_map_factor(model, solver, times, **options)
    v_start = model.variance(times[0]) if model.exact_prior else model.sde.prior_std**2
    return gaussian_kl(m * m * v_start, model.variance(times[-1]), model.d), m


# --- the Gaussian model ------------------------------------------------------------------
def test_gaussian_data_is_the_readme_example_and_a_one_component_mixture():
    x, t = torch.randn(5, 3, dtype=torch.float64), torch.full((5,), 2.5, dtype=torch.float64)
    g = GaussianData(solvers.EDM(), d=3)
    torch.testing.assert_close(g(x, t), x * (t / (1 + t**2))[:, None])
    gv = GaussianData(solvers.VP(), d=3, c=0.5)
    one = ExactModel(GaussianMixture([1.0], [[0.0] * 3], 0.25 * torch.eye(3)[None]), solvers.VP(), name="one")
    t = torch.full((5,), 0.3, dtype=torch.float64)
    torch.testing.assert_close(gv(x, t), one(x, t))
    torch.testing.assert_close(gv.exact_log_prob(x, 0.3), one.exact_log_prob(x, 0.3))


# --- closed form: the brief's three numbers ----------------------------------------------
@pytest.mark.parametrize("kind, expected", [("edm", 0.05608), ("logsnr", 0.05915), ("tan", 0.01366)])
def test_euler_on_edm_matches_the_closed_form(kind, expected):
    """EDM, sigma 80 -> 0.002, c = 1, 10 Euler steps from the exact p_T: KL per dimension."""
    sde = solvers.EDM()
    times = grid(sde, kind)
    t = times.tolist()
    m_hand = math.prod(1 + (b - a) * a / (1 + a * a) for a, b in zip(t[:-1], t[1:]))  # x += h eps
    for d in (1, 2, 8):
        g = GaussianData(sde, d=d)
        kl, m = closed_form_kl(g, "euler", times)
        assert m == pytest.approx(m_hand, rel=1e-12)
        assert kl / d == pytest.approx(expected, abs=5e-6)
        est = exact_kl(g, "euler", times=times, n=1000, seed=d)
        assert abs(est["value"] - kl) < 2 * est["stderr"], (d, est["value"], est["stderr"], kl)
        assert est["logdet"] == pytest.approx(d * math.log(abs(m)), rel=1e-10)


# --- closed form: many solvers, grids, dimensions, SDEs ----------------------------------
LINEAR = ["euler", "heun", "rk4", "ddim", "dpm_solver_2", "dpm_solver_3", "dpmpp_2m", "unipc", "deis", "ipndm"]


@pytest.mark.parametrize("kind", ["edm", "logsnr", "tan"])
@pytest.mark.parametrize("solver", LINEAR)
def test_exact_kl_matches_closed_form_on_gaussian_data(solver, kind):
    sde = solvers.EDM()
    times = grid(sde, kind, steps=6)
    for d in ((1, 2, 8) if kind == "edm" else (2,)):
        g = GaussianData(sde, d=d)
        kl, m = closed_form_kl(g, solver, times)
        x_T = g.sample_prior(1000, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
        est = exact_kl(g, solver, times=times, x_T=x_T)
        assert abs(est["value"] - kl) < 2 * est["stderr"], (d, est["value"], est["stderr"], kl)
        assert est["logdet"] == pytest.approx(d * math.log(abs(m)), rel=1e-9, abs=1e-12)
        assert est["flipped"] == 0 and est["n"] == 1000
        # per sample, l_i = log p_T(x_i) - d log|m| - log p_eps(m x_i) exactly. (For Gaussian data
        # l_i is affine in |x_i|^2, so the 2-stderr check above is one draw per seed and d; this
        # one is exact.)
        l_i = g.exact_log_prob(x_T, times[0]) - d * math.log(abs(m)) - g.exact_log_prob(m * x_T, times[-1])
        torch.testing.assert_close(est["per_sample"], l_i, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde, c, exact_prior", [(solvers.VP(), 0.5, True), (solvers.VE(), 2.0, True),
                                                 (solvers.VP(), 0.5, False), (solvers.EDM(), 1.0, False)])
def test_exact_kl_other_sdes_scales_and_the_gaussian_prior(sde, c, exact_prior):
    """c != 1, other SDEs; without exact_prior x_T ~ N(0, prior_std^2 I), and its density is used."""
    g = GaussianData(sde, d=2, c=c, exact_prior=exact_prior)
    times = grid(sde, "logsnr", steps=8, c=c)
    for solver in ("heun", "dpmpp_2m"):
        kl, _ = closed_form_kl(g, solver, times)
        est = exact_kl(g, solver, times=times, n=1000, seed=3)
        assert abs(est["value"] - kl) < 2 * est["stderr"], (solver, est["value"], est["stderr"], kl)


# --- the Jacobian on a nonlinear model -------------------------------------------------
def test_jacobian_logdet_matches_full_autodiff_jacobian():
    m = models.load("gmm2d-vp", exact_prior=True)
    x = m.sample_prior(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def phi(z):
        return solvers.sample(m, "dpmpp_2m", steps=4, x_T=z).x

    y, logabs, sign = jacobian_logdet(phi, x)
    full = torch.autograd.functional.jacobian(lambda z: phi(z.reshape(3, 2)).reshape(-1), x.reshape(-1))
    blocks = torch.stack([full[2 * i:2 * i + 2, 2 * i:2 * i + 2] for i in range(3)])
    s_ref, l_ref = torch.linalg.slogdet(blocks)
    torch.testing.assert_close(logabs, l_ref)
    torch.testing.assert_close(y, phi(x))
    assert bool((sign == s_ref).all())


def test_exact_kl_on_gmm2d_falls_with_steps_and_pairs_on_shared_x_T():
    m = models.load("gmm2d-vp", exact_prior=True)
    coarse = exact_kl(m, "euler", steps=4, n=500)
    fine = exact_kl(m, "heun", steps=20, n=500)
    assert coarse["nfe"] == 4 and fine["nfe"] == 40
    assert fine["value"] > -2 * fine["stderr"]  # a KL: >= 0 up to noise
    d = paired_difference(coarse["per_sample"], fine["per_sample"])
    assert d["low"] > 0 and d["stderr"] < coarse["stderr"]
    den = exact_kl(m, "euler", steps=4, n=200, denoise=True)  # Tweedie's x0: measured against p_0
    assert den["target_t"] == 0.0 and den["nfe"] == 5 and math.isfinite(den["value"])


def test_exact_kl_refuses_what_it_cannot_measure():
    m = models.load("gmm2d-vp", exact_prior=True)
    for solver, opts in [("euler_maruyama", {}), ("ddim", {"eta": 0.5}), ("pc", {}), ("dopri5", {})]:
        with pytest.raises(solvers.InputError, match=solver):
            exact_kl(m, solver, steps=4, n=10, **opts)
    exact_kl(m, "ddim", steps=2, n=4, eta=0.0)  # deterministic DDIM is fine
    plain = solvers.ScoreModel(lambda x, t: x, solvers.VP(), shape=(2,), name="plain")
    with pytest.raises(solvers.InputError, match="exact model"):
        exact_kl(plain, "euler", steps=4, n=10)
    with pytest.raises(solvers.InputError, match="steps"):
        exact_kl(m, "euler", n=10)


# --- cross-entropy gap -------------------------------------------------------------------
def test_cross_entropy_gap_closed_form_and_exact_samples():
    sde = solvers.EDM()
    g = GaussianData(sde, d=2)
    times = grid(sde, "edm", steps=6)
    h = entropy(g, m=50_000)
    v_eps = g.variance(sde.eps)
    assert h["value"] == pytest.approx(0.5 * 2 * (1 + math.log(2 * math.pi * v_eps)), abs=3 * h["stderr"])
    x = solvers.sample(g, "euler", times=times, n=2000, seed=1, dtype=torch.float64).x
    m = linear_map_factor(g, "euler", times)
    expected = 0.5 * 2 * (m * m * g.variance(sde.T) / v_eps - 1)  # E_q[-log p] - H for Gaussians
    r = cross_entropy_gap(g, x, entropy_estimate=h)
    assert abs(r["value"] - expected) < 2 * r["stderr"]
    assert r["stderr"] == pytest.approx(math.hypot(r["cross_entropy_stderr"], h["stderr"]))
    exact = g.exact_sample(2000, sde.eps, generator=torch.Generator().manual_seed(7))
    r0 = cross_entropy_gap(g, exact, entropy_estimate=h)
    assert abs(r0["value"]) < 2 * r0["stderr"]


def test_cross_entropy_gap_takes_stochastic_samplers():
    m = models.load("gmm2d-vp", exact_prior=True)
    h = entropy(m, m=20_000)
    x = solvers.sample(m, "euler_maruyama", steps=20, n=500, seed=0).x
    r = cross_entropy_gap(m, x, entropy_estimate=h)
    assert math.isfinite(r["value"]) and r["n"] == 500 and r["entropy_n"] == 20_000


# --- mode weights ------------------------------------------------------------------------
def test_mode_weight_error_values_and_delta_method_stderr():
    m = models.load("gmm2d-vp", exact_prior=True)
    gmm, eps = m.gmm, m.sde.eps
    a, s = float(m.sde.alpha(eps)), float(m.sde.sigma(eps))
    # exact samples: TV at the level of its floor, responsibilities sum to 1
    y = m.exact_sample(1000, eps, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(responsibilities(gmm, y, a, s).sum(1), torch.ones(1000, dtype=torch.float64))
    r = mode_weight_error(m, y)
    assert r["value"] < 4 * r["stderr"] + 0.01 and r["floor"] < 0.05 and len(r["shares"]) == 2
    # samples with weights 0.45 / 0.55 instead of 0.3 / 0.7: TV = 0.15; delta-method stderr
    # against the spread of 40 independent repeats
    shifted = GaussianMixture([0.45, 0.55], gmm.means, gmm.covs)
    g = torch.Generator().manual_seed(1)
    reps = [mode_weight_error(m, shifted.sample(500, a, s, generator=g), floor=False) for _ in range(40)]
    values = torch.tensor([q["value"] for q in reps])
    assert float(values.mean()) == pytest.approx(0.15, abs=0.01)
    mean_se = sum(q["stderr"] for q in reps) / len(reps)
    assert float(values.std()) == pytest.approx(mean_se, rel=0.35)
