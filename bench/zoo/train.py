"""Training the shipped checkpoints: continuous-time denoising score matching, seeded.

    sdebench train NAME [--seed 0] [--steps N] [--out DIR] [--threads 1] [--force]

Checkpoints are written to ``--out`` (default ``./checkpoints``), never into the installed package
(``bench/zoo/checkpoints``: copy files there by hand to replace a shipped checkpoint), and an
existing checkpoint is overwritten only with ``--force``. The command is ``bench.cli.train``;
this module is the library (``train``, ``RECIPES``, ``check_out``).

Recipes (``RECIPES``; each reproduces the shipped checkpoint from its seed on one CPU thread):

    checkerboard-vp    ToyMLP, VP SDE, eps prediction
    checkerboard-edm   ToyMLP, EDM (sigma-time) SDE, x0 prediction with EDM preconditioning
    digits-vp          DigitsUNet on scikit-learn's 8x8 digits, VP SDE, eps prediction
    digits-classifier  DigitsClassifier (the FD-digits feature network), cross-entropy

Losses (Song et al. 2021; Ho et al. 2020; Karras et al. 2022):

- VP, eps prediction: t ~ U[eps, T] (stratified over the batch), z ~ N(0, I),
  x_t = alpha_t x0 + sigma_t z, loss = mean ||eps_theta(x_t, t) - z||^2 (DDPM's simple loss:
  denoising score matching with weight sigma_t^2).
- EDM: ln sigma ~ N(-1.2, 1.2^2), x = x0 + sigma z, loss = mean lambda(sigma) ||D(x, sigma) - x0||^2
  with lambda = (sigma^2 + sd^2) / (sigma sd)^2, i.e. the unit-variance target of the raw network.

Adam with linear warm-up and cosine decay, gradient clipping at norm 1, and an exponential
moving average of the weights (the EMA weights are what is saved). Every random draw comes from
``torch.Generator`` objects seeded from ``seed`` (network initialisation included), so a run is
reproducible bit for bit on one machine with a fixed thread count (float reductions may differ
across thread counts or CPUs). The card records seed, steps, thread count, wall time and the
final loss (mean training loss over the last 10% of steps) and a held-out loss of the EMA
network at fixed noise.
"""
from __future__ import annotations

import copy
import datetime
import json
import math
import pathlib
import subprocess
import time

import torch

from solvers import SDES, InputError

from . import data as _data
from .nets import ARCHS
from .trained import CHECKPOINTS, NetFn, save_checkpoint

__all__ = ["train", "check_out", "RECIPES", "DEFAULT_OUT"]

_DIGITS_DATA = {"name": "digits", "source": "sklearn.datasets.load_digits (bundled; 1797 images, levels 0..16)",
                "scaling": "x = (v + u) * 2/17 - 1, u ~ U[0,1) (uniform dequantization); x in [-1, 1)",
                "levels": _data.DIGITS_LEVELS, "bin_width": _data.DIGITS_BIN_WIDTH,
                "split": f"randperm(seed={_data.SPLIT_SEED}); first {_data.DIGITS_TEST} held out "
                         f"(test_a, test_b halves), the rest train"}
_CHECKER_DATA = {"name": "checkerboard", "source": "exact sampler (bench.zoo.data.checkerboard)",
                 "scaling": "uniform on the squares (i, j), i + j even, of the 4x4 board on [-2, 2]^2; used as is",
                 "std": _data.CHECKERBOARD_STD}

#: name -> recipe (hyper-parameters; ``steps`` is the shipped length)
RECIPES = {
    "checkerboard-vp": dict(kind="score", data=_CHECKER_DATA, shape=[2], arch="toy_mlp",
                            arch_args=dict(dim=2, hidden=128, depth=3, emb=64),
                            sde="vp", sde_args=dict(beta_min=0.1, beta_max=20.0, T=1.0, eps=1e-3),
                            prediction="eps", time_input="1000*t", preconditioning="none",
                            steps=12000, batch=512, lr=2e-3, warmup=200, ema=0.999),
    "checkerboard-edm": dict(kind="score", data=_CHECKER_DATA, shape=[2], arch="toy_mlp",
                             arch_args=dict(dim=2, hidden=128, depth=3, emb=64),
                             sde="edm", sde_args=dict(sigma_min=0.002, sigma_max=80.0),
                             prediction="x0", time_input="250*log(sigma)", preconditioning="edm",
                             sigma_data=_data.CHECKERBOARD_STD, p_mean=-1.2, p_std=1.2,
                             steps=12000, batch=512, lr=2e-3, warmup=200, ema=0.999),
    "digits-vp": dict(kind="score", data=_DIGITS_DATA, shape=[1, 8, 8], arch="digits_unet",
                      arch_args=dict(ch=32, emb=128, groups=8),
                      sde="vp", sde_args=dict(beta_min=0.1, beta_max=20.0, T=1.0, eps=1e-3),
                      prediction="eps", time_input="1000*t", preconditioning="none",
                      steps=4000, batch=128, lr=1e-3, warmup=200, ema=0.999),
    "digits-classifier": dict(kind="classifier", data=_DIGITS_DATA, arch="digits_classifier",
                              arch_args=dict(ch=32, features=32, classes=10),
                              steps=1500, batch=128, lr=1e-3, warmup=100, ema=0.0, noise_std=0.1),
}


