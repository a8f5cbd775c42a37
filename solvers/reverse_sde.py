"""Discretizations of the reverse-time SDE (Song et al. 2021, eq. 6)

    dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dw_bar,   score = -eps / sigma_t,

run from T to eps with h = t_{i+1} - t_i < 0 and increments dW of the shared Brownian
path (variance |h|). The noise is additive (g depends on t only).
"""
from __future__ import annotations

import torch

from .base import Solver
from .registry import register

__all__ = ["EulerMaruyama", "ReverseDiffusion"]


@register
class EulerMaruyama(Solver):
    """Euler-Maruyama on the reverse SDE. Strong order 1 (additive noise), weak order 1.
    1 NFE per step.

        x_{i+1} = x_i + h (f_i x_i + g_i^2 / sigma_i eps_i) + g_i dW_i
    """

    name = "euler_maruyama"
    kind = "sde"
    strong_order = 1
    weak_order = 1
    stochastic = uses_brownian = True

    def setup(self):
        nd = self.nodes
        self.a = [1 + h * nd.f[i] for i, h in enumerate(self.h)]
        self.b = [h * nd.g2[i] / nd.sigma[i] for i, h in enumerate(self.h)]
        # g_i dW_i = g_i sqrt|h| z_i: the step's standard normal, scaled once here
        self.c = [self.sqrt(nd.g2[i] * -h) for i, h in enumerate(self.h)]

    def step(self, i, x):
        eps = self.eval(x, i)
        z = self.brownian_normal(i)
        return torch.add(x * self.a[i], eps, alpha=self.b[i]).add_(z, alpha=self.c[i])


@register
class ReverseDiffusion(Solver):
    """Song et al.'s (2021) reverse-diffusion predictor: reverse the discretized forward SDE.

    The forward step t_{i+1} -> t_i is the exact kernel x_{t_i} = a x_{t_{i+1}} + b z
    (a = alpha_i / alpha_{i+1}, b^2 = sigma_i^2 - a^2 sigma_{i+1}^2; for VE this is SMLD's
    sigma_i^2 - sigma_{i+1}^2, for VP Song's sqrt(1 - beta_i)); its reverse is

        x_{i+1} = x_i - (a - 1) x_i + b^2 score(x_i, t_i) + b z_i,   z_i = dW_i / sqrt|h|.

    Weak order 1. 1 NFE per step.
    """

    name = "reverse_diffusion"
    kind = "sde"
    weak_order = 1
    stochastic = uses_brownian = True

    def setup(self):
        t = self.times
        a, b2 = self.sde.transition(t[1:], t[:-1])
        a, b2 = a.tolist(), b2.tolist()
        self.a = [2 - ai for ai in a]
        self.b = [-b2[i] / self.nodes.sigma[i] for i in range(self.steps)]
        self.c = [self.sqrt(v) for v in b2]

    def step(self, i, x):
        eps = self.eval(x, i)
        z = self.brownian_normal(i)
        return torch.add(x * self.a[i], eps, alpha=self.b[i]).add_(z, alpha=self.c[i])
