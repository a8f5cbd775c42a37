"""Reference solutions for discretization error, independent of the solvers under test.

- ODE: the probability-flow ODE dx/dt = f x + g^2/(2 sigma) eps solved in float64 by
  torchdiffeq's adaptive dopri8 at tight tolerances (no code shared with ``solvers``' steps).
  On a discrete-time schedule (``solvers.DiscreteVP``: DDPM betas, log alpha piecewise linear in
  t, so f jumps at each of the N knots) the t-form's right-hand side is discontinuous and dopri8
  rejects steps at every knot (~17,600 network calls per solve at rtol 1e-6 on N = 1000, against
  ~1,000 on the smooth VP schedule). There it is solved in its exponential-integrator form in
  lambda = log(alpha / sigma) (Lu et al. 2022, DPM-Solver, eq. 3.4): y = x / alpha,

      dy/dlambda = -exp(-lambda) eps(alpha_lambda y, t(lambda)),

  whose right-hand side is continuous: alpha, sigma are smooth functions of lambda (alpha^2 =
  sigmoid(2 lambda)); the knots survive only as kinks of the network's time input t(lambda),
  which dopri8 steps over (``ode_reference_nfe`` counts the calls; the reference's own error is
  estimated from two tolerances, ``ode_reference_error``).
- SDE: Euler-Maruyama on a fine uniform grid, on the Brownian path the coarse runs use.
"""
from __future__ import annotations

import torch
import torchdiffeq

import solvers

__all__ = ["ode_reference", "ode_reference_error", "in_lambda", "sde_reference", "path_kind", "brownian_path_for"]


def in_lambda(sde) -> bool:
    """Whether the reference integrates ``sde``'s PF-ODE in lambda: schedules whose f is piecewise
    constant (``solvers.DiscreteVP``); the smooth ones keep the t-form, whose references are cached."""
    return isinstance(sde, solvers.DiscreteVP)


def _dopri8(rhs, y0, s0, s1, rtol, atol):
    ts = torch.tensor([s0, s1], dtype=torch.float64)
    return torchdiffeq.odeint(rhs, y0, ts, method="dopri8", rtol=rtol, atol=atol,
                              options={"step_t": ts})[-1]  # never step past the end


def ode_reference(model: solvers.ScoreModel, x_T: torch.Tensor, t_end: float | None = None, *,
                  t_start: float | None = None, rtol: float = 1e-11, atol: float = 1e-11) -> torch.Tensor:
    """x(t_end) of the PF-ODE from x(t_start) = x_T (defaults: T -> eps), in float64 (in lambda
    on a discrete-time schedule, see the module docstring)."""
    sde = model.sde
    t0 = sde.T if t_start is None else t_start
    t1 = sde.eps if t_end is None else t_end
    nfe = model.nfe

    def eps_at(x, t64):
        t = t64.to(x.dtype)
        return model(x, t.expand(x.shape[0]), "eps", alpha=float(sde.alpha(t64)), sigma=float(sde.sigma(t64)))

    with torch.no_grad():
        if in_lambda(sde):
            def rhs_lam(lam, y):
                t64 = sde.t_of_lam(lam.double())
                return -torch.exp(-lam) * eps_at(sde.alpha(t64) * y, t64)

            l0, l1 = (float(sde.lam(torch.tensor(t, dtype=torch.float64))) for t in (t0, t1))
            y = _dopri8(rhs_lam, x_T.double() / sde.alpha(float(t0)), l0, l1, rtol, atol)
            out = sde.alpha(float(t1)) * y
        else:
            def rhs(t, x):
                t64 = t.double()
                return sde.f(t64) * x + sde.g2(t64) / (2 * sde.sigma(t64)) * eps_at(x, t64)

            out = _dopri8(rhs, x_T.double(), t0, t1, rtol, atol)
    model.nfe = nfe  # the reference is not part of any measured call
    return out


#: the looser of the two tolerances ``ode_reference_error`` compares: this many times the reference's
ERROR_TOL_FACTOR = 10.0


def ode_reference_error(model, x_T, reference: torch.Tensor, *, rtol: float) -> float:
    """The reference's own error, estimated from two tolerances: the median per-sample distance
    (``bench.harness.formulas.per_sample_error``, per sqrt(d)) between ``reference`` (at ``rtol``)
    and the solve at ``ERROR_TOL_FACTOR`` x ``rtol``. It bounds the looser solve's error, so it
    over-states the reference's (dopri8's error falls with the tolerance): a safe floor."""
    from bench.harness.formulas import per_sample_error

    loose = min(ERROR_TOL_FACTOR * rtol, 0.1)
    other = ode_reference(model, x_T, rtol=loose, atol=loose)
    return float(per_sample_error(other, reference).median())


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
