"""Sample-quality metrics, each with its formula.

- ``discretization_error``: median over samples of ||x_i - ref_i|| / sqrt(d), with ref the
  reference solution from the same x_T (see ``bench.reference``). Model-agnostic.
- ``sliced_wasserstein``: SW_p(P, Q) = ( E_theta[ W_p^p(theta#P, theta#Q) ] )^(1/p) with theta
  uniform on the unit sphere (``projections`` directions from a fixed seed); the 1-D W_p
  between equal-size empirical sets is the L_p distance between their sorted projections.
  Its noise floor is the same metric between two independent exact sample sets of that size.
"""
from __future__ import annotations

import torch

__all__ = ["discretization_error", "sliced_wasserstein"]


def discretization_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Median per-sample Euclidean error to ``ref``, divided by sqrt(dimension)."""
    d = x[0].numel()
    return float((x.double() - ref.double()).flatten(1).norm(dim=1).median()) / d**0.5


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, *, projections: int = 256, p: int = 2,
                       seed: int = 0) -> float:
    """Sliced Wasserstein-p distance between two sample sets of equal size."""
    if x.shape != y.shape:
        raise ValueError(f"sliced_wasserstein needs equal-size sets, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double().flatten(1), y.double().flatten(1)
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], projections, generator=g, dtype=torch.float64).to(x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    return float(((px - py).abs() ** p).mean() ** (1 / p))
