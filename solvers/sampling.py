"""``solvers.sample``: the one entry point, and the only loop over steps."""
from __future__ import annotations

import copy
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from . import validate
from .errors import InputError, NonFiniteError
from .graph import captured
from .grids import canonical, check_times, make_grid
from .model import ScoreModel
from .noise import BrownianPath, NormalStream, StepNoise, corrector_generator, step_generator
from .registry import get

__all__ = ["sample", "Sample", "Call", "prepare", "clear_caches"]


@dataclass
class Sample:
    """Result of ``solvers.sample``.

    x: the samples; nfe: network evaluations actually made (counted by the model);
    times: the float64 grid used; steps: its number of intervals; trajectory: the states at
    every grid time, shape (steps + 1, *x.shape), when requested; options: resolved options;
    stats: what an adaptive solver reports (accepted / rejected steps, ...).
    """

    x: torch.Tensor
    nfe: int
    times: torch.Tensor
    steps: int
    solver: str
    seed: int
    options: dict = field(default_factory=dict)
    trajectory: torch.Tensor | None = None
    stats: dict = field(default_factory=dict)


def _times(model, steps, times, grid, solver_cls):
    sde = model.sde
    if grid is not None and not isinstance(grid, str):  # a solvers.TunedGrid (or any grid of times)
        if times is not None:
            raise InputError("grid is a tuned grid; it cannot be combined with times")
        times, grid = grid, None
    if times is not None:
        if steps is not None and steps != len(times) - 1:
            raise InputError(f"steps={steps} contradicts times with {len(times) - 1} intervals; pass one")
        if grid is not None:
            raise InputError("grid names a built-in grid; it cannot be combined with times")
        return check_times(sde, times)
    if steps is None:
        if solver_cls.adaptive:  # output at eps only; the solver picks its own steps
            return check_times(sde, [sde.T, sde.eps])
        raise InputError("pass steps (number of intervals) or times (a decreasing grid)")
    kind = canonical(grid or solver_cls.default_grid or sde.default_grid)
    extra = {"data_std": getattr(model, "data_std", None)} if kind == "tan" else {}
    if type(steps) is not int or not isinstance(kind, str):  # make_grid says what is wrong
        return make_grid(sde, steps, kind, **extra)
    return _cached(_GRIDS, (sde, steps, kind, *extra.values()), lambda: make_grid(sde, steps, kind, **extra)).clone()


def _initial(model, x_T, n, seed, dtype, device):
    if x_T is None:
        if n is None:
            raise InputError("pass n (number of samples) or x_T (initial state)")
        n = validate.integer(n, "n", low=1)
        gen = torch.Generator().manual_seed(int(seed))
        return model.sample_prior(n, generator=gen, dtype=dtype).to(device)
    if not isinstance(x_T, torch.Tensor) or not x_T.is_floating_point():
        raise InputError("x_T must be a floating-point tensor of shape (batch, *sample_shape)")
    if n is not None and n != x_T.shape[0]:
        raise InputError(f"n={n} contradicts x_T with batch size {x_T.shape[0]}; pass one")
    if x_T.ndim < 2 or (model.shape is not None and tuple(x_T.shape[1:]) != model.shape):
        want = f"(batch, {', '.join(map(str, model.shape))})" if model.shape else "(batch, ...)"
        raise InputError(f"x_T has shape {tuple(x_T.shape)}; model {model.name!r} expects {want}")
    return x_T


# --- grid-only work, once per (model, solver, options, grid, dtype, device) -------------------------
_GRIDS: OrderedDict = OrderedDict()
_PLANS: OrderedDict = OrderedDict()
CACHE_SIZE = 64


