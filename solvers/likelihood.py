"""Exact likelihoods, encoding and decoding through the probability-flow ODE.

The PF-ODE dx/dt = v(x, t) = f(t) x + g(t)^2 / (2 sigma_t) eps(x, t) is a deterministic, invertible
flow with the marginals p_t of the SDE, so by the instantaneous change of variables (Chen et al.
2018; Song et al. 2021, Sec. D.2), integrating from t0 (default eps) to t1 (default T):

    log p_t0(x) = log p_t1(x(t1)) + integral_t0^t1 div_x v(x(t), t) dt,
    div_x v = f(t) dim + g(t)^2 / (2 sigma_t) tr(d eps / d x).

The trace is computed exactly (one vector-Jacobian product per dimension, batched; dimension
limit ``EXACT_TRACE_MAX_DIM``) or by Hutchinson's estimator with K probes v fixed over the
solve (FFJORD, Grathwohl et al. 2019): tr(J) ~ mean_k v_k^T J v_k, unbiased for Rademacher or
Gaussian v; the f(t) dim part is exact in both. Everything is computed in float64 by default
with torchdiffeq's adaptive solvers (``solvers.adaptive.METHODS``); NFE (forward network
evaluations) is counted by the model wrapper; the vector-Jacobian products are backward passes
through those same evaluations and are reported separately (``stats["vjp"]``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import validate
from .adaptive import PFODE, check_solve, odeint_pf
from .errors import InputError, NonFiniteError
from .model import ScoreModel

__all__ = ["log_likelihood", "encode", "decode", "Likelihood", "EXACT_TRACE_MAX_DIM"]

#: the largest dimension for trace="exact" (dim VJPs per evaluation); above it use "hutchinson"
EXACT_TRACE_MAX_DIM = 512
TRACES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


@dataclass
class Likelihood:
    """Result of ``log_likelihood``.

    logp: (n,) log p_t0(x) in nats per sample (for Hutchinson: the mean over probes);
    prior_logp: (n,) log p_t1(z) under the prior; delta_logp: (n,) the integral of the divergence
    (logp = prior_logp + delta_logp); z: the latent x(t1); t0, t1: the interval integrated;
    dim: dimensions per sample; nfe: network evaluations made; trace, probes, probe: the
    trace estimator; stderr: (n,) standard error of the Hutchinson estimate (std over probes /
    sqrt(probes); NaN with one probe; None for the exact trace); logp_probes: (n, probes)
    per-probe estimates (Hutchinson); bin_width: grid spacing of discrete data (see ``bpd``);
    stats: accepted/rejected steps, vjp count.
    """

    logp: torch.Tensor
    prior_logp: torch.Tensor
    delta_logp: torch.Tensor
    z: torch.Tensor
    t0: float
    t1: float
    dim: int
    nfe: int
    trace: str
    probes: int = 0
    probe: str | None = None
    stderr: torch.Tensor | None = None
    logp_probes: torch.Tensor | None = None
    bin_width: float | None = None
    stats: dict = field(default_factory=dict)

    @property
    def bpd(self) -> torch.Tensor:
        """Bits per dimension, (n,): -logp / (dim ln 2) + log2(1 / bin_width).

        For data on a discrete grid of spacing ``bin_width`` (in the model's data units: 8-bit
        images scaled to [0, 1] have 1/256, offset 8 bits; scaled to [-1, 1], 2/256, offset 7 bits)
        evaluated at uniformly dequantized points x + u, u ~ U[0, bin_width)^dim, this is an upper
        bound on the discrete model's bits per dimension (Theis et al. 2016). Without
        ``bin_width`` no offset is added (continuous bits per dimension)."""
        offset = 0.0 if self.bin_width is None else -math.log2(self.bin_width)
        return -self.logp / (self.dim * math.log(2)) + offset

    @property
    def bpd_offset(self) -> float:
        return 0.0 if self.bin_width is None else -math.log2(self.bin_width)


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------

def _check_x(model, x, who, what="x"):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InputError(f"{who}: {what} must be a floating-point tensor of shape (batch, *sample_shape)")
    if x.ndim < 2 or x.shape[0] < 1 or (model.shape is not None and tuple(x.shape[1:]) != model.shape):
        want = f"(batch, {', '.join(map(str, model.shape))})" if model.shape else "(batch, ...)"
        raise InputError(f"{who}: {what} has shape {tuple(x.shape)}; model {model.name!r} expects {want}")
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{who}: {what} contains NaN or inf")


def _check_flow(who, model, x, *, what="x", options, valid, solver, rtol, atol, norm, dtype, t0, t1):
    """The checks ``log_likelihood``, ``encode`` and ``decode`` share; returns the interval (t0, t1)."""
    if options:
        raise InputError(f"{who}: unknown option(s) {', '.join(sorted(options))}; valid options: "
                         f"{', '.join(sorted(valid))}")
    if not isinstance(model, ScoreModel):
        raise InputError(f"{who}: model must be a solvers.ScoreModel, got {type(model).__name__}")
    _check_x(model, x, who, what)
    check_solve(solver, rtol, atol, norm, who)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputError(f"{who}: dtype must be a floating-point torch.dtype, got {dtype!r}")
    sde = model.sde
    t0 = validate.real(sde.eps if t0 is None else t0, f"{who}: t0")
    t1 = validate.real(sde.T if t1 is None else t1, f"{who}: t1")
    if not (sde.eps <= t0 < t1 <= sde.T):
        raise InputError(f"{who}: need eps <= t0 < t1 <= T = [{sde.eps}, {sde.T}], got t0={t0}, t1={t1}")
    return t0, t1


def _check_estimator(who, trace, probe, dim, prior, bin_width):
    if trace not in TRACES:
        raise InputError(f"{who}: trace must be one of {TRACES}, got {trace!r}")
    if trace == "exact" and dim > EXACT_TRACE_MAX_DIM:
        raise InputError(f"{who}: trace='exact' needs {dim} vector-Jacobian products per evaluation at dimension "
                         f"{dim} (limit {EXACT_TRACE_MAX_DIM}); use trace='hutchinson' with probes=K")
    if probe not in PROBES:
        raise InputError(f"{who}: probe must be one of {PROBES}, got {probe!r}")
    if prior is not None and not callable(prior):
        raise InputError(f"{who}: prior must be a callable z -> (batch,) log-density or None, got "
                         f"{type(prior).__name__}")
    if bin_width is not None:
        validate.real(bin_width, f"{who}: bin_width", low=0.0, low_open=True,
                      hint="e.g. 2/256 for 8-bit data in [-1, 1]")


# ----------------------------------------------------------------------------------------------
# the augmented ODE: (x, log-density change)
# ----------------------------------------------------------------------------------------------

class _Augmented(PFODE):
    """d/dt [x, l] = [v(x, t), div v(x, t)] with the state flattened to (n, dim + k)."""

    def __init__(self, model, shape, probes: torch.Tensor | None, chunk: int):
        super().__init__(model)
        self.shape, self.v, self.chunk = tuple(shape), probes, chunk
        self.dim = math.prod(self.shape[1:])
        self.vjp = 0

    def _vjps(self, eps, x, dirs):
        """(k, *x.shape) vector-Jacobian products dirs_k^T d eps / d x, one backward pass each
        (measured faster than a vmapped batch of backward passes on CPU for these models)."""
        self.vjp += dirs.shape[0]
        return torch.stack([torch.autograd.grad(eps, x, d, retain_graph=True)[0] for d in dirs])

    def __call__(self, t, y):
        t = float(t)
        alpha, sigma, f, g2 = self.coefs(t)
        c = g2 / (2 * sigma)
        n, dim = y.shape[0], self.dim
        with torch.enable_grad():
            x = y[:, :dim].detach().reshape(self.shape).requires_grad_(True)
            eps = self.model(x, t, "eps", alpha=alpha, sigma=sigma)
            if self.v is None:  # exact trace: sum_j e_j^T (d eps / d x) e_j, in chunks of directions
                eye = torch.eye(dim, dtype=x.dtype, device=x.device)
                tr = x.new_zeros(n)
                for j in range(0, dim, self.chunk):
                    e = eye[j:j + self.chunk]                              # (k, dim)
                    dirs = e[:, None, :].expand(e.shape[0], n, dim).reshape(e.shape[0], *self.shape)
                    g = self._vjps(eps, x, dirs).reshape(e.shape[0], n, dim)
                    tr = tr + torch.diagonal(g[:, :, j:j + self.chunk], dim1=0, dim2=2).sum(-1)
                div = (f * dim + c * tr).unsqueeze(1)                       # (n, 1)
            else:  # Hutchinson: v_k^T (d eps / d x) v_k for each probe
                g = self._vjps(eps, x, self.v)                               # (K, n, ...)
                est = (g * self.v).reshape(self.v.shape[0], n, dim).sum(-1)  # (K, n)
                div = f * dim + c * est.T                                    # (n, K)
        dx = torch.add(x.detach() * f, eps.detach(), alpha=c).reshape(n, dim)
        return torch.cat([dx, div.to(y.dtype)], dim=1)


def log_likelihood(model: ScoreModel, x: torch.Tensor, *, solver: str = "dopri5", rtol: float = 1e-5,
                   atol: float = 1e-5, trace: str = "exact", probes: int = 1, probe: str = "rademacher",
                   prior=None, seed: int = 0, t0: float | None = None, t1: float | None = None,
                   bin_width: float | None = None, norm: str = "rms", chunk: int = 64,
                   dtype=torch.float64, **options) -> Likelihood:
    """log p_t0(x) by the instantaneous change of variables along the probability-flow ODE.

    Args:
        model: a ``ScoreModel``; x: (batch, *sample_shape) points, finite.
        solver: a torchdiffeq adaptive method (dopri5, dopri8, bosh3, adaptive_heun, fehlberg2);
            rtol, atol: its tolerances (> 0), applied to the augmented state (x, log-density);
            norm: "rms" (torchdiffeq's RMS over the batch) or "sample" (worst sample).
        trace: "exact" (dim VJPs per evaluation; dim <= ``EXACT_TRACE_MAX_DIM``) or
            "hutchinson" with ``probes`` probes of kind ``probe`` ("rademacher" | "gaussian"),
            drawn once per call from ``seed`` and fixed over the solve.
        prior: callable z -> (batch,) log-density of p_t1; default the SDE's Gaussian prior
            (``model.sde.prior_log_prob``). An exact model's p_T can be passed, e.g.
            ``prior=lambda z: m.exact_log_prob(z, m.sde.T)``; the difference between the two is
            the prior mismatch.
        t0, t1: the interval (default [eps, T]); x is a point of p_t0.
        bin_width: grid spacing of discrete data, for the ``bpd`` offset (see ``Likelihood.bpd``).
        chunk: directions per batched VJP for the exact trace (memory ~ chunk x batch x dim).
        dtype: computation dtype (default float64).

    Returns a ``Likelihood`` (``.logp`` nats per sample, ``.bpd``, ``.nfe``, ``.stderr``, ...).
    """
    who = "log_likelihood"
    seed, probes, chunk = (validate.seed(seed, f"{who}: seed"), validate.integer(probes, f"{who}: probes", low=1),
                           validate.integer(chunk, f"{who}: chunk", low=1))
    t0, t1 = _check_flow(who, model, x, options=options, valid=_LIKELIHOOD_OPTIONS, solver=solver, rtol=rtol,
                         atol=atol, norm=norm, dtype=dtype, t0=t0, t1=t1)
    dim = x[0].numel()
    _check_estimator(who, trace, probe, dim, prior, bin_width)
    xs = x.detach().to(dtype)
    n = xs.shape[0]
    v = _probes(probes, probe, seed, xs) if trace == "hutchinson" else None
    func = _Augmented(model, xs.shape, v, chunk)
    k = 1 if v is None else probes
    y0 = torch.cat([xs.reshape(n, dim), xs.new_zeros(n, k)], dim=1)
    times = torch.tensor([t0, t1], dtype=torch.float64)
    nfe0 = model.nfe
    y1 = odeint_pf(func, y0, times, method=solver, rtol=rtol, atol=atol, norm=norm, who=who)[-1]
    nfe = model.nfe - nfe0
    z = y1[:, :dim].reshape(xs.shape)
    delta = y1[:, dim:]                                          # (n, k)
    prior_logp = _prior_logp(model, prior, z, n, who).to(dtype)
    per_probe = prior_logp.unsqueeze(1) + delta
    logp = per_probe.mean(1)
    if not bool(torch.isfinite(logp).all()):
        raise NonFiniteError(f"{who}: non-finite log-likelihood for {int((~torch.isfinite(logp)).sum())} of {n} "
                             "points; check the model and the prior at these points")
    stderr = logp_probes = None
    if v is not None:
        logp_probes = per_probe
        stderr = (per_probe.std(1) / math.sqrt(probes)) if probes > 1 else torch.full_like(logp, float("nan"))
    return Likelihood(logp=logp, prior_logp=prior_logp, delta_logp=delta.mean(1), z=z, t0=t0, t1=t1, dim=dim,
                      nfe=nfe, trace=trace, probes=probes if v is not None else 0,
                      probe=probe if v is not None else None, stderr=stderr, logp_probes=logp_probes,
                      bin_width=None if bin_width is None else float(bin_width),
                      stats={"accepted": func.accepted, "rejected": func.rejected, "vjp": func.vjp})


_LIKELIHOOD_OPTIONS = ["solver", "rtol", "atol", "trace", "probes", "probe", "prior", "seed", "t0", "t1", "bin_width",
                       "norm", "chunk", "dtype"]


def _probes(probes: int, probe: str, seed: int, xs: torch.Tensor) -> torch.Tensor:
    """Hutchinson's probes, (probes, *xs.shape), drawn once from ``seed`` on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn((probes, *xs.shape), generator=gen, dtype=xs.dtype)
    if probe == "rademacher":
        v = torch.sign(v)  # +-1 with probability 1/2 each (a draw of exactly 0 has probability 0)
    return v.to(xs.device)


def _prior_logp(model, prior, z, n: int, who: str) -> torch.Tensor:
    prior_logp = model.sde.prior_log_prob(z) if prior is None else prior(z)
    if not isinstance(prior_logp, torch.Tensor) or tuple(prior_logp.shape) != (n,):
        got = tuple(prior_logp.shape) if isinstance(prior_logp, torch.Tensor) else type(prior_logp).__name__
        raise InputError(f"{who}: prior returned {got}; it must return a tensor of shape ({n},)")
    return prior_logp


def _flow(model, x, t_from, t_to, solver, rtol, atol, norm, dtype, who):
    xs = x.detach().to(dtype)
    times = torch.tensor([t_from, t_to], dtype=torch.float64)
    out = odeint_pf(PFODE(model), xs, times, method=solver, rtol=rtol, atol=atol, norm=norm, who=who)[-1]
    return out.to(x.dtype)


_FLOW_OPTIONS = ["solver", "rtol", "atol", "t0", "t1", "norm", "dtype"]


def encode(model: ScoreModel, x: torch.Tensor, *, solver: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
           t0: float | None = None, t1: float | None = None, norm: str = "rms", dtype=torch.float64,
           **options) -> torch.Tensor:
    """The latent z = x(t1) of data x = x(t0) through the probability-flow ODE (default eps -> T),
    solved by a torchdiffeq adaptive method in ``dtype`` (float64); returned in x's dtype.
    ``decode(model, encode(model, x))`` returns x to solver tolerance."""
    who = "encode"
    t0, t1 = _check_flow(who, model, x, options=options, valid=_FLOW_OPTIONS, solver=solver, rtol=rtol, atol=atol,
                         norm=norm, dtype=dtype, t0=t0, t1=t1)
    return _flow(model, x, t0, t1, solver, rtol, atol, norm, dtype, who)


def decode(model: ScoreModel, z: torch.Tensor, *, solver: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
           t0: float | None = None, t1: float | None = None, norm: str = "rms", dtype=torch.float64,
           **options) -> torch.Tensor:
    """Data x(t0) from the latent z = x(t1) through the probability-flow ODE (default T -> eps):
    the inverse of ``encode`` (and the same map as the ODE samplers with these tolerances)."""
    who = "decode"
    t0, t1 = _check_flow(who, model, z, what="z", options=options, valid=_FLOW_OPTIONS, solver=solver, rtol=rtol,
                         atol=atol, norm=norm, dtype=dtype, t0=t0, t1=t1)
    return _flow(model, z, t1, t0, solver, rtol, atol, norm, dtype, who)
