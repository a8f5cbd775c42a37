"""torchsde's SDE solvers on the reverse-time SDE, on the shared seeded Brownian path.

The reverse SDE dx = [f(t) x + g(t)^2/sigma_t eps(x, t)] dt + g(t) dw_bar runs from T down to
eps; torchsde integrates forward in time, so it is handed the same SDE in tau = -t (negation is
exact in floating point, so tau_i = -t_i maps back to the very grid times):

    dx = -[f(t) x + g(t)^2/sigma_t eps(x, t)] dtau + g(t) dW~(tau),   t = -tau,

with W~(tau_b) - W~(tau_a) = W(t_a) - W(t_b) = ``path.increment(t_a, t_b)``: exactly the
increment the native solvers (``euler_maruyama``, ...) draw over [t_b, t_a], so on one
``BrownianPath`` ``torchsde_euler`` reproduces ``euler_maruyama`` to rounding. Space-time Levy
area transforms as U~ = h dW - U under the reversal (U = int_a^b (W_s - W_a) ds).

Noise type. g depends on t only, so the noise is *additive*: Ito and Stratonovich coincide (the
correction 1/2 g dg/dx is 0), Milstein's g dg/dx term vanishes (``torchsde_milstein`` is
Euler-Maruyama, strong order 1), Euler-Maruyama has strong order 1 instead of 1/2, and
Rossler's SRA1 (``torchsde_srk``) has strong order 1.5. The SDE is given to torchsde as
"additive" through the product g(t) v (no dim x dim matrix is formed), except for reversible
Heun, which needs g itself and gets it as "diagonal" noise with entries g(t) (the same SDE; its
strong order is 1 for additive noise, Kidger et al. 2021).

Each solver takes the grid's steps exactly (torchsde's step function driven by the one loop in
``solvers.sampling``; torchsde's own loop would interpolate outputs between uniform steps), so
NFE per step is exact: euler 1, milstein 1, srk 2 (torchsde's SRA1 re-evaluates its first
stage's drift; a one-entry cache removes the repeat), reversible_heun 1 plus 1 to start.
``torchsde_adaptive`` runs torchsde's own adaptive loop (step doubling) on any of them.

torchsde's solver classes are reached through ``torchsde._core`` (torchsde 0.2.6; the public
``sdeint`` cannot step on a non-uniform grid without interpolating).
"""
from __future__ import annotations

import math

import torch
from torchsde._brownian import BaseBrownian
from torchsde._core.base_sde import ForwardSDE
from torchsde._core.methods import select

from .adaptive import schedule_at
from .base import Solver
from .noise import BrownianPath
from .options import Option, positive
from .registry import register

__all__ = ["TorchsdeEuler", "TorchsdeMilstein", "TorchsdeSRK", "TorchsdeReversibleHeun", "TorchsdeAdaptive"]

_LEVY = ("space-time", "davie", "foster")


def _has_levy(path) -> bool:
    bm = getattr(path, "torchsde", None)
    return bm is not None and getattr(bm, "levy_area_approximation", "none") in _LEVY


class _ReversedBrownian(BaseBrownian):
    """The path W on [eps, T] seen in tau = -t, as torchsde's (batch, dim) Brownian motion."""

    __slots__ = ("_path", "_shape", "_levy")

    def __init__(self, path, n: int, dim: int, levy: str):
        self._path, self._shape, self._levy = path, (n, dim), levy

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None or return_A:
            raise RuntimeError("the reverse-time Brownian motion answers interval queries (ta, tb) only")
        t_hi, t_lo = -float(ta), -float(tb)
        if return_U:  # forward-time increment W and U = int (W_s - W_lo) ds over [t_lo, t_hi]
            p = self._path
            W, U = p.torchsde(max(t_lo, p.t0), min(t_hi, p.t1), return_U=True)
            W, U = W.reshape(self._shape), U.reshape(self._shape)
            return W, (t_hi - t_lo) * W - U
        return self._path.increment(t_hi, t_lo).reshape(self._shape)

    def __repr__(self):
        return f"_ReversedBrownian({self._path!r})"

    @property
    def dtype(self):
        return self._path.dtype

    @property
    def device(self):
        return self._path.device

    @property
    def shape(self):
        return torch.Size(self._shape)

    @property
    def levy_area_approximation(self):
        return self._levy


