"""Steps through the Gaussian posterior of the forward process: DDPM ancestral sampling and
DDIM (Song, Meng & Ermon 2021), written for any linear SDE.

For s = t_{i+1} < t = t_i the forward kernel is x_t | x_s ~ N(a x_s, b^2 I) with
a = alpha_t / alpha_s and b^2 = sigma_t^2 - a^2 sigma_s^2, and the posterior is

    q(x_s | x_t, x0) = N(alpha_s b^2/sigma_t^2 x0 + a sigma_s^2/sigma_t^2 x_t,
                         sigma_s^2 b^2 / sigma_t^2 I).
"""
from __future__ import annotations

import torch

from .base import Solver
from .errors import InputError
from .options import Option
from .registry import register

__all__ = ["DDIM", "Ancestral"]


class _Posterior(Solver):
    kind = "sde"

    def kernel(self):
        t = self.times
        a, b2 = self.sde.transition(t[1:], t[:-1])
        if bool((b2 < 0).any()):
            k = int(torch.nonzero(b2 < 0)[0])
            raise InputError(f"solver {self.name!r}: the forward kernel of {self.sde!r} between "
                             f"t={t[k + 1].item():g} and t={t[k].item():g} has negative variance "
                             "(sigma_t/alpha_t must increase with t); the posterior step is undefined")
        return a.tolist(), b2.tolist()

    def setup(self):
        nd, (a, b2) = self.nodes, self.kernel()
        self.cx, self.ce, self.cz = [], [], []
        for i in range(self.steps):
            at, st, as_, ss = nd.alpha[i], nd.sigma[i], nd.alpha[i + 1], nd.sigma[i + 1]
            std = self.noise_std(a[i], b2[i], st, ss)
            # x_s = alpha_s x0 + sqrt(sigma_s^2 - std^2) eps + std z,  x0 = (x_t - sigma_t eps) / alpha_t
            self.cx.append(as_ / at)
            self.ce.append(self.sqrt(ss * ss - std * std) - as_ * st / at)
            self.cz.append(std)

    def noise_std(self, a, b2, sigma_t, sigma_s) -> float:
        raise NotImplementedError

    def step(self, i, x):
        eps = self.eval(x, i)
        out = torch.add(x * self.cx[i], eps, alpha=self.ce[i])
        if self.cz[i] > 0:  # grid-only Python float: no device sync
            out.add_(self.brownian_normal(i), alpha=self.cz[i])
        return out


@register
class Ancestral(_Posterior):
    """Ancestral sampling: draw x_{i+1} from the forward posterior with x0 predicted by the
    model (Ho et al. 2020, DDPM with the posterior variance beta-tilde, for VP; Song & Ermon's
    SMLD ancestral step x + (sigma_t^2 - sigma_s^2) score + noise, for VE; the same formula
    for every linear SDE). Weak order 1. 1 NFE per step.

    Equals ``ddim`` with eta = 1. Raises InputError where the posterior is undefined (a
    schedule whose sigma_t / alpha_t does not increase, so the forward kernel has b^2 < 0).
    """

    name = "ancestral"
    weak_order = 1
    stochastic = uses_brownian = True

    def noise_std(self, a, b2, sigma_t, sigma_s):
        return sigma_s * self.sqrt(b2) / sigma_t


@register
class DDIM(_Posterior):
    """DDIM (Song, Meng & Ermon 2021, eq. 12) for any linear SDE. 1 NFE per step.

        x_s = alpha_s x0 + sqrt(sigma_s^2 - s_eta^2) eps + s_eta z,
        s_eta = eta * sigma_s / sigma_t * b     (the posterior std times eta)

    eta = 0 (default): deterministic, the exponential-Euler step of the PF-ODE (= DPM-Solver-1),
    order 1. eta = 1: ancestral sampling. 0 < eta <= 1: stochastic, weak order 1.
    """

    name = "ddim"
    kind = "ode"  # with the default eta = 0; eta > 0 makes it an SDE sampler
    strong_order = deterministic_order = 1
    weak_order = 1
    noise_option = "eta"
    options = {"eta": Option(0.0, low=0.0, high=1.0, doc="the posterior std times eta: 0 deterministic, 1 ancestral")}
    variants = ({"eta": 1.0},)

    def noise_std(self, a, b2, sigma_t, sigma_s):
        return self.eta * sigma_s * self.sqrt(b2) / sigma_t
