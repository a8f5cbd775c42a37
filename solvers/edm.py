"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2), for any linear SDE.

It works in EDM's coordinates: sigma = sigma_t / alpha_t = exp(-lambda_t) and x_hat = x / alpha_t,
where the probability-flow ODE is d x_hat / d sigma = eps(x, t). For the EDM SDE (alpha = 1,
sigma = t) these are the paper's own variables.
"""
from __future__ import annotations

import math

import torch

from .base import Nodes, Solver
from .options import Option, positive
from .registry import register

__all__ = ["EDMStochastic"]


@register
class EDMStochastic(Solver):
    """EDM stochastic sampler (Karras et al. 2022, Algorithm 2): churn, then a Heun step.

    Step i (sigma_i -> sigma_{i+1}):
      1. gamma_i = min(S_churn / N, sqrt(2) - 1) if S_min <= sigma_i <= S_max else 0
      2. sigma_hat = sigma_i (1 + gamma_i);  x_hat += sqrt(sigma_hat^2 - sigma_i^2) S_noise z
      3. Heun (trapezoidal) step of d x_hat / d sigma = eps from sigma_hat to sigma_{i+1}.
    z is the standard normal of the step's Brownian increment. 2 NFE per step. With
    S_churn = 0 it is EDM's deterministic Heun sampler (order 2; identical to ``heun`` on the
    EDM SDE); with churn no order is claimed. Defaults are the paper's ImageNet-64 settings
    (S_churn=40, S_min=0.05, S_max=50, S_noise=1.003), with S_min/S_max in sigma units.
    """

    name = "edm_stochastic"
    kind = "sde"
    nfe_per_step = 2
    stochastic = uses_brownian = True
    noise_option = "S_churn"
    deterministic_order = 2
    options = {"S_churn": Option(40.0, low=0.0, doc="churn: gamma = min(S_churn / N, sqrt 2 - 1); 0: deterministic"),
               "S_min": Option(0.05, low=0.0, doc="lowest sigma with churn"),
               "S_max": Option(50.0, low=0.0, inf=True, doc="highest sigma with churn (inf: every sigma)"),
               "S_noise": positive(1.003, doc="scale of the added noise")}
    variants = ({"S_churn": 0.0},)

    @classmethod
    def check_options(cls, opts):
        cls.require(opts["S_min"] <= opts["S_max"], f"need 0 <= S_min <= S_max, got {opts['S_min']}, {opts['S_max']}")

    def setup(self):
        nd, n = self.nodes, self.steps
        sig = [math.exp(-lam) for lam in nd.lam]
        gamma = [min(self.S_churn / n, math.sqrt(2) - 1) if self.S_min <= s <= self.S_max else 0.0
                 for s in sig[:-1]]
        sig_hat = [s * (1 + g) for s, g in zip(sig, gamma)]
        self.churn = [self.S_noise * math.sqrt(max(sh * sh - s * s, 0.0)) for sh, s in zip(sig_hat, sig)]
        # the time at sigma_hat (same as t_i without churn)
        t_hat = self.sde.t_of_lam(-torch.log(torch.tensor(sig_hat, dtype=torch.float64)))
        t_hat = torch.where(torch.tensor(gamma) > 0, t_hat, self.times[:-1])
        self.hat = Nodes(self.sde, t_hat, self.dtype, self.device)
        self.dsig = [sig[i + 1] - sig_hat[i] for i in range(n)]

    def step(self, i, x):
        nd, hat = self.nodes, self.hat
        xs = x * (1 / nd.alpha[i])                                   # x_hat at sigma_i
        if self.churn[i] > 0:                                        # grid-only float: no sync
            xs = xs.add_(self.brownian_normal(i), alpha=self.churn[i])
        d1 = self.eval(xs * hat.alpha[i], i, "eps", hat)             # d x_hat / d sigma at sigma_hat
        x1 = torch.add(xs, d1, alpha=self.dsig[i])
        d2 = self.eval(x1 * nd.alpha[i + 1], i + 1, "eps")
        return torch.add(xs, d1.add_(d2), alpha=0.5 * self.dsig[i]).mul_(nd.alpha[i + 1])
