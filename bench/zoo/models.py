"""The model zoo. Exact models: Gaussian mixtures, whose perturbed marginals are closed-form
under every linear SDE:

    p_0 = sum_k w_k N(mu_k, S_k)   =>   p_t = sum_k w_k N(alpha_t mu_k, alpha_t^2 S_k + sigma_t^2 I)

so the score, log p_t and exact samples of p_t are known at every t. With S_k = U_k diag(l_k) U_k^T
(eigendecomposition, done once), the covariance at t is U_k diag(alpha^2 l_k + sigma^2) U_k^T.

Every model is reached through one registry. ``load(spec)`` takes a registered name
(``available()``) or a model spec (``bench.zoo.specs``: ``diffusers:PATH``,
``denoiser:MODULE:FUNCTION``, ``callable:MODULE:FUNCTION``, ``checkpoint:PATH``). Registered:
``gmm2d-<sde>`` (two Gaussians in 2-D, weights 0.3/0.7, one isotropic and one anisotropic) and
``gmm64-<sde>`` (64-D, 8 anisotropic components) for <sde> in vp, subvp, ve, edm; the shipped
checkpoints (``bench.zoo.trained``); ``cifar10-unet-timing`` (``bench.zoo.cifar_unet``).

Your own: ``register(name, loader)``, where ``loader(**options)`` returns a ``solvers.ScoreModel``
(called at every ``load``; it may return a cached model, which the harness never modifies), or, from
an installed package, the entry-point group ``sdebench.models``::

    [project.entry-points."sdebench.models"]
    my-model = "my_package.models:load_my_model"

(loaded when the name is first used; a name registered in code wins over an entry point).
``fingerprint(spec)`` hashes what a model's outputs depend on, for provenance.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import json
import math
from collections.abc import Callable

import torch

from solvers import SDES, InputError, ScoreModel, validate

from . import specs
from . import trained as _trained

__all__ = ["GaussianMixture", "ExactModel", "MODELS", "load", "available", "register", "unregister", "is_exact",
           "fingerprint", "describe", "TIMING_ONLY", "ENTRY_POINTS"]


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
TIMING_ONLY = "cifar10-unet-timing"
#: the entry-point group of installed packages' models: name = "package.module:loader"
ENTRY_POINTS = "sdebench.models"

_LOADERS: dict[str, Callable[..., ScoreModel]] = {}


def register(name: str, loader: Callable[..., ScoreModel], *, replace: bool = False):
    """Make ``load(name)`` call ``loader(**options)`` (it returns a ``solvers.ScoreModel``); returns
    the loader. A name has no ':' (those are specs) and is registered once unless ``replace``."""
    if not isinstance(name, str) or not name.strip() or name != name.strip() or ":" in name or "?" in name:
        raise InputError(f"a model name must be a non-empty string without ':', '?' or surrounding blanks, "
                         f"got {name!r}")
    if not callable(loader):
        raise InputError(f"register({name!r}, loader): loader must be callable (**options) -> ScoreModel, "
                         f"got {type(loader).__name__}")
    if name in _LOADERS and not replace and _LOADERS[name] is not loader:
        raise InputError(f"a model named {name!r} is already registered; pass replace=True")
    _LOADERS[name] = loader
    return loader


def unregister(name: str) -> None:
    """Remove a registered model (a no-op for an unknown name)."""
    _LOADERS.pop(name, None)


def _entry_points() -> dict:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)}


def available() -> list[str]:
    """Registered model names, then those of installed packages' entry points."""
    return [*_LOADERS, *sorted(set(_entry_points()) - set(_LOADERS))]


def _unknown(name: str) -> InputError:
    return InputError(f"unknown model {name!r}; available: {', '.join(available())}; or a model spec: "
                      f"{', '.join(specs.FORMS)}")


def _loader(name: str) -> Callable[..., ScoreModel]:
    if name in _LOADERS:
        return _LOADERS[name]
    ep = _entry_points().get(name)
    if ep is None:
        raise _unknown(name)
    try:
        loader = ep.load()
    except Exception as e:
        raise InputError(f"model {name!r}: its entry point {ep.value!r} (group {ENTRY_POINTS}) cannot be loaded: "
                         f"{type(e).__name__}: {e}") from None
    return register(name, loader)


def is_exact(name) -> bool:
    """Whether ``name`` is an analytic model (exact_sample / exact_log_prob / exact_prior);
    trained models (``bench.zoo.trained``) instead give ``data_sample`` and have no exact p_T."""
    return isinstance(name, str) and name in MODELS


