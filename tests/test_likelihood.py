"""Likelihood by the instantaneous change of variables, encode/decode, against the exact mixtures."""
import math

import pytest
import torch

import solvers
import solvers.adaptive
from bench.zoo import models
from solvers import InputError, ScoreModel
from solvers.likelihood import EXACT_TRACE_MAX_DIM, decode, encode, log_likelihood


def data(name, n, seed=0):
    m = models.load(name)
    x = m.exact_sample(n, m.sde.eps, generator=torch.Generator().manual_seed(seed))
    return m, x, m.exact_log_prob(x, m.sde.eps)


def exact_prior(m):
    return lambda z: m.exact_log_prob(z, m.sde.T)


def test_exact_trace_log_likelihood_on_gmm2d():
    """Target: mean |error| < 1e-4 nats per dimension at rtol = atol = 1e-5 with the exact prior
    (measured ~7e-6; a wrong divergence sign or factor gives errors of order 1)."""
    m, x, exact = data("gmm2d-vp", 500)
    res = log_likelihood(m, x, prior=exact_prior(m), rtol=1e-5, atol=1e-5)
    err = (res.logp - exact).abs()
    assert err.mean() / 2 < 1e-4, float(err.mean())
    assert res.logp.shape == (500,) and res.logp.dtype == torch.float64
    assert res.t0 == m.sde.eps and res.t1 == m.sde.T and res.dim == 2 and res.trace == "exact"
    assert res.stderr is None and 10 < res.nfe < 200
    assert res.stats["vjp"] == 2 * res.nfe
    torch.testing.assert_close(res.logp, res.prior_logp + res.delta_logp)
    # tighter tolerance, smaller error
    tight = log_likelihood(m, x, prior=exact_prior(m), rtol=1e-8, atol=1e-8)
    assert (tight.logp - exact).abs().mean() < err.mean() / 10 and tight.nfe > res.nfe
    # the SDE's Gaussian prior instead: same flow, only the prior term differs (prior mismatch)
    gauss = log_likelihood(m, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gauss.delta_logp, res.delta_logp, rtol=0, atol=0)
    torch.testing.assert_close(gauss.prior_logp, m.sde.prior_log_prob(res.z))
    assert (gauss.logp - exact).abs().mean() < 1e-2


def test_exact_trace_log_likelihood_on_gmm64():
    m, x, exact = data("gmm64-vp", 6, seed=1)
    res = log_likelihood(m, x, prior=exact_prior(m), rtol=1e-6, atol=1e-6)
    assert (res.logp - exact).abs().mean() / 64 < 1e-4, (res.logp - exact)
    assert res.stats["vjp"] == 64 * res.nfe


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_and_its_standard_error_shrinks_as_one_over_sqrt_probes(probe):
    m, x, exact = data("gmm2d-vp", 100, seed=2)
    res = log_likelihood(m, x, prior=exact_prior(m), trace="hutchinson", probes=64, probe=probe, seed=3,
                         rtol=1e-6, atol=1e-6)
    assert res.logp_probes.shape == (100, 64) and res.probe == probe and res.probes == 64
    err = res.logp_probes - exact[:, None]                  # independent across points and probes
    se = err.std() / math.sqrt(err.numel())
    assert abs(float(err.mean())) < 3 * float(se) + 1e-4, (float(err.mean()), float(se))
    # the per-point standard error is the spread over probes / sqrt(probes)
    torch.testing.assert_close(res.stderr, res.logp_probes.std(1) / 8)
    z = (res.logp - exact) / res.stderr
    assert float((z.abs() > 4).float().mean()) < 0.03
    few = log_likelihood(m, x, prior=exact_prior(m), trace="hutchinson", probes=4, probe=probe, seed=4)
    ratio = float(few.stderr.mean() / res.stderr.mean())
    assert 2.5 < ratio < 6, ratio                           # sqrt(64 / 4) = 4
    one = log_likelihood(m, x[:5], trace="hutchinson", probes=1, seed=5)
    assert bool(torch.isnan(one.stderr).all())


def test_probes_depend_on_the_seed_only():
    m, x, _ = data("gmm2d-vp", 10)
    a = log_likelihood(m, x, trace="hutchinson", probes=2, seed=7)
    b = log_likelihood(m, x, trace="hutchinson", probes=2, seed=7)
    c = log_likelihood(m, x, trace="hutchinson", probes=2, seed=8)
    assert torch.equal(a.logp, b.logp) and not torch.equal(a.logp, c.logp)


def test_bits_per_dimension():
    m, x, _ = data("gmm2d-vp", 20)
    res = log_likelihood(m, x, bin_width=2 / 256)
    assert res.bpd_offset == 7.0
    torch.testing.assert_close(res.bpd, -res.logp / (2 * math.log(2)) + 7)
    plain = log_likelihood(m, x)
    torch.testing.assert_close(plain.bpd, -plain.logp / (2 * math.log(2)))


