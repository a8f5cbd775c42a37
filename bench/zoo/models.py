"""The model zoo. Exact models: Gaussian mixtures, whose perturbed marginals are closed-form
under every linear SDE:

    p_0 = sum_k w_k N(mu_k, S_k)   =>   p_t = sum_k w_k N(alpha_t mu_k, alpha_t^2 S_k + sigma_t^2 I)

so the score, log p_t and exact samples of p_t are known at every t. With S_k = U_k diag(l_k) U_k^T
(eigendecomposition, done once), the covariance at t is U_k diag(alpha^2 l_k + sigma^2) U_k^T.

Named models (``load(name)``): ``gmm2d-<sde>`` (two Gaussians in 2-D, weights 0.3/0.7, one
isotropic and one anisotropic) and ``gmm64-<sde>`` (64-D, 8 anisotropic components), for
<sde> in vp, subvp, ve, edm.
"""
from __future__ import annotations

import math

import torch

from solvers import SDES, InputError, ScoreModel, validate

__all__ = ["GaussianMixture", "ExactModel", "MODELS", "load", "available"]


class GaussianMixture:
    """A Gaussian mixture in R^d (float64 parameters) and its perturbed marginals."""

    def __init__(self, weights, means, covs):
        w = torch.as_tensor(weights, dtype=torch.float64)
        mu = torch.as_tensor(means, dtype=torch.float64)
        S = torch.as_tensor(covs, dtype=torch.float64)
        K, d = mu.shape
        if w.shape != (K,) or S.shape != (K, d, d):
            raise InputError(f"GaussianMixture: weights {tuple(w.shape)}, means {tuple(mu.shape)} and "
                             f"covs {tuple(S.shape)} do not agree (expect (K,), (K, d), (K, d, d))")
        if not bool((w > 0).all()) or abs(float(w.sum()) - 1) > 1e-9:
            raise InputError("GaussianMixture: weights must be positive and sum to 1")
        evals, evecs = torch.linalg.eigh(0.5 * (S + S.transpose(1, 2)))
        if not bool((evals > 0).all()):
            raise InputError("GaussianMixture: covariances must be positive definite")
        self.K, self.d = K, d
        self.weights, self.means, self.covs = w, mu, S
        self.evals, self.evecs = evals, evecs
        self._cache = {}

    def _params(self, dtype, device):
        key = (dtype, device)
        if key not in self._cache:
            self._cache[key] = tuple(v.to(device=device, dtype=dtype) for v in
                                     (self.weights.log(), self.means, self.evals, self.evecs))
        return self._cache[key]

    @staticmethod
    def _scalar_or_column(v, x):
        """alpha/sigma as a float or as a (n, 1, 1) tensor."""
        if isinstance(v, torch.Tensor):
            v = v.to(dtype=x.dtype, device=x.device)
            return v.reshape(-1, 1, 1) if v.ndim == 1 else v
        return float(v)

    def _parts(self, x, alpha, sigma):
        logw, mu, lam, U = self._params(x.dtype, x.device)
        a, s = self._scalar_or_column(alpha, x), self._scalar_or_column(sigma, x)
        diff = x[:, None, :] - a * mu[None] if isinstance(a, torch.Tensor) else x[:, None, :] - mu[None] * a
        y = torch.einsum("nkd,kde->nke", diff, U)          # coordinates in each eigenbasis
        var = lam * (a * a) + s * s                          # (K, d) or (n, K, d)
        logn = -0.5 * ((y * y / var).sum(-1) + torch.log(var).sum(-1) + self.d * math.log(2 * math.pi))
        return logw + logn, y, var, U

    def log_prob(self, x, alpha=1.0, sigma=0.0):
        """log p_t(x), shape (n,), for the marginal with the given alpha_t, sigma_t."""
        logp, *_ = self._parts(x, alpha, sigma)
        return torch.logsumexp(logp, dim=1)

    def score(self, x, alpha=1.0, sigma=0.0):
        """grad_x log p_t(x), shape (n, d)."""
        logp, y, var, U = self._parts(x, alpha, sigma)
        r = torch.softmax(logp, dim=1)
        return -torch.einsum("nke,kde->nd", r[..., None] * y / var, U)

    def sample(self, n, alpha=1.0, sigma=0.0, *, generator=None, dtype=torch.float64, device="cpu"):
        """Exact samples of the marginal with the given alpha_t, sigma_t (float scalars)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.d, generator=generator, dtype=torch.float64)
        std = torch.sqrt(self.evals * alpha**2 + sigma**2)  # (K, d)
        x = self.means[k] * alpha + torch.einsum("nde,ne->nd", self.evecs[k], std[k] * z)
        return x.to(device=device, dtype=dtype)

    def moments(self, alpha=1.0, sigma=0.0):
        """Exact mean (d,) and covariance (d, d) of the marginal."""
        m = self.weights @ self.means * alpha
        cov_k = self.covs * alpha**2 + sigma**2 * torch.eye(self.d, dtype=torch.float64)
        outer = torch.einsum("k,kd,ke->de", self.weights, self.means, self.means) * alpha**2
        return m, torch.einsum("k,kde->de", self.weights, cov_k) + outer - torch.outer(m, m)


class ExactModel(ScoreModel):
    """A ``ScoreModel`` whose network is the exact eps of a Gaussian mixture under ``sde``.

    ``exact_prior=True`` draws x_T from the exact p_T instead of the SDE's Gaussian prior, so
    that prior mismatch is removed from a measurement."""

    def __init__(self, gmm: GaussianMixture, sde, *, name: str, exact_prior: bool = False):
        self.gmm, self.exact_prior = gmm, exact_prior
        # data_std (the ``tan`` grid's c): the mixture's overall std, sqrt(mean per-coordinate variance)
        data_std = float(gmm.moments()[1].diagonal().mean().sqrt())
        super().__init__(self._eps, sde, "eps", shape=(gmm.d,), name=name, data_std=data_std)

    def _schedule(self, t):
        if t.ndim == 1 and t.numel() > 0 and t.stride(0) == 0:  # one time for the batch
            t = t[:1]
        t = t.double()
        return self.sde.alpha(t), self.sde.sigma(t)

    def _eps(self, x, t):
        alpha, sigma = self._schedule(t)
        sig = sigma.to(x.dtype)[:, None]
        return -sig * self.gmm.score(x, alpha, sigma)

    def exact_score(self, x, t):
        return self.gmm.score(x, *self._schedule(torch.as_tensor(t, dtype=torch.float64).reshape(-1)))

    def exact_log_prob(self, x, t):
        """log p_t(x) of the exact marginal at time t."""
        a, s = (float(v) for v in (self.sde.alpha(float(t)), self.sde.sigma(float(t))))
        return self.gmm.log_prob(x, a, s)

    def exact_sample(self, n, t, *, generator=None, dtype=torch.float64, device="cpu"):
        """n exact samples of p_t."""
        a, s = (float(v) for v in (self.sde.alpha(float(t)), self.sde.sigma(float(t))))
        return self.gmm.sample(n, a, s, generator=generator, dtype=dtype, device=device)

    def sample_prior(self, n, *, generator=None, dtype=torch.float32, device="cpu"):
        if self.exact_prior:
            return self.exact_sample(n, self.sde.T, generator=generator, dtype=dtype, device=device)
        return super().sample_prior(n, generator=generator, dtype=dtype, device=device)


def gmm2d() -> GaussianMixture:
    """Two Gaussians in 2-D: unequal weights, one isotropic, one anisotropic (tilted)."""
    return GaussianMixture(weights=[0.3, 0.7],
                           means=[[-1.5, -0.5], [1.0, 1.0]],
                           covs=[[[0.15, 0.0], [0.0, 0.15]], [[0.4, 0.25], [0.25, 0.3]]])


def gmm64(seed: int = 0) -> GaussianMixture:
    """64-D, 8 components, random rotations with eigenvalues log-uniform in [0.05, 1]."""
    g = torch.Generator().manual_seed(seed)
    K, d = 8, 64
    means = 1.5 * torch.randn(K, d, generator=g, dtype=torch.float64) / math.sqrt(d) * 4
    q, _ = torch.linalg.qr(torch.randn(K, d, d, generator=g, dtype=torch.float64))
    lam = torch.exp(torch.empty(K, d, dtype=torch.float64).uniform_(math.log(0.05), 0.0, generator=g))
    covs = torch.einsum("kde,ke,kfe->kdf", q, lam, q)
    w = torch.rand(K, generator=g, dtype=torch.float64) + 0.5
    return GaussianMixture(w / w.sum(), means, covs)


_MIXTURES = {"gmm2d": gmm2d, "gmm64": gmm64}

#: model name -> (mixture factory, SDE class)
MODELS = {f"{m}-{s}": (mf, sc) for m, mf in _MIXTURES.items() for s, sc in SDES.items()}


def available() -> list[str]:
    return sorted(MODELS)


def load(name: str, *, exact_prior: bool = False, **sde_kw) -> ExactModel:
    """Build a named exact model, e.g. ``load("gmm2d-vp")``; ``sde_kw`` go to the SDE."""
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; available: {', '.join(available())}")
    mixture, sde_cls = MODELS[name]
    validate.keywords(f"models.load({name!r})", sde_kw, ["exact_prior", *validate.parameters(sde_cls)])
    return ExactModel(mixture(), sde_cls(**sde_kw), name=name, exact_prior=exact_prior)


# --- trained models (issue 7): the shipped checkpoints load by name here too ----------------------
from bench.zoo import trained as _trained  # noqa: E402  (bench.zoo.trained does not import this module)

_exact_available, _exact_load = available, load
TIMING_ONLY = "cifar10-unet-timing"


def is_exact(name: str) -> bool:
    """Whether ``name`` is an analytic model (exact_sample / exact_log_prob / exact_prior);
    trained models (``bench.zoo.trained``) instead give ``data_sample`` and have no exact p_T."""
    return name in MODELS


def available() -> list[str]:
    return _exact_available() + _trained.available() + [TIMING_ONLY]


def load(name: str, *, exact_prior: bool = False, verify: bool = True, **sde_kw):
    """An exact model (``load("gmm2d-vp")``, ``sde_kw`` go to its SDE) or a trained checkpoint
    (``load("digits-vp")``; its SDE is the one it was trained with, and it has no exact prior;
    ``verify=False`` accepts a card without sha256, with a warning)."""
    if name in MODELS:
        return _exact_load(name, exact_prior=exact_prior, **sde_kw)
    if name in _trained.available():
        if exact_prior:
            raise InputError(f"model {name!r} is a trained model: it has no exact p_T, so exact_prior=True is "
                             "not available (its prior is the SDE's Gaussian)")
        if sde_kw:
            raise InputError(f"model {name!r} is a trained model: its SDE is fixed by its checkpoint; got "
                             f"SDE options {sorted(sde_kw)}")
        return _trained.load(name, verify=verify)
    if name == TIMING_ONLY:  # random-weight DDPM CIFAR-10 U-Net: timing only (bench.zoo.cifar_unet)
        from bench.zoo import cifar_unet
        return cifar_unet.load(**sde_kw)
    raise InputError(f"unknown model {name!r}; available: {', '.join(available())}")