class _ReverseSDE:
    """The reverse SDE in tau = -t, on states flattened to (batch, dim), for torchsde."""

    def __init__(self, model, shape, noise_type: str, sde_type: str, nodes):
        self.model, self.sde, self.shape = model, model.sde, tuple(shape)
        self.noise_type, self.sde_type = noise_type, sde_type
        self._coefs = {t: (nodes.alpha[k], nodes.sigma[k], nodes.f[k], nodes.g2[k])
                       for k, t in enumerate(nodes.times)}
        self._last: tuple | None = None

    def coefs(self, tau):
        t = -float(tau)
        c = self._coefs.get(t)
        if c is None:
            if len(self._coefs) > 4096:
                self._coefs.clear()
            c = self._coefs[t] = schedule_at(self.sde, t)
        return t, c

    def f(self, tau, y):
        last = self._last
        if last is not None and last[0] == float(tau) and last[1] is y:  # SRA1 asks twice
            return last[2]
        t, (alpha, sigma, f, g2) = self.coefs(tau)
        eps = self.model(y.reshape(self.shape), t, "eps", alpha=alpha, sigma=sigma).reshape(y.shape)
        out = torch.add(y * -f, eps, alpha=-g2 / sigma)
        self._last = (float(tau), y, out)
        return out

    def _g(self, tau):
        return math.sqrt(max(self.coefs(tau)[1][3], 0.0))

    def g_prod(self, tau, y, v):
        return v * self._g(tau)

    def g(self, tau, y):  # diagonal noise: entries g(t), independent of y
        return y.new_full((), self._g(tau)).expand(y.shape)  # a fill, no host-device copy


class _TorchsdeBase(Solver):
    kind = "sde"
    stochastic = uses_brownian = needs_path = True
    #: torchsde's name of the method
    sde_method: str = ""
    noise_type: str = "additive"
    sde_type: str = "ito"
    needs_levy: bool = False

    def setup(self):
        self.tau = [-t for t in self.nodes.times]
        self._solver = self._extra = None

    def _brownian(self, x, n, dim):
        path = self.noise
        if self.needs_levy and not _has_levy(path):
            # the shared path has no Levy area: use one that has, keyed by the same seed (a different
            # Brownian motion; pass a BrownianPath(levy_area=True) as brownian= to share it with other solvers)
            path = BrownianPath(x.shape, levy_area=True, t0=getattr(path, "t0", self.sde.eps),
                                t1=getattr(path, "t1", self.sde.T),
                                seed=getattr(path, "seed", 0), dtype=x.dtype, device=x.device)
            self.stats = {"brownian": f"own BrownianPath(seed={path.seed}, levy_area=True): the path given has none"}
        levy = path.torchsde.levy_area_approximation if _has_levy(path) else "none"
        return _ReversedBrownian(path, n, dim, levy)

    def _make_solver(self, x, adaptive=False, dt=1.0, rtol=0.0, atol=0.0, dt_min=0.0):
        n = x.shape[0]
        dim = x[0].numel()
        sde = _ReverseSDE(self.model, x.shape, self.noise_type, self.sde_type, self.nodes)
        bm = self._brownian(x, n, dim)
        cls = select(method=self.sde_method, sde_type=self.sde_type)
        return cls(sde=ForwardSDE(sde), bm=bm, dt=dt, adaptive=adaptive, rtol=rtol, atol=atol, dt_min=dt_min,
                   options={})


class _TorchsdeFixed(_TorchsdeBase):
    def step(self, i, x):
        y = x.reshape(x.shape[0], -1)
        if self._solver is None:
            self._solver = self._make_solver(x)
            self._extra = self._solver.init_extra_solver_state(self.tau[0], y)
        y1, self._extra = self._solver.step(self.tau[i], self.tau[i + 1], y, self._extra)
        return y1.reshape(x.shape)


@register
class TorchsdeEuler(_TorchsdeFixed):
    """torchsde's Euler-Maruyama (``method="euler"``) on the reverse SDE, additive noise: strong
    order 1, weak order 1, 1 NFE per step. Equal to ``euler_maruyama`` on the same path."""

    name = "torchsde_euler"
    sde_method = "euler"
    strong_order = 1
    weak_order = 1


@register
class TorchsdeMilstein(_TorchsdeFixed):
    """torchsde's Milstein (Ito, ``method="milstein"``) on the reverse SDE. With additive noise
    its g dg/dx term is 0, so it *is* Euler-Maruyama: strong order 1, weak order 1, 1 NFE per step."""

    name = "torchsde_milstein"
    sde_method = "milstein"
    strong_order = 1
    weak_order = 1


