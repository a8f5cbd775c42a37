"""Classical Runge-Kutta methods on the probability-flow ODE, in time t:

    dx/dt = f(t) x - g(t)^2 / 2 * score(x, t) = f(t) x + g(t)^2 / (2 sigma_t) * eps(x, t)

(Song et al. 2021, eq. 13). Step size h = t_{i+1} - t_i < 0.
"""
from __future__ import annotations

import torch

from .base import Nodes, Solver
from .options import Option
from .registry import register

__all__ = ["Euler", "Heun", "RK4"]


class _PFODE(Solver):
    kind = "ode"

    def drift(self, x, k, nodes=None):
        """One network evaluation: the PF-ODE right-hand side at node k."""
        nd = self.nodes if nodes is None else nodes
        eps = self.eval(x, k, "eps", nd)
        f, c = nd.ode_coefs(k)
        return torch.add(x * f, eps, alpha=c)


@register
class Euler(_PFODE):
    """Euler's method on the probability-flow ODE (explicit, order 1, 1 NFE per step)."""

    name = "euler"
    strong_order = 1

    def setup(self):
        nd = self.nodes
        # x + h (f x + c eps) = (1 + h f) x + (h c) eps
        self.a = [1 + h * nd.f[i] for i, h in enumerate(self.h)]
        self.b = [h * nd.ode_coefs(i)[1] for i, h in enumerate(self.h)]

    def step(self, i, x):
        eps = self.eval(x, i)
        return torch.add(x * self.a[i], eps, alpha=self.b[i])


@register
class Heun(_PFODE):
    """Heun's 2nd-order method (explicit trapezoidal rule) on the PF-ODE, as in EDM
    (Karras et al. 2022, Algorithm 1 with S_churn = 0). Order 2, 2 NFE per step.

    Options: ``last_step_euler`` (default False): take an Euler step on the last interval,
    as EDM does when the grid ends at sigma = 0 where the ODE is undefined; our grids end at
    eps > 0, so by default every step, the last included, is a Heun step (2 NFE each).
    With it, NFE = 2 steps - 1 and the order is still 2 (one O(h^2) local error).
    """

    name = "heun"
    strong_order = 2
    nfe_per_step = 2
    options = {"last_step_euler": Option(False, doc="an Euler step on the last interval (EDM's rule for sigma = 0)")}

    @classmethod
    def nfe_of_steps(cls, steps, opts):
        return 2 * steps - int(opts["last_step_euler"])

    def step(self, i, x):
        h = self.h[i]
        d1 = self.drift(x, i)
        x1 = torch.add(x, d1, alpha=h)
        if self.last_step_euler and i == self.steps - 1:
            return x1
        d2 = self.drift(x1, i + 1)
        return torch.add(x, d1.add_(d2), alpha=0.5 * h)


@register
class RK4(_PFODE):
    """The classical 4th-order Runge-Kutta method on the PF-ODE. Order 4, 4 NFE per step."""

    name = "rk4"
    strong_order = 4
    nfe_per_step = 4

    def setup(self):
        t = self.times
        self.mid = Nodes(self.sde, 0.5 * (t[:-1] + t[1:]), self.dtype, self.device)

    def step(self, i, x):
        h = self.h[i]
        k1 = self.drift(x, i)
        k2 = self.drift(torch.add(x, k1, alpha=h / 2), i, self.mid)
        k3 = self.drift(torch.add(x, k2, alpha=h / 2), i, self.mid)
        k4 = self.drift(torch.add(x, k3, alpha=h), i + 1)
        acc = k1.add_(k4).add_(k2.add_(k3), alpha=2.0)
        return torch.add(x, acc, alpha=h / 6)
