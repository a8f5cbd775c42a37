"""Noise sources: Brownian increments for the SDE steps, a separate stream for Langevin
corrector noise.

``StepNoise`` (the default of a fixed-step call without ``brownian=``) answers each step's
increment with fresh normals from a generator seeded by the call's seed: solvers query every
step once, in order, so these are exact Brownian increments over the grid, at the cost of one
``torch.randn`` (a ``BrownianInterval`` query costs ~3x more). Same seed, same samples. It is
not a path: increments of other grids are independent of it. Its normals come from a
``NormalStream`` or, for CUDA-graph replay, a ``NormalTape`` of the same draws made beforehand.

``BrownianPath`` wraps torchsde's ``BrownianInterval`` on [eps, T] keyed by a seed. All
increments a sampling call draws come from one path, so the increment over a coarse step
equals the sum of the increments over the fine steps inside it. To measure strong error,
give *one* ``BrownianPath`` to several ``solvers.sample`` calls (reference grid and coarse
grids): every query is answered from the same Brownian motion. By default the path also
depends on the order of queries (torchsde's fast mode): the same seed and the same grid
give identical samples. ``exact=True`` builds torchsde's dyadic ("halfway") tree instead,
whose path is fixed by the seed alone, whatever is queried (about 10x slower to query).
``levy_area=True`` also samples space-time Levy area (torchsde's SRK needs it; the increments
then differ from a path without it).

``CounterBrownianPath`` is a stateless path (Levy-Ciesielski construction on counter-based
normals) that answers a different time for every sample, as per-sample adaptive steps need.
"""
from __future__ import annotations

import math

import torch
import torchsde

from . import validate
from .errors import InputError

__all__ = ["BrownianPath", "CounterBrownianPath", "StepNoise", "NormalStream", "NormalTape",
           "corrector_generator"]


class BrownianPath:
    """Brownian motion W on [t0, t1] (sample shape ``shape``) keyed by ``seed``."""

    def __init__(self, shape, *, t0: float, t1: float, seed: int = 0, dtype=torch.float32,
                 device="cpu", exact: bool = False, levy_area: bool = False):
        self.shape, self.dtype, self.device = tuple(shape), dtype, torch.device(device)
        self.t0, self.t1, self.seed, self.exact = float(t0), float(t1), int(seed), exact
        self.levy_area = levy_area
        kw = dict(halfway_tree=True, tol=1e-10 * (t1 - t0)) if exact else {}
        self._bm = torchsde.BrownianInterval(t0=self.t0, t1=self.t1, size=self.shape, dtype=dtype,
                                             device=self.device, entropy=self.seed,
                                             levy_area_approximation="space-time" if levy_area else "none", **kw)

    @classmethod
    def for_sde(cls, sde, shape, **kw) -> BrownianPath:
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


# ----------------------------------------------------------------------------------------------
# a stateless Brownian path that answers per-sample times
# ----------------------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1


def _s64(c: int) -> int:
    """An unsigned 64-bit constant as the signed int64 torch stores."""
    c &= _MASK64
    return c - (1 << 64) if c >= (1 << 63) else c


