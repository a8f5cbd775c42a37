"""Linear forward SDEs dx = f(t) x dt + g(t) dw, described by their marginal schedule.

Every process here has x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I). A subclass gives
``log_alpha``, ``log_sigma``, their time derivatives (through ``f`` and ``g2``) and the
inverse of ``lam`` (lambda_t = log(alpha_t / sigma_t), half the log-SNR); everything
else follows:

    f(t)   = d log(alpha_t) / dt
    g^2(t) = d(sigma_t^2)/dt - 2 f(t) sigma_t^2

Methods accept a Python float or a tensor of times and return tensors of the same dtype
(float64 for floats). Formulas use expm1/log1p so that sigma_t, lambda_t and g^2 keep full
relative precision near t = 0 where sigma_t -> 0 (VP) and alpha_t -> 1.
"""
from __future__ import annotations

import math

import torch

from . import validate

__all__ = ["SDE", "VP", "SubVP", "VE", "EDM", "DiscreteVP", "SDES"]


def _t(t) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t if t.is_floating_point() else t.double()
    return torch.as_tensor(t, dtype=torch.float64)


class SDE:
    """Base class. Subclasses define the schedule; see the module docstring."""

    name: str = "sde"
    #: the grid used when neither the call nor the solver names one
    default_grid: str = "uniform"

    def __init__(self, T: float, eps: float, prior_std: float):
        validate.sde_args(type(self).__name__, T=T, eps=eps, prior_std=prior_std)
        if not (0 < eps < T):
            raise ValueError(f"{type(self).__name__}: need 0 < eps < T, got eps={eps}, T={T}")
        self.T = float(T)
        self.eps = float(eps)
        self.prior_std = float(prior_std)

    # --- schedule (subclasses) -------------------------------------------------------
    def log_alpha(self, t) -> torch.Tensor:
        raise NotImplementedError

    def log_sigma(self, t) -> torch.Tensor:
        raise NotImplementedError

    def f(self, t) -> torch.Tensor:
        """Drift coefficient f(t) = d log alpha_t / dt."""
        raise NotImplementedError

    def g2(self, t) -> torch.Tensor:
        """Squared diffusion g(t)^2 = d sigma_t^2/dt - 2 f(t) sigma_t^2."""
        raise NotImplementedError

    def t_of_lam(self, lam) -> torch.Tensor:
        """Inverse of ``lam``: the time at which lambda_t = lam."""
        raise NotImplementedError

    # --- derived ---------------------------------------------------------------------
    def alpha(self, t) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t) -> torch.Tensor:
        return torch.exp(self.log_sigma(t))

    def lam(self, t) -> torch.Tensor:
        """lambda_t = log(alpha_t / sigma_t) (half the log signal-to-noise ratio)."""
        return self.log_alpha(t) - self.log_sigma(t)

    def transition(self, s, t):
        """Kernel of x_t | x_s for s < t: N(a x_s, b2 I); returns (a, b2).

        a = alpha_t / alpha_s and b2 = sigma_t^2 - a^2 sigma_s^2, computed as
        sigma_t^2 * (-expm1(-2 (lambda_s - lambda_t))) for precision when s ~ t.
        """
        s, t = _t(s), _t(t)
        a = torch.exp(self.log_alpha(t) - self.log_alpha(s))
        b2 = torch.exp(2 * self.log_sigma(t)) * -torch.expm1(2 * (self.lam(t) - self.lam(s)))
        return a, b2

    def prior_sample(self, shape, *, generator=None, dtype=torch.float32, device="cpu"):
        """Draw x_T from the prior N(0, prior_std^2 I)."""
        z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return z * self.prior_std

    def prior_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; 0, prior_std^2 I), summed over all but the batch dimension."""
        d = x[0].numel()
        s2 = self.prior_std**2
        return -0.5 * (x.flatten(1) ** 2).sum(1) / s2 - 0.5 * d * math.log(2 * math.pi * s2)

    def __repr__(self):
        return f"{type(self).__name__}(T={self.T}, eps={self.eps})"


class _VPSchedule(SDE):
    """alpha_t = exp(-t^2 (b1-b0)/4 - t b0/2), i.e. beta(t) = b0 + t (b1 - b0)."""

    def __init__(self, beta_min=0.1, beta_max=20.0, T=1.0, eps=1e-3, prior_std=1.0):
        validate.sde_args(type(self).__name__, beta_min=beta_min, beta_max=beta_max, T=T, eps=eps)
        if not (0 <= beta_min < beta_max):
            raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        super().__init__(T, eps, prior_std)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t):
        return self.beta_min + _t(t) * (self.beta_max - self.beta_min)

    def log_alpha(self, t):
        t = _t(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def f(self, t):
        return -0.5 * self.beta(t)

    def _t_of_log_alpha(self, la):
        # positive root of (b1-b0)/4 t^2 + b0/2 t + la = 0, in the cancellation-free form
        a, b = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min
        return -2 * la / (b + torch.sqrt(b * b - 4 * a * la))

    def __repr__(self):
        return (f"{type(self).__name__}(beta_min={self.beta_min}, beta_max={self.beta_max}, "
                f"T={self.T}, eps={self.eps})")


class VP(_VPSchedule):
    """Variance-preserving SDE (Song et al. 2021; DDPM in continuous time): sigma^2 = 1 - alpha^2."""

    name = "vp"

    def log_sigma(self, t):
        return 0.5 * torch.log(-torch.expm1(2 * self.log_alpha(t)))

    def g2(self, t):
        return self.beta(t)

    def t_of_lam(self, lam):
        return self._t_of_log_alpha(-0.5 * torch.nn.functional.softplus(-2 * _t(lam)))


class SubVP(_VPSchedule):
    """sub-VP SDE (Song et al. 2021): alpha as VP, sigma = 1 - alpha^2, g^2 = beta (1 - alpha^4)."""

    name = "subvp"

    def log_sigma(self, t):
        return torch.log(-torch.expm1(2 * self.log_alpha(t)))

    def g2(self, t):
        return self.beta(t) * -torch.expm1(4 * self.log_alpha(t))

    def t_of_lam(self, lam):
        # alpha / (1 - alpha^2) = e^lam  =>  alpha = 2 / (e^-lam + sqrt(e^-2lam + 4))
        em = torch.exp(-_t(lam))
        return self._t_of_log_alpha(math.log(2.0) - torch.log(em + torch.sqrt(em * em + 4)))


class VE(SDE):
    """Variance-exploding SDE (SMLD/NCSN; Song et al. 2021): alpha = 1, sigma = smin (smax/smin)^t."""

    name = "ve"

    def __init__(self, sigma_min=0.01, sigma_max=50.0, T=1.0, eps=1e-5):
        validate.sde_args("VE", sigma_min=sigma_min, sigma_max=sigma_max, T=T, eps=eps)
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        super().__init__(T, eps, prior_std=sigma_max)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(sigma_max / sigma_min)

    def log_alpha(self, t):
        return torch.zeros_like(_t(t))

    def log_sigma(self, t):
        return math.log(self.sigma_min) + _t(t) * self._log_ratio

    def f(self, t):
        return torch.zeros_like(_t(t))

    def g2(self, t):
        return 2 * self._log_ratio * torch.exp(2 * self.log_sigma(t))

    def t_of_lam(self, lam):
        return (-_t(lam) - math.log(self.sigma_min)) / self._log_ratio

    def __repr__(self):
        return f"VE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, T={self.T}, eps={self.eps})"


class EDM(SDE):
    """Sigma-time SDE of Karras et al. (2022): alpha = 1, sigma = t, g^2 = 2t; t runs over sigma."""

    name = "edm"
    default_grid = "edm"

    def __init__(self, sigma_min=0.002, sigma_max=80.0):
        validate.sde_args("EDM", sigma_min=sigma_min, sigma_max=sigma_max)
        super().__init__(T=sigma_max, eps=sigma_min, prior_std=sigma_max)

    def log_alpha(self, t):
        return torch.zeros_like(_t(t))

    def log_sigma(self, t):
        return torch.log(_t(t))

    def f(self, t):
        return torch.zeros_like(_t(t))

    def g2(self, t):
        return 2 * _t(t)

    def t_of_lam(self, lam):
        return torch.exp(-_t(lam))

    def __repr__(self):
        return f"EDM(sigma_min={self.eps}, sigma_max={self.T})"


class DiscreteVP(SDE):
    """Continuous-time view of a DDPM discrete schedule (betas_1..betas_N).

    Follows the convention of Lu et al. (DPM-Solver, 2022): discrete step k = 0..N-1 sits at
    t_k = (k + 1) / N, log alpha_t is the piecewise-linear interpolation of
    log alpha_k = 0.5 sum_{j<=k} log(1 - beta_j), so f is piecewise constant and g^2 = -2 f.
    ``discrete_step(t) = N t - 1`` is what the network receives (see ``ScoreModel.from_discrete``).
    """

    name = "discrete_vp"

    def __init__(self, betas, T: float = 1.0):
        validate.betas(betas)
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("DiscreteVP: betas must be a 1-D sequence of at least 2 values in (0, 1)")
        self.num_steps = n = betas.numel()
        super().__init__(T=1.0, eps=1.0 / n, prior_std=1.0)
        self._tk = torch.cat([torch.zeros(1, dtype=torch.float64),
                              torch.arange(1, n + 1, dtype=torch.float64) / n])
        self._la = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * torch.cumsum(torch.log1p(-betas), 0)])
        self._slope = torch.diff(self._la) / torch.diff(self._tk)

    def _segment(self, t):
        return torch.clamp(torch.searchsorted(self._tk.to(t.device), t.contiguous(), right=True) - 1,
                           0, self.num_steps - 1)

    def log_alpha(self, t):
        t = _t(t)
        k = self._segment(t.double())
        tk, la, sl = (v.to(t.device) for v in (self._tk, self._la, self._slope))
        return (la[k] + sl[k] * (t.double() - tk[k])).to(t.dtype)

    def log_sigma(self, t):
        return 0.5 * torch.log(-torch.expm1(2 * self.log_alpha(t)))

    def f(self, t):
        t = _t(t)
        return self._slope.to(t.device)[self._segment(t.double())].to(t.dtype)

    def g2(self, t):
        return -2 * self.f(t)

    def t_of_lam(self, lam):
        lam = _t(lam)
        la = (-0.5 * torch.nn.functional.softplus(-2 * lam.double()))
        # log_alpha decreases in t: search on the negated knots
        neg = -self._la.to(lam.device)
        k = torch.clamp(torch.searchsorted(neg, (-la).contiguous(), right=True) - 1, 0, self.num_steps - 1)
        tk = self._tk.to(lam.device)
        return (tk[k] + (la - self._la.to(lam.device)[k]) / self._slope.to(lam.device)[k]).to(lam.dtype)

    def discrete_step(self, t):
        return _t(t) * self.num_steps - 1

    def __repr__(self):
        return f"DiscreteVP(N={self.num_steps})"


#: SDE classes by name (the model zoo builds models per SDE from this)
SDES = {cls.name: cls for cls in (VP, SubVP, VE, EDM)}
