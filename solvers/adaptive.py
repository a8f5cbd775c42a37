"""Adaptive solvers: they choose their own steps from a tolerance.

- ``dopri5``, ``dopri8``, ``bosh3``, ``adaptive_heun``, ``fehlberg2``: torchdiffeq's embedded
  Runge-Kutta pairs on the probability-flow ODE dx/dt = f x + g^2/(2 sigma) eps(x, t), with
  torchdiffeq's mixed tolerance (error <= atol + rtol max(|x0|, |x1|), entrywise) and step
  controller. The whole batch is one ODE system: one step size for all samples, and the error
  norm is the RMS over every entry of the batch (``norm="rms"``, torchdiffeq's default) or the
  largest per-sample RMS (``norm="sample"``: every sample meets the tolerance). Either way a
  sample's result depends on the batch it is solved with.
- ``adaptive_sde``: the adaptive SDE solver of Jolicoeur-Martineau et al. (2021, "Gotta Go
  Fast When Generating Data with Score-Based Models", Algorithm 1) on the reverse SDE, with
  per-sample step sizes and a per-sample Brownian path (``CounterBrownianPath``).

Adaptive solvers return ``None`` from ``expected_nfe``: their NFE is set by the tolerance and the
model, and is counted by the model wrapper (``Sample.nfe``); ``Sample.stats`` holds the
accepted and rejected steps.
"""
from __future__ import annotations

import torch
import torchdiffeq

from . import validate
from .base import Solver
from .errors import InputError, NonFiniteError, StepLimitError
from .noise import CounterBrownianPath
from .options import Option, positive
from .registry import register

__all__ = ["TorchdiffeqODE", "Dopri5", "Dopri8", "Bosh3", "AdaptiveHeun", "Fehlberg2", "AdaptiveSDE",
           "PFODE", "odeint_pf", "check_solve"]


# ----------------------------------------------------------------------------------------------
# the probability-flow ODE as a torchdiffeq right-hand side
# ----------------------------------------------------------------------------------------------

def schedule_at(sde, t: float):
    """(alpha, sigma, f, g^2) at one time t, in float64, as Python floats."""
    tt = torch.tensor(float(t), dtype=torch.float64)
    return (float(sde.alpha(tt)), float(sde.sigma(tt)), float(sde.f(tt)), float(sde.g2(tt)))


class PFODE:
    """dx/dt = f(t) x + g(t)^2 / (2 sigma_t) eps(x, t): one network evaluation per call, through
    the model wrapper (so NFE is counted there). Counts torchdiffeq's accepted and rejected steps
    through its step callbacks."""

    def __init__(self, model):
        self.model, self.sde = model, model.sde
        self.accepted = self.rejected = 0
        self._cache = {}

    def coefs(self, t: float):
        c = self._cache.get(t)
        if c is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            c = self._cache[t] = schedule_at(self.sde, t)
        return c

    def drift(self, t: float, x: torch.Tensor) -> torch.Tensor:
        alpha, sigma, f, g2 = self.coefs(t)
        eps = self.model(x, t, "eps", alpha=alpha, sigma=sigma)
        return torch.add(x * f, eps, alpha=g2 / (2 * sigma))

    def __call__(self, t, x):
        return self.drift(float(t), x)

    # torchdiffeq's step callbacks (RK adaptive solvers call them on every attempted step)
    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt):
        self.rejected += 1


def _sample_norm(y: torch.Tensor) -> torch.Tensor:
    """The largest per-sample RMS: every sample must meet the tolerance."""
    return y.reshape(y.shape[0], -1).pow(2).mean(1).sqrt().max()


NORMS = ("rms", "sample")
METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")


def check_solve(method, rtol, atol, norm, who: str):
    """The arguments of an ``odeint_pf`` solve (``log_likelihood``, ``encode``, ``decode`` check them
    before any work): a torchdiffeq method, tolerances > 0 and a norm."""
    if method not in METHODS:
        raise InputError(f"{who}: unknown solver {method!r}; valid: {', '.join(METHODS)}")
    for k, v in (("rtol", rtol), ("atol", atol)):
        validate.real(v, f"{who}: {k}", low=0.0, low_open=True)
    if norm not in NORMS:
        raise InputError(f"{who}: norm must be one of {NORMS}, got {norm!r}")


