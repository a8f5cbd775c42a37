"""edm_stochastic against the paper's Algorithm 2 written in sigma-space on the denoiser D(x; sigma)."""
import math

import torch

import solvers
import solvers.edm
from bench.zoo import models


def edm_algorithm2(D, x, sigmas, z, S_churn, S_min, S_max, S_noise):
    """Karras et al. (2022) Algorithm 2 as printed (sigma-time: x_i ~ N(x0, sigma_i^2))."""
    n = len(sigmas) - 1
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        gamma = min(S_churn / n, math.sqrt(2) - 1) if S_min <= s <= S_max else 0.0
        s_hat = s + gamma * s
        x_hat = x + math.sqrt(s_hat**2 - s**2) * S_noise * z[i]
        d = (x_hat - D(x_hat, s_hat)) / s_hat
        x_next = x_hat + (s_next - s_hat) * d
        d2 = (x_next - D(x_next, s_next)) / s_next
        x = x_hat + (s_next - s_hat) * (0.5 * d + 0.5 * d2)
    return x


def test_matches_algorithm_2_on_the_edm_sde():
    m = models.load("gmm2d-edm")
    x = m.sample_prior(32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    times = solvers.make_grid(m.sde, 12)
    path = solvers.BrownianPath.for_sde(m.sde, x.shape, seed=0, dtype=torch.float64)
    opts = dict(S_churn=30.0, S_min=0.1, S_max=20.0, S_noise=1.007)
    out = solvers.sample(m, "edm_stochastic", times=times, x_T=x, brownian=path, **opts)
    z = [path.normal(times[i].item(), times[i + 1].item()) for i in range(12)]

    def D(xx, sig):  # Tweedie denoiser from the exact score
        return xx + sig**2 * m.exact_score(xx, sig)

    ref = edm_algorithm2(D, x, times.tolist(), z, **opts)
    torch.testing.assert_close(out.x, ref, rtol=1e-11, atol=1e-11)
    assert out.nfe == 24


def test_without_churn_it_is_heun():
    m = models.load("gmm2d-edm")
    x = m.sample_prior(16, dtype=torch.float64)
    a = solvers.sample(m, "edm_stochastic", steps=7, x_T=x, S_churn=0.0).x
    b = solvers.sample(m, "heun", steps=7, x_T=x).x
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_vp_sigma_space_churn_changes_samples_and_stays_finite():
    m = models.load("gmm2d-vp")
    x = m.sample_prior(64, dtype=torch.float64)
    a = solvers.sample(m, "edm_stochastic", steps=10, x_T=x, S_churn=0.0).x
    b = solvers.sample(m, "edm_stochastic", steps=10, x_T=x).x
    assert bool(torch.isfinite(b).all()) and not torch.allclose(a, b)
