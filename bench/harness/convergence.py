"""Convergence-order measurement.

Per-sample discretization errors on a multimodal target are heavy-tailed (a trajectory that
starts near the boundary between two basins can switch mode at coarse steps), so the error
of a run is the *median* per-sample Euclidean error, and the order is the least-squares
slope of -log(error) against log(steps) over the step counts given (chosen in the
asymptotic range, above the reference's accuracy).
"""
from __future__ import annotations

import math

import torch

__all__ = ["median_error", "fit_order"]


def median_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Median over samples of ||x - ref|| (Euclidean norm over all non-batch dimensions)."""
    return float((x.double() - ref.double()).flatten(1).norm(dim=1).median())


def fit_order(steps, errors) -> float:
    """Slope p of error ~ C steps^-p, by least squares in log-log."""
    if len(steps) != len(errors) or len(steps) < 2:
        raise ValueError("fit_order needs at least two (steps, error) pairs")
    if any(e <= 0 or not math.isfinite(e) for e in errors):
        raise ValueError(f"errors must be positive and finite, got {errors}")
    xs = [math.log(s) for s in steps]
    ys = [-math.log(e) for e in errors]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)
