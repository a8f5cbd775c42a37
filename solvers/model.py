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

import time

import torch

from . import validate
from .errors import InputError
from .sde import SDE, DiscreteVP

__all__ = ["ScoreModel", "PREDICTIONS", "AUTOCAST"]

PREDICTIONS = ("eps", "x0", "v", "score")


#: autocast option -> dtype the network runs in
AUTOCAST = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _NetworkRunner:
    """``fn`` compiled and/or under autocast; records compilation time on the owner's ``compile_s``."""

    def __init__(self, net, owner: ScoreModel):
        self.net, self.owner = net, owner
        self.__name__ = getattr(owner, "name", "network")

    def __call__(self, x, t):
        owner = self.owner
        timed = owner.compiled and (x.shape, x.dtype, x.device) not in owner._signatures
        if timed:
            start = time.perf_counter()
        dtype = AUTOCAST[owner.autocast] if x.dtype == torch.float32 else None
        if dtype is None:
            out = self.net(x, t)
        else:
            with torch.autocast(device_type=x.device.type, dtype=dtype):
                out = self.net(x, t)
            out = out.to(x.dtype) if isinstance(out, torch.Tensor) else out
        if timed:
            _sync(x.device)
            owner.compile_s += time.perf_counter() - start
            owner._signatures.add((x.shape, x.dtype, x.device))
        return out


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
        data_std: the data's standard deviation (per coordinate), when known; the ``tan`` grid
            (closed-form optimum for Gaussian data) uses it. None: unknown.
        compile, autocast: how the network runs (``configure``): ``torch.compile`` (compilation
            time kept apart in ``compile_s``) and bf16/fp16 autocast with float32 solver state.
    """

    def __init__(self, fn, sde: SDE, prediction: str = "eps", *, shape=None, name: str | None = None,
                 data_std: float | None = None, compile: bool = False, autocast: str | None = None):
        if not callable(fn):
            raise InputError(f"fn must be callable (x, t) -> tensor, got {type(fn).__name__}")
        if not isinstance(sde, SDE):
            raise InputError(f"sde must be a solvers.SDE instance, got {type(sde).__name__}")
        if prediction not in PREDICTIONS:
            raise InputError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
        shape = validate.shape(shape)
        self.fn, self.sde, self.prediction = fn, sde, prediction
        self.shape = None if shape is None else tuple(int(s) for s in shape)
        self.name: str = name or str(getattr(fn, "__name__", type(fn).__name__))
        self.data_std = None if data_std is None else float(data_std)
        self.nfe = 0
        self.compile_s = 0.0
        self.compiled: bool = False
        self.autocast: str | None = None
        self.configure(compile=compile, autocast=autocast)

    def configure(self, *, compile: bool = False, autocast: str | None = None) -> ScoreModel:
        """How the network runs (the contract of ``fn`` is unchanged; NFE counted as before):

        compile: wrap ``fn`` in ``torch.compile`` (inductor; CPU needs a C compiler). A compiled
            network compiles on its first call at each new input signature (shape, dtype,
            device); those calls' wall time (compilation + one evaluation) is added to
            ``compile_s``, so timings can report it apart. ``warm_compile(x)`` compiles ahead.
        autocast: "bf16" or "fp16": run the network under ``torch.autocast`` in that precision
            for float32 states; its output is cast back to the states' dtype, so the solver's
            state and arithmetic stay float32. float64 states (references) run unchanged.
        """
        if autocast not in AUTOCAST:
            raise InputError(f"autocast must be one of {', '.join(map(repr, AUTOCAST))}, got {autocast!r}")
        if not isinstance(compile, bool):
            raise InputError(f"compile must be True or False, got {compile!r}")
        base = getattr(self, "_base_fn", self.fn)
        self._base_fn = base
        self.compiled, self.autocast = compile, autocast
        self._signatures: set[tuple] = set()
        if not compile and autocast is None:
            self.fn = base
        else:
            net = torch.compile(base) if compile else base
            self.fn = _NetworkRunner(net, self)
        return self

    def warm_compile(self, x: torch.Tensor, t: float | None = None) -> float:
        """Evaluate the network once at (x, t) (default mid-way in time) without counting it in NFE;
        return the seconds it took. For a compiled network this is the compilation (also added
        to ``compile_s``); call it before timing with the batch shape and dtype of the timed calls."""
        t = 0.5 * (self.sde.T + self.sde.eps) if t is None else float(t)
        t_vec = torch.tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        start = time.perf_counter()
        self.fn(x, t_vec)
        _sync(x.device)
        return time.perf_counter() - start

    @classmethod
    def from_discrete(cls, net, betas, prediction: str = "eps", **kw) -> ScoreModel:
        """Adapt a DDPM-style network ``net(x, k)`` trained on discrete steps k = 0..N-1.

        Continuous time t in [1/N, 1] is mapped once to the (fractional) step k = N t - 1
        and the SDE is the piecewise-linear ``DiscreteVP`` of the same betas (the convention
        of Lu et al., DPM-Solver, 2022)."""
        validate.keywords("ScoreModel.from_discrete", kw, ("shape", "name"))
        sde = DiscreteVP(betas)
        model = cls(lambda x, t: net(x, sde.discrete_step(t)), sde, prediction, **kw)
        model.name = kw.get("name") or str(getattr(net, "__name__", type(net).__name__))
        return model

    # ---------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, t, kind: str = "eps", *, alpha=None, sigma=None) -> torch.Tensor:
        """Evaluate the network once at (x, t) and return the ``kind`` prediction.

        ``t`` is a scalar or a (batch,) tensor. Solvers pass ``alpha``/``sigma`` at t as
        Python floats they computed once, in float64, for the whole grid."""
        if not isinstance(t, torch.Tensor) or t.dtype != x.dtype or t.device != x.device:
            t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t_vec = t if t.ndim == 1 else t.expand(x.shape[0])
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