@pytest.mark.parametrize("name", ["gmm2d-vp", "gmm2d-ve"])
def test_decode_inverts_encode(name):
    m, x, _ = data(name, 200, seed=5)
    z = encode(m, x, rtol=1e-8, atol=1e-8)
    back = decode(m, z, rtol=1e-8, atol=1e-8)
    assert float((back - x).norm(dim=1).median()) < 1e-6
    assert float((back - x).abs().max()) < 1e-4
    # the latent of data is a sample of p_T: its moments are the exact ones
    mu, cov = m.gmm.moments(m.sde.alpha(m.sde.T).item(), m.sde.sigma(m.sde.T).item())
    se = (cov.diag() / 200).sqrt()
    assert bool(((z.mean(0) - mu).abs() < 4 * se).all())
    # decode is the dopri5 ODE sampler with the same tolerances
    ends = torch.tensor([m.sde.T, m.sde.eps], dtype=torch.float64)
    torch.testing.assert_close(decode(m, z), solvers.sample(m, "dopri5", times=ends, x_T=z).x, rtol=0, atol=0)
    assert encode(m, x.float()).dtype == torch.float32


def test_encode_and_likelihood_agree_on_the_latent():
    m, x, _ = data("gmm2d-vp", 50)
    res = log_likelihood(m, x, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(res.z, encode(m, x, rtol=1e-7, atol=1e-7), rtol=0, atol=1e-5)


# ---- bad input -----------------------------------------------------------------------------------

def _big_model():
    return ScoreModel(lambda x, t: 0 * x, solvers.VP(), shape=(EXACT_TRACE_MAX_DIM + 1,), name="big")


@pytest.mark.parametrize("kwargs, match", [
    (dict(x=torch.tensor([[0.0, float("nan")]])), "x contains NaN or inf"),
    (dict(x=torch.zeros(3, 4)), r"x has shape \(3, 4\); model 'gmm2d-vp' expects \(batch, 2\)"),
    (dict(x=torch.zeros(2)), r"x has shape \(2,\)"),
    (dict(x=[[0.0, 1.0]]), "x must be a floating-point tensor"),
    (dict(rtol=0.0), "rtol must be a finite number > 0"),
    (dict(atol=-1.0), "atol must be a finite number > 0"),
    (dict(solver="rk45"), "unknown solver 'rk45'; valid: dopri5"),
    (dict(trace="hutch"), "trace must be one of"),
    (dict(trace="hutchinson", probes=0), "probes must be an integer >= 1"),
    (dict(trace="hutchinson", probe="normal"), "probe must be one of"),
    (dict(prior="gaussian"), "prior must be a callable"),
    (dict(prior=lambda z: z), r"prior returned \(4, 2\); it must return a tensor of shape \(4,\)"),
    (dict(t0=0.5, t1=0.2), "need eps <= t0 < t1 <= T"),
    (dict(t1=2.0), "need eps <= t0 < t1 <= T"),
    (dict(bin_width=0.0), "bin_width must be a finite number > 0"),
    (dict(norm="max"), "norm must be one of"),
    (dict(tol=1e-3), "unknown option.*tol.*valid options: atol"),
])
def test_bad_likelihood_input_gets_a_clear_error(kwargs, match):
    m = models.load("gmm2d-vp")
    kwargs = {"x": torch.zeros(4, 2, dtype=torch.float64), **kwargs}
    with pytest.raises(InputError, match=match):
        log_likelihood(m, **kwargs)


def test_exact_trace_has_a_dimension_limit():
    m = _big_model()
    x = torch.zeros(2, EXACT_TRACE_MAX_DIM + 1)
    with pytest.raises(InputError, match=f"dimension {EXACT_TRACE_MAX_DIM + 1}.*use trace='hutchinson'"):
        log_likelihood(m, x)
    assert log_likelihood(m, x, trace="hutchinson", probes=2).logp.shape == (2,)


def test_bad_encode_decode_input():
    m = models.load("gmm2d-vp")
    with pytest.raises(InputError, match="encode: x contains NaN"):
        encode(m, torch.tensor([[float("inf"), 0.0]]))
    with pytest.raises(InputError, match=r"decode: z has shape \(3, 3\)"):
        decode(m, torch.zeros(3, 3))
    with pytest.raises(InputError, match="decode: rtol must be"):
        decode(m, torch.zeros(3, 2), rtol=-1.0)
    with pytest.raises(InputError, match="encode: unknown option.*trace"):
        encode(m, torch.zeros(3, 2), trace="exact")
    with pytest.raises(InputError, match="model must be a solvers.ScoreModel"):
        encode(lambda x, t: x, torch.zeros(3, 2))
