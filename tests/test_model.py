import pytest
import torch

import solvers
from bench.zoo import models
from solvers import PREDICTIONS, ScoreModel


@pytest.mark.parametrize("name", ["gmm2d-vp", "gmm2d-subvp", "gmm2d-ve", "gmm2d-edm", "gmm64-vp", "gmm64-ve"])
def test_analytic_score_is_the_gradient_of_the_analytic_log_density(name):
    m = models.load(name)
    sde = m.sde
    g = torch.Generator().manual_seed(1)
    for t in (sde.eps, 0.1 * sde.T, 0.5 * sde.T, sde.T):
        x = m.exact_sample(32, t, generator=g).requires_grad_(True)
        logp = m.exact_log_prob(x, t)
        (grad,) = torch.autograd.grad(logp.sum(), x)
        torch.testing.assert_close(m.exact_score(x.detach(), t), grad, rtol=1e-9, atol=1e-9)
        # the network's eps is -sigma * score
        eps = m.eps(x.detach(), torch.tensor(t, dtype=torch.float64))
        torch.testing.assert_close(eps, -sde.sigma(t).item() * grad, rtol=1e-9, atol=1e-9)


def test_log_density_is_normalised_in_2d():
    m = models.load("gmm2d-vp")
    g = torch.linspace(-6, 6, 601, dtype=torch.float64)
    xx = torch.cartesian_prod(g, g)
    for t in (m.sde.eps, 0.3):
        mass = m.exact_log_prob(xx, t).exp().sum() * (g[1] - g[0]) ** 2
        assert abs(mass.item() - 1) < 1e-6


def test_exact_samples_have_the_exact_moments():
    m = models.load("gmm2d-ve")
    t = 0.2
    x = m.exact_sample(200_000, t, generator=torch.Generator().manual_seed(0))
    mean, cov = m.gmm.moments(m.sde.alpha(t).item(), m.sde.sigma(t).item())
    torch.testing.assert_close(x.mean(0), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.02, rtol=0.02)


@pytest.mark.parametrize("src", PREDICTIONS)
@pytest.mark.parametrize("dst", PREDICTIONS)
def test_conversions_round_trip_and_are_consistent(src, dst):
    g = torch.Generator().manual_seed(0)
    x, x0, eps = (torch.randn(16, 3, generator=g, dtype=torch.float64) for _ in range(3))
    alpha, sigma = 0.8, 0.45
    x = alpha * x0 + sigma * eps
    forms = {"eps": eps, "x0": x0, "score": -eps / sigma, "v": alpha * eps - sigma * x0}
    out = ScoreModel.convert(forms[src], x, alpha, sigma, src, dst)
    torch.testing.assert_close(out, forms[dst])
    back = ScoreModel.convert(out, x, alpha, sigma, dst, src)
    torch.testing.assert_close(back, forms[src])


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_any_prediction_gives_the_same_eps(prediction):
    exact = models.load("gmm2d-vp")
    sde = exact.sde

    def fn(x, t):
        return exact(x, t, prediction)

    m = ScoreModel(fn, sde, prediction, shape=(2,))
    x = exact.sample_prior(8, dtype=torch.float64)
    t = torch.full((8,), 0.3, dtype=torch.float64)
    torch.testing.assert_close(m.eps(x, t), exact.eps(x, t))
    torch.testing.assert_close(m.x0(x, t), (x - sde.sigma(0.3).item() * exact.eps(x, t)) / sde.alpha(0.3).item())


def test_discrete_timestep_adapter_maps_time_once():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    exact = models.ExactModel(models.gmm2d(), solvers.DiscreteVP(betas), name="gmm2d-ddpm")
    seen = []

    def net(x, k):  # a DDPM network: eps at integer (here fractional) step k
        seen.append(k)
        t = (k + 1) / 1000
        return exact.eps(x, t)

    m = ScoreModel.from_discrete(net, betas, "eps", shape=(2,))
    assert isinstance(m.sde, solvers.DiscreteVP)
    x = exact.sample_prior(4, dtype=torch.float64)
    for k in (0, 17, 999):
        t = torch.tensor((k + 1) / 1000, dtype=torch.float64)
        torch.testing.assert_close(m.score(x, t), exact.exact_score(x, t))
        assert torch.allclose(seen[-1], torch.full((4,), float(k), dtype=torch.float64))


def test_model_contract_errors():
    with pytest.raises(solvers.InputError, match="prediction"):
        ScoreModel(lambda x, t: x, solvers.VP(), "noise")
    with pytest.raises(solvers.InputError, match="callable"):
        ScoreModel(3, solvers.VP())
    with pytest.raises(solvers.InputError, match="SDE"):
        ScoreModel(lambda x, t: x, "vp")
    m = ScoreModel(lambda x, t: x[:, :1], solvers.VP(), shape=(2,), name="bad")
    with pytest.raises(solvers.InputError, match=r"'bad' returned \(4, 1\) for an input of shape \(4, 2\)"):
        m.eps(torch.zeros(4, 2), 0.5)
