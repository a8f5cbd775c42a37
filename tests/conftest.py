import os
import sys

import pytest
import torch

import solvers
from bench.harness.suite import import_plugins
from bench.zoo import models

# The tests' batches are small: one thread is fastest, and on a loaded machine more threads than
# free cores make BLAS/OpenMP wait on descheduled peers (50-100x slowdowns seen here).
torch.set_num_threads(1)

# Every Ray instance these tests start or join (a local one, the multi-node cluster of
# tests/test_ray_cluster.py) runs without token authentication: a process keeps the
# authentication mode of its first ray.init, and a driver that began in token mode is refused by
# nodes without it (its workers then report the driver's objects lost: OwnerDiedError).
os.environ["RAY_AUTH_MODE"] = "disabled"

# Your own solvers join every registry-driven test (NFE, float64, orders):
#   SDEBENCH_PLUGINS=my_package.my_solvers make test
import_plugins([m for m in os.environ.get("SDEBENCH_PLUGINS", "").split(",") if m])


def solver_cases():
    """(name, options) for every registered solver and each of its declared variants."""
    for name in solvers.available():
        cls = solvers.get(name)
        for opts in ({}, *cls.variants):
            yield name, dict(opts)


def case_id(case):
    name, opts = case
    return name + "".join(f"-{k}={v}" for k, v in opts.items())


class CountingFn:
    """An independent count of network evaluations."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


@pytest.fixture
def gmm2d_vp():
    return models.load("gmm2d-vp")


@pytest.fixture
def x_T64(gmm2d_vp):
    return gmm2d_vp.sample_prior(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


# --- the models users bring (bench.zoo.specs), built inside the tests --------------------------
DENOISER_MODULE = '''"""A k-diffusion-style denoiser: the exact D(x, sigma) of Gaussian data N(0, C^2 I) in 2-D."""
C = 0.5


def denoise(x, sigma):
    s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return x * C**2 / (C**2 + s**2)


denoise.sigma_min, denoise.sigma_max, denoise.shape = 0.002, 80.0, (2,)
'''
CALLABLE_MODULE = '''"""A network of one's own: eps(x, t) of a tiny seeded MLP on the VP SDE."""
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x, t):
        return 0.1 * self.lin(torch.cat([x, t[:, None].to(x.dtype)], 1))


torch.manual_seed(0)
net = Net()
'''


def write_user_modules(folder, suffix=""):
    """user_denoiser{suffix}.py and user_callable{suffix}.py in ``folder`` (put it on sys.path)."""
    (folder / f"user_denoiser{suffix}.py").write_text(DENOISER_MODULE)
    (folder / f"user_callable{suffix}.py").write_text(CALLABLE_MODULE)


def save_tiny_ddpm(root, *, seed=0, size=8, channels=1, scheduler=None, **unet_kw):
    """A tiny DDPMPipeline directory (seeded random UNet2DModel weights; clip_sample off)."""
    import diffusers

    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), **unet_kw)
    scheduler = scheduler or diffusers.DDPMScheduler(num_train_timesteps=100, beta_start=1e-3, beta_end=0.2,
                                                     clip_sample=False)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(root)
    return root


def cheap_scheduler():
    """Two train steps: a DDPM-type model whose harness work is small in a test. The float64 reference
    solves its flow in lambda, where the knots leave no jump (bench.harness.reference), but the network's
    time input still kinks at each knot, and the tuning method "dp"'s fine path (solvers.tuning) still
    steps in t; two knots keep both cheap."""
    import diffusers

    return diffusers.DDPMScheduler(num_train_timesteps=2, beta_start=0.1, beta_end=0.7)


@pytest.fixture(scope="session")
def tiny_ddpm(tmp_path_factory):
    """A tiny diffusers pipeline directory on two train steps, with diffusers' default
    clip_sample=True (skipped without diffusers)."""
    pytest.importorskip("diffusers")
    return save_tiny_ddpm(tmp_path_factory.mktemp("tiny-ddpm") / "pipe", scheduler=cheap_scheduler())


PLUGIN_MODELS = '''
from bench.zoo import models

def load_plug():
    return models.load("gmm2d-ve")
'''
PLUGIN_SOLVERS = '''
from solvers.ode import Euler


class PlugEuler(Euler):
    """Euler on the PF-ODE, from an installed package (its entry point names this class)."""
    name = "plug_euler_ep"
'''


#: the entry points of the 'installed' package: a model's loader, and a Solver class
PLUGIN_SOLVER = "plug = plug_solvers:PlugEuler"
PLUGIN_ENTRY_POINTS = f"[sdebench.models]\nplug-mixture = plug_models:load_plug\n\n[sdebench.solvers]\n{PLUGIN_SOLVER}\n"


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """user_denoiser.py and user_callable.py in tmp_path, on sys.path."""
    write_user_modules(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for m in ("user_denoiser", "user_callable"):
        sys.modules.pop(m, None)


def install_plugin(tmp_path, monkeypatch, entry_points: str = PLUGIN_ENTRY_POINTS):
    """A package 'installed' by its metadata alone: a *.dist-info with entry_points.txt on sys.path."""
    (tmp_path / "plug_models.py").write_text(PLUGIN_MODELS)
    (tmp_path / "plug_solvers.py").write_text(PLUGIN_SOLVERS)
    info = tmp_path / "sdebench_plug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sdebench-plug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(tmp_path))


def uninstall_plugin():
    """Undo what ``install_plugin``'s entry points registered in this process."""
    from bench.zoo import models as _models

    _models.unregister("plug-mixture")
    solvers.registry._REGISTRY.pop("plug_euler_ep", None)
    solvers.registry._LOADED.discard(PLUGIN_SOLVER)
    for name in ("plug_models", "plug_solvers"):
        sys.modules.pop(name, None)
