import math
import re

import pytest
import torch
from conftest import CountingFn, case_id, solver_cases

import solvers
from bench.zoo import models
from solvers import InputError, NonFiniteError, ScoreModel, Solver

ALL = list(solver_cases())


def counted(name="gmm2d-vp"):
    exact = models.load(name)
    fn = CountingFn(exact.fn)
    return ScoreModel(fn, exact.sde, "eps", shape=(exact.gmm.d,), name=name), fn


@pytest.mark.parametrize("case", ALL, ids=case_id)
@pytest.mark.parametrize("denoise", [False, True])
def test_nfe_is_what_was_spent_and_what_was_declared(case, denoise):
    name, opts = case
    cls = solvers.get(name)
    for steps in (1, 3, 7):
        model, fn = counted()
        out = solvers.sample(model, name, steps=steps, n=16, seed=1, denoise=denoise, **opts)
        expected = cls.expected_nfe(steps, denoise=denoise, **opts)
        assert out.nfe == fn.calls, (name, steps)
        if expected is None:  # adaptive: the tolerance sets the NFE; counted, not declared
            assert cls.adaptive and out.nfe >= 1, (name, steps)
        else:
            assert out.nfe == expected, (name, steps)
        assert out.steps == steps and out.times.shape == (steps + 1,)
        assert out.x.shape == (16, 2) and bool(torch.isfinite(out.x).all())


