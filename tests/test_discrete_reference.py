"""The float64 ODE reference on a discrete-time (DDPM) schedule: solved in lambda (exponential-
integrator form), checked against the closed-form flow of Gaussian data, its network-call count
against the smooth VP schedule's, and its own error estimate (two tolerances) against the truth."""
import math

import torch

import solvers
from bench.harness.formulas import per_sample_error
from bench.harness.reference import in_lambda, ode_reference, ode_reference_error

BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
S2 = 0.25  # data variance of the Gaussian model


def _gaussian(sde):
    """Data N(0, S2 I): eps(x, t) = sigma_t x / (alpha_t^2 S2 + sigma_t^2), the exact noise predictor."""
    def fn(x, t):
        a, s = sde.alpha(t.double())[:, None], sde.sigma(t.double())[:, None]
        return (s * x.double() / (a * a * S2 + s * s)).to(x.dtype)

    return solvers.ScoreModel(fn, sde, "eps", shape=(2,))


def _exact_flow(sde, x_T):
    """The PF-ODE of isotropic Gaussian data is linear: x_eps = x_T sd_eps / sd_T, sd_t^2 = alpha^2 S2 + sigma^2."""
    sd = [float((sde.alpha(t) ** 2 * S2 + sde.sigma(t) ** 2).sqrt()) for t in (sde.eps, sde.T)]
    return x_T * sd[0] / sd[1]


class _Net(torch.nn.Module):
    """A small random MLP with a sinusoidal embedding of the discrete step k (0..999)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.randn(10, 32, generator=g, dtype=torch.float64) / 10 ** 0.5
        self.w2 = torch.randn(32, 2, generator=g, dtype=torch.float64) / 32 ** 0.5

    def forward(self, x, k):
        f = 3e-3 * torch.arange(1, 5, dtype=torch.float64)
        e = torch.cat([torch.sin(k[:, None].double() * f), torch.cos(k[:, None].double() * f)], 1)
        return (torch.tanh(torch.cat([x.double(), e], 1) @ self.w1) @ self.w2).to(x.dtype)


def _calls(model, x_T, tol):
    base, count = model.fn, [0]

    def fn(x, t):
        count[0] += 1
        return base(x, t)

    model.fn = fn
    try:
        ode_reference(model, x_T, rtol=tol, atol=tol)
    finally:
        model.fn = base
    return count[0]


def test_discrete_reference_matches_the_closed_form_flow():
    sde = solvers.DiscreteVP(BETAS)
    assert in_lambda(sde) and not in_lambda(solvers.VP())
    m = _gaussian(sde)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = ode_reference(m, x_T, rtol=1e-10, atol=1e-10)
    truth = _exact_flow(sde, x_T)
    err = float(per_sample_error(ref, truth).max())
    assert err < 1e-8, err
    assert m.nfe == 0  # the reference is not counted in the model's NFE
    # its own error from two tolerances is a safe floor: at least the true error of the reference
    est = ode_reference_error(m, x_T, ref, rtol=1e-10)
    assert float(per_sample_error(ref, truth).median()) <= est < 1e-6


def test_discrete_reference_costs_at_most_twice_the_smooth_schedule():
    """Same network, same tolerance: DDPM betas (1000 knots) vs the smooth VP schedule."""
    net = _Net()
    discrete = solvers.ScoreModel.from_discrete(net, BETAS, shape=(2,))
    smooth = solvers.ScoreModel(lambda x, t: net(x, 1000 * t - 1), solvers.VP(), shape=(2,))
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    n_discrete, n_smooth = _calls(discrete, x_T, 1e-6), _calls(smooth, x_T, 1e-6)
    assert n_discrete <= 2 * n_smooth, (n_discrete, n_smooth)
    assert math.isfinite(float(ode_reference(discrete, x_T, rtol=1e-6, atol=1e-6).sum()))


def test_tuning_teacher_on_a_discrete_schedule_is_the_reference_in_lambda():
    from bench.harness.tuned import _Teacher

    net = _Net()
    discrete = solvers.ScoreModel.from_discrete(net, BETAS, shape=(2,))
    smooth = solvers.ScoreModel(lambda x, t: net(x, 1000 * t - 1), solvers.VP(), shape=(2,))
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    counts = {}
    for name, m in (("discrete", discrete), ("smooth", smooth)):
        m.nfe = 0
        out = _Teacher(m, 1e-6)(x_T)
        counts[name] = m.nfe  # the teacher's solves count on the model (solvers' dopri8) or not (reference)
    assert torch.equal(out, _Teacher(smooth, 1e-6)(x_T))
    ref = ode_reference(discrete, x_T, rtol=1e-6, atol=1e-6)
    assert torch.equal(_Teacher(discrete, 1e-6)(x_T), ref)
    assert _calls(discrete, x_T, 1e-6) <= 2 * max(counts["smooth"], 1)


def test_a_ddpm_model_defaults_to_the_affordable_tolerance(tmp_path, tiny_ddpm):
    """A discrete-time model's cells get ode_rtol = 1e-6 unless the suite sets ode_rtol (top level,
    per-model table or [[models]] table); the exact mixtures keep 1e-10."""
    from bench.harness.suite import DISCRETE_ODE_RTOL, load_suite

    base = 'name = "d"\nn = 8\nsteps = [2]\nmetrics = ["discretization"]\n{top}[[solvers]]\nname = "euler"\n'
    table = f'[[models]]\nname = "mine"\nspec = "diffusers:{tiny_ddpm}"\nignore = ["clip_sample"]\n{{extra}}'

    def rtols(top="", extra=""):
        p = tmp_path / "d.toml"
        p.write_text(base.format(top=top) + table.format(extra=extra) + '[[models]]\nspec = "gmm2d-vp"\n')
        return {c.model: c.reference["ode_rtol"] for c in load_suite(str(p)).cells()}

    assert rtols() == {"mine": DISCRETE_ODE_RTOL, "gmm2d-vp": 1e-10}
    assert rtols(top="reference = { ode_rtol = 1e-8 }\n") == {"mine": 1e-8, "gmm2d-vp": 1e-8}
    assert rtols(extra="reference = { ode_rtol = 1e-7 }\n")["mine"] == 1e-7
