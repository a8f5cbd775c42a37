"""A ``diffusers:`` model sampled here reproduces diffusers' own scheduler loops step for step, on
the same x_T (and the same injected noise), with the times of ``adapters.diffusers_times``:

    DDIMScheduler (eta 0, eta 1)     ddim,      denoise=True (diffusers' last step goes to alpha = 1)
    DDPMScheduler                    ancestral, denoise=True
    DPMSolverMultistepScheduler      dpmpp_2m,  denoise=True, lower_order_final=False
    UniPCMultistepScheduler          unipc,     denoise=True, lower_order_final=False, variant="bh2"

(the multistep schedulers' defaults: order 2, final_sigmas_type="zero", whose last step is first
order and is the denoising here; diffusers' lower_order_final below 15 steps then changes
nothing else at order 2). Both sides run in float64 where diffusers allows it: its schedules are
float32 tensors, replaced here by float64 ones from the same betas; DPMSolverMultistepScheduler
casts the state to float32 in every step, so it agrees to float32 accuracy only.
"""
import json

import pytest
import torch

import solvers
from bench.zoo import adapters, models
from solvers import InputError
from solvers.noise import NormalTape, StepNoise

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 on diffusers' float64 tensors

N = 1000
CASES = [("linear", "epsilon"), ("scaled_linear", "v_prediction"), ("linear", "v_prediction"),
         ("scaled_linear", "epsilon")]


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    """One tiny DDPMPipeline directory per (beta schedule, prediction): seeded random weights."""
    out = {}
    for schedule, prediction in CASES:
        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(sample_size=8, in_channels=2, out_channels=2, layers_per_block=1,
                                     block_out_channels=(8, 16), norm_num_groups=4,
                                     down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                     up_block_types=("AttnUpBlock2D", "UpBlock2D"))
        scheduler = diffusers.DDPMScheduler(num_train_timesteps=N, beta_schedule=schedule, prediction_type=prediction,
                                            clip_sample=False)
        root = tmp_path_factory.mktemp(f"ddpm-{schedule}-{prediction}")
        diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(root)
        out[schedule, prediction] = root
    return out


def float64_schedule(s):
    """The scheduler's float32 schedule tensors replaced by float64 ones of the same betas."""
    betas = adapters.betas_from_config(dict(s.config))
    s.betas, s.alphas = betas, 1 - betas
    s.alphas_cumprod = torch.cumprod(s.alphas, 0)
    s.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(s, "final_alpha_cumprod"):
        s.final_alpha_cumprod = s.one if s.config.set_alpha_to_one else s.alphas_cumprod[0]
    if hasattr(s, "lambda_t"):
        s.alpha_t, s.sigma_t = s.alphas_cumprod.sqrt(), (1 - s.alphas_cumprod).sqrt()
        s.lambda_t = s.alpha_t.log() - s.sigma_t.log()
    return s


def run_diffusers(unet, s, x_T, step_kw=lambda i: {}):
    x = x_T.clone()
    with torch.no_grad():
        for i, t in enumerate(s.timesteps):
            x = s.step(unet(x, t).sample, t, x, **step_kw(i)).prev_sample
    return x


def tape(normals, x_T):
    """Brownian noise that answers each step's normal from a list: diffusers' draws."""
    return StepNoise(NormalTape(torch.stack(normals)), x_T.shape, t0=1 / N, t1=1.0, seed=0, dtype=x_T.dtype,
                     device=x_T.device)


