"""Weak error against exact expectations, on the exact models (Gaussian mixtures under linear SDEs).

A sampler's weak error for a test function phi is E_q[phi] - E_p[phi], q the law of its output and
p = p_eps. The metric ``weak`` reports the largest |E_q[phi] - E_p[phi]| over a fixed set of test
functions (``PhiSet``), with that estimate's standard error.

Test functions, on standardized coordinates z = (x - m) / s (m, s: p's mean and per-coordinate
standard deviation, closed form):
  * first moments z_j, and second moments z_j z_k (j <= k; only z_j^2 when d > ``PAIRS_MAX_D``);
  * ``N_FOURIER`` random Fourier features cos(w_l . z) and sin(w_l . z), w_l ~ N(0, (``FREQ``^2 / d) I)
    drawn once from the generator seeded ``FEATURE_SEED`` (the same set for every cell: recorded by
    that seed and ``PhiSet.frequencies``).
Each has a closed-form expectation under a Gaussian mixture sum_k w_k N(a_k, B_k) (in z: a_k =
(alpha mu_k - m) / s, B_k = D (alpha^2 Sigma_k + sigma^2 I) D, D = diag(1/s)):
E[z_j] = sum_k w_k a_kj, E[z_j z_l] = sum_k w_k (B_k + a_k a_k^T)_jl and
E[exp(i w.z)] = sum_k w_k exp(i w.a_k - w^T B_k w / 2) (cos: real part, sin: imaginary part).

Estimator (two levels, a control variate in the multilevel Monte Carlo sense, Giles 2008): with
X_h the cell's samples on the Brownian path of the SDE reference (its float64 solve from the cell's
x_T) and X_0 a fine Euler-Maruyama solution from the same x_T on the same path (``FINE_STEPS`` steps
of the SDE's default grid; for a stochastic sampler both use the same noise, so they are close and
phi(X_h) - phi(X_0) has a small variance),

    E_q[phi] - E_p[phi] = E[phi(X_h) - phi(X_0)]          (the cell's n coupled pairs)
                        + (E[phi(X_0)] - E_p[phi])        (X_0's own weak error: ``N_FINE`` independent
                                                            fine solutions against the closed form, once
                                                            per model and reference setting)

and the two terms' standard errors add in quadrature (independent samples). A sampler that does not
use the Brownian path (a corrector alone) has no coupling: E_q[phi] - E_p[phi] is then its n samples'
mean against the closed form. The reported value is max_phi |estimate_phi|, its standard error the
one of the maximizing phi; the smallest weak error it resolves is ~2 x that, dominated at the
suite's n by the second term's 1/sqrt(N_FINE).
"""
from __future__ import annotations

import dataclasses
import math

import torch

import solvers
from solvers import InputError

__all__ = ["PhiSet", "phi_set", "exact_expectations", "target_expectations", "fine_solution", "fine_weak_bias",
           "weak_difference", "combine", "N_FOURIER", "FREQ", "FEATURE_SEED", "PAIRS_MAX_D", "N_FINE", "FINE_STEPS"]

N_FOURIER = 8
FREQ = 1.5
FEATURE_SEED = 20_221
PAIRS_MAX_D = 8
#: independent fine solutions that estimate the fine reference's own weak error (per model)
N_FINE = 20_000
#: steps of the fine solution X_0 (the SDE's default grid): its weak error is estimated and added, so it
#: need only be close to the cell's samples pathwise (a small variance), not exact
FINE_STEPS = 256


@dataclasses.dataclass(frozen=True)
class PhiSet:
    """The test functions on z = (x - center) / scale: ``pairs`` (j, l) of second moments and the
    Fourier ``frequencies`` (L, d)."""

    center: torch.Tensor
    scale: torch.Tensor
    pairs: torch.Tensor
    frequencies: torch.Tensor

    @property
    def count(self) -> int:
        return self.center.numel() + self.pairs.shape[0] + 2 * self.frequencies.shape[0]

    def names(self) -> list[str]:
        d = self.center.numel()
        return ([f"z{j}" for j in range(d)] + [f"z{j}z{k}" for j, k in self.pairs.tolist()]
                + [f"{f}(w{i}.z)" for f in ("cos", "sin") for i in range(self.frequencies.shape[0])])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x) for every sample and test function: (n, count), float64."""
        z = (x.double().flatten(1) - self.center) / self.scale
        wz = z @ self.frequencies.T
        return torch.cat([z, z[:, self.pairs[:, 0]] * z[:, self.pairs[:, 1]], torch.cos(wz), torch.sin(wz)], dim=1)


def _mixture(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, float]:
    gmm = getattr(model, "gmm", None)
    if gmm is None:
        raise InputError(f"weak error: model {getattr(model, 'name', model)!r} is not an exact Gaussian mixture")
    sde = model.sde
    alpha, sigma = float(sde.alpha(sde.eps)), float(sde.sigma(sde.eps))
    return gmm.weights, gmm.means, gmm.covs, alpha, sigma


def phi_set(model) -> PhiSet:
    """The fixed test functions for an exact model's p_eps (standardized by its exact moments)."""
    w, mu, cov, alpha, sigma = _mixture(model)
    d = mu.shape[1]
    mean, var = model.gmm.moments(alpha, sigma)
    iu = torch.triu_indices(d, d) if d <= PAIRS_MAX_D else torch.arange(d).repeat(2, 1)
    g = torch.Generator().manual_seed(FEATURE_SEED)
    freq = torch.randn(N_FOURIER, d, generator=g, dtype=torch.float64) * (FREQ / math.sqrt(d))
    return PhiSet(mean.double(), var.diagonal().sqrt().double(), iu.T.contiguous(), freq)