_GOLDEN, _MIX1, _MIX2 = _s64(0x9E3779B97F4A7C15), _s64(0xBF58476D1CE4E5B9), _s64(0x94D049BB133111EB)


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014): a bijective 64-bit hash. int64 products
    wrap modulo 2^64 on every torch backend."""
    z = z + _GOLDEN
    z = (z ^ _srl(z, 30)) * _MIX1
    z = (z ^ _srl(z, 27)) * _MIX2
    return z ^ _srl(z, 31)


def _normal(h: torch.Tensor) -> torch.Tensor:
    """Standard normals from 64-bit hashes (Box-Muller on the two 32-bit halves), float64."""
    u1 = (_srl(h, 32) + 1).double() * 2.0**-32          # (0, 1]
    u2 = (h & 0xFFFFFFFF).double() * 2.0**-32           # [0, 1)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2 * math.pi) * u2)


class CounterBrownianPath:
    """Brownian motion W on [t0, t1] (sample shape ``shape``, W(t0) = 0) that answers a different
    time for every sample, keyed by ``seed``.

    Built by the Levy-Ciesielski construction (Brownian bridges on dyadic intervals):

        W(t0 + u D) = u W(t1) + sqrt(D) sum_{l<depth} xi_{l,k_l(u)} 2^{-l/2} min(v_l, 1 - v_l),

    D = t1 - t0, k_l = floor(u 2^l), v_l = u 2^l - k_l, whose normals xi come from a
    counter-based hash of (seed, sample, coordinate, dyadic node). The path is a fixed function
    of the seed: no state, any query order, exact Brownian finite-dimensional distributions at
    dyadic times of level <= ``depth`` (default 24: resolution D / 2^24) and linear between them.
    A query costs O(depth x batch x dim).

    It has the interface of ``solvers.BrownianPath`` (``increment``, ``normal``, ``matches``),
    so one object can drive ``euler_maruyama`` (or any solver using the Brownian path) and
    ``adaptive_sde`` on the same Brownian motion for strong-error measurement; ``value`` and
    ``increment_per_sample`` take per-sample times.
    """

    exact = True

    def __init__(self, shape, *, t0: float, t1: float, seed: int = 0, dtype=torch.float32, device="cpu",
                 depth: int = 24):
        if not (t1 > t0):
            raise InputError(f"CounterBrownianPath: need t0 < t1, got t0={t0}, t1={t1}")
        depth = validate.integer(depth, "CounterBrownianPath: depth", low=1, high=40)
        self.shape, self.dtype, self.device = tuple(shape), dtype, torch.device(device)
        self.t0, self.t1, self.seed, self.depth = float(t0), float(t1), int(seed), depth
        self._span = self.t1 - self.t0
        n, dim = self.shape[0], math.prod(self.shape[1:])
        self._n, self._dim = n, dim
        dev = self.device
        seed_key = int(_mix(torch.tensor([_s64(self.seed * 0x2545F4914F6CDD1D + 0x632BE59BD9B4E019)]))[0])
        self._elem = _mix(torch.arange(n * dim, dtype=torch.int64, device=dev).reshape(n, dim) ^ seed_key)
        lev = torch.arange(depth, dtype=torch.int64, device=dev)
        self._pow = (2.0 ** lev.double()).unsqueeze(1)                  # (L, 1): 2^l
        self._heap = (torch.ones_like(lev) << lev).unsqueeze(1)         # (L, 1): first node id of level l
        self._amp = (2.0 ** (-0.5 * lev.double())).unsqueeze(1)         # (L, 1): 2^{-l/2}
        self._node_salt = _mix(torch.tensor(seed_key ^ 0x1F2E3D4C, dtype=torch.int64, device=dev))
        top = _mix(_mix(torch.zeros((), dtype=torch.int64, device=dev) ^ self._node_salt) ^ self._elem)
        self._top = _normal(top)                                         # xi for W(t1) / sqrt(D), (n, dim)
        self._last: tuple[float, torch.Tensor] | None = None

    @classmethod
    def for_sde(cls, sde, shape, **kw) -> CounterBrownianPath:
        return cls(shape, t0=sde.eps, t1=sde.T, **kw)

    def _value(self, t: torch.Tensor, rows) -> torch.Tensor:
        """W at float64 times t of shape (m,) for the samples ``rows`` (None: t is (1,), all rows)."""
        u = ((t - self.t0) / self._span).clamp(0.0, 1.0)                # (m,)
        us = u.unsqueeze(0) * self._pow                                  # (L, m)
        k = torch.minimum(torch.floor(us), self._pow - 1)
        v = us - k
        weight = torch.minimum(v, 1 - v) * self._amp                     # (L, m)
        node = _mix(_mix(k.long() + self._heap) ^ self._node_salt)       # (L, m)
        elem = self._elem if rows is None else self._elem[rows]          # (m or n, dim)
        top = self._top if rows is None else self._top[rows]
        xi = _normal(_mix(node.unsqueeze(-1) ^ elem))                    # (L, m or n, dim)
        # a fixed summation order over the levels, so that a batch-wide query and a per-sample one
        # at the same times give the same bits (einsum's reduction order depends on the shapes)
        wl = weight.unsqueeze(-1) if rows is not None else weight[:, :1, None]  # (L, m or 1, 1)
        w = wl[0] * xi[0]
        for level in range(1, self.depth):
            w = w + wl[level] * xi[level]
        w = w + u.unsqueeze(1) * top
        return w * math.sqrt(self._span)

    def value(self, t, rows=None) -> torch.Tensor:
        """W(t): ``t`` a float (all samples) or a (m,) tensor of per-sample times for the samples
        ``rows`` (an index tensor; default all). Returns (m, *sample_shape) in ``dtype``."""
        if isinstance(t, torch.Tensor) and t.ndim == 1:
            t = t.to(device=self.device, dtype=torch.float64)
            if rows is None:
                rows = torch.arange(self._n, device=self.device)
            w = self._value(t, rows)
            m = t.shape[0]
        else:
            w = self._value(torch.tensor([float(t)], dtype=torch.float64, device=self.device), None)
            m = self._n
        return w.to(self.dtype).reshape(m, *self.shape[1:])

    def increment(self, t_hi: float, t_lo: float) -> torch.Tensor:
        """W(t_hi) - W(t_lo) for all samples (scalar times; caches the last value, so a pass over
        a grid costs one evaluation per grid time)."""
        t_hi, t_lo = float(t_hi), float(t_lo)
        vals: dict[float, torch.Tensor] = {}
        if self._last is not None:
            vals[self._last[0]] = self._last[1]
        for s in (t_hi, t_lo):
            if s not in vals:
                vals[s] = self.value(s)
        self._last = (t_lo, vals[t_lo])
        return vals[t_hi] - vals[t_lo]

    def increment_per_sample(self, t_hi: torch.Tensor, t_lo: torch.Tensor, rows=None) -> torch.Tensor:
        return self.value(t_hi, rows) - self.value(t_lo, rows)

    def normal(self, t_hi: float, t_lo: float) -> torch.Tensor:
        return self.increment(t_hi, t_lo) * (1.0 / math.sqrt(t_hi - t_lo))

    def matches(self, x: torch.Tensor) -> bool:
        return tuple(x.shape) == self.shape and x.dtype == self.dtype and x.device == self.device

    def __repr__(self):
        return (f"CounterBrownianPath(shape={self.shape}, t0={self.t0}, t1={self.t1}, seed={self.seed}, "
                f"depth={self.depth})")


def corrector_generator(seed: int, device) -> torch.Generator:
    """The generator of Langevin corrector noise: independent of the Brownian path."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + 7_919) % (2**63 - 1))
    return g


