import pytest
import torch

from solvers import EDM, VE, VP, DiscreteVP, SubVP

DDPM_BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
SDES = [VP(), SubVP(), VE(), EDM(), DiscreteVP(DDPM_BETAS)]


def interior_times(sde, n=7):
    if isinstance(sde, DiscreteVP):  # mid-segment: log alpha is piecewise linear
        k = torch.linspace(3, sde.num_steps - 5, n).round().double()
        return (k + 1.5) / sde.num_steps
    return torch.linspace(sde.eps * 3, sde.T * 0.97, n, dtype=torch.float64)


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_f_and_g2_match_finite_differences_of_the_marginal(sde):
    t = interior_times(sde)
    dt = 1e-6 * t
    dlog_alpha = (sde.log_alpha(t + dt) - sde.log_alpha(t - dt)) / (2 * dt)
    dvar = (torch.exp(2 * sde.log_sigma(t + dt)) - torch.exp(2 * sde.log_sigma(t - dt))) / (2 * dt)
    torch.testing.assert_close(sde.f(t), dlog_alpha, rtol=1e-6, atol=1e-8)
    g2_fd = dvar - 2 * sde.f(t) * sde.sigma(t) ** 2
    torch.testing.assert_close(sde.g2(t), g2_fd, rtol=1e-5, atol=1e-8)
    assert bool((sde.g2(t) > 0).all())


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_lambda_inverse_round_trips(sde):
    t = interior_times(sde, 11)
    torch.testing.assert_close(sde.t_of_lam(sde.lam(t)), t, rtol=1e-9, atol=1e-12)
    assert bool((torch.diff(sde.lam(t)) < 0).all()), "lambda must decrease in t"


def test_vp_is_accurate_near_zero():
    sde = VP()
    t = torch.tensor([1e-12, 1e-9, 1e-6], dtype=torch.float64)
    # sigma^2 = 1 - alpha^2 = -expm1(2 log alpha) ~ b0 t for tiny t: naive 1 - exp(..) loses it
    la = sde.log_alpha(t)
    expect = -torch.expm1(2 * la)
    torch.testing.assert_close(sde.sigma(t) ** 2, expect, rtol=1e-12, atol=0)
    torch.testing.assert_close(sde.sigma(t) ** 2 / (sde.beta_min * t), torch.ones(3, dtype=torch.float64), rtol=1e-4, atol=0)
    torch.testing.assert_close(sde.t_of_lam(sde.lam(t)), t, rtol=1e-8, atol=0)


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_transition_kernel(sde):
    t = interior_times(sde)
    s, u = t[:-1], t[1:]
    a, b2 = sde.transition(s, u)
    torch.testing.assert_close(a, sde.alpha(u) / sde.alpha(s))
    torch.testing.assert_close(b2, sde.sigma(u) ** 2 - a**2 * sde.sigma(s) ** 2, rtol=1e-9, atol=1e-12)
    # tiny steps keep relative precision
    s = t[2:3]
    _, b2 = sde.transition(s, s * (1 + 1e-10))
    assert b2.item() > 0


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_prior(sde):
    x = sde.prior_sample((20000, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(x.std().item() / sde.prior_std - 1) < 0.02
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(x).sum(1)
    torch.testing.assert_close(sde.prior_log_prob(x), ref)


def test_discrete_vp_matches_ddpm_alphas_bar_at_the_knots():
    sde = DiscreteVP(DDPM_BETAS)
    n = sde.num_steps
    t = torch.arange(1, n + 1, dtype=torch.float64) / n
    alphas_bar = torch.cumprod(1 - DDPM_BETAS, 0)
    torch.testing.assert_close(sde.alpha(t) ** 2, alphas_bar, rtol=1e-10, atol=0)
    torch.testing.assert_close(sde.discrete_step(t), torch.arange(n, dtype=torch.float64))


def test_bad_sde_parameters():
    with pytest.raises(ValueError, match="beta_min"):
        VP(beta_min=5, beta_max=1)
    with pytest.raises(ValueError, match="sigma_min"):
        VE(sigma_min=0)
    with pytest.raises(ValueError, match="betas"):
        DiscreteVP([0.5])