def exact_expectations(phi: PhiSet, weights, means, covs) -> torch.Tensor:
    """E[phi] under the mixture sum_k weights_k N(means_k, covs_k) in x (closed form; see the module
    docstring): (count,), float64."""
    w, mu, cov = (torch.as_tensor(v, dtype=torch.float64) for v in (weights, means, covs))
    a = (mu - phi.center) / phi.scale                                     # (K, d)
    B = cov / (phi.scale[:, None] * phi.scale[None, :])                   # (K, d, d)
    first = w @ a
    j, k = phi.pairs[:, 0], phi.pairs[:, 1]
    second = w @ (B[:, j, k] + a[:, j] * a[:, k])
    W = phi.frequencies
    phase = a @ W.T                                                       # (K, L)
    damp = torch.exp(-0.5 * torch.einsum("ld,kde,le->kl", W, B, W))
    return torch.cat([first, second, w @ (damp * torch.cos(phase)), w @ (damp * torch.sin(phase))])


def target_expectations(model, phi: PhiSet) -> torch.Tensor:
    """E_p[phi] at p = p_eps of an exact model."""
    w, mu, cov, alpha, sigma = _mixture(model)
    eye = torch.eye(mu.shape[1], dtype=torch.float64)
    return exact_expectations(phi, w, alpha * mu, alpha**2 * cov + sigma**2 * eye)


def fine_solution(model, x_T: torch.Tensor, brownian, sde_steps: int) -> torch.Tensor:
    """X_0: Euler-Maruyama on ``sde_steps`` steps of the SDE's default grid, on ``brownian`` (a path, or
    None for fresh noise), float64; the model's NFE count is left as it was."""
    nfe = model.nfe
    kw = {"brownian": brownian} if brownian is not None else {"seed": 0}
    out = solvers.sample(model, "euler_maruyama", steps=sde_steps, x_T=x_T.double(), **kw).x
    model.nfe = nfe
    return out


def fine_weak_bias(model, phi: PhiSet, sde_steps: int, *, n: int = N_FINE, seed: int = 0,
                   batch: int = 5_000) -> dict:
    """X_0's own weak error: E[phi(X_0)] - E_p[phi] from ``n`` independent fine solutions started
    from the model's prior (its exact p_T with ``exact_prior``), with standard errors."""
    g = torch.Generator().manual_seed(seed)
    s1 = torch.zeros(phi.count, dtype=torch.float64)
    s2 = torch.zeros_like(s1)
    done = 0
    while done < n:
        b = min(batch, n - done)
        x_T = model.sample_prior(b, generator=g, dtype=torch.float64)
        nfe = model.nfe
        x = solvers.sample(model, "euler_maruyama", steps=sde_steps, x_T=x_T, seed=seed * 7919 + done).x
        model.nfe = nfe
        v = phi(x)
        s1, s2, done = s1 + v.sum(0), s2 + (v * v).sum(0), done + b
    mean = s1 / n
    var = (s2 / n - mean**2).clamp_min(0) * n / (n - 1)
    return {"bias": mean - target_expectations(model, phi), "se": (var / n).sqrt(), "n": n}


def weak_difference(phi: PhiSet, x: torch.Tensor, x_fine: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """(mean, standard error) per test function of phi(x) - phi(x_fine) over the samples (coupled
    pairs), or of phi(x) alone when ``x_fine`` is None."""
    v = phi(x) if x_fine is None else phi(x) - phi(x_fine)
    n = v.shape[0]
    return v.mean(0), v.std(0) / math.sqrt(n)


def combine(diff_mean, diff_se, offset, offset_se) -> tuple[float, float, int]:
    """(max_phi |diff + offset|, its standard error, the maximizing phi's index)."""
    est = diff_mean + offset
    se = (diff_se**2 + offset_se**2).sqrt()
    i = int(est.abs().argmax())
    return float(est[i].abs()), float(se[i]), i
