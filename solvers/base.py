"""The solver contract: a small object with options, metadata and a ``step``.

A solver is instantiated once per sampling call with the model and the time grid. Its
``setup`` computes everything that depends only on the grid (alpha, sigma, lambda, step
coefficients) once, in float64, as Python floats; ``step(i, x)`` advances x from
``times[i]`` to ``times[i+1]`` with the network call plus a few fused tensor updates and
never synchronises with the device. The loop over steps lives in ``solvers.sampling``.

``setup`` runs once per (model, solver, options, grid, dtype, device): the sampling loop keeps
the set-up instance and gives every call a shallow copy on which it calls ``reset``, where
per-call state (histories of network outputs, sub-solvers) is (re)initialised. So ``setup``
must hold grid-only state, and anything a step mutates belongs in ``reset``.

Metadata (class attributes, read by the registry, the tests and the harness):

    name          registry key
    kind          "ode" (probability-flow ODE), "sde" (reverse SDE) or "corrector"
    order         convergence order: the ODE order for deterministic solvers, the strong
                  order for stochastic ones; None where no order is claimed
    weak_order    weak order for stochastic solvers (None if not claimed)
    nfe_per_step  network evaluations per step (``expected_nfe`` gives the exact count)
    stochastic    output is random given x_T (with the default options)
    uses_brownian draws increments from the Brownian path (else only corrector noise)
    needs_levy    also needs the path's space-time Levy area (the default path then has it)
    per_sample_noise  queries the path at per-sample times (a ``CounterBrownianPath``)
    needs_path    queries the Brownian path at times of its own choosing (torchsde's solvers):
                  its default noise is then a ``BrownianPath``; otherwise it queries each step
                  once, in order, and its default noise is the cheaper ``StepNoise``
    adaptive      chooses its own steps: implements ``integrate(x)`` instead of ``step``;
                  the grid then holds the output times (default [T, eps])
    options       {option: default} for this class; merged along the MRO. Each option is
                  also set as an instance attribute, except names of metadata (``order``),
                  which are read from ``self.opts``
    variants      option sets that the registry-driven tests check besides the defaults
                  (e.g. ``({"order": 3},)``); ``declared_order(**options)`` gives the order
                  each should show
    convergence_steps  (optional) the dyadic step counts of the asymptotic range, where a
                  method needs finer steps than the tests' default to show its order
"""

from __future__ import annotations

import math

import torch

from . import validate
from .errors import InputError

__all__ = ["Solver", "Nodes"]


class Nodes:
    """Schedule quantities at a set of times, in float64, as Python floats.

    ``t`` holds the times as a tensor in the sample dtype/device (what the network gets;
    ``tvec(batch)[k]``: time k expanded to the batch, made once per batch size);
    ``alpha``, ``sigma``, ``lam``, ``f``, ``g2`` are lists of floats."""

    def __init__(self, sde, times: torch.Tensor, dtype, device):
        times = times.to("cpu", torch.float64)
        self.times = times.tolist()
        self.alpha = sde.alpha(times).tolist()
        self.sigma = sde.sigma(times).tolist()
        self.lam = sde.lam(times).tolist()
        self.f = sde.f(times).tolist()
        self.g2 = sde.g2(times).tolist()
        self.t = times.to(device=device, dtype=dtype)
        self._tvec = {}

    def tvec(self, batch: int) -> list:
        """The times as (batch,) views (stride 0), one per node; built once per batch size."""
        v = self._tvec.get(batch)
        if v is None:
            v = self._tvec[batch] = [tk.expand(batch) for tk in self.t.unbind()]
        return v

    def __len__(self):
        return len(self.times)

    def ode_coefs(self, k):
        """(f, g^2 / (2 sigma)) at node k: the PF-ODE drift is f x + g^2/(2 sigma) eps."""
        return self.f[k], self.g2[k] / (2 * self.sigma[k])


def _options_of(cls) -> dict:
    merged = {}
    for c in reversed(cls.__mro__):
        merged.update(c.__dict__.get("options", {}))
    return merged


def _check_type(cls_name, key, value, default):
    if default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise InputError(f"solver {cls_name!r}: option {key}={value!r} must be of type "
                         f"{type(default).__name__}")
    return value


_METADATA = {"name", "kind", "order", "weak_order", "nfe_per_step", "stochastic", "uses_brownian",
             "needs_levy", "per_sample_noise", "needs_path", "adaptive", "default_grid", "options", "variants"}


