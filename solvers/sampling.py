"""``solvers.sample``: the one entry point, and the only loop over steps."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import InputError, NonFiniteError
from .grids import check_times, make_grid
from .model import ScoreModel
from .noise import BrownianPath, corrector_generator
from .registry import get
from . import validate

__all__ = ["sample", "Sample"]


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


def _times(sde, steps, times, grid, solver_cls):
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
    return make_grid(sde, steps, grid or solver_cls.default_grid)


def _initial(model, x_T, n, seed, dtype, device):
    if x_T is None:
        if n is None:
            raise InputError("pass n (number of samples) or x_T (initial state)")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"n must be a positive integer, got {n!r}")
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


def _run(inst, x, trajectory):
    """The loop over steps: no host-device synchronisation inside."""
    if inst.adaptive:
        states = inst.integrate(x)
        if trajectory is not None:
            trajectory.extend(states)
        return states[-1]
    for i in range(inst.steps):
        x = inst.step(i, x)
        if trajectory is not None:
            trajectory.append(x)
    return x


def sample(model: ScoreModel, solver, *, steps: int | None = None, times=None, x_T=None,
           n: int | None = None, seed: int = 0, grid: str | None = None,
           return_trajectory: bool = False, brownian: BrownianPath | None = None,
           dtype=torch.float32, device="cpu", **options) -> Sample:
    """Sample from ``model`` with a registered solver.

    Args:
        model: a ``ScoreModel``.
        solver: a registered name (``solvers.available()``) or a ``Solver`` subclass.
        steps / times: number of grid intervals (with ``grid``: uniform, quadratic, logsnr,
            edm; default the solver's or the SDE's), or an explicit decreasing grid.
        x_T / n: the initial state, or the number of samples to draw from the prior
            (``model.sample_prior``, seeded by ``seed``; in ``dtype`` on ``device``).
        seed: keys the prior draw, the Brownian path and the corrector noise.
        brownian: a ``BrownianPath`` to draw increments from; pass one object to several
            calls to run them on one Brownian motion (strong error).
        return_trajectory: also return the state at every grid time.
        **options: the solver's options (``solvers.get(name).option_defaults()``).

    The computation runs in x_T's dtype (float64 end to end when x_T is float64).
    """
    if not isinstance(model, ScoreModel):
        raise InputError(f"model must be a solvers.ScoreModel, got {type(model).__name__}")
    steps, n, seed, dtype, device = validate.sample_args(steps=steps, n=n, seed=seed, brownian=brownian, dtype=dtype,
                                                         device=device, x_T=x_T, return_trajectory=return_trajectory)
    cls = get(solver)
    cls.resolve_options(options)  # unknown options fail before any work
    times = _times(model.sde, steps, times, grid, cls)
    x = _initial(model, x_T, n, seed, dtype, device)
    nfe0 = model.nfe

    def fresh():
        inst = cls(model, times, dtype=x.dtype, device=x.device, **options)
        if inst.uses_brownian:
            if brownian is None:
                inst.noise = BrownianPath.for_sde(model.sde, x.shape, seed=seed, dtype=x.dtype, device=x.device,
                                                  levy_area=inst.needs_levy)
            elif not brownian.matches(x):
                raise InputError(f"brownian path has shape {brownian.shape}, {brownian.dtype} on "
                                 f"{brownian.device}; x_T has {tuple(x.shape)}, {x.dtype} on {x.device}")
            else:
                inst.noise = brownian
        inst.generator = corrector_generator(seed, x.device)
        return inst

    inst = fresh()
    traj = [x] if return_trajectory else None
    out = _run(inst, x, traj)
    if inst.denoise:
        last = len(times) - 1
        out = inst.eval(out, last, "x0")
    nfe = model.nfe - nfe0
    if not bool(torch.isfinite(out).all()):  # the one synchronisation of the call
        _raise_non_finite(model, x, fresh, traj, times, out)
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