def _cached(cache, key, build):
    """An LRU cache of at most CACHE_SIZE entries."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = build()
    if len(cache) > CACHE_SIZE:
        cache.popitem(last=False)
    return value


def clear_caches():
    """Forget cached grids and set-up solvers (e.g. after changing a model's SDE in place)."""
    _GRIDS.clear()
    _PLANS.clear()


def solver_instance(cls, model, times, dtype, device, options):
    """A set-up instance of ``cls`` for one call. ``setup`` (grid-only coefficients) runs once per
    (model, solver, options, grid, dtype, device); each call gets a shallow copy, ``reset``."""
    if cls.adaptive:  # its per-call cost is the solve; nothing worth keeping
        return cls(model, times, dtype=dtype, device=device, **options)
    key = (model, cls, repr(sorted(options.items())), times.numpy().tobytes(), dtype, str(device))
    inst = copy.copy(_cached(_PLANS, key, lambda: cls(model, times, dtype=dtype, device=device, **options)))
    inst.reset()
    return inst


class Call:
    """One validated sampling call: builds its solver instances (with their noise) and runs the loop.

    The loop is the only one: ``loop`` runs every fixed step (``Solver.step``) or the adaptive
    ``integrate``, then the optional final denoising, with no host-device synchronisation; the
    finiteness check of the result is the caller's, outside."""

    def __init__(self, model, cls, options, times, x, seed, brownian):
        self.model, self.cls, self.options, self.times = model, cls, options, times
        self.x, self.seed, self.brownian = x, seed, brownian

    def plan(self):
        """The set-up solver instance of this call (a copy of the cached one), without noise."""
        x = self.x
        return solver_instance(self.cls, self.model, self.times, x.dtype, x.device, self.options)

    def instance(self, noise=None, corrector=None):
        """A fresh instance whose Brownian noise is ``noise`` (default: ``brownian=`` if given,
        else a ``BrownianPath`` for solvers that need one, else ``StepNoise`` keyed by the seed)
        and whose corrector noise is ``corrector`` (default: a stream keyed by the seed)."""
        inst = self.plan()
        if inst.uses_brownian:
            inst.noise = noise if noise is not None else self.default_noise(inst)
        inst.generator = corrector if corrector is not None else self.corrector_stream()
        return inst

    def default_noise(self, inst):
        x, sde, brownian = self.x, self.model.sde, self.brownian
        if brownian is not None:
            if not brownian.matches(x):
                raise InputError(f"brownian path has shape {brownian.shape}, {brownian.dtype} on "
                                 f"{brownian.device}; x_T has {tuple(x.shape)}, {x.dtype} on {x.device}")
            return brownian
        if inst.needs_path:
            return BrownianPath.for_sde(sde, x.shape, seed=self.seed, dtype=x.dtype, device=x.device,
                                        levy_area=inst.needs_levy)
        return StepNoise.for_sde(sde, x.shape, seed=self.seed, dtype=x.dtype, device=x.device)

    def step_stream(self) -> NormalStream:
        """The normals ``StepNoise`` draws by default (for tapes of the same draws)."""
        x = self.x
        return NormalStream(x.shape, step_generator(self.seed, x.device), x.dtype, x.device)

    def corrector_stream(self) -> NormalStream:
        x = self.x
        return NormalStream(x.shape, corrector_generator(self.seed, x.device), x.dtype, x.device)

    def loop(self, inst, x, trajectory=None):
        """The loop over steps, then the final denoising if asked: no host-device synchronisation."""
        if inst.adaptive:
            states = inst.integrate(x)
            if trajectory is not None:
                trajectory.extend(states)
            x = states[-1]
        else:
            step = inst.step
            for i in range(inst.steps):
                x = step(i, x)
                if trajectory is not None:
                    trajectory.append(x)
        if inst.denoise:
            x = inst.eval(x, len(self.times) - 1, "x0")
        return x


def prepare(model: ScoreModel, solver, *, steps=None, times=None, x_T=None, n=None, seed: int = 0,
            grid=None, brownian=None, dtype=torch.float32, device="cpu", **options) -> Call:
    """Validate a call's arguments (as ``sample`` takes them) and return its ``Call``."""
    if not isinstance(model, ScoreModel):
        raise InputError(f"model must be a solvers.ScoreModel, got {type(model).__name__}")
    cls = get(solver)
    cls.resolve_options(options)  # unknown options fail before any work
    times = _times(model, steps, times, grid, cls)
    x = _initial(model, x_T, n, seed, dtype, device)
    return Call(model, cls, options, times, x, seed, brownian)


@contextmanager
def sync_guard(device):
    """Raise on any host-device synchronisation inside the block (CUDA's sync debug mode)."""
    if torch.device(device).type != "cuda":
        raise InputError("sync_debug=True checks CUDA host-device synchronisation; it needs device='cuda'")
    prev = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(prev)


def sample(model: ScoreModel, solver, *, steps: int | None = None, times=None, x_T=None,
           n: int | None = None, seed: int = 0, grid: str | None = None,
           return_trajectory: bool = False, brownian: BrownianPath | None = None,
           dtype=torch.float32, device="cpu", graph: bool = False, sync_debug: bool = False,
           **options) -> Sample:
    """Sample from ``model`` with a registered solver.

    Args:
        model: a ``ScoreModel``.
        solver: a registered name (``solvers.available()``) or a ``Solver`` subclass.
        steps / times: number of grid intervals (with ``grid``: uniform, quadratic, logsnr,
            edm, tan; default the solver's or the SDE's), or an explicit decreasing grid;
            ``grid`` (or ``times``) may also be a ``solvers.TunedGrid``.
        x_T / n: the initial state, or the number of samples to draw from the prior
            (``model.sample_prior``, seeded by ``seed``; in ``dtype`` on ``device``).
        seed: keys the prior draw, the step noise and the corrector noise.
        brownian: a ``BrownianPath`` (or ``CounterBrownianPath``) to draw increments from; pass
            one object to several calls to run them on one Brownian motion (strong error).
            Without it a fixed-step solver draws each step's increment from a generator keyed
            by ``seed`` (``StepNoise``; solvers that need a path get their own ``BrownianPath``).
        return_trajectory: also return the state at every grid time.
        graph: CUDA only, fixed-step solvers: capture the loop once per (model, solver, options,
            grid, shape, dtype, device) as a CUDA graph and replay it (``solvers.graph``); the
            noise is the eager call's, drawn on the device before the replay.
        sync_debug: CUDA only: run the loop under ``torch.cuda.set_sync_debug_mode("error")``, so
            any host-device synchronisation inside it raises (the final finiteness check is outside).
        **options: the solver's options (``solvers.get(name).option_defaults()``).

    The computation runs in x_T's dtype (float64 end to end when x_T is float64). Grid-only
    work (the grid, the solver's ``setup``) is cached between calls (``clear_caches``).
    """
    steps, n, seed, dtype, device = validate.sample_args(steps=steps, n=n, seed=seed, brownian=brownian, dtype=dtype,
                                                         device=device, x_T=x_T, return_trajectory=return_trajectory)
    call = prepare(model, solver, steps=steps, times=times, x_T=x_T, n=n, seed=seed, grid=grid,
                   brownian=brownian, dtype=dtype, device=device, **options)
    x, times, cls = call.x, call.times, call.cls
    nfe0 = model.nfe
    traj = [x] if return_trajectory else None
    cap = captured(call, trajectory=return_trajectory) if graph else None
    inst = call.instance() if cap is None else cap.inst
    with sync_guard(x.device) if sync_debug else nullcontext():  # the loop (or replay) only
        out = call.loop(inst, x, traj) if cap is None else cap.run(call)
    nfe = model.nfe - nfe0
    if not bool(torch.isfinite(out).all()):  # the one synchronisation of the call
        _raise_non_finite(model, x, call.instance, traj, times, out)
    return Sample(x=out, nfe=nfe, times=times, steps=len(times) - 1, solver=cls.name, seed=seed,
                  options=inst.opts, trajectory=torch.stack(traj) if traj is not None else None,
                  stats=dict(getattr(inst, "stats", {})))


def _raise_non_finite(model, x, fresh, traj, times, out):
    """Find the first step whose output is not finite (replaying the call if needed)."""
    nfe = model.nfe
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError("x_T contains NaN or inf")
    try:
        if traj is None:  # replay with a check after every step
            inst, traj, y = fresh(), [x], x
            if inst.adaptive:
                traj.extend(inst.integrate(x))
            else:
                for i in range(inst.steps):
                    y = inst.step(i, y)
                    traj.append(y)
                    if not bool(torch.isfinite(y).all()):
                        break
        for i, y in enumerate(traj[1:]):
            if not bool(torch.isfinite(y).all()):
                frac = 1 - torch.isfinite(y).float().mean().item()
                raise NonFiniteError(
                    f"non-finite values (NaN/inf) appeared at step {i} (t={times[i].item():.6g} -> "
                    f"{times[i + 1].item():.6g}) in {frac:.1%} of entries; check the model "
                    f"{model.name!r} at these times and the step size")
        raise NonFiniteError(f"the final denoising step (t={times[-1].item():.6g}) produced NaN/inf")
    finally:
        model.nfe = nfe