def _commit() -> str:
    root = pathlib.Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("-dirty" if dirty else "")) if head else "unknown"


def _lr(step, steps, lr, warmup):
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


class _Batches:
    """Training batches from one generator: fresh exact samples or a shuffled pass over the train
    split, dequantized afresh each time."""

    def __init__(self, recipe, gen):
        self.name, self.gen, self.batch = recipe["data"]["name"], gen, recipe["batch"]
        if self.name == "digits":
            self.levels, self.labels = _data.digits_levels("train", labels=True)
            self.order, self.pos = torch.randperm(len(self.levels), generator=gen), 0

    def __call__(self):
        if self.name == "checkerboard":
            return _data.checkerboard(self.batch, generator=self.gen, dtype=torch.float32), None
        if self.pos + self.batch > len(self.order):
            self.order, self.pos = torch.randperm(len(self.levels), generator=self.gen), 0
        idx = self.order[self.pos:self.pos + self.batch]
        self.pos += self.batch
        x = _data.digits_scale(self.levels[idx], generator=self.gen, dtype=torch.float32)
        return x, self.labels[idx]


def _score_loss(recipe, fn: NetFn, net, x0, gen):
    n = x0.shape[0]
    sde = fn.sde
    view = (-1,) + (1,) * (x0.ndim - 1)
    z = torch.randn(x0.shape, generator=gen)
    if recipe["preconditioning"] == "edm":
        ln_sigma = recipe["p_mean"] + recipe["p_std"] * torch.randn(n, generator=gen, dtype=torch.float64)
        t = ln_sigma.exp().clamp(sde.eps, sde.T)  # EDM: t = sigma
        sigma = t.to(x0.dtype).reshape(view)
        x = x0 + sigma * z
        sd = recipe["sigma_data"]
        weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
        pred = fn.apply(net, x, t.to(x0.dtype))
        return (weight * (pred - x0) ** 2).mean()
    u = (torch.rand(1, generator=gen, dtype=torch.float64) + torch.arange(n, dtype=torch.float64) / n) % 1
    t = sde.eps + (sde.T - sde.eps) * u  # stratified uniform times
    alpha, sigma = (v.to(x0.dtype).reshape(view) for v in (sde.alpha(t), sde.sigma(t)))
    x = alpha * x0 + sigma * z
    pred = fn.apply(net, x, t.to(x0.dtype))
    if recipe["prediction"] != "eps":  # pragma: no cover - the shipped VP recipes predict eps
        raise InputError(f"VP recipes train eps prediction; got {recipe['prediction']!r}")
    return ((pred - z) ** 2).mean()


def _heldout(recipe, fn, net, seed):
    """Loss of ``net`` on held-out data at fixed noise (a generator of its own)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        if recipe["data"]["name"] == "checkerboard":
            x0 = _data.checkerboard(4096, generator=gen, dtype=torch.float32)
        else:
            x0 = _data.digits(None, split="test", generator=gen, dtype=torch.float32)
        if recipe["kind"] == "classifier":
            _, labels = _data.digits_levels("test", labels=True)
            logits = net(x0)
            return float(torch.nn.functional.cross_entropy(logits, labels)), float(
                (logits.argmax(1) == labels).double().mean())
        losses = [float(_score_loss(recipe, fn, net, x0, gen)) for _ in range(8)]
        return sum(losses) / len(losses), None


#: where ``train`` writes when no directory is given (relative to the working directory)
DEFAULT_OUT = pathlib.Path("checkpoints")


def check_out(out_dir: pathlib.Path, name: str, force: bool):
    """A user directory (not the package's checkpoints) where <name>.* may be written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: is a file; --out names a directory (it gets {name}.safetensors and "
                         f"{name}.json)")
    try:
        inside = CHECKPOINTS.resolve() in (out_dir.resolve(), *out_dir.resolve().parents)
    except OSError:
        inside = False
    if inside:
        raise InputError(f"{out_dir} holds the shipped checkpoints of the installed package; train into another "
                         "directory (--out DIR) and copy the two files there by hand if you mean to replace one")
    existing = [p for p in (out_dir / f"{name}.safetensors", out_dir / f"{name}.json") if p.exists()]
    if existing and not force:
        raise InputError(f"{existing[0]} exists; pass --force (force=True) to overwrite it, or another --out")


