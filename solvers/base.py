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
    strong_order  order of pathwise convergence with the default options: the error of the output
                  against the exact solution from the same x_T (and, for an SDE, the same Brownian
                  path) is O(h^p); for a deterministic solver its ODE order. None where no order is
                  claimed. ``declared_order(**options)`` gives it for other options. (``order`` is
                  its former name: still read on a solver class and accepted in a class body.)
    weak_order    weak order of a stochastic solver: |E phi(x_out) - E phi(x_exact)| = O(h^q) for
                  smooth phi; None where none is claimed. The registry-driven weak test
                  (tests/test_convergence.py) fits it for every stochastic case that declares one.
                  Declared: 1 for euler_maruyama, reverse_diffusion, ancestral, ddim (eta > 0) and
                  torchsde_euler/milstein (Euler-Maruyama's weak order, Kloeden & Platen 1992,
                  Ch. 14); 2 for dpmpp_2m_sde and dpmpp_3m_sde (measured: 2.18 and 2.17). None, as
                  measured by the same test on gmm2d-vp: edm_stochastic (S_churn 40: errors level
                  off at 0.03 from 64 steps, churn's gamma = S_churn / N changes the limit with N),
                  torchsde_srk (slope 0.40 over 16..128), pc with Langevin (0.18: the corrector's
                  bias depends on snr, not on the step).
    noise_option  the option whose value switches the noise on (> 0) or off (0): ddim's ``eta``,
                  edm_stochastic's ``S_churn``, dpmpp_2m_sde's ``eta``; None for the others. With it,
                  ``is_stochastic``, ``uses_brownian`` and ``declared_order`` follow its value
    deterministic_order  with a ``noise_option``: the order with the noise off (None: none claimed)
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
    multistep     reuses the network outputs of earlier steps (its history lives on the instance)
    options       {name: Option(default, low=, high=, choices=, ...)} (``solvers.options``): each
                  option's type, allowed values and default, merged along the MRO and checked in
                  one place (``validate.option_value``); a plain default declares an option of its
                  type. Rules between options go in the classmethod ``check_options``. Every option
                  is also an instance attribute (its name may not hide metadata or a method)
    variants      option sets that the registry-driven tests check besides the defaults
                  (e.g. ``({"order": 3},)``); ``declared_order(**options)`` gives the order
                  each should show
    convergence_steps  (optional) the dyadic step counts of the asymptotic range, where a
                  method needs finer steps than the tests' default to show its order
"""

from __future__ import annotations

import math
from typing import Any

import torch

from . import validate
from .errors import InputError
from .options import Option, declared

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
        self._tvec: dict[int, list[torch.Tensor]] = {}

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


class _SolverType(type):
    """Keeps ``order``, the former name of ``strong_order``, working on solver classes: read on the
    class (``solvers.get("heun").order``) and accepted in a class body (``name, order = "mine", 2``).
    Instances do not see it, so an option may be named ``order``."""

    strong_order: float | None  # (declared for the type checker: every solver class has it)

    def __new__(mcs, name, bases, namespace, **kw):
        if "order" in namespace:
            namespace["strong_order"] = namespace.pop("order")
        return super().__new__(mcs, name, bases, namespace, **kw)

    @property
    def order(cls) -> float | None:
        return cls.strong_order


class Solver(metaclass=_SolverType):
    """Base class of every solver; see the module docstring for the contract."""

    name: str = ""
    kind: str = "ode"
    strong_order: float | None = None
    weak_order: float | None = None
    noise_option: str | None = None
    deterministic_order: float | None = None
    nfe_per_step: int = 1
    stochastic: bool = False
    uses_brownian: bool = False
    needs_levy: bool = False
    per_sample_noise: bool = False
    needs_path: bool = False
    adaptive: bool = False
    multistep: bool = False
    default_grid: str | None = None
    options: dict[str, Any] = {
        "denoise": Option(False, doc="after the last step, return Tweedie's x0 = E[x0 | x_eps] (one more NFE); "
                                     "off by default so every solver ends on the same grid point")}
    variants: tuple = ()
    #: what an adaptive solver reports of its last call (accepted / rejected steps, ...): ``Sample.stats``
    stats: dict[str, Any]

    def __init__(self, model, times: torch.Tensor, *, dtype=torch.float32, device="cpu", **options):
        self.model, self.sde = model, model.sde
        self.opts = self.resolve_options(options)
        for k, v in self.opts.items():
            setattr(self, k, v)
        if self.noise_option is not None:
            self.stochastic = self.uses_brownian = self.opts[self.noise_option] > 0
        self.times = times
        self.steps = len(times) - 1
        self.dtype, self.device = dtype, torch.device(device)
        self.nodes = Nodes(self.sde, times, dtype, self.device)
        self.h = [b - a for a, b in zip(self.nodes.times[:-1], self.nodes.times[1:])]
        self.noise: Any = None       # BrownianPath, CounterBrownianPath or StepNoise, set by the loop
        self.generator: Any = None   # corrector noise (a NormalStream or torch.Generator), set by the loop
        self.setup()
        self.reset()

    def __getattr__(self, name: str) -> Any:
        # reached only when an attribute is missing; it tells the type checker that the options,
        # set above from the declarations, are attributes (as typeshed's argparse.Namespace does)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # --- options ---------------------------------------------------------------------
    @classmethod
    def option_specs(cls) -> dict[str, Option]:
        """{name: Option}: this class's option declarations, merged along the MRO."""
        return declared(cls)

    @classmethod
    def option_defaults(cls) -> dict:
        return {k: spec.default for k, spec in cls.option_specs().items()}

    @classmethod
    def resolve_options(cls, options: dict) -> dict:
        """Every option's value (given, else its default), checked against its declaration, then
        the rules between options (``check_options``)."""
        specs = cls.option_specs()
        unknown = sorted(set(options) - set(specs))
        if unknown:
            raise InputError(f"solver {cls.name!r}: unknown option(s) {', '.join(unknown)}; "
                             f"valid options: {', '.join(sorted(specs)) or 'none'}")
        opts = {k: validate.option_value(cls.name, k, options.get(k, spec.default), spec) for k, spec in specs.items()}
        cls.check_options(opts)
        return opts

    @classmethod
    def check_options(cls, opts: dict) -> None:
        """Rules between option values that no single ``Option`` declares (e.g. r1 < r2); ``opts``
        holds every option, each already checked. Raise with ``require``."""

    @classmethod
    def require(cls, cond: bool, message: str):
        if not cond:
            raise InputError(f"solver {cls.name!r}: {message}")

    @classmethod
    def declared_order(cls, **options):
        """The convergence order these options should show: ``strong_order``; with a
        ``noise_option``, ``deterministic_order`` with the noise off and None with it on."""
        opts = cls.resolve_options(options)
        if cls.noise_option is None:
            return cls.strong_order
        return None if opts[cls.noise_option] > 0 else cls.deterministic_order

    @classmethod
    def is_stochastic(cls, **options) -> bool:
        """Whether the output is random given x_T with these options."""
        opts = cls.resolve_options(options)
        return cls.stochastic if cls.noise_option is None else opts[cls.noise_option] > 0

    @classmethod
    def steps_for_nfe(cls, budget: int, **options) -> int:
        """Most steps whose ``expected_nfe`` fits in ``budget`` (0 if none does)."""
        if cls.adaptive:
            raise InputError(f"solver {cls.name!r} is adaptive: its NFE is set by rtol/atol, not by steps; "
                             "sweep the tolerance instead of an NFE budget")
        lo, hi = 0, max(int(budget), 0)  # expected_nfe is increasing in steps: bisect
        while lo < hi:
            mid = (lo + hi + 1) // 2
            nfe = cls.expected_nfe(mid, **options)
            lo, hi = (mid, hi) if nfe is not None and nfe <= budget else (lo, mid - 1)
        return lo

    @classmethod
    def expected_nfe(cls, steps: int, **options) -> int | None:
        """Network evaluations one call makes on ``steps`` steps with these options (None for
        adaptive solvers: the tolerance sets it, and ``Sample.nfe`` holds the count)."""
        opts = cls.resolve_options(options)
        if cls.adaptive:
            return None
        return cls.nfe_of_steps(steps, opts) + int(opts["denoise"])

    @classmethod
    def nfe_of_steps(cls, steps: int, opts: dict) -> int:
        """Network evaluations of ``steps`` steps with the resolved options ``opts``, without the
        final denoising (what a solver whose count is not ``nfe_per_step`` x steps overrides)."""
        return cls.nfe_per_step * steps

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
        return self._noise().normal(t_hi, t_lo)

    def brownian_increment(self, i: int) -> torch.Tensor:
        t_hi, t_lo = self.nodes.times[i], self.nodes.times[i + 1]
        return self._noise().increment(t_hi, t_lo)

    def _noise(self):
        if self.noise is None:
            raise InputError(f"solver {self.name!r} draws Brownian increments but has no noise source: "
                             "declare uses_brownian = True (the loop then gives it one)")
        return self.noise

    def randn(self, x) -> torch.Tensor:
        """Corrector noise of x's shape (independent of the Brownian path)."""
        g = self.generator
        if isinstance(g, torch.Generator):
            return torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device)
        return g.draw()

    @staticmethod
    def sqrt(v: float) -> float:
        return math.sqrt(max(v, 0.0))