@pytest.mark.parametrize("case", ALL, ids=case_id)
def test_float64_end_to_end_and_reproducible(case):
    name, opts = case
    m = models.load("gmm2d-ve")
    x_T = m.sample_prior(32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = solvers.sample(m, name, steps=6, x_T=x_T, seed=3, **opts)
    b = solvers.sample(m, name, steps=6, x_T=x_T, seed=3, **opts)
    assert a.x.dtype == torch.float64
    assert torch.equal(a.x, b.x), "same seed and inputs must give identical samples"
    if solvers.get(name).is_stochastic(**opts):
        c = solvers.sample(m, name, steps=6, x_T=x_T, seed=4, **opts)
        assert not torch.equal(a.x, c.x), "a different seed must change a stochastic solver's samples"


def test_trajectory_and_grid():
    m = models.load("gmm2d-vp")
    out = solvers.sample(m, "heun", steps=5, n=10, return_trajectory=True, grid="logsnr")
    assert out.trajectory.shape == (6, 10, 2)
    torch.testing.assert_close(out.trajectory[-1], out.x)
    torch.testing.assert_close(out.times, solvers.make_grid(m.sde, 5, "logsnr"))
    user = torch.tensor([1.0, 0.5, 0.1, 1e-3])
    assert solvers.sample(m, "euler", times=user, n=4).steps == 3


def test_prior_draw_is_seeded():
    m = models.load("gmm2d-vp")
    a = solvers.sample(m, "euler", steps=2, n=8, seed=7)
    b = solvers.sample(m, "euler", steps=2, n=8, seed=7)
    assert torch.equal(a.x, b.x)


def test_exact_prior_option_draws_from_p_T():
    exact, gauss = models.load("gmm2d-ve", exact_prior=True), models.load("gmm2d-ve")
    a = exact.sample_prior(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b = exact.exact_sample(1000, exact.sde.T, generator=torch.Generator().manual_seed(0))
    c = gauss.sample_prior(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(a, b) and not torch.equal(a, c)
    out = solvers.sample(exact, "euler", steps=2, n=10, seed=0, dtype=torch.float64, return_trajectory=True)
    assert torch.equal(out.trajectory[0], exact.sample_prior(
        10, generator=torch.Generator().manual_seed(0), dtype=torch.float64))


def test_denoise_is_tweedie():
    m = models.load("gmm2d-vp")
    x_T = m.sample_prior(8, dtype=torch.float64)
    raw = solvers.sample(m, "euler", steps=4, x_T=x_T)
    den = solvers.sample(m, "euler", steps=4, x_T=x_T, denoise=True)
    eps_t = raw.times[-1].item()
    a, s = m.sde.alpha(eps_t).item(), m.sde.sigma(eps_t).item()
    tweedie = (raw.x + s**2 * m.exact_score(raw.x, eps_t)) / a
    torch.testing.assert_close(den.x, tweedie)


def test_ddim_eta_one_is_ancestral_and_eta_zero_is_exponential_euler():
    m = models.load("gmm2d-subvp")
    x_T = m.sample_prior(16, dtype=torch.float64)
    a = solvers.sample(m, "ancestral", steps=9, x_T=x_T, seed=2).x
    b = solvers.sample(m, "ddim", steps=9, x_T=x_T, seed=2, eta=1.0).x
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # eta = 0: x_s = alpha_s/alpha_t x_t - sigma_s (e^h - 1) eps with h = lambda_s - lambda_t
    t = solvers.make_grid(m.sde, 1)
    sde = m.sde
    h = (sde.lam(t[1]) - sde.lam(t[0])).item()
    eps = m.exact_score(x_T, t[0].item()) * -sde.sigma(t[0]).item()
    expect = (sde.alpha(t[1]) / sde.alpha(t[0])).item() * x_T - sde.sigma(t[1]).item() * math.expm1(h) * eps
    torch.testing.assert_close(solvers.sample(m, "ddim", times=t, x_T=x_T).x, expect)


def test_ancestral_matches_song_et_al_smld_and_ddpm_steps():
    """One step against score_sde's AncestralSamplingPredictor formulas, with the same z."""
    for name in ("gmm2d-ve", "gmm2d-vp"):
        m = models.load(name)
        sde = m.sde
        x = m.sample_prior(16, dtype=torch.float64)
        times = torch.tensor([0.6, 0.55], dtype=torch.float64)
        path = solvers.BrownianPath.for_sde(sde, x.shape, seed=0, dtype=torch.float64)
        out = solvers.sample(m, "ancestral", times=times, x_T=x, brownian=path).x
        z = path.normal(0.6, 0.55)
        score = m.exact_score(x, 0.6)
        if name == "gmm2d-ve":  # SMLD: x + (s_t^2 - s_s^2) score + sqrt(s_s^2 (s_t^2 - s_s^2) / s_t^2) z
            st2, ss2 = (sde.sigma(0.6).item() ** 2, sde.sigma(0.55).item() ** 2)
            expect = x + (st2 - ss2) * score + math.sqrt(ss2 * (st2 - ss2) / st2) * z
        else:  # DDPM with beta_t = 1 - abar_t / abar_s and the posterior variance beta-tilde
            ab_t, ab_s = sde.alpha(0.6).item() ** 2, sde.alpha(0.55).item() ** 2
            beta = 1 - ab_t / ab_s
            mean = (x + beta * score) / math.sqrt(1 - beta)
            expect = mean + math.sqrt(beta * (1 - ab_s) / (1 - ab_t)) * z
        torch.testing.assert_close(out, expect, rtol=1e-12, atol=1e-12)


def test_euler_maruyama_and_reverse_diffusion_one_step_formulas():
    m = models.load("gmm2d-vp")
    sde = m.sde
    x = m.sample_prior(16, dtype=torch.float64)
    t, s = 0.6, 0.55
    times = torch.tensor([t, s], dtype=torch.float64)
    path = solvers.BrownianPath.for_sde(sde, x.shape, seed=0, dtype=torch.float64)
    dw = path.increment(t, s)
    score = m.exact_score(x, t)
    g2 = sde.g2(t).item()
    em = x + (sde.f(t).item() * x - g2 * score) * (s - t) + math.sqrt(g2) * dw
    torch.testing.assert_close(solvers.sample(m, "euler_maruyama", times=times, x_T=x, brownian=path).x, em)
    a, b2 = (v.item() for v in sde.transition(s, t))
    rd = x - (a - 1) * x + b2 * score + math.sqrt(b2) * dw / math.sqrt(t - s)
    torch.testing.assert_close(solvers.sample(m, "reverse_diffusion", times=times, x_T=x, brownian=path).x, rd)


def test_one_brownian_path_serves_several_step_counts():
    m = models.load("gmm2d-vp")
    x = m.sample_prior(4, dtype=torch.float64)
    path = solvers.BrownianPath.for_sde(m.sde, x.shape, seed=0, dtype=torch.float64)
    fine = solvers.make_grid(m.sde, 8, "uniform")
    incs = [path.increment(fine[i].item(), fine[i + 1].item()) for i in range(8)]
    torch.testing.assert_close(sum(incs[:4]), path.increment(fine[0].item(), fine[4].item()))
    exact = solvers.BrownianPath.for_sde(m.sde, x.shape, seed=0, dtype=torch.float64, exact=True)
    again = solvers.BrownianPath.for_sde(m.sde, x.shape, seed=0, dtype=torch.float64, exact=True)
    again.increment(fine[2].item(), fine[3].item())  # a different query order
    torch.testing.assert_close(exact.increment(fine[0].item(), fine[4].item()),
                               again.increment(fine[0].item(), fine[4].item()))


def test_predictor_corrector_composes_its_parts():
    m = models.load("gmm2d-ve")
    out = solvers.sample(m, "pc", steps=4, n=8, predictor="ddim", corrector="annealed_langevin",
                         corrector_steps=2, snr=0.1)
    assert out.nfe == 4 * (1 + 2)
    out = solvers.sample(m, "pc", steps=3, n=8, predictor="heun", predictor_options={"last_step_euler": True})
    assert out.nfe == 2 * 3 - 1 + 3


def test_langevin_keeps_the_target_stationary():
    """From exact samples of p_t, many small corrector steps at t leave the moments in place."""
    m = models.load("gmm2d-vp")
    t = 0.05
    x = m.exact_sample(4000, t, generator=torch.Generator().manual_seed(1))
    mean, cov = m.gmm.moments(m.sde.alpha(t).item(), m.sde.sigma(t).item())
    for name in ("langevin", "annealed_langevin"):
        out = solvers.sample(m, name, times=torch.tensor([0.3, t]), x_T=x, corrector_steps=300, snr=0.05)
        torch.testing.assert_close(out.x.mean(0), mean, atol=0.06, rtol=0)
        torch.testing.assert_close(torch.cov(out.x.T), cov, atol=0.1, rtol=0.05)


# ---- a user's own solver -----------------------------------------------------------------

class MidpointODE(Solver):
    """Explicit midpoint rule on the probability-flow ODE (order 2, 2 NFE per step)."""

    name = "test_midpoint"
    order = 2
    nfe_per_step = 2

    def setup(self):
        t = self.times
        self.mid = solvers.Nodes(self.sde, (t[:-1] + t[1:]) / 2, self.dtype, self.device)

    def drift(self, x, k, nodes):
        f, c = nodes.ode_coefs(k)
        return x * f + self.eval(x, k, "eps", nodes) * c

    def step(self, i, x):
        h = self.h[i]
        return x + h * self.drift(x + h / 2 * self.drift(x, i, self.nodes), i, self.mid)


def test_user_solver_registers_and_is_sampled_like_builtins():
    try:
        solvers.register(MidpointODE)
        assert "test_midpoint" in solvers.available()
        model, fn = counted()
        out = solvers.sample(model, "test_midpoint", steps=5, n=8)
        assert out.nfe == fn.calls == 10
        with pytest.raises(InputError, match="already registered"):
            solvers.register(type("Other", (MidpointODE,), {}), name="test_midpoint")
    finally:
        solvers.registry._REGISTRY.pop("test_midpoint", None)


def test_register_rejects_non_solvers():
    with pytest.raises(InputError, match="subclass of solvers.Solver"):
        solvers.register(object)
    with pytest.raises(InputError, match="does not implement step"):
        solvers.register(type("NoStep", (Solver,), {"name": "nostep"}))


class DampedEuler(Solver):
    """A toy solver with one declared option: Euler's step on the PF-ODE, scaled by (1 - damping)."""

    name = "test_damped"
    options = {"damping": solvers.Option(0.0, low=0.0, high=0.5)}

    def step(self, i, x):
        f, c = self.nodes.ode_coefs(i)
        return (x + self.h[i] * (x * f + self.eval(x, i) * c)) * (1 - self.damping)


def test_a_declared_option_is_checked_with_no_other_code():
    m = models.load("gmm2d-vp")
    try:
        solvers.register(DampedEuler)
        out = solvers.sample(m, "test_damped", steps=3, n=4, damping=0.25)
        assert out.options["damping"] == 0.25 and out.x.isfinite().all()
        assert solvers.sample(m, "test_damped", steps=3, n=4, damping=0).options["damping"] == 0.0  # an int: a float
        for bad in (0.75, -0.1, math.nan, math.inf, "0.1", True, None):
            with pytest.raises(InputError, match=rf"solver 'test_damped': option damping must be a number in "
                                                 rf"\[0, 0.5\], got {re.escape(repr(bad))}$"):
                solvers.sample(m, "test_damped", steps=3, n=4, damping=bad)
        with pytest.raises(InputError, match="option damping"):  # wherever options are resolved
            DampedEuler.expected_nfe(3, damping=0.75)
    finally:
        solvers.registry._REGISTRY.pop("test_damped", None)


def test_plain_defaults_declare_options_of_their_type():
    cls = type("Plain", (MidpointODE,), {"name": "test_plain", "options": {"scale": 1, "label": "a", "flag": False}})
    assert [cls.option_specs()[k].value_type for k in ("scale", "label", "flag")] == [int, str, bool]
    assert cls.resolve_options({"scale": 3, "label": "b"}) == {"denoise": False, "scale": 3, "label": "b", "flag": False}
    for key, value, what in (("scale", 1.5, "an integer"), ("label", 2, "a string"), ("flag", 1, "True or False")):
        with pytest.raises(InputError, match=f"solver 'test_plain': option {key} must be {what}, got {value!r}"):
            cls.resolve_options({key: value})


def test_order_is_the_former_name_of_strong_order():
    assert MidpointODE.strong_order == MidpointODE.order == 2  # its class body says `order = 2`
    assert solvers.get("heun").order == solvers.get("heun").strong_order == 2
    unipc = solvers.get("unipc")
    assert unipc.order == 3 and unipc.option_defaults()["order"] == 2  # metadata on the class, the option apart
    u = unipc(models.load("gmm2d-vp"), solvers.make_grid(solvers.VP(), 4), order=3)
    assert u.order == 3 and u.orders == [1, 2, 2, 1]


@pytest.mark.parametrize("body, match", [
    ({"options": {"stochastic": True}}, "option 'stochastic' has the name of a method or of declared metadata"),
    ({"options": {"step": 1}}, "option 'step' has the name of a method"),
    ({"options": {"eta": solvers.Option(2.0, high=1.0)}}, r"the default of 'eta' breaks its own declaration: .* must be a finite number <= 1, got 2.0"),
    ({"check": lambda self: None}, r"defines check\(\).*check_options"),
    ({"noise_option": "eta"}, "noise_option 'eta' is not one of its options"),
])
def test_register_refuses_bad_option_declarations(body, match):
    with pytest.raises(InputError, match=match):
        solvers.register(type("Bad", (MidpointODE,), {"name": "test_bad", **body}))
    assert "test_bad" not in solvers.available()


# ---- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, err, match", [
    (dict(solver="eulr", steps=5, n=4), InputError, "unknown solver 'eulr'; available: .*ancestral"),
    (dict(solver="euler", steps=5, n=4, etaa=0.1), InputError, "unknown option.*etaa.*valid options: denoise"),
    (dict(solver="ddim", steps=5, n=4, eta=2.0), InputError, r"option eta must be a number in \[0, 1\], got 2.0"),
    (dict(solver="ddim", steps=5, n=4, eta="one"), InputError, r"option eta must be a number in \[0, 1\], got 'one'"),
    (dict(solver="euler", steps=0, n=4), InputError, "steps must be an integer >= 1"),
    (dict(solver="euler", n=4), InputError, "pass steps"),
    (dict(solver="euler", steps=3, times=[1.0, 0.5, 1e-3], n=4), InputError, "contradicts times"),
    (dict(solver="euler", times=[1.0, 0.5, 0.6, 1e-3], n=4), InputError, "strictly decreasing"),
    (dict(solver="euler", times=[3.0, 0.5, 1e-3], n=4), InputError, r"\[eps, T\]"),
    (dict(solver="euler", steps=5, x_T=torch.zeros(4, 3)), InputError, r"x_T has shape \(4, 3\).*expects \(batch, 2\)"),
    (dict(solver="euler", steps=5, x_T=torch.zeros(4, 2), n=5), InputError, "contradicts x_T"),
    (dict(solver="euler", steps=5), InputError, "pass n"),
    (dict(solver="pc", steps=5, n=4, predictor="langevin"), InputError, "predictor must be an ODE or SDE solver"),
    (dict(solver="pc", steps=5, n=4, corrector="euler"), InputError, "corrector must be one of"),
    (dict(solver="pc", steps=5, n=4, snr=-1.0), InputError, "option snr must be a finite number > 0, got -1.0"),
    (dict(solver="heun", steps=5, n=4, grid="cosine"), InputError, "unknown grid"),
])
def test_bad_input_gets_a_clear_error(kwargs, err, match):
    m = models.load("gmm2d-vp")
    with pytest.raises(err, match=match):
        solvers.sample(m, **kwargs)


def test_model_returning_the_wrong_shape():
    m = ScoreModel(lambda x, t: x.sum(1), solvers.VP(), shape=(2,), name="summer")
    with pytest.raises(InputError, match="'summer' returned"):
        solvers.sample(m, "euler", steps=3, n=4)


def test_non_finite_model_output_is_reported_with_its_step():
    exact = models.load("gmm2d-vp")

    def fn(x, t):  # blows up below t = 0.5
        eps = exact.fn(x, t)
        return torch.where(t[:, None] < 0.5, eps / 0.0, eps)

    m = ScoreModel(fn, exact.sde, shape=(2,), name="blowup")
    grid = torch.tensor([1.0, 0.8, 0.6, 0.45, 0.3, 0.1, 1e-3])
    with pytest.raises(NonFiniteError, match=r"step 3 \(t=0\.45 -> 0\.3\).*'blowup'"):
        solvers.sample(m, "euler", times=grid, n=4)
    with pytest.raises(NonFiniteError, match=r"step 3"):
        solvers.sample(m, "euler_maruyama", times=grid, n=4, return_trajectory=True)
    assert m.nfe == 12, "the diagnostic replay is not counted"


def test_ancestral_is_undefined_where_the_forward_kernel_is_not_a_diffusion():
    class Shrinking(solvers.VE):  # sigma decreases in t: no forward kernel between grid times
        def log_sigma(self, t):
            return math.log(self.sigma_max) - torch.as_tensor(t, dtype=torch.float64) * self._log_ratio

    m = ScoreModel(lambda x, t: x, Shrinking(), shape=(2,), name="shrinking")
    with pytest.raises(InputError, match="ancestral.*negative variance"):
        solvers.sample(m, "ancestral", steps=4, n=4)


def test_solvers_never_imports_bench():
    import pathlib
    import re
    root = pathlib.Path(solvers.__file__).parent
    offenders = [p.name for p in root.glob("*.py") if re.search(r"^\s*(from|import)\s+bench\b", p.read_text(), re.M)]
    assert not offenders, f"solvers must not import bench: {offenders}"


def test_solvers_has_no_import_cycle_and_never_imports_bench():
    import ast
    import pathlib

    root = pathlib.Path(solvers.__file__).parent
    deps = {}
    for path in root.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] == "bench" for m in mods), f"{path.name} imports bench"
        deps[path.stem] = names - {path.stem, "__init__"}

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for d in deps.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

    cycles = [m for m in deps if m != "__init__" and m in reachable(m)]
    assert not cycles, f"import cycles through {sorted(cycles)}"