def odeint_pf(func, x: torch.Tensor, times: torch.Tensor, *, method: str, rtol: float, atol: float,
              norm: str = "rms", max_num_steps: int = 100_000, who: str = "odeint"):
    """Solve ``func`` (a ``PFODE``-like rhs) through ``times`` (float64, monotone) with torchdiffeq;
    steps land on every time in ``times`` (never past the last one). Returns the states at
    ``times`` (the first is x)."""
    check_solve(method, rtol, atol, norm, who)
    t = times.to(device=x.device, dtype=torch.float64)
    options = {"step_t": t, "max_num_steps": max_num_steps}
    if norm == "sample":
        options["norm"] = _sample_norm
    try:
        return torchdiffeq.odeint(func, x, t, method=method, rtol=rtol, atol=atol, options=options)
    except (AssertionError, RuntimeError) as e:  # torchdiffeq reports non-finite states, dt underflow and
        if "max_num_steps" not in str(e):       # the step limit by assert
            if isinstance(e, AssertionError):
                raise NonFiniteError(f"{who}: torchdiffeq ({method}, rtol={rtol}, atol={atol}) stopped: {e}") from None
            raise
        raise StepLimitError(f"{who}: max_num_steps={max_num_steps} used up before t={float(t[-1]):.6g} "
                             f"({method}, rtol={rtol}, atol={atol}); raise max_num_steps or loosen rtol/atol") from None


# ----------------------------------------------------------------------------------------------
# torchdiffeq's adaptive Runge-Kutta pairs behind the uniform interface
# ----------------------------------------------------------------------------------------------

class TorchdiffeqODE(Solver):
    """Base of the torchdiffeq adaptive ODE solvers (see the module docstring).

    Options: ``rtol``, ``atol`` (> 0; default 1e-5 each, score_sde's ODE sampler), ``norm``
    ("rms" | "sample"), ``max_num_steps`` (per output interval). The grid holds the output
    times (default [T, eps]); every output time is also a step end (torchdiffeq ``step_t``).
    Stats: accepted and rejected steps (torchdiffeq's step callbacks).
    """

    kind = "ode"
    adaptive = True     # tolerance-controlled: no strong_order; ``method_order`` is the pair's order
    method: str = ""
    method_order: int = 0
    #: network evaluations per attempted step; NFE = 2 + nfe_per_attempt x (accepted + rejected)
    nfe_per_attempt: int = 0
    options = {"rtol": positive(1e-5, doc="relative tolerance"), "atol": positive(1e-5, doc="absolute tolerance"),
               "norm": Option("rms", choices=NORMS, doc="error norm: RMS over the batch, or the worst sample's"),
               "max_num_steps": Option(100_000, low=1, doc="steps per output interval before StepLimitError")}

    def integrate(self, x):
        func = PFODE(self.model)
        nfe = self.model.nfe
        ys = odeint_pf(func, x, self.times, method=self.method, rtol=self.rtol, atol=self.atol,
                       norm=self.norm, max_num_steps=self.max_num_steps, who=f"solver {self.name!r}")
        self.stats = {"accepted": func.accepted, "rejected": func.rejected, "nfe": self.model.nfe - nfe}
        return list(ys[1:])


@register
class Dopri5(TorchdiffeqODE):
    """Dormand-Prince 5(4) (torchdiffeq ``dopri5``; MATLAB's ode45, scipy's RK45): order 5 with
    an embedded 4th-order error estimate, FSAL, 6 NFE per attempted step (+2 to start: f(x_T)
    and the first-step probe). score_sde's ODE sampler and likelihood use it (via scipy's RK45)."""

    name = method = "dopri5"
    method_order = 5
    nfe_per_attempt = 6


@register
class Dopri8(TorchdiffeqODE):
    """Dormand-Prince 8(5,3) (torchdiffeq ``dopri8``; Hairer's DOP853 tableau): order 8, 13 NFE
    per attempted step (+2 to start)."""

    name = method = "dopri8"
    method_order = 8
    nfe_per_attempt = 13


@register
class Bosh3(TorchdiffeqODE):
    """Bogacki-Shampine 3(2) (torchdiffeq ``bosh3``; MATLAB's ode23, scipy's RK23): order 3,
    FSAL, 3 NFE per attempted step (+2 to start)."""

    name = method = "bosh3"
    method_order = 3
    nfe_per_attempt = 3


@register
class AdaptiveHeun(TorchdiffeqODE):
    """Heun's method with an embedded Euler error estimate (torchdiffeq ``adaptive_heun``):
    order 2, FSAL, 1 NFE per attempted step (+2 to start)."""

    name = method = "adaptive_heun"
    method_order = 2
    nfe_per_attempt = 1


@register
class Fehlberg2(TorchdiffeqODE):
    """Runge-Kutta-Fehlberg 2(1) (torchdiffeq ``fehlberg2``): order 2 (error estimate of order 1),
    3 stages, FSAL, 2 NFE per attempted step (+2 to start)."""

    name = method = "fehlberg2"
    method_order = 2
    nfe_per_attempt = 2


# ----------------------------------------------------------------------------------------------
# Jolicoeur-Martineau et al. (2021): adaptive EM / improved-Euler on the reverse SDE
# ----------------------------------------------------------------------------------------------