def model_config(root):
    return json.loads((root / "scheduler" / "scheduler_config.json").read_text())


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_ddim_and_ddpm_reproduce_diffusers_in_float64(pipelines, case):
    root = pipelines[case]
    model = models.load(f"diffusers:{root}")
    assert model.prediction == adapters.PREDICTION_TYPES[case[1]] and isinstance(model.sde, solvers.DiscreteVP)
    unet = diffusers.UNet2DModel.from_pretrained(root / "unet").double().eval()
    config = dict(model_config(root))
    x_T = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    steps = 6
    ddim = float64_schedule(diffusers.DDIMScheduler.from_config(config))
    ddim.set_timesteps(steps)
    times = adapters.diffusers_times(ddim)
    assert times.dtype == torch.float64 and torch.equal(times, (ddim.timesteps.double() + 1) / N)
    out = solvers.sample(model, "ddim", x_T=x_T, times=times, denoise=True)
    assert out.nfe == steps and rel(out.x, run_diffusers(unet, ddim, x_T)) < 1e-13
    # eta = 1 with the same normals: diffusers' variance_noise, our Brownian normals
    z = [torch.randn(x_T.shape, generator=torch.Generator().manual_seed(10 + i), dtype=torch.float64)
         for i in range(steps)]
    theirs = run_diffusers(unet, ddim, x_T, lambda i: {"eta": 1.0, "variance_noise": z[i]})
    ours = solvers.sample(model, "ddim", x_T=x_T, times=times, denoise=True, eta=1.0, brownian=tape(z[:-1], x_T))
    assert rel(ours.x, theirs) < 1e-13
    # DDPM ancestral: diffusers draws one normal per step with t > 0 from its generator
    ddpm = float64_schedule(diffusers.DDPMScheduler.from_config(config))
    ddpm.set_timesteps(steps)
    g = torch.Generator().manual_seed(5)
    theirs = run_diffusers(unet, ddpm, x_T, lambda i: {"generator": g})
    g = torch.Generator().manual_seed(5)
    z = [torch.randn(x_T.shape, generator=g, dtype=torch.float64) for _ in range(steps - 1)]
    ours = solvers.sample(model, "ancestral", x_T=x_T, times=adapters.diffusers_times(ddpm), denoise=True,
                          brownian=tape(z, x_T))
    assert rel(ours.x, theirs) < 1e-13


@pytest.mark.parametrize("case", CASES[:2], ids=["-".join(c) for c in CASES[:2]])
@pytest.mark.parametrize("steps", [5, 12])
def test_multistep_schedulers_reproduce_diffusers(pipelines, case, steps):
    root = pipelines[case]
    model = models.load(f"diffusers:{root}")
    unet = diffusers.UNet2DModel.from_pretrained(root / "unet").double().eval()
    config = {k: v for k, v in model_config(root).items() if k not in ("clip_sample", "variance_type")}
    x_T = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for cls, name, options, tol in ((diffusers.DPMSolverMultistepScheduler, "dpmpp_2m", {}, 1e-5),
                                    (diffusers.UniPCMultistepScheduler, "unipc", {"variant": "bh2"}, 1e-13)):
        s = float64_schedule(cls.from_config(config))
        s.set_timesteps(steps)
        abar = s.alphas_cumprod[s.timesteps]
        s.sigmas = torch.cat([((1 - abar) / abar).sqrt(), torch.zeros(1, dtype=torch.float64)])
        theirs = run_diffusers(unet, s, x_T)
        ours = solvers.sample(model, name, x_T=x_T, times=adapters.diffusers_times(s), denoise=True,
                              lower_order_final=False, **options)
        assert ours.nfe == steps and rel(ours.x, theirs) < tol, (name, rel(ours.x, theirs))


def test_diffusers_times_refuses_what_no_grid_reproduces():
    with pytest.raises(InputError, match="set_timesteps"):
        adapters.diffusers_times(diffusers.DDIMScheduler())
    s = diffusers.DDIMScheduler(timestep_spacing="linspace")
    s.set_timesteps(10)
    with pytest.raises(InputError, match="timestep_spacing='linspace'.*not its next timestep"):
        adapters.diffusers_times(s)
    s = diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True)
    s.set_timesteps(10)
    with pytest.raises(InputError, match="use_karras_sigmas"):
        adapters.diffusers_times(s)
    s = diffusers.DDIMScheduler(timestep_spacing="trailing")
    s.set_timesteps(4)
    assert adapters.diffusers_times(s).tolist() == [1.0, 0.75, 0.5, 0.25]
