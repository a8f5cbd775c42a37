"""Time grids: decreasing float64 tensors T = t_0 > t_1 > ... > t_N = eps.

Built-in grids (``GRIDS``), by the coordinate in which they are uniform:

- ``uniform``   uniform in t (Song et al. 2021).
- ``quadratic`` uniform in sqrt(t) (DDIM's / DPM-Solver's "time_quadratic").
- ``logsnr``    uniform in lambda_t = log(alpha_t / sigma_t) (DPM-Solver's "logSNR").
- ``edm``       uniform in sigma^(1/rho) with sigma = sigma_t / alpha_t = exp(-lambda_t)
                and rho = 7 (Karras et al. 2022, eq. 5); for the EDM SDE sigma = t.
- ``tan``       uniform in arctan(sigma / c): sigma_i = c tan(a_0 + i/N (a_N - a_0)), the
                closed-form optimal schedule for Gaussian data N(0, c^2 I) (Sabour et al. 2024,
                "Align Your Steps", Thm. 3.1); ``data_std=c`` (``sample`` takes it from the
                model's ``data_std``).

Aliases: time_uniform, time_quadratic, logSNR, karras, ays_gaussian.
Any user grid is accepted by ``check_times``: a finite, strictly decreasing 1-D tensor
inside [eps, T] of the SDE, or a tuned grid (``solvers.TunedGrid``, checked against the SDE).
"""
from __future__ import annotations

import torch

from . import validate
from .errors import InputError

__all__ = ["GRIDS", "ALIASES", "make_grid", "check_times", "canonical"]


def _uniform(sde, n, t_max, t_min):
    return torch.linspace(t_max, t_min, n + 1, dtype=torch.float64)


def _quadratic(sde, n, t_max, t_min):
    return torch.linspace(t_max**0.5, t_min**0.5, n + 1, dtype=torch.float64) ** 2


def _logsnr(sde, n, t_max, t_min):
    lam = torch.linspace(float(sde.lam(t_max)), float(sde.lam(t_min)), n + 1, dtype=torch.float64)
    return sde.t_of_lam(lam)


def _edm(sde, n, t_max, t_min, rho=7.0):
    s_max, s_min = float(torch.exp(-sde.lam(t_max))), float(torch.exp(-sde.lam(t_min)))
    ramp = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    sig = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return sde.t_of_lam(-torch.log(sig))


def _tan(sde, n, t_max, t_min, data_std=None):
    if data_std is None:
        raise InputError("grid 'tan' needs data_std (the data's standard deviation c): pass data_std=, or "
                         "use a model that knows it (ScoreModel(..., data_std=c))")
    c = validate.real(data_std, "grid 'tan': data_std", low=0.0, low_open=True)
    a_max, a_min = (float(torch.atan(torch.exp(-sde.lam(t)) / c)) for t in (t_max, t_min))
    sig = c * torch.tan(torch.linspace(a_max, a_min, n + 1, dtype=torch.float64))
    return sde.t_of_lam(-torch.log(sig))


GRIDS = {"uniform": _uniform, "quadratic": _quadratic, "logsnr": _logsnr, "edm": _edm, "tan": _tan}
#: the options each grid takes
GRID_OPTIONS = {"edm": {"rho"}, "tan": {"data_std"}}
#: the names DPM-Solver / UniPC / AYS users know
ALIASES = {"time_uniform": "uniform", "time_quadratic": "quadratic", "logSNR": "logsnr", "karras": "edm",
           "ays_gaussian": "tan"}


def canonical(kind):
    """A grid name with its alias resolved (``logSNR`` -> ``logsnr``)."""
    return ALIASES.get(kind, kind) if isinstance(kind, str) else kind


def make_grid(sde, steps: int, kind: str | None = None, *, t_max=None, t_min=None, **kw) -> torch.Tensor:
    """A built-in grid of ``steps`` intervals from ``t_max`` (default T) to ``t_min`` (default eps).

    The end points are set exactly (inverting lambda may move them by rounding)."""
    steps = validate.integer(steps, "steps", low=1)
    kind = canonical(kind or sde.default_grid)
    if kind not in GRIDS:
        raise InputError(f"unknown grid {kind!r}; valid grids: {', '.join([*GRIDS, *ALIASES])}")
    t_max = sde.T if t_max is None else float(t_max)
    t_min = sde.eps if t_min is None else float(t_min)
    allowed = GRID_OPTIONS.get(kind, set())
    if set(kw) - allowed:
        takes = f"only {', '.join(sorted(allowed))}" if allowed else "no options"
        raise InputError(f"grid {kind!r} takes {takes}, got {sorted(kw)}")
    times = GRIDS[kind](sde, steps, t_max, t_min, **kw)
    times[0], times[-1] = t_max, t_min
    return check_times(sde, times)


def check_times(sde, times) -> torch.Tensor:
    """Validate a user grid and return it as a float64 CPU tensor."""
    if hasattr(times, "times_for"):  # a solvers.TunedGrid: its SDE must be this one
        times = times.times_for(sde)
    try:
        if not isinstance(times, torch.Tensor):  # Python floats are float64: keep every digit
            times = torch.as_tensor(times, dtype=torch.float64)
        times = times.detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"times must be a 1-D sequence of numbers: {e}") from None
    if times.ndim != 1 or times.numel() < 2:
        raise InputError(f"times must be a 1-D tensor with at least 2 entries, got shape {tuple(times.shape)}")
    if not bool(torch.isfinite(times).all()):
        raise InputError("times contains NaN or inf")
    if not bool((times[1:] < times[:-1]).all()):
        k = int(torch.nonzero(times[1:] >= times[:-1])[0])
        raise InputError(f"times must be strictly decreasing (T -> eps); times[{k}]={times[k].item():g} "
                         f"<= times[{k + 1}]={times[k + 1].item():g}")
    tol = 1e-9 * sde.T
    if times[0] > sde.T + tol or times[-1] < sde.eps - tol:
        raise InputError(f"times must lie in [eps, T] = [{sde.eps:g}, {sde.T:g}] of {sde!r}; "
                         f"got [{times[-1].item():g}, {times[0].item():g}]")
    return times
