"""A timing-only network of realistic cost: diffusers' ``UNet2DModel`` in the DDPM CIFAR-10
configuration (Ho et al. 2020; the ``google/ddpm-cifar10-32`` conversion): 32x32x3, channels
(128, 256, 256, 256), two residual blocks per level, self-attention at 16x16, ~35.7M parameters,
eps prediction on the DDPM linear beta schedule (1e-4..0.02, 1000 steps), adapted to continuous
time as every discrete model is (``solvers.ScoreModel.from_discrete``).

The weights are random (seeded; nothing is downloaded), so its samples mean nothing: it exists
to time solvers on a network whose evaluation dominates as a real one does (GPU checks,
overhead ratios at batch 1..128). ``timing_only = True`` says so; the harness refuses quality
metrics for it, and ``exact_sample`` / ``data_sample`` raise ``InputError``.

    from bench.zoo import models
    m = models.load("cifar10-unet-timing")            # or bench.zoo.cifar_unet.load(compile=True, autocast="bf16")
"""
from __future__ import annotations

import torch

from solvers import InputError, ScoreModel

__all__ = ["NAME", "CONFIG", "build_unet", "load", "TimingOnlyModel"]

NAME = "cifar10-unet-timing"

#: diffusers UNet2DModel arguments of the DDPM CIFAR-10 model (google/ddpm-cifar10-32)
CONFIG = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    act_fn="silu", attention_head_dim=None, norm_num_groups=32, norm_eps=1e-6,
    downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, center_input_sample=False,
    time_embedding_type="positional", mid_block_scale_factor=1,
)
#: DDPM's training noise schedule (linear betas)
BETAS = dict(beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000)


def build_unet(seed: int = 0, **overrides):
    """The UNet2DModel with random weights drawn under ``torch.manual_seed(seed)`` (restored after)."""
    try:
        from diffusers import UNet2DModel
    except ImportError as e:
        raise InputError(f"model {NAME!r} needs the diffusers package (pip install diffusers)") from e
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UNet2DModel(**{**CONFIG, **overrides})
    return net.eval().requires_grad_(False)


class TimingOnlyModel(ScoreModel):
    """A ``ScoreModel`` whose network has random weights: for timing only."""

    timing_only = True

    def _refuse(self, what):
        raise InputError(f"model {self.name!r} is timing-only (random weights): it has no {what}; "
                         "use it for wall time, NFE and overhead, not for quality metrics")

    def exact_sample(self, *a, **k):
        self._refuse("exact samples")

    def exact_log_prob(self, *a, **k):
        self._refuse("exact density")

    def data_sample(self, *a, **k):
        self._refuse("data")


def load(*, seed: int = 0, device="cpu", dtype=torch.float32, compile: bool = False,
         autocast: str | None = None, **overrides) -> TimingOnlyModel:
    """The timing-only CIFAR-10 U-Net as a ``ScoreModel`` (eps prediction, ``DiscreteVP``).

    ``device``/``dtype``: where the network lives (states must match); ``compile``/``autocast``:
    ``ScoreModel.configure``; ``overrides``: UNet2DModel arguments (e.g. smaller channels in tests)."""
    from solvers.sde import DiscreteVP

    net = build_unet(seed, **overrides).to(device=device)
    if dtype != torch.float32:
        net = net.to(dtype=dtype)
    n = BETAS["num_train_timesteps"]
    betas = torch.linspace(BETAS["beta_start"], BETAS["beta_end"], n, dtype=torch.float64)
    sde = DiscreteVP(betas)

    def unet(x, t):  # continuous t -> fractional DDPM step k = N t - 1 (ScoreModel.from_discrete)
        return net(x, sde.discrete_step(t).to(x.dtype)).sample

    size, ch = net.config.sample_size, net.config.in_channels
    model = TimingOnlyModel(unet, sde, "eps", shape=(ch, size, size), name=NAME, compile=compile,
                            autocast=autocast)
    model.net = net
    return model
