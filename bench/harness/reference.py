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
- SDE: Euler-Maruyama on the solver's own grid refined 2^m-fold (``reference_grid``), on the
  Brownian path the coarse runs use, with its own error estimated from the same path at half the
  refinement (``sde_reference_pair``).

Why the solver's own grid: a grid uniform in t with N steps has step (T - eps) / N everywhere,
which on EDM (sigma = t, 0.002..80) is 0.039 at N = 2048, larger than sigma itself near eps,
where the solvers' grids are fine: every solver then converges to the reference's own error.
Refining the solver's grid puts the reference's steps where the solver's are. A built-in grid is
t = G(i / N) for a fixed map G (``solvers.grids``), so G at N 2^m steps holds every point of G at
N steps: one reference serves every step count N 2^k of the same grid (5, 10, 20 share one, as do
16, 32, ..., 512). A grid of given times (a tuned grid) has each interval split into 2^m equal
sub-steps. 2^m is the smallest power of two >= ``REFINE_MIN`` with N 2^m >= ``sde_steps``.

The reference's own error: Euler-Maruyama has strong order 1 on these SDEs (their noise is
additive: the diffusion g(t) does not depend on x), so for the reference X_M and its half
refinement X_{M/2} on the same path, X_{M/2} - X = 2 e, X_M - X = e + o(e), and
|X_{M/2} - X_M| estimates the reference's error e; the discretization metric stores its median
as the floor of a stochastic cell (as the ODE reference's 10 x rtol is a deterministic one's).
"""
from __future__ import annotations

import hashlib

import torch
import torchdiffeq

import solvers

__all__ = ["ode_reference", "ode_reference_error", "in_lambda", "sde_reference", "sde_reference_pair",
           "reference_grid", "refinement", "path_kind", "brownian_path_for", "REFINE_MIN"]

#: the SDE reference refines the solver's grid at least this many times (its step is 1/4 of the solver's)
REFINE_MIN = 4


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


def sde_reference(model, x_T, brownian, *, steps: int = 4096, times: torch.Tensor | None = None) -> torch.Tensor:
    """Euler-Maruyama solution on ``brownian`` (a ``solvers.BrownianPath``): on ``times`` when given
    (a ``reference_grid``), else on a uniform grid of ``steps`` steps."""
    nfe = model.nfe
    grid = {"times": times} if times is not None else {"steps": steps, "grid": "uniform"}
    out = solvers.sample(model, "euler_maruyama", **grid, x_T=x_T, brownian=brownian).x
    model.nfe = nfe
    return out


def refinement(steps: int, sde_steps: int) -> int:
    """2^m: the smallest power of two >= ``REFINE_MIN`` with steps x 2^m >= ``sde_steps``."""
    r = REFINE_MIN
    while steps * r < sde_steps:
        r *= 2
    return r


def _subdivide(times: torch.Tensor, r: int) -> torch.Tensor:
    """Each interval of ``times`` split into ``r`` equal sub-steps (the end points kept exactly)."""
    frac = torch.arange(r, dtype=torch.float64) / r
    inner = times[:-1, None] + (times[1:] - times[:-1])[:, None] * frac
    return torch.cat([inner.flatten(), times[-1:]])


def reference_grid(sde, cls, *, steps: int | None, sde_steps: int, grid: str | None = None, times=None,
                   data_std: float | None = None) -> dict:
    """The SDE reference's grid for a solver class run with ``steps`` x ``grid`` (or ``times``):
    {"id": what names it (the grid's kind, or a hash of the given times), "fine": its times,
    "half": the same at half the refinement, "refine": 2^m}. A solver without a grid (adaptive)
    gets a uniform grid of ``sde_steps`` steps."""
    if times is not None:
        t = solvers.check_times(sde, times)
        r = refinement(len(t) - 1, sde_steps)
        digest = hashlib.sha1(t.numpy().tobytes()).hexdigest()[:16]
        return {"id": f"times:{digest}", "fine": _subdivide(t, r), "half": _subdivide(t, r // 2), "refine": r}
    if steps is None:
        fine = solvers.make_grid(sde, sde_steps, "uniform")
        return {"id": "uniform", "fine": fine, "half": solvers.make_grid(sde, sde_steps // 2, "uniform"), "refine": 0}
    kind = solvers.grids.canonical(grid or cls.default_grid or sde.default_grid)
    extra = {"data_std": data_std} if kind == "tan" else {}
    r = refinement(int(steps), sde_steps)
    return {"id": kind, "fine": solvers.make_grid(sde, steps * r, kind, **extra),
            "half": solvers.make_grid(sde, steps * r // 2, kind, **extra), "refine": r}


def sde_reference_pair(model, x_T, brownian, ref_grid: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference, the same at half the refinement) on ``brownian``: Euler-Maruyama on
    ``ref_grid``'s "fine" times, and on every other one of them (its "half" times) in the same pass,
    whose increments are sums of two fine ones (so the path is queried once per fine step).
    Written here, not with ``solvers``' steps:

        x_{k+1} = x_k + h (f(t_k) x_k + g^2(t_k) / sigma(t_k) eps(x_k, t_k)) + g(t_k) dW_k,  h = t_{k+1} - t_k < 0.
    """
    fine, half = ref_grid["fine"], ref_grid["half"]
    if len(fine) != 2 * len(half) - 1 or not torch.allclose(fine[::2], half, rtol=1e-12, atol=0):
        return (sde_reference(model, x_T, brownian, times=fine), sde_reference(model, x_T, brownian, times=half))
    sde, nfe = model.sde, model.nfe
    x_f, x_h = x_T.double().clone(), x_T.double().clone()
    n = x_T.shape[0]

    def drift(x, t):
        t64 = torch.tensor(t, dtype=torch.float64)
        eps = model(x, t64.expand(n), "eps", alpha=float(sde.alpha(t64)), sigma=float(sde.sigma(t64)))
        return float(sde.f(t64)) * x + float(sde.g2(t64) / sde.sigma(t64)) * eps, float(sde.g2(t64)) ** 0.5

    ts = [float(t) for t in fine]
    dw_pair = None
    for k in range(len(ts) - 1):
        t, s = ts[k], ts[k + 1]
        dw = brownian.increment(t, s).double()
        a, g = drift(x_f, t)
        x_f = x_f + (s - t) * a + g * dw
        if k % 2 == 0:
            dw_pair = dw
        else:
            a, g = drift(x_h, ts[k - 1])
            x_h = x_h + (s - ts[k - 1]) * a + g * (dw_pair + dw)
    model.nfe = nfe
    return x_f, x_h