@register
class TorchsdeSRK(_TorchsdeFixed):
    """torchsde's stochastic Runge-Kutta (``method="srk"``): for additive noise Rossler's (2010)
    SRA1, strong order 1.5, 2 NFE per step. Needs the space-time Levy area of the path: pass a
    ``BrownianPath(levy_area=True)`` (``brownian=``); given a path without it (the default ``BrownianPath``),
    it builds a BrownianPath(levy_area=True) of the same seed -- a different Brownian motion (noted in
    ``Sample.stats``)."""

    name = "torchsde_srk"
    sde_method = "srk"
    strong_order = 1.5
    nfe_per_step = 2
    needs_levy = True


@register
class TorchsdeReversibleHeun(_TorchsdeFixed):
    """torchsde's reversible Heun (Kidger et al. 2021, ``method="reversible_heun"``; Stratonovich,
    here equal to Ito; given to torchsde as diagonal noise g(t) 1). 1 NFE per step plus 1 to start:
    NFE = steps + 1.

    Algebraically reversible, strong order 1 for additive noise *asymptotically*, but only
    neutrally stable: on y' = l y its two-step recursion has a parasitic mode of modulus
    1 + |h l| for every real h l != 0, which grows like exp(int |l| dt) over the solve whatever
    the step. The reverse SDE of a diffusion model is strongly contracting near the data, so the
    asymptotic regime starts late (gmm2d-vp, uniform grid, median error against a fine
    Euler-Maruyama: 1.7 at 128 steps, 0.89 at 512, 6.6e-3 at 2048). No order is declared
    (``strong_order = None``), so the 16..128-step order test does not apply; it converges to the same
    solution as ``euler_maruyama`` as the step shrinks (tests/test_adaptive.py)."""

    name = "torchsde_reversible_heun"
    sde_method = "reversible_heun"
    noise_type = "diagonal"
    sde_type = "stratonovich"
    asymptotic_order = 1

    @classmethod
    def nfe_of_steps(cls, steps, opts):
        return steps + 1


_ADAPTIVE_METHODS = {"euler": TorchsdeEuler, "milstein": TorchsdeMilstein, "srk": TorchsdeSRK,
                     "reversible_heun": TorchsdeReversibleHeun}


@register
class TorchsdeAdaptive(_TorchsdeBase):
    """torchsde's adaptive time stepping (``sdeint(adaptive=True)``) on the reverse SDE: the error
    of one step of size dt is estimated against two steps of dt/2 on the same Brownian path (step
    doubling) and dt is adapted from rtol/atol (a PI controller); outputs at grid times between
    steps are linearly interpolated, as torchsde does. Options: ``method`` (euler, milstein, srk,
    reversible_heun), ``rtol``, ``atol``, ``dt`` (first step), ``dt_min`` (below it steps are
    accepted with a warning). NFE (counted) depends on the tolerance; stats give attempted and
    rejected steps."""

    name = "torchsde_adaptive"
    adaptive = True
    options = {"method": Option("euler", choices=tuple(_ADAPTIVE_METHODS), doc="the stepping method"),
               "rtol": positive(1e-3, doc="relative tolerance"), "atol": positive(1e-3, doc="absolute tolerance"),
               "dt": positive(0.01, doc="first step size"),
               "dt_min": positive(1e-5, doc="steps below it are accepted with a warning")}

    def setup(self):
        super().setup()
        base = _ADAPTIVE_METHODS[self.method]
        self.sde_method, self.noise_type, self.sde_type = base.sde_method, base.noise_type, base.sde_type
        self.needs_levy = base.needs_levy

    def integrate(self, x):
        n = x.shape[0]
        y0 = x.reshape(n, -1)
        solver = self._make_solver(x, adaptive=True, dt=self.dt, rtol=self.rtol, atol=self.atol, dt_min=self.dt_min)
        starts = []
        step = solver.step
        calls = [0]

        def counting_step(t0, t1, y, extra):  # each attempt: one full step, then two half steps
            if calls[0] % 3 == 0:
                starts.append(float(t0))
            calls[0] += 1
            return step(t0, t1, y, extra)

        solver.step = counting_step
        ts = torch.tensor(self.tau, dtype=torch.float64)
        extra = solver.init_extra_solver_state(ts[0], y0)
        ys, _ = solver.integrate(y0, ts, extra)
        rejected = sum(1 for a, b in zip(starts[:-1], starts[1:]) if a == b)
        self.stats = {**getattr(self, "stats", {}), "attempted": len(starts), "rejected": rejected,
                      "accepted": len(starts) - rejected}
        return [y.reshape(x.shape) for y in ys[1:]]