def train(name: str, out_dir=None, *, seed: int = 0, steps: int | None = None, threads: int | None = 1,
          log=print, force: bool = False) -> dict:
    """Train recipe ``name`` and write ``<out_dir>/<name>.safetensors`` + ``<name>.json``.

    Args:
        name: a key of ``RECIPES``.
        out_dir: where to write (default ``./checkpoints``; never the package's shipped checkpoints).
        seed: seeds network initialisation, data order, dequantization and noise.
        steps: optimisation steps (default the recipe's, i.e. the shipped length).
        threads: torch CPU threads during training (restored after); None leaves them as they are.
        log: a function receiving progress lines (None for silence).
        force: overwrite an existing checkpoint of that name in ``out_dir``.

    Returns the card written (a dict)."""
    if name not in RECIPES:
        raise InputError(f"unknown training recipe {name!r}; valid: {', '.join(RECIPES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    recipe = dict(RECIPES[name])
    steps = recipe["steps"] if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be an integer >= 1, got {threads!r}")
    log = log or (lambda *_: None)
    out_dir = pathlib.Path(out_dir) if out_dir is not None else DEFAULT_OUT
    check_out(out_dir, name, force)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _train(name, recipe, out_dir, seed, steps, log)
    finally:
        torch.set_num_threads(old_threads)


def _train(name, recipe, out_dir, seed, steps, log):
    with torch.random.fork_rng(devices=[]):  # initialisation from the seed, global state untouched
        torch.manual_seed(seed)
        net = ARCHS[recipe["arch"]](**recipe["arch_args"])
    gen = torch.Generator().manual_seed(seed)
    ema = copy.deepcopy(net).requires_grad_(False) if recipe["ema"] else net
    opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"])
    batches = _Batches(recipe, gen)
    fn = None
    if recipe["kind"] == "score":
        sde = SDES[recipe["sde"]](**recipe["sde_args"])
        fn = NetFn(net, sde, time_input=recipe["time_input"], preconditioning=recipe["preconditioning"],
                   sigma_data=recipe.get("sigma_data"))
    losses = []
    t0 = time.perf_counter()
    net.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, recipe["lr"], recipe["warmup"])
        x0, labels = batches()
        if recipe["kind"] == "score":
            loss = _score_loss(recipe, fn, net, x0, gen)
        else:
            x_in = x0 + recipe["noise_std"] * torch.randn(x0.shape, generator=gen)
            loss = torch.nn.functional.cross_entropy(net(x_in), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if recipe["ema"]:
            decay = min(recipe["ema"], (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(p, 1 - decay)
        losses.append(float(loss.detach()))
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            log(f"[{name}] step {step + 1}/{steps} loss {losses[-1]:.4f} ({time.perf_counter() - t0:.0f} s)")
    wall = time.perf_counter() - t0
    ema.eval()
    heldout, accuracy = _heldout(recipe, fn, ema, seed)
    card = _card(name, recipe, seed, steps, wall, losses, heldout, accuracy)
    wpath, cpath = save_checkpoint(ema, card, out_dir)
    log(f"[{name}] wrote {wpath} ({wpath.stat().st_size / 1e6:.2f} MB) and {cpath}: final loss "
        f"{card['final_loss']:.4f}, held-out {card['heldout_loss']:.4f}, {wall:.0f} s")
    return json.loads(cpath.read_text())


def _card(name, recipe, seed, steps, wall, losses, heldout, accuracy) -> dict:
    """The checkpoint's card: architecture, SDE and parameterization, data, the training recipe and
    its outcome (final and held-out loss, accuracy for a classifier), commit and date."""
    tail = losses[-max(1, steps // 10):]
    card = {"name": name, "kind": recipe["kind"], "arch": recipe["arch"], "arch_args": recipe["arch_args"]}
    if recipe["kind"] == "score":
        card.update(sde=recipe["sde"], sde_args=recipe["sde_args"], prediction=recipe["prediction"],
                    time_input=recipe["time_input"], preconditioning=recipe["preconditioning"],
                    shape=recipe["shape"])
        if recipe.get("sigma_data"):
            card["sigma_data"] = recipe["sigma_data"]
    training = {"seed": seed, "steps": steps, "batch": recipe["batch"], "optimizer": "adam",
                "lr": recipe["lr"], "schedule": f"linear warm-up {recipe['warmup']} steps, cosine decay to 0",
                "grad_clip": 1.0, "ema": recipe["ema"] or None, "threads": torch.get_num_threads(),
                "wall_s": round(wall, 1), "torch": torch.__version__}
    if recipe["kind"] == "score" and recipe["preconditioning"] == "edm":
        training["loss"] = (f"EDM: ln sigma ~ N({recipe['p_mean']}, {recipe['p_std']}^2), "
                            "mean (sigma^2+sd^2)/(sigma sd)^2 ||D(x0 + sigma z, sigma) - x0||^2")
    elif recipe["kind"] == "score":
        training["loss"] = "DSM: t ~ U[eps, T] stratified, mean ||eps_theta(alpha x0 + sigma z, t) - z||^2"
    else:
        training["loss"] = f"cross-entropy on dequantized train images + N(0, {recipe['noise_std']}^2) noise"
    card.update(data=recipe["data"], training=training, final_loss=round(sum(tail) / len(tail), 6),
                heldout_loss=round(heldout, 6), commit=_commit(),
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    if accuracy is not None:
        card["heldout_accuracy"] = round(accuracy, 4)
    return card
