"""Noise sources: one Brownian path per call for the SDE steps, a separate generator for
Langevin corrector noise.

``BrownianPath`` wraps torchsde's ``BrownianInterval`` on [eps, T] keyed by a seed. All
increments a sampling call draws come from one path, so the increment over a coarse step
equals the sum of the increments over the fine steps inside it. To measure strong error,
give *one* ``BrownianPath`` to several ``solvers.sample`` calls (reference grid and coarse
grids): every query is answered from the same Brownian motion. By default the path also
depends on the order of queries (torchsde's fast mode): the same seed and the same grid
give identical samples. ``exact=True`` builds torchsde's dyadic ("halfway") tree instead,
whose path is fixed by the seed alone, whatever is queried (about 10x slower to query).
"""
from __future__ import annotations

import math

import torch
import torchsde

__all__ = ["BrownianPath", "corrector_generator"]


class BrownianPath:
    """Brownian motion W on [t0, t1] (sample shape ``shape``) keyed by ``seed``."""

    def __init__(self, shape, *, t0: float, t1: float, seed: int = 0, dtype=torch.float32,
                 device="cpu", exact: bool = False):
        self.shape, self.dtype, self.device = tuple(shape), dtype, torch.device(device)
        self.t0, self.t1, self.seed, self.exact = float(t0), float(t1), int(seed), exact
        kw = dict(halfway_tree=True, tol=1e-10 * (t1 - t0)) if exact else {}
        self._bm = torchsde.BrownianInterval(t0=self.t0, t1=self.t1, size=self.shape, dtype=dtype,
                                             device=self.device, entropy=self.seed,
                                             levy_area_approximation="none", **kw)

    @classmethod
    def for_sde(cls, sde, shape, **kw) -> "BrownianPath":
        return cls(shape, t0=sde.eps, t1=sde.T, **kw)

    def increment(self, t_hi: float, t_lo: float) -> torch.Tensor:
        """W(t_hi) - W(t_lo) for t_lo < t_hi (variance t_hi - t_lo)."""
        return self._bm(max(t_lo, self.t0), min(t_hi, self.t1))

    def normal(self, t_hi: float, t_lo: float) -> torch.Tensor:
        """The increment over [t_lo, t_hi] scaled to a standard normal."""
        return self.increment(t_hi, t_lo) * (1.0 / math.sqrt(t_hi - t_lo))

    def matches(self, x: torch.Tensor) -> bool:
        return tuple(x.shape) == self.shape and x.dtype == self.dtype and x.device == self.device

    @property
    def torchsde(self):
        """The underlying ``torchsde.BrownianInterval`` (for torchsde's own solvers)."""
        return self._bm


def corrector_generator(seed: int, device) -> torch.Generator:
    """The generator of Langevin corrector noise: independent of the Brownian path."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + 7_919) % (2**63 - 1))
    return g
