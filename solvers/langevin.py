"""Langevin MCMC correctors and predictor-corrector sampling (Song et al. 2021, Sec. 4.2,
Algorithms 2-5; Song & Ermon 2019).

A corrector runs ``corrector_steps`` Langevin steps targeting p_t at a grid time:

    x <- x + e score(x, t) + sqrt(2 e) z,   z ~ N(0, I) from the corrector generator

As a standalone solver it corrects at every grid time t_1..t_N without a predictor
(annealed Langevin dynamics, "C" sampling); ``pc`` runs a predictor step from t_i to
t_{i+1} and then the corrector at t_{i+1}, as in the paper's Algorithms 2 and 3. No
convergence order is claimed: the stationary bias depends on the step size (snr).
"""
from __future__ import annotations

import copy

import torch

from . import validate
from .base import Solver
from .errors import InputError
from .options import Option, positive
from .registry import available, get, register

__all__ = ["Langevin", "AnnealedLangevin", "PredictorCorrector"]


class _Corrector(Solver):
    kind = "corrector"
    stochastic = True
    options = {"snr": positive(0.16, doc="signal-to-noise ratio of the step size rule"),
               "corrector_steps": Option(1, low=1, doc="Langevin steps at each grid time")}

    @classmethod
    def nfe_of_steps(cls, steps, opts):
        return opts["corrector_steps"] * steps

    def setup(self):
        la = self.nodes.alpha
        # Song et al.'s alpha_i = 1 - beta_i for VP (1 for VE): here (alpha_k / alpha_{k-1})^2
        self.alpha_ratio = [1.0] + [(la[k] / la[k - 1]) ** 2 for k in range(1, len(la))]

    def correct(self, x, k):
        for _ in range(self.corrector_steps):
            x = self.langevin_step(x, k)
        return x

    def step(self, i, x):
        return self.correct(x, i + 1)


@register
class Langevin(_Corrector):
    """Langevin corrector with a signal-to-noise step rule (Song et al. 2021, Algorithms 4-5):
    e = 2 alpha_i (snr ||z|| / ||score||)^2 with the norms averaged over the batch, as in the
    published code (score_sde's LangevinCorrector). A per-sample rule is unstable in low
    dimension (a sample near a mode has ||score|| ~ 0 and takes a huge step), so the batch
    average stays; the step, and so a sample, depends on its batch. 1 NFE per corrector step."""

    name = "langevin"

    def langevin_step(self, x, k):
        s = self.eval(x, k, "score")
        z = self.randn(x)
        ratio = z.flatten(1).norm(dim=1).mean() / s.flatten(1).norm(dim=1).mean()
        e = (ratio * self.snr) ** 2 * (2 * self.alpha_ratio[k])
        return x + e * s + torch.sqrt(2 * e) * z


@register
class AnnealedLangevin(_Corrector):
    """Annealed Langevin dynamics (Song & Ermon 2019; score_sde's AnnealedLangevinDynamics):
    step e = 2 alpha_i (snr sigma_t)^2, fixed by the grid (no norms). 1 NFE per corrector step."""

    name = "annealed_langevin"

    def setup(self):
        super().setup()
        nd = self.nodes
        self.e = [2 * self.alpha_ratio[k] * (self.snr * nd.sigma[k]) ** 2 for k in range(len(nd))]

    def langevin_step(self, x, k):
        s = self.eval(x, k, "score")
        e = self.e[k]
        return torch.add(x, s, alpha=e).add_(self.randn(x), alpha=self.sqrt(2 * e))


@register
class PredictorCorrector(Solver):
    """Predictor-corrector sampling (Song et al. 2021, Algorithms 2-3): each step is one
    ``predictor`` step t_i -> t_{i+1}, then ``corrector_steps`` steps of ``corrector`` at
    t_{i+1}. NFE per step = predictor's + corrector_steps. No order claimed.

    Options: predictor (any registered ODE/SDE solver, default reverse_diffusion),
    corrector (langevin | annealed_langevin), snr, corrector_steps, predictor_options (dict).
    """

    name = "pc"
    kind = "sde"
    stochastic = True
    nfe_per_step = 2
    options = {"predictor": Option("reverse_diffusion", doc="a registered fixed-step ODE or SDE solver"),
               "corrector": Option("langevin", doc="a registered corrector: langevin or annealed_langevin"),
               **_Corrector.options,
               "predictor_options": Option(None, type=dict, doc="the predictor's options")}

    @classmethod
    def _parts(cls, opts):
        pred, corr = get(opts["predictor"]), get(opts["corrector"])
        validate.pc_predictor(pred)
        if pred.kind == "corrector" or pred is cls:
            raise InputError(f"solver 'pc': predictor must be an ODE or SDE solver, got {opts['predictor']!r}")
        if corr.kind != "corrector":
            raise InputError(f"solver 'pc': corrector must be one of {', '.join(available('corrector'))}, "
                             f"got {opts['corrector']!r}")
        popts = opts["predictor_options"] or {}
        if "denoise" in popts:
            raise InputError("solver 'pc': set denoise on pc itself, not in predictor_options")
        pred.resolve_options(popts)
        return pred, corr, popts

    @classmethod
    def check_options(cls, opts):
        cls._parts(opts)

    @classmethod
    def nfe_of_steps(cls, steps, opts):
        pred, _, popts = cls._parts(opts)
        return pred.expected_nfe(steps, **popts) + opts["corrector_steps"] * steps

    def setup(self):
        pred, corr, popts = self._parts(self.opts)
        kw = dict(dtype=self.dtype, device=self.device)
        self.pred = pred(self.model, self.times, **kw, **popts)
        self.corr = corr(self.model, self.times, snr=self.snr, corrector_steps=self.corrector_steps, **kw)
        self.uses_brownian = self.pred.uses_brownian
        self.needs_path = self.pred.needs_path

    def reset(self):  # the parts hold per-call state: each call gets its own copies
        self.pred, self.corr = copy.copy(self.pred), copy.copy(self.corr)
        self.pred.reset()
        self.corr.reset()

    def step(self, i, x):
        # the loop gives us the noise sources; hand them on
        self.pred.noise, self.corr.generator = self.noise, self.generator
        return self.corr.correct(self.pred.step(i, x), i + 1)