def load(spec, *, exact_prior: bool = False, verify: bool = True, **options) -> ScoreModel:
    """The model named by ``spec``: a registered name or a model spec (``bench.zoo.specs``).

    An exact mixture takes ``exact_prior`` (x_T from the exact p_T) and its SDE's options
    (``load("gmm2d-vp", beta_max=10)``); a shipped checkpoint ``verify=False`` (accept a card
    without sha256, with a warning); a registered loader the options it declares."""
    s = specs.parse(spec)
    if s.kind != "name":
        if exact_prior:
            raise InputError(f"model {s.text!r}: a model spec has no exact p_T, so exact_prior=True is not available")
        if options or not verify:
            raise InputError(f"model {s.text!r}: a model spec takes its settings in the spec or the suite's table, "
                             f"not {sorted(options) or ['verify']}")
        return s.load()
    name = s.target
    loader = _loader(name)
    kw = dict(options, **({"exact_prior": True} if exact_prior else {}), **({} if verify else {"verify": False}))
    takes = validate.parameters(loader)
    if exact_prior and "exact_prior" not in takes:
        raise InputError(f"model {name!r} is a trained model: it has no exact p_T, so exact_prior=True is not "
                         "available (its prior is the SDE's Gaussian)")
    if not any(p.kind == p.VAR_KEYWORD for p in inspect.signature(loader).parameters.values()):
        validate.keywords(f"models.load({name!r})", kw, takes)
    model = loader(**kw)
    if not isinstance(model, ScoreModel):
        raise InputError(f"model {name!r}: its loader returned {type(model).__name__}, not a solvers.ScoreModel")
    return model


def _load_exact(name: str, *, exact_prior: bool = False, **sde_kw) -> ExactModel:
    mixture, sde_cls = MODELS[name]
    validate.keywords(f"models.load({name!r})", sde_kw, ["exact_prior", *validate.parameters(sde_cls)])
    return ExactModel(mixture(), sde_cls(**sde_kw), name=name, exact_prior=exact_prior)


def _load_trained(name: str, *, verify: bool = True, **sde_kw):
    if sde_kw:
        raise InputError(f"model {name!r} is a trained model: its SDE is fixed by its checkpoint; got SDE options "
                         f"{sorted(sde_kw)}")
    return _trained.load(name, verify=verify)


def _load_timing(**options):
    """The random-weight DDPM CIFAR-10 U-Net: timing only (``bench.zoo.cifar_unet``)."""
    from bench.zoo import cifar_unet

    return cifar_unet.load(**options)


for _name in MODELS:
    register(_name, functools.partial(_load_exact, _name))
for _name in _trained.available():
    register(_name, functools.partial(_load_trained, _name))
register(TIMING_ONLY, _load_timing)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def fingerprint(spec, model: ScoreModel | None = None) -> str:
    """A hash of what the model's outputs depend on: an exact mixture's parameters and SDE, a
    shipped checkpoint's weights sha256 (from its card), a spec's files, module and settings
    (``ModelSpec.fingerprint``); for another registered model, its own ``fingerprint`` attribute
    if it has one, else the weights of its ``nn.Module``s with its SDE and prediction (the
    model is loaded unless given)."""
    s = specs.parse(spec)
    if s.kind != "name":
        return s.fingerprint()
    name = s.target
    if name in MODELS:
        gmm = MODELS[name][0]()
        return _digest(name, *(t.contiguous().numpy().tobytes() for t in (gmm.weights, gmm.means, gmm.covs)))
    model = model if model is not None else load(name)
    card = getattr(model, "card", None)
    if isinstance(model, _trained.TrainedModel) and isinstance(card, dict) and card.get("sha256"):
        return str(card["sha256"])
    own = getattr(model, "fingerprint", None)
    if isinstance(own, str) and own:
        return own
    return _digest(repr(model.sde), model.prediction, model.shape, *specs.module_weights(model))


def describe(spec) -> list[tuple[str, str]]:
    """(field, value) lines saying what the benchmark understood of a model: its spec, class, SDE
    and time range, prediction, sample shape, parameters, ignored settings and fingerprint."""
    s = specs.parse(spec)
    model = load(s)
    sde = model.sde
    net = getattr(model, "net", None)
    params = sum(int(p.numel()) for p in net.parameters()) if isinstance(net, torch.nn.Module) else 0
    rows = [("model", s.text), ("kind", "registered" if s.kind == "name" else s.kind),
            ("class", type(model).__name__), ("sde", repr(sde)),
            ("time range", f"[{float(sde.eps):g}, {float(sde.T):g}]"), ("prediction", model.prediction),
            ("shape", str(tuple(model.shape)) if model.shape else "unknown"),
            ("parameters", f"{params:,}" if params else "none (an analytic model or a plain function)"),
            ("exact target", "yes (exact samples and density)" if is_exact(s.text) else "no")]
    if getattr(model, "ignored", ()):
        rows.append(("ignored", ", ".join(model.ignored)))
    if s.settings:
        rows.append(("settings", json.dumps(s.settings, sort_keys=True)))
    return [*rows, ("fingerprint", fingerprint(s, model))]
