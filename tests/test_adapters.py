"""Adapters for user models: discrete-timestep (DDPM / diffusers), EDM denoisers, plain callables.
Exactness is checked on the analytic mixtures; diffusers on a tiny random UNet2DModel."""
import pytest
import torch

import solvers
from bench.zoo import adapters, models
from solvers import InputError

SOLVERS = [s for s in ("euler", "heun", "ddim", "euler_maruyama", "ancestral", "dpmpp_2m", "unipc")
           if s in solvers.available()]




def discrete_mixture_eps(gmm, betas):
    """A DDPM-style eps "network" of an exact mixture: exact eps at the integer steps k, linearly
    interpolated in k in between (what a lookup table of per-step networks would give)."""
    abar = torch.cumprod(1 - betas, 0)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    n = len(betas)

    def eps_at(x, j):
        return -sigma[j][:, None] * gmm.score(x, alpha[j], sigma[j])

    def net(x, k):
        k = k.double()
        k0 = k.floor().clamp(0, n - 2).long()
        w = (k - k0).clamp(0, 1)[:, None]
        return ((1 - w) * eps_at(x.double(), k0) + w * eps_at(x.double(), k0 + 1)).to(x.dtype)

    return net


@pytest.mark.parametrize("n_steps", [1000, 100])
def test_discrete_eps_adapter_gives_back_the_exact_score(n_steps):
    gmm = models.gmm2d()
    config = {"num_train_timesteps": n_steps, "beta_start": 1e-4 * 1000 / n_steps,
              "beta_end": 0.02 * 1000 / n_steps, "beta_schedule": "linear", "prediction_type": "epsilon"}
    betas = adapters.betas_from_config(config)
    m = adapters.from_discrete(discrete_mixture_eps(gmm, betas), scheduler_config=config, shape=(2,))
    sde = m.sde
    assert isinstance(sde, solvers.DiscreteVP) and sde.eps == pytest.approx(1 / n_steps)
    x = gmm.sample(256, generator=torch.Generator().manual_seed(0)) * 1.2

    def rel_err(t):
        t = torch.full((len(x),), t, dtype=torch.float64)
        exact = gmm.score(x, sde.alpha(t), sde.sigma(t))
        return float((m.score(x, t) - exact).norm() / exact.norm())

    # on the knots t_k = (k + 1) / N the adapter is exact (the network sees integer k)
    for k in (0, 1, n_steps // 2, n_steps - 1):
        assert rel_err((k + 1) / n_steps) < 1e-10, k
    # between knots: interpolation accuracy, O(h^2) with h = 1/N where the schedule is smooth in k
    mid = max(rel_err((k + 1.5) / n_steps) for k in (n_steps // 10, n_steps // 4, n_steps // 2, n_steps - 2))
    assert mid < 30 / n_steps**2, mid
    # over the first intervals sigma_k ~ sqrt(k + 1) changes by a large factor per step, so the
    # linear interpolation of the network in k is only accurate to O(1 / (k + 1)^2) there
    for k in (0, 3, 10):
        assert rel_err((k + 1.5) / n_steps) < 0.1 / (k + 1) ** 1.5, k
    # and it samples like the exact continuous model
    out = solvers.sample(m, "heun", steps=20, n=500, seed=0)
    assert bool(torch.isfinite(out.x).all()) and out.nfe == solvers.get("heun").expected_nfe(20)


def test_interpolation_error_shrinks_quadratically_with_the_number_of_steps():
    gmm = models.gmm2d()
    errs = []
    for n_steps in (100, 400):
        config = {"num_train_timesteps": n_steps, "beta_start": 0.1 / n_steps, "beta_end": 20 / n_steps}
        betas = adapters.betas_from_config(config)
        m = adapters.from_discrete(discrete_mixture_eps(gmm, betas), betas, shape=(2,))
        x = gmm.sample(256, generator=torch.Generator().manual_seed(0))
        t = torch.full((256,), 0.3 + 0.5 / n_steps, dtype=torch.float64)  # halfway between knots
        exact = gmm.score(x, m.sde.alpha(t), m.sde.sigma(t))
        errs.append(float((m.score(x, t) - exact).norm() / exact.norm()))
    assert 10 < errs[0] / errs[1] < 25, errs  # ~16 for O(h^2)


@pytest.mark.parametrize("sde", [None, solvers.VP(), solvers.VE()])
def test_denoiser_adapter_is_exact(sde):
    gmm = models.gmm2d()

    def denoiser(x, sigma):  # exact E[x0 | x0 + sigma z = x] (sigma-time, alpha = 1)
        s = sigma.double()
        return x + s[:, None] ** 2 * gmm.score(x, torch.ones_like(s), s)

    m = adapters.from_denoiser(denoiser, sde=sde, shape=(2,))
    assert m.prediction == "x0" and isinstance(m.sde, type(sde) if sde is not None else solvers.EDM)
    x = gmm.sample(64, generator=torch.Generator().manual_seed(0)) * 1.3
    for t in (m.sde.eps * 3, 0.1 * m.sde.T, 0.5 * m.sde.T):
        tt = torch.full((64,), t, dtype=torch.float64)
        exact = gmm.score(x, m.sde.alpha(tt), m.sde.sigma(tt))
        torch.testing.assert_close(m.score(x, tt), exact, rtol=1e-8, atol=1e-8)
    assert solvers.sample(m, "heun", steps=5, n=16).x.shape == (16, 2)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "score"])
def test_callable_adapter_with_every_prediction(prediction):
    exact = models.load("gmm2d-vp")
    sde = exact.sde

    def fn(x, t):
        return exact(x, t, prediction)

    m = adapters.from_callable(fn, "vp", prediction, shape=(2,), beta_max=20.0)
    x = exact.sample_prior(32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((32,), 0.4, dtype=torch.float64)
    torch.testing.assert_close(m.score(x, t), exact.score(x, t), rtol=1e-9, atol=1e-9)
    assert repr(m.sde) == repr(sde)
    with pytest.raises(InputError, match="unknown SDE 'vpp'"):
        adapters.from_callable(fn, "vpp", prediction)
    with pytest.raises(InputError, match="SDE options"):
        adapters.from_callable(fn, solvers.VP(), prediction, beta_max=3.0)


def test_callable_adapter_runs_a_module_in_float64():
    net = torch.nn.Linear(2, 2)

    m = adapters.from_callable(lambda x, t: net(x), "edm", "x0", shape=(2,))  # a closure: used as is
    assert m.eps(torch.zeros(3, 2), torch.ones(3)).dtype == torch.float32

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x, t):
            return self.lin(x) * t[:, None]

    mod = Net()
    m = adapters.from_callable(mod, "vp", "eps", shape=(2,))
    x = torch.randn(3, 2)
    out32, out64 = m.eps(x, torch.full((3,), 0.5)), m.eps(x.double(), torch.full((3,), 0.5, dtype=torch.float64))
    assert out64.dtype == torch.float64 and mod.lin.weight.dtype == torch.float32
    torch.testing.assert_close(out64.float(), out32)


def test_scheduler_configs():
    assert adapters.betas_from_config({})[0] == pytest.approx(1e-4) and len(adapters.betas_from_config({})) == 1000
    for schedule in adapters.BETA_SCHEDULES:
        b = adapters.betas_from_config({"beta_schedule": schedule, "num_train_timesteps": 50})
        assert b.shape == (50,) and bool(((b > 0) & (b < 1)).all())
    trained = adapters.betas_from_config({"trained_betas": [0.1, 0.2, 0.3]})
    torch.testing.assert_close(trained, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), rtol=1e-6, atol=0)
    with pytest.raises(InputError, match="unknown beta_schedule 'cubic'"):
        adapters.betas_from_config({"beta_schedule": "cubic"})
    with pytest.raises(InputError, match="rescale_betas_zero_snr"):
        adapters.betas_from_config({"rescale_betas_zero_snr": True})
    net = lambda x, k: x  # noqa: E731
    for ptype, pred in adapters.PREDICTION_TYPES.items():
        assert adapters.from_discrete(net, scheduler_config={"prediction_type": ptype}).prediction == pred
    with pytest.raises(InputError, match="unknown prediction_type 'flow'"):
        adapters.from_discrete(net, scheduler_config={"prediction_type": "flow"})
    with pytest.raises(InputError, match="betas or scheduler_config"):
        adapters.from_discrete(net)


