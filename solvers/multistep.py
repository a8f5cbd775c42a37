"""Linear multistep solvers of the probability-flow ODE: UniPC, DEIS (tAB) and iPNDM.

All three keep the network outputs of the last few grid nodes on the instance (one instance
per sampling call) and combine them linearly; every coefficient depends only on the grid and
is computed once in ``setup`` in float64 (small linear systems by ``torch.linalg.solve`` on
float64 CPU tensors). A step makes at most one network call, so NFE = steps (+1 with
``denoise``). Multistep methods start with lower orders (warm-up) because the history is
short at first (``expint.multistep_orders``): the order used on step i (0-based) is

    p_i = min(order, i + 1)                      and, with lower_order_final,
    p_i = min(order, i + 1, steps - i)           (the rule of the official UniPC /
                                                  DPM-Solver++ multistep code).

Conventions (``solvers.sde``): x_t = alpha_t x0 + sigma_t eps, lambda_t = log(alpha_t/sigma_t),
for a step t_i -> t_{i+1}: h = lambda_{i+1} - lambda_i > 0; rho_t = sigma_t/alpha_t = e^-lambda_t.
The PF-ODE in these variables has the exact solution

    x_{i+1} = alpha_{i+1} [ x_i/alpha_i + int_{t_i}^{t_{i+1}} (d rho/d tau) eps(x_tau, tau) d tau ]   (eps form)
    x_{i+1} = sigma_{i+1}/sigma_i x_i + sigma_{i+1} int_{lambda_i}^{lambda_{i+1}} e^lambda x0(lambda) d lambda
                                                                                                    (x0 form)

and each method approximates the integral with a polynomial through past outputs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .base import Solver
from .expint import multistep_orders, phi
from .options import Option
from .registry import register

__all__ = ["UniPC", "DEIS", "IPNDM"]

#: Adams-Bashforth coefficients for a uniform step (newest value first)
_AB = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12),
       4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def _solve(rows, rhs) -> list[float]:
    """Solve the small linear system rows @ c = rhs in float64; returns a list of floats."""
    a = torch.tensor(rows, dtype=torch.float64)
    b = torch.tensor(rhs, dtype=torch.float64)
    return torch.linalg.solve(a, b).tolist()


def _vandermonde(nodes, n):
    """rows[m][j] = nodes[j] ** m, m < n."""
    return [[s**m for s in nodes] for m in range(n)]


def _order(default: int, highest: int) -> Option:
    return Option(default, low=1, high=highest, doc="the method's order (warm-up with lower orders)")


_LOWER_ORDER_FINAL = Option(False, doc="lower the order on the last steps, min(order, steps - i)")


class _LinearMultistep(Solver):
    """Shared parts: the order schedule and the history of network outputs."""

    kind = "ode"
    multistep = True
    #: the network output kept in the history ("eps" or "x0")
    history_kind = "eps"

    def setup(self):
        self.orders = multistep_orders(self.steps, self.order, self.lower_order_final)
        self.coefficients()

    def reset(self):
        self.hist: list[torch.Tensor] = []  # outputs at nodes ..., k-1, k (newest last)
        self.hist_node = -1                 # k: the node of hist[-1]

    def coefficients(self):
        """Fill self.cx[i] (weight of x_i) and self.ce[i] (weights of hist[-1], hist[-2], ...)."""
        raise NotImplementedError

    def remember(self, m, node: int):
        self.hist.append(m)
        self.hist_node = node
        if len(self.hist) > self.order:
            del self.hist[0]

    def combine(self, x, cx: float, coefs) -> torch.Tensor:
        """cx * x + sum_j coefs[j] * hist[-1-j]."""
        out = x * cx
        for c, m in zip(coefs, reversed(self.hist)):
            out.add_(m, alpha=c)
        return out

    def step(self, i, x):
        self.remember(self.eval(x, i, self.history_kind), i)
        return self.combine(x, self.cx[i], self.ce[i])


@register
class UniPC(_LinearMultistep):
    """UniPC multistep predictor-corrector, UniP-p + UniC-p (Zhao et al. 2023), x0 form.

    "UniPC: a unified predictor-corrector framework for fast sampling of diffusion models",
    data-prediction form with the B(h) variants bh1/bh2, as the official ``uni_pc.py``
    (``multistep_uni_pc_bh_update`` and ``UniPC.sample(method="multistep")``).

    Order: p + 1 with the corrector (the paper's result for UniC after UniP-p; p = ``order``),
    p without it. NFE per step: 1 (NFE = steps). The corrector of step i uses the network
    output at the *predicted* x_{i+1}; that output is kept as the history value of node i+1
    for the next predictor, and the corrected x_{i+1} is what the next step starts from.
    As in the official code the corrector is skipped on the final step (its evaluation
    would only serve a next step), so the last step is a plain UniP step.

    Step t_i -> t_{i+1} of order p (hh = -h, m_j = x0 output at node j, r_k =
    (lambda_{i-k} - lambda_i)/h, D_k = (m_{i-k} - m_i)/r_k, k = 1..p-1):

        x_pred = sigma_{i+1}/sigma_i x_i - alpha_{i+1} (e^hh - 1) m_i - alpha_{i+1} B(h) sum_k a_k D_k
        x_corr = sigma_{i+1}/sigma_i x_i - alpha_{i+1} (e^hh - 1) m_i
                 - alpha_{i+1} B(h) (sum_k c_k D_k + c_p (m_{i+1} - m_i)),   m_{i+1} at x_pred,

    B(h) = hh (``bh1``) or e^hh - 1 (``bh2``); g_j = j! hh phi_{j+1}(hh) / B(h); a solves the
    (p-1)x(p-1) system sum_k r_k^(j-1) a_k = g_j, c the p x p one on (r_1..r_{p-1}, 1). The
    official shortcuts a = (1/2) for p = 2 and c = (1/2) for p = 1 are kept.

    Options:
        order (2): predictor order p in 1..3; warm-up with orders 1, 2 on the first steps.
        variant ("bh1"): "bh1" (B(h) = h, the official default) or "bh2" (B(h) = e^h - 1).
        use_corrector (True): apply UniC (no extra NFE). The official sampler always corrects
            (except on the final step); False gives UniP-p alone, order p.
        lower_order_final (True): the official rule, order min(p, steps - i) on step i.
            The final step is then first order without corrector: an O(h^2) local error,
            with a tiny constant on the log-SNR grid (dx0/dlambda ~ sigma^2 near t = eps),
            which for p = 3 shows only past ~128 steps (measured 2d slope 2.4 at 256->512).
    Default grid: ``logsnr`` (uniform in lambda, the grid of the official score_sde VP
    script). In theory the published warm-up (first step UniP-1 + UniC-1, local error
    O(h^3)) also caps the asymptotic order at 3 for p = 3; it did not show up to 512 steps.
    """

    name = "unipc"
    strong_order = 3
    history_kind = "x0"
    default_grid = "logsnr"
    options = {"order": _order(2, 3), "variant": Option("bh1", choices=("bh1", "bh2"), doc="B(h) = h or e^h - 1"),
               "use_corrector": Option(True, doc="apply UniC (no extra NFE)"),
               "lower_order_final": Option(True, doc=_LOWER_ORDER_FINAL.doc)}
    variants = ({"order": 1}, {"order": 1, "variant": "bh2"}, {"use_corrector": False},
                {"use_corrector": False, "variant": "bh2"}, {"order": 1, "use_corrector": False})

    @classmethod
    def declared_order(cls, **options):
        opts = cls.resolve_options(options)
        return opts["order"] + int(opts["use_corrector"])

    def coefficients(self):
        nd, lam = self.nodes, self.nodes.lam
        self.cx: list[float] = []
        self.ce: list[list[float]] = []
        self.cc: list[list[float] | None] = []
        self.cnew: list[float | None] = []
        for i, p in enumerate(self.orders):
            h = lam[i + 1] - lam[i]
            hh = -h
            bh = hh if self.variant == "bh1" else math.expm1(hh)
            g = [math.factorial(j) * hh * phi(j + 1, hh) / bh for j in range(1, p + 1)]
            r = [(lam[i - k] - lam[i]) / h for k in range(1, p)]
            base = -nd.alpha[i + 1] * math.expm1(hh)  # weight of m_i in the DDIM part
            ab = nd.alpha[i + 1] * bh
            self.cx.append(nd.sigma[i + 1] / nd.sigma[i])
            # predictor: weights of m_i, m_{i-1}, ..., m_{i-p+1}
            a = [] if p == 1 else [0.5] if p == 2 else _solve(_vandermonde(r, p - 1), g[:p - 1])
            self.ce.append([base + ab * sum(q / rk for q, rk in zip(a, r))]
                           + [-ab * q / rk for q, rk in zip(a, r)])
            # corrector (skipped on the final step, as the official code does)
            if self.use_corrector and i < self.steps - 1:
                c = [0.5] if p == 1 else _solve(_vandermonde(r + [1.0], p), g)
                self.cc.append([base + ab * (sum(q / rk for q, rk in zip(c, r)) + c[-1])]
                               + [-ab * q / rk for q, rk in zip(c, r)])
                self.cnew.append(-ab * c[-1])
            else:
                self.cc.append(None)
                self.cnew.append(None)
        self.dc = [None if cc is None else [a - b for a, b in zip(cc, ce)] for cc, ce in zip(self.cc, self.ce)]

    def step(self, i, x):
        if self.hist_node != i:  # first step, or no corrector evaluation to reuse
            self.remember(self.eval(x, i, "x0"), i)
        x_pred = self.combine(x, self.cx[i], self.ce[i])
        dc = self.dc[i]
        if dc is None:
            return x_pred
        m_new = self.eval(x_pred, i + 1, "x0")
        # x_corr = x_pred + sum_j (cc_j - ce_j) hist[-1-j] + cnew m_new (x_pred is not needed after)
        for c, m in zip(dc, reversed(self.hist)):
            x_pred.add_(m, alpha=c)
        self.remember(m_new, i + 1)
        return x_pred.add_(m_new, alpha=self.cnew[i])


@register
class DEIS(_LinearMultistep):
    """DEIS tAB: exponential multistep integrator, eps extrapolated in t (Zhang & Chen 2023).

    "Fast sampling of diffusion models with exponential integrator" (ICLR 2023), tAB-DEIS,
    official qsh-zh/deis ``get_sampler_t_ab``. Exponential integrator in eps form:

        x_{i+1} = alpha_{i+1}/alpha_i x_i + sum_{j<p} C_ij eps_{i-j},
        C_ij = alpha_{i+1} int_{t_i}^{t_{i+1}} rho'(tau) l_j(tau) d tau,   rho = sigma/alpha,

    l_j the Lagrange basis in t through t_i, ..., t_{i-p+1} (rho' = g^2/(2 sigma alpha) is
    the exact transition weight of eps). The integrals are computed in ``setup`` (float64):
    the moments int rho'(tau) u^m d tau, u = (tau - t_i)/(t_{i+1} - t_i), integrated by parts
    (only rho is needed) with 32-point Gauss-Legendre quadrature, then a Vandermonde solve.

    Order: ``order`` = p, the number of eps values. The paper's tAB-r (polynomial degree r)
    is ``order=r+1`` and the official ``ab_order=k`` is ``order=k+1``; order 1 is DDIM.
    Order 3 is reached slowly on the exact mixtures (fitted 2.5 on 8..64 steps, 2.85 on
    32..256, 2.9-3.0 at 256->512; similar on the logsnr and edm grids). The lower-order
    warm-up (official) starts with a DDIM step whose O(h^2) error has a small constant;
    asymptotically it caps the order at 2. For order 4 (the official default ab_order=3)
    this cap already shows on the quadratic grid (slope 2.5 at 256->512, 3.8 when the
    first three steps are refined), so order 4 is not offered.
    NFE per step: 1. Options: order (3; 1..3), lower_order_final (False, as the official
    code: warm-up only). Default grid: ``quadratic`` (uniform in sqrt(t); the official
    README's ts_phase="t", ts_order=2).
    """

    name = "deis"
    strong_order = 3
    default_grid = "quadratic"
    options = {"order": _order(3, 3), "lower_order_final": _LOWER_ORDER_FINAL}
    variants = ({"order": 1}, {"order": 2})
    n_quad = 32

    @classmethod
    def declared_order(cls, **options):
        return cls.resolve_options(options)["order"]

    def coefficients(self):
        nd, t = self.nodes, self.nodes.times
        u, w = _gauss_legendre01(self.n_quad)
        t0 = torch.tensor(t[:-1], dtype=torch.float64)[:, None]
        dt = torch.tensor(self.h, dtype=torch.float64)[:, None]
        rho_q = torch.exp(-self.sde.lam(t0 + dt * u[None, :]))      # (steps, n_quad)
        rho = torch.exp(-torch.tensor(nd.lam, dtype=torch.float64))
        # mu_0 = rho_{i+1} - rho_i;  mu_m = m int_0^1 (rho_{i+1} - rho(u)) u^(m-1) du, m >= 1
        diff = rho[1:, None] - rho_q
        mom = [(rho[1:] - rho[:-1]).tolist()]
        for m in range(1, self.order):
            mom.append((m * (diff * u ** (m - 1) * w).sum(1)).tolist())
        self.cx, self.ce = [], []
        for i, p in enumerate(self.orders):
            s = [(t[i - j] - t[i]) / self.h[i] for j in range(p)]  # u at the nodes used
            c = _solve(_vandermonde(s, p), [mom[m][i] for m in range(p)])
            self.cx.append(nd.alpha[i + 1] / nd.alpha[i])
            self.ce.append([nd.alpha[i + 1] * cj for cj in c])


@register
class IPNDM(_LinearMultistep):
    """iPNDM: Adams-Bashforth in EDM sigma space (Zhang & Chen 2023; Zhou et al. 2024).

    Improved pseudo-numerical multistep: DEIS paper and official qsh-zh/deis
    ``get_sampler_ipndm``; zju-pi/diff-sampler ``ipndm_sampler`` / ``ipndm_v_sampler``
    (Zhou et al. 2024, "Fast ODE-based sampling for diffusion models in around 5 steps");
    k-diffusion ``sample_ipndm`` / ``sample_ipndm_v``. Adams-Bashforth on the EDM sigma-space ODE

        d x_k / d s = eps(x, t),   x_k = x / alpha_t,   s = sigma_t / alpha_t = e^-lambda_t,
        x_{i+1} = alpha_{i+1}/alpha_i x_i + alpha_{i+1} (s_{i+1} - s_i) sum_{j<p} c_j eps_{i-j}.

    Options:
        order (4): 1..4; warm-up with orders 1, 2, 3, then 4 (as published).
        variant ("fixed"):
            "fixed": the published iPNDM (DEIS, diff-sampler ``ipndm``, k-diffusion): the
            uniform-step AB weights (1), (3, -1)/2, (23, -16, 5)/12, (55, -59, 37, -9)/24 on
            any grid. On a non-uniform grid they meet the order conditions only up to
            O(step ratio - 1), so the global order is min(order, 2): on the default EDM grid
            it shows 2 for order >= 2 (declared so).
            "variable": variable-step AB, c_j = (1/ds) int l_j(s) ds over the step (Lagrange
            basis in s through the nodes used, solved in setup); order ``order`` on any grid
            (slow to reach for order >= 3: fitted 2.3 / 2.8 for order 3 / 4 on 8..64 steps,
            2.8 / 3.7 on 32..256, 2.95 / 3.9 at 256->512). Same as diff-sampler's
            ``ipndm_v`` for orders 1-2 and on uniform grids; for orders 3-4 ipndm_v's closed
            forms satisfy the variable-step order conditions only approximately, these exactly.
        lower_order_final (False): lower the order on the last steps (published: no).
    NFE per step: 1. Default grid: ``edm`` (rho = 7, diff-sampler's default; DEIS's original
    iPNDM used a uniform t grid).
    """

    name = "ipndm"
    strong_order = 2
    default_grid = "edm"
    options = {"order": _order(4, 4),
               "variant": Option("fixed", choices=("fixed", "variable"), doc="AB weights: uniform or variable step"),
               "lower_order_final": _LOWER_ORDER_FINAL}
    variants = ({"order": 1}, {"order": 2}, {"variant": "variable", "order": 2})

    @classmethod
    def declared_order(cls, **options):
        opts = cls.resolve_options(options)
        return opts["order"] if opts["variant"] == "variable" else min(opts["order"], 2)

    def coefficients(self):
        nd = self.nodes
        s = [math.exp(-v) for v in nd.lam]
        self.cx, self.ce = [], []
        for i, p in enumerate(self.orders):
            ds = s[i + 1] - s[i]
            c: Sequence[float]
            if self.variant == "fixed":
                c = _AB[p]
            else:
                r = [(s[i - j] - s[i]) / ds for j in range(p)]
                c = _solve(_vandermonde(r, p), [1.0 / (m + 1) for m in range(p)])
            self.cx.append(nd.alpha[i + 1] / nd.alpha[i])
            self.ce.append([nd.alpha[i + 1] * ds * cj for cj in c])


_GL: dict[int, tuple] = {}


def _gauss_legendre01(n: int):
    """Gauss-Legendre nodes and weights on [0, 1] (Golub-Welsch, float64), cached."""
    if n not in _GL:
        k = torch.arange(1, n, dtype=torch.float64)
        off = k / torch.sqrt(4 * k * k - 1)
        jac = torch.diag(off, 1) + torch.diag(off, -1)
        x, v = torch.linalg.eigh(jac)
        _GL[n] = ((x + 1) / 2, v[0] ** 2)  # weights 2 v0^2 on [-1, 1] -> v0^2 on [0, 1]
    return _GL[n]
