"""Reference solutions for discretization error, independent of the solvers under test.

- ODE: the probability-flow ODE dx/dt = f x + g^2/(2 sigma) eps solved in float64 by
  torchdiffeq's adaptive dopri8 at tight tolerances (no code shared with ``solvers``' steps).
- SDE: Euler-Maruyama on a fine uniform grid, on the Brownian path the coarse runs use.
"""
from __future__ import annotations

import torch
import torchdiffeq

import solvers

__all__ = ["ode_reference", "sde_reference", "path_kind", "brownian_path_for"]


def ode_reference(model: solvers.ScoreModel, x_T: torch.Tensor, t_end: float | None = None, *,
                  t_start: float | None = None, rtol: float = 1e-11, atol: float = 1e-11) -> torch.Tensor:
    """x(t_end) of the PF-ODE from x(t_start) = x_T (defaults: T -> eps), in float64."""
    sde = model.sde
    t0 = sde.T if t_start is None else t_start
    t1 = sde.eps if t_end is None else t_end
    nfe = model.nfe

    def rhs(t, x):
        t64 = t.double()
        eps = model(x, t.expand(x.shape[0]), "eps", alpha=float(sde.alpha(t64)), sigma=float(sde.sigma(t64)))
        return sde.f(t64) * x + sde.g2(t64) / (2 * sde.sigma(t64)) * eps

    ts = torch.tensor([t0, t1], dtype=torch.float64)
    out = torchdiffeq.odeint(rhs, x_T.double(), ts, method="dopri8", rtol=rtol, atol=atol,
                             options={"step_t": ts})[-1]  # never step past t_end
    model.nfe = nfe  # the reference is not part of any measured call
    return out


def path_kind(cls) -> str:
    """The kind of Brownian path a solver class queries: "counter" (per-sample times),
    "levy" (with space-time Levy area) or "plain"."""
    return "counter" if cls.per_sample_noise else ("levy" if cls.needs_levy else "plain")


def brownian_path_for(cls, sde, shape, *, seed: int, dtype=torch.float64, exact: bool = False):
    """A Brownian path the solver class can use, keyed by ``seed`` (``exact``: fixed by the seed
    alone, whatever is queried; the counter-based path always is)."""
    if cls.per_sample_noise:
        return solvers.CounterBrownianPath.for_sde(sde, shape, seed=seed, dtype=dtype)
    return solvers.BrownianPath.for_sde(sde, shape, seed=seed, dtype=dtype, exact=exact, levy_area=cls.needs_levy)


def sde_reference(model, x_T, brownian, *, steps: int = 4096) -> torch.Tensor:
    """Fine-grid Euler-Maruyama solution on ``brownian`` (a ``solvers.BrownianPath``)."""
    nfe = model.nfe
    out = solvers.sample(model, "euler_maruyama", steps=steps, grid="uniform", x_T=x_T, brownian=brownian).x
    model.nfe = nfe
    return out