def test_betas_agree_with_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for schedule in adapters.BETA_SCHEDULES:
        cfg = {"num_train_timesteps": 200, "beta_schedule": schedule, "beta_start": 1e-4, "beta_end": 0.02}
        ours = adapters.betas_from_config(cfg)
        theirs = diffusers.DDPMScheduler(**cfg).betas.double()
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------------------------
# diffusers
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_unet_dir(tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    root = tmp_path_factory.mktemp("tiny-ddpm")
    unet.save_pretrained(root / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="linear", beta_start=1e-3, beta_end=0.2,
                            prediction_type="v_prediction", clip_sample=False).save_pretrained(root / "scheduler")
    return root, unet


@pytest.mark.parametrize("solver", SOLVERS)
def test_tiny_diffusers_unet_from_a_directory_samples(tiny_unet_dir, solver):
    root, _ = tiny_unet_dir
    m = adapters.from_diffusers(root)
    assert m.shape == (1, 8, 8) and m.prediction == "v" and m.sde.num_steps == 100
    cls = solvers.get(solver)
    steps = max(2, cls.steps_for_nfe(6))
    out = solvers.sample(m, solver, steps=steps, n=4, seed=0)
    assert out.x.shape == (4, 1, 8, 8) and bool(torch.isfinite(out.x).all())
    assert out.nfe == cls.expected_nfe(steps)


def test_diffusers_adapter_calls_the_unet_at_the_documented_step(tiny_unet_dir):
    root, unet = tiny_unet_dir
    m = adapters.from_diffusers(root)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    k = 41
    t = torch.full((3,), (k + 1) / 100)  # t_k = (k + 1) / N  <->  step k
    with torch.no_grad():
        direct = unet(x, torch.full((3,), float(k))).sample
    torch.testing.assert_close(m.v(x, t), direct, rtol=1e-5, atol=1e-6)
    # a model object + scheduler dict, eps override; float64 runs through a cast copy
    m2 = adapters.from_diffusers(unet, scheduler={"num_train_timesteps": 100}, prediction="epsilon")
    assert m2.prediction == "eps" and m2.shape == (1, 8, 8)
    assert m2.eps(x.double(), t.double()).dtype == torch.float64
    # flat layout: config.json and scheduler_config.json in one directory
    flat = root / "flat"
    unet.save_pretrained(flat)
    (flat / "scheduler_config.json").write_text((root / "scheduler" / "scheduler_config.json").read_text())
    assert adapters.from_diffusers(flat).prediction == "v"


def test_diffusers_adapter_errors(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        adapters.from_diffusers(tmp_path / "missing")
    with pytest.raises(InputError, match="no config.json"):
        adapters.from_diffusers(tmp_path)
    with pytest.raises(InputError, match="needs scheduler"):
        adapters.from_diffusers(torch.nn.Identity())
    (tmp_path / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(InputError, match="no scheduler config"):
        adapters.from_diffusers(tmp_path)
    pytest.importorskip("diffusers")
    (tmp_path / "scheduler_config.json").write_text("{}")
    (tmp_path / "config.json").write_text('{"_class_name": "NoSuchModel"}')
    with pytest.raises(InputError, match="unknown diffusers model class 'NoSuchModel'"):
        adapters.from_diffusers(tmp_path)
    (tmp_path / "config.json").write_text('{"_class_name": "UNet2DModel", "sample_size": 8}')
    with pytest.raises(InputError, match=f"{tmp_path}.*could not load UNet2DModel"):
        adapters.from_diffusers(tmp_path)  # config without weights