def step_generator(seed: int, device) -> torch.Generator:
    """The generator of ``StepNoise``: independent of the prior draw and of the corrector noise."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 2_000_029 + 104_729) % (2**63 - 1))
    return g


# ----------------------------------------------------------------------------------------------
# per-step noise: a stream of normals, or the same normals drawn beforehand (graph replay)
# ----------------------------------------------------------------------------------------------

class NormalStream:
    """Standard normals of one shape, drawn in order from ``generator`` (a fresh tensor each)."""

    def __init__(self, shape, generator: torch.Generator, dtype, device):
        self.shape, self.generator, self.dtype, self.device = tuple(shape), generator, dtype, torch.device(device)
        self.count = 0  # draws made so far (what a tape of the same draws must hold)

    def draw(self) -> torch.Tensor:
        self.count += 1
        return torch.randn(self.shape, generator=self.generator, dtype=self.dtype, device=self.device)


class NormalTape:
    """The draws of a ``NormalStream`` made beforehand, held in one (k, *shape) buffer and answered
    in order (views of the buffer: a captured CUDA graph reads them; refill them before a replay)."""

    def __init__(self, buffer: torch.Tensor):
        self.buffer, self.k = buffer, 0

    @classmethod
    def empty(cls, count: int, shape, dtype, device) -> NormalTape:
        return cls(torch.empty((count, *shape), dtype=dtype, device=device))

    def fill(self, stream: NormalStream) -> NormalTape:
        """Overwrite the buffer with the next draws of ``stream`` (same order, same values); rewind."""
        for j in range(self.buffer.shape[0]):
            self.buffer[j].copy_(stream.draw())
        self.k = 0
        return self

    def draw(self) -> torch.Tensor:
        if self.k >= self.buffer.shape[0]:
            raise RuntimeError(f"NormalTape: all {self.buffer.shape[0]} draws used")
        self.k += 1
        return self.buffer[self.k - 1]


class StepNoise:
    """Brownian increments of one grid, one fresh standard normal z per query:
    W(t_hi) - W(t_lo) = sqrt(t_hi - t_lo) z. Exact over a grid whose steps are each queried once
    (what every fixed-step solver does); not shareable between grids (use a ``BrownianPath``).
    Interface of ``BrownianPath`` (``increment``, ``normal``, ``matches``)."""

    exact = False

    def __init__(self, source, shape, *, t0: float, t1: float, seed: int, dtype, device):
        self.source, self.shape, self.dtype, self.device = source, tuple(shape), dtype, torch.device(device)
        self.t0, self.t1, self.seed = float(t0), float(t1), int(seed)

    @classmethod
    def for_sde(cls, sde, shape, *, seed: int = 0, dtype=torch.float32, device="cpu") -> StepNoise:
        """The default noise of a call: normals from ``step_generator(seed)``."""
        stream = NormalStream(shape, step_generator(seed, device), dtype, device)
        return cls(stream, shape, t0=sde.eps, t1=sde.T, seed=seed, dtype=dtype, device=device)

    def normal(self, t_hi: float, t_lo: float) -> torch.Tensor:
        return self.source.draw()

    def increment(self, t_hi: float, t_lo: float) -> torch.Tensor:
        return self.source.draw() * math.sqrt(t_hi - t_lo)

    def matches(self, x: torch.Tensor) -> bool:
        return tuple(x.shape) == self.shape and x.dtype == self.dtype and x.device == self.device