class Solver:
    """Base class of every solver; see the module docstring for the contract."""

    name: str = ""
    kind: str = "ode"
    order: float | None = None
    weak_order: float | None = None
    nfe_per_step: int = 1
    stochastic: bool = False
    uses_brownian: bool = False
    needs_levy: bool = False
    per_sample_noise: bool = False
    needs_path: bool = False
    adaptive: bool = False
    default_grid: str | None = None
    #: denoise: after the last step, return Tweedie's x0 = E[x0 | x_eps] (one more NFE).
    #: Off by default so every solver ends on the same grid point.
    options = {"denoise": False}
    variants: tuple = ()

    def __init__(self, model, times: torch.Tensor, *, dtype=torch.float32, device="cpu", **options):
        self.model, self.sde = model, model.sde
        self.opts = self.resolve_options(options)
        for k, v in self.opts.items():
            if k not in _METADATA:
                setattr(self, k, v)
        self.check()
        self.times = times
        self.steps = len(times) - 1
        self.dtype, self.device = dtype, torch.device(device)
        self.nodes = Nodes(self.sde, times, dtype, self.device)
        self.h = [b - a for a, b in zip(self.nodes.times[:-1], self.nodes.times[1:])]
        self.noise = None       # BrownianPath or StepNoise, set by the loop when uses_brownian
        self.generator = None   # corrector noise (a NormalStream), set by the loop
        self.setup()
        self.reset()

    # --- options ---------------------------------------------------------------------
    @classmethod
    def option_defaults(cls) -> dict:
        return _options_of(cls)

    @classmethod
    def resolve_options(cls, options: dict) -> dict:
        defaults = cls.option_defaults()
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise InputError(f"solver {cls.name!r}: unknown option(s) {', '.join(unknown)}; "
                             f"valid options: {', '.join(sorted(defaults)) or 'none'}")
        return {k: validate.option_value(cls.name, k, _check_type(cls.name, k, options.get(k, d), d))
                for k, d in defaults.items()}

    def check(self):
        """Validate option values (raise InputError naming the option)."""

    def require(self, cond: bool, message: str):
        if not cond:
            raise InputError(f"solver {self.name!r}: {message}")

    @classmethod
    def declared_order(cls, **options):
        """The convergence order these options should show (``order`` unless overridden)."""
        return cls.order

    @classmethod
    def is_stochastic(cls, **options) -> bool:
        """Whether the output is random given x_T with these options."""
        return cls.stochastic

    @classmethod
    def steps_for_nfe(cls, budget: int, **options) -> int:
        """Most steps whose ``expected_nfe`` fits in ``budget`` (0 if none does)."""
        if cls.adaptive:
            raise InputError(f"solver {cls.name!r} is adaptive: its NFE is set by rtol/atol, not by steps; "
                             "sweep the tolerance instead of an NFE budget")
        lo, hi = 0, max(int(budget), 0)  # expected_nfe is increasing in steps: bisect
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if cls.expected_nfe(mid, **options) <= budget else (lo, mid - 1)
        return lo

    @classmethod
    def expected_nfe(cls, steps: int, **options) -> int | None:
        """Network evaluations one call makes on ``steps`` steps with these options (None for
        adaptive solvers: the tolerance sets it, and ``Sample.nfe`` holds the count)."""
        opts = cls.resolve_options(options)
        if cls.adaptive:
            return None
        return cls.nfe_per_step * steps + int(opts["denoise"])

    # --- the step --------------------------------------------------------------------
    def setup(self):
        """Precompute grid-only coefficients (float64 Python floats)."""

    def reset(self):
        """(Re)initialise per-call state; called after ``setup`` and on every cached copy."""

    def step(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Advance x from times[i] to times[i+1]."""
        raise NotImplementedError

    def integrate(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Adaptive solvers: the states at every grid time after the first (len = steps).

        May record ``self.stats`` (accepted/rejected steps ...), returned in ``Sample.stats``."""
        raise NotImplementedError

    def eval(self, x, k: int, kind: str = "eps", nodes: Nodes | None = None):
        """One network evaluation at grid node k (or at node k of ``nodes``)."""
        nd = self.nodes if nodes is None else nodes
        return self.model(x, nd.tvec(x.shape[0])[k], kind, alpha=nd.alpha[k], sigma=nd.sigma[k])

    def brownian_normal(self, i: int) -> torch.Tensor:
        """Standard normal from the Brownian increment over step i (shared across grids)."""
        t_hi, t_lo = self.nodes.times[i], self.nodes.times[i + 1]
        return self.noise.normal(t_hi, t_lo)

    def brownian_increment(self, i: int) -> torch.Tensor:
        t_hi, t_lo = self.nodes.times[i], self.nodes.times[i + 1]
        return self.noise.increment(t_hi, t_lo)

    def randn(self, x) -> torch.Tensor:
        """Corrector noise of x's shape (independent of the Brownian path)."""
        g = self.generator
        if isinstance(g, torch.Generator):
            return torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device)
        return g.draw()

    @staticmethod
    def sqrt(v: float) -> float:
        return math.sqrt(max(v, 0.0))
