"""ScoreModel: one contract for any network, whatever it predicts.

A network ``fn(x, t)`` (t a 1-D tensor of shape (batch,)) predicts one of

    eps    the noise:             x = alpha_t x0 + sigma_t eps
    x0     the clean data (a denoiser; Tweedie's E[x0 | x_t])
    v      alpha_t eps - sigma_t x0 (Salimans & Ho 2022)
    score  grad_x log p_t(x) = -eps / sigma_t

and ``ScoreModel`` gives every other form, for the SDE it was trained with. It counts
network evaluations (``nfe``): every solver's NFE is read off this counter, never estimated.
"""
from __future__ import annotations

import torch

from . import validate
from .errors import InputError
from .sde import SDE, DiscreteVP

__all__ = ["ScoreModel", "PREDICTIONS"]

PREDICTIONS = ("eps", "x0", "v", "score")


def _lin(a, x, b, y):
    """a * x + b * y with the fewest kernels when a, b are Python numbers."""
    if isinstance(a, float) and isinstance(b, float):
        return torch.add(x * a, y, alpha=b)
    return a * x + b * y


class ScoreModel:
    """Wrap ``fn(x, t) -> prediction`` trained on ``sde``.

    Args:
        fn: callable (x, t) -> tensor of x's shape; t has shape (batch,) and x's dtype.
        sde: the forward SDE the network was trained with (``solvers.sde``).
        prediction: what ``fn`` predicts: one of ``PREDICTIONS``.
        shape: shape of one sample (without batch); needed to draw x_T from ``n``.
        name: a label for reports.
    """

    def __init__(self, fn, sde: SDE, prediction: str = "eps", *, shape=None, name: str | None = None):
        if not callable(fn):
            raise InputError(f"fn must be callable (x, t) -> tensor, got {type(fn).__name__}")
        if not isinstance(sde, SDE):
            raise InputError(f"sde must be a solvers.SDE instance, got {type(sde).__name__}")
        if prediction not in PREDICTIONS:
            raise InputError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
        shape = validate.shape(shape)
        self.fn, self.sde, self.prediction = fn, sde, prediction
        self.shape = None if shape is None else tuple(int(s) for s in shape)
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.nfe = 0

    @classmethod
    def from_discrete(cls, net, betas, prediction: str = "eps", **kw) -> "ScoreModel":
        """Adapt a DDPM-style network ``net(x, k)`` trained on discrete steps k = 0..N-1.

        Continuous time t in [1/N, 1] is mapped once to the (fractional) step k = N t - 1
        and the SDE is the piecewise-linear ``DiscreteVP`` of the same betas (the convention
        of Lu et al., DPM-Solver, 2022)."""
        validate.keywords("ScoreModel.from_discrete", kw, ("shape", "name"))
        sde = DiscreteVP(betas)
        model = cls(lambda x, t: net(x, sde.discrete_step(t)), sde, prediction, **kw)
        model.name = kw.get("name") or getattr(net, "__name__", type(net).__name__)
        return model

    # ---------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, t, kind: str = "eps", *, alpha=None, sigma=None) -> torch.Tensor:
        """Evaluate the network once at (x, t) and return the ``kind`` prediction.

        ``t`` is a scalar or a (batch,) tensor. Solvers pass ``alpha``/``sigma`` at t as
        Python floats they computed once, in float64, for the whole grid."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t_vec = t.expand(x.shape[0]) if t.ndim == 0 else t
        out = self.fn(x, t_vec)
        self.nfe += 1
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputError(f"model {self.name!r} returned {got} for an input of shape {tuple(x.shape)}; "
                             "it must return a tensor of the input's shape")
        if kind == self.prediction:
            return out
        if alpha is None or sigma is None:
            shape = (-1,) + (1,) * (x.ndim - 1)
            alpha = self.sde.alpha(t_vec.double()).to(x.dtype).reshape(shape)
            sigma = self.sde.sigma(t_vec.double()).to(x.dtype).reshape(shape)
        return self.convert(out, x, alpha, sigma, self.prediction, kind)

    @staticmethod
    def convert(out, x, alpha, sigma, src: str, dst: str) -> torch.Tensor:
        """Convert a ``src`` prediction at (x; alpha, sigma) into a ``dst`` one."""
        if src == dst:
            return out
        for k in (src, dst):
            if k not in PREDICTIONS:
                raise InputError(f"unknown prediction {k!r}; valid: {', '.join(PREDICTIONS)}")
        if src == "x0" and dst == "eps":
            return _lin(1 / sigma, x, -alpha / sigma, out)
        if src == "eps" and dst == "x0":
            return _lin(1 / alpha, x, -sigma / alpha, out)
        # go through eps
        if src == "eps":
            eps = out
        elif src == "x0":
            eps = _lin(1 / sigma, x, -alpha / sigma, out)
        elif src == "score":
            eps = out * -sigma
        else:  # v = alpha eps - sigma x0  =>  eps = (alpha v + sigma x) / (alpha^2 + sigma^2)
            n2 = alpha * alpha + sigma * sigma
            eps = _lin(alpha / n2, out, sigma / n2, x)
        if dst == "eps":
            return eps
        if dst == "score":
            return eps * (-1 / sigma)
        if dst == "x0":
            return _lin(1 / alpha, x, -sigma / alpha, eps)
        n2 = alpha * alpha + sigma * sigma  # v
        return _lin(n2 / alpha, eps, -sigma / alpha, x)

    def eps(self, x, t, **kw):
        return self(x, t, "eps", **kw)

    def x0(self, x, t, **kw):
        return self(x, t, "x0", **kw)

    def score(self, x, t, **kw):
        return self(x, t, "score", **kw)

    def v(self, x, t, **kw):
        return self(x, t, "v", **kw)

    def sample_prior(self, n: int, *, generator=None, dtype=torch.float32, device="cpu") -> torch.Tensor:
        """x_T for ``n`` samples from the SDE's Gaussian prior. Exact models override this."""
        if self.shape is None:
            raise InputError(f"model {self.name!r} has no sample shape: pass x_T, or build the "
                             "ScoreModel with shape=(...)")
        return self.sde.prior_sample((n, *self.shape), generator=generator, dtype=dtype, device=device)

    def __repr__(self):
        return f"ScoreModel({self.name!r}, {self.sde!r}, prediction={self.prediction!r})"