@register
class AdaptiveSDE(Solver):
    """Adaptive SDE solver of Jolicoeur-Martineau et al. (2021, "Gotta Go Fast", Algorithm 1) on
    the reverse SDE dx = [f x - g^2 score] dt + g dw_bar, in time t from T to eps.

    Each attempted step from t to t - h (per sample) makes two network evaluations sharing one
    Brownian increment dW = W(t) - W(t - h):

        x'  = x - h (f_t x + g_t^2/sigma_t eps(x, t)) + g_t dW                        (Euler-Maruyama)
        x~  = x - h (f_s x' + g_s^2/sigma_s eps(x', s)) + g_s dW,  s = t - h
        x'' = (x' + x~) / 2                                                             (improved Euler)
        delta = max(atol, rtol max(|x'|, |x'_prev|))                  (entrywise; x'_prev: last accepted x')
        E = || (x' - x'') / delta ||_2 / sqrt(dim)                     (scaled L2 norm, per sample)

    accept when E <= 1 (x <- x'', t <- t - h: extrapolation with the higher-order value), and
    in either case h <- min(t - t_next, safety h E^-exponent), t_next the next output time.
    Every sample has its own t and h; one iteration evaluates the network twice on the samples
    not yet finished, so NFE = 2 x iterations (``Sample.stats``: iterations, accepted and
    rejected sample-steps, steps per sample).

    Noise: a rejected step is retried on the *same* Brownian path (a shorter piece of it), not
    with fresh noise, so rejections do not bias the noise. The path is a
    ``CounterBrownianPath``: per-sample times, keyed by the seed. When the loop hands this solver
    a ``solvers.BrownianPath`` (torchsde, batch-wide times only) it builds a CounterBrownianPath
    with that path's seed and interval, a *different* Brownian motion; to measure strong error
    against ``euler_maruyama``, pass one ``CounterBrownianPath`` as ``brownian=`` to both.

    Options (paper defaults): ``rtol`` 1e-2 (eps_rel), ``atol`` 0.0078 (eps_abs, ~1/128: for data
    in [-1, 1]), ``h_init`` 0.01, ``safety`` 0.9 (theta), ``exponent`` 0.9 (r), ``max_iters``.
    Strong order 1 for a fixed step (additive noise); error decreases as the tolerance tightens.
    """

    name = "adaptive_sde"
    kind = "sde"
    adaptive = True
    stochastic = uses_brownian = per_sample_noise = needs_path = True
    options = {"rtol": positive(1e-2, doc="relative tolerance (eps_rel)"),
               "atol": positive(0.0078, doc="absolute tolerance (eps_abs)"),
               "h_init": positive(0.01, doc="first step size"),
               "safety": Option(0.9, low=0.0, high=1.0, low_open=True, doc="safety factor theta"),
               "exponent": positive(0.9, doc="step size exponent r"),
               "max_iters": Option(100_000, low=1, doc="iterations before StepLimitError")}

    def brownian(self, x) -> CounterBrownianPath:
        noise = self.noise
        if isinstance(noise, CounterBrownianPath):
            self._path_note = "shared CounterBrownianPath"
            return noise
        t0 = getattr(noise, "t0", self.sde.eps)
        t1 = getattr(noise, "t1", self.sde.T)
        seed = getattr(noise, "seed", 0)
        self._path_note = f"own CounterBrownianPath(seed={seed})"
        return CounterBrownianPath(x.shape, t0=t0, t1=t1, seed=seed, dtype=x.dtype, device=x.device)

    def _coefs(self, t: torch.Tensor, x: torch.Tensor):
        """Per-sample (alpha, sigma, f, g^2 / sigma, g) at float64 times t, as columns in x's dtype."""
        sde = self.sde
        shape = (-1,) + (1,) * (x.ndim - 1)
        alpha, sigma, f, g2 = sde.alpha(t), sde.sigma(t), sde.f(t), sde.g2(t)
        cols = (alpha, sigma, f, g2 / sigma, torch.sqrt(g2.clamp_min(0)))
        return [c.to(x.dtype).reshape(shape) for c in cols]

    def integrate(self, x):
        path = self.brownian(x)
        run = _SDERun(x, self.times.to(device=x.device, dtype=torch.float64), self.h_init, path)
        while True:
            idx = torch.nonzero(run.nxt <= run.n_out).squeeze(1)
            if idx.numel() == 0:
                break
            if run.iters >= self.max_iters:
                raise StepLimitError(f"solver {self.name!r}: max_iters={self.max_iters} reached with "
                                     f"{idx.numel()} samples unfinished (rtol={self.rtol}, atol={self.atol}); "
                                     "loosen the tolerance or raise max_iters")
            run.iters += 1
            self._attempt(run, path, idx)
        steps = run.steps
        self.stats = {"iterations": run.iters, "accepted": int(steps.sum()), "rejected": run.rejected,
                      "mean_steps_per_sample": float(steps.double().mean()),
                      "max_steps_per_sample": int(steps.max()), "brownian": self._path_note}
        return list(run.outs.unbind(0))

    def _attempt(self, run: _SDERun, path, idx: torch.Tensor):
        """One attempted step of the unfinished samples ``idx``: Euler-Maruyama and improved Euler on
        one Brownian increment, the scaled error E, acceptance, and the new step sizes."""
        x = run.x
        col = (-1,) + (1,) * (x.ndim - 1)
        xa, ta, ha, ka = x[idx], run.t[idx], run.h[idx], run.nxt[idx]
        target = run.times[ka]
        to_target = ha >= ta - target
        s = torch.where(to_target, target, ta - ha)           # lands exactly on output times
        ha = ta - s
        Ws = path.value(s, idx)
        x1, x2 = self._pair(xa, ta, s, ha.to(x.dtype).reshape(col), run.W[idx] - Ws)
        xp = run.x_prev[idx]
        delta = torch.maximum(torch.maximum(x1.abs(), xp.abs()) * self.rtol, torch.full_like(x1, self.atol))
        E = ((x1 - x2) / delta).pow(2).sum(run.red).div(run.dim).sqrt().double()    # scaled L2, per sample
        finite = torch.isfinite(E)
        accept = finite & (E <= 1)
        acc_c = accept.reshape(col)
        x[idx] = torch.where(acc_c, x2, xa)
        run.x_prev[idx] = torch.where(acc_c, x1, xp)
        run.W[idx] = torch.where(acc_c, Ws, run.W[idx])
        run.t[idx] = torch.where(accept, s, ta)
        run.steps[idx] += accept.long()
        run.rejected += int((~accept).sum())
        done = accept & to_target
        if bool(done.any()):
            rows = idx[done]
            run.outs[run.nxt[rows] - 1, rows] = x2[done]
            run.nxt[rows] += 1
        # new step size: safety h E^-r (E = 0: as large as allowed; non-finite E: shrink 10x). E^-r as
        # exp(-r log E): torch's vectorised pow rounds the tail of a batch differently from its body on some
        # CPUs (22 of 1000 values by 1 ulp on an AMD EPYC), which made a sample's steps depend on which
        # other samples were still unfinished; exp and log round each element alike
        grow = self.safety * ha * torch.exp(-self.exponent * torch.where(E > 0, E, torch.full_like(E, 1e-300)).log())
        h_new = torch.where(finite, grow, 0.1 * ha)
        if bool((h_new < run.h_floor).any()):
            bad = idx[h_new < run.h_floor][0]
            raise NonFiniteError(f"solver {self.name!r}: step size underflow (h < {run.h_floor:.1e}) for sample "
                                 f"{int(bad)} at t={float(run.t[bad]):.6g}: the model returns NaN/inf there or "
                                 f"the tolerance (rtol={self.rtol}, atol={self.atol}) cannot be met")
        run.h[idx] = h_new

    def _pair(self, xa, ta, s, hc, dW):
        """(x', x''): the Euler-Maruyama step from ta to s and the improved-Euler one, on one increment dW."""
        a1, s1, f1, q1, g1 = self._coefs(ta, xa)
        a2, s2, f2, q2, g2 = self._coefs(s, xa)
        eps1 = self.model(xa, ta.to(xa.dtype), "eps", alpha=a1, sigma=s1)
        x1 = xa - hc * (f1 * xa + q1 * eps1) + g1 * dW                      # Euler-Maruyama
        eps2 = self.model(x1, s.to(xa.dtype), "eps", alpha=a2, sigma=s2)
        x_tilde = xa - hc * (f2 * x1 + q2 * eps2) + g2 * dW
        return x1, 0.5 * (x1 + x_tilde)                                       # improved Euler


class _SDERun:
    """The per-sample state of one ``adaptive_sde`` solve: time, step size, next output time, last
    accepted Euler state, Brownian value, accepted steps; and the outputs."""

    def __init__(self, x: torch.Tensor, times: torch.Tensor, h_init: float, path):
        dev, n = x.device, x.shape[0]
        self.times, self.n_out = times, len(times) - 1
        self.h_floor = 1e-14 * max(float(times[0] - times[-1]), 1.0)
        self.t = times[0].expand(n).clone()
        self.h = torch.full((n,), h_init, dtype=torch.float64, device=dev)
        self.nxt = torch.ones(n, dtype=torch.long, device=dev)          # index of the next output time
        self.x, self.x_prev = x.clone(), x.clone()
        self.W = path.value(self.t)
        self.outs = torch.empty((self.n_out, *x.shape), dtype=x.dtype, device=dev)
        self.steps = torch.zeros(n, dtype=torch.long, device=dev)
        self.rejected = self.iters = 0
        self.red, self.dim = tuple(range(1, x.ndim)), x[0].numel()
