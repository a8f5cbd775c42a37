"""Adapters: the models users bring, as ``solvers.ScoreModel``s. Each adapter overrides one thing,
how the user's network is called; the conversions between eps / x0 / v / score are the
ScoreModel's.

- ``from_diffusers(path)``: a diffusers ``UNet2DModel`` (or any model called as
  ``model(x, timestep).sample``) with its DDPM-style scheduler config (``prediction_type``
  epsilon | sample | v_prediction; ``beta_schedule`` linear | scaled_linear | squaredcos_cap_v2 |
  sigmoid, or ``trained_betas``), loaded from a local directory; nothing is downloaded.
- ``from_discrete(net, betas | scheduler_config)``: any DDPM-style network ``net(x, k)`` on
  integer steps k = 0..N-1.
- ``from_denoiser(D)``: a k-diffusion / EDM denoiser D(x, sigma) -> x0 (sigma-time).
- ``from_callable(fn, sde, prediction)``: any (x, t) -> eps | x0 | v | score network.

Discrete timesteps -> continuous VP time, one documented way (``ScoreModel.from_discrete``; Lu et
al., DPM-Solver, 2022): step k = 0..N-1 sits at t_k = (k + 1) / N, so continuous t in [1/N, 1]
is given to the network as the fractional step k = N t - 1, and the SDE is ``solvers.DiscreteVP``
of the same betas (log alpha piecewise linear in t between the knots, alpha_{t_k}^2 =
prod_{j<=k} (1 - beta_j) exactly). Solvers therefore query the network between integer steps;
DDPM-style networks take fractional timesteps through their sinusoidal embedding. At the grid's
end t = 1/N the network sees k = 0.

Sampler-side settings of a scheduler config (clip_sample, thresholding, timestep_spacing,
steps_offset, variance_type) belong to diffusers' samplers, not to the model, and are not
applied: the solvers see the network's raw prediction.
"""
from __future__ import annotations

import copy
import json
import math
import pathlib

import torch

from solvers import EDM, SDE, SDES, InputError, ScoreModel

__all__ = ["from_diffusers", "from_discrete", "from_denoiser", "from_callable", "betas_from_config",
           "check_scheduler_config", "PREDICTION_TYPES", "BETA_SCHEDULES"]

#: diffusers ``prediction_type`` -> ScoreModel prediction
PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


class _DtypeCopies:
    """Runs an ``nn.Module`` in the caller's dtype/device: one cast copy per (dtype, device),
    made on first use (float64 runs for reference solves); other callables are used as they are."""

    def __init__(self, module):
        self.module, self._copies = module, {}

    def get(self, dtype, device):
        m = self.module
        if not isinstance(m, torch.nn.Module):
            return m
        params = next(iter(m.parameters()), None)
        if params is None or (params.dtype == dtype and params.device == torch.device(device)):
            return m
        key = (dtype, str(device))
        if key not in self._copies:
            self._copies[key] = copy.deepcopy(m).to(device=device, dtype=dtype).eval().requires_grad_(False)
        return self._copies[key]


def _unwrap(out):
    """diffusers returns an output object with ``.sample`` (or a tuple with return_dict=False)."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise InputError(f"the network returned {type(out).__name__}; expected a tensor, an object with .sample "
                     "or a tuple whose first item is a tensor")


def _sde(sde, sde_kw) -> SDE:
    if isinstance(sde, SDE):
        if sde_kw:
            raise InputError(f"SDE options {sorted(sde_kw)} given with an SDE instance; pass one or the other")
        return sde
    if sde not in SDES:
        raise InputError(f"unknown SDE {sde!r}; valid: {', '.join(SDES)} or a solvers.SDE instance")
    try:
        return SDES[sde](**sde_kw)
    except TypeError as e:
        raise InputError(f"bad options for SDE {sde!r}: {e}") from None


def from_callable(fn, sde="vp", prediction: str = "eps", *, shape=None, name: str | None = None,
                  **sde_kw) -> ScoreModel:
    """Any ``fn(x, t) -> eps | x0 | v | score`` trained on the continuous-time ``sde`` (a
    ``solvers.SDE`` or a name in ``solvers.SDES`` with its options, e.g. ``beta_max=20``).
    An ``nn.Module`` is run in the dtype of the states (a cast copy for float64)."""
    copies = _DtypeCopies(fn)

    def call(x, t):
        return _unwrap(copies.get(x.dtype, x.device)(x, t))

    call.__name__ = name or getattr(fn, "__name__", type(fn).__name__)
    if not callable(fn):
        raise InputError(f"fn must be callable (x, t) -> tensor, got {type(fn).__name__}")
    return ScoreModel(call, _sde(sde, sde_kw), prediction, shape=shape, name=call.__name__)


def from_denoiser(denoiser, *, sigma_min: float = 0.002, sigma_max: float = 80.0, sde: SDE | None = None,
                  shape=None, name: str | None = None) -> ScoreModel:
    """A k-diffusion / EDM-style denoiser ``D(x, sigma) -> x0`` (sigma a (batch,) tensor).

    By default on the sigma-time SDE ``solvers.EDM(sigma_min, sigma_max)`` (alpha = 1, t = sigma),
    where the network sees (x, t). On another linear SDE it is used through the EDM change of
    variables (Karras et al. 2022, Sec. 4): x0 = D(x / alpha_t, sigma_t / alpha_t)."""
    if not callable(denoiser):
        raise InputError(f"denoiser must be callable (x, sigma) -> x0, got {type(denoiser).__name__}")
    copies = _DtypeCopies(denoiser)
    label = name or getattr(denoiser, "__name__", type(denoiser).__name__)
    if sde is None:
        sde = EDM(sigma_min, sigma_max)

        def call(x, t):
            return _unwrap(copies.get(x.dtype, x.device)(x, t))
    else:
        if not isinstance(sde, SDE):
            raise InputError(f"sde must be a solvers.SDE instance, got {type(sde).__name__}")

        def call(x, t):
            t64 = t.double()
            a = sde.alpha(t64).to(x.dtype)
            s = sde.sigma(t64).to(x.dtype)
            return _unwrap(copies.get(x.dtype, x.device)(x / a.reshape(-1, *([1] * (x.ndim - 1))), s / a))

    call.__name__ = label
    return ScoreModel(call, sde, "x0", shape=shape, name=label)


def betas_from_config(config: dict) -> torch.Tensor:
    """The float64 betas of a diffusers DDPM-style scheduler config (computed in float32 as
    diffusers does, then widened): ``trained_betas``, or ``beta_schedule`` with
    ``num_train_timesteps`` (default 1000), ``beta_start`` (1e-4), ``beta_end`` (0.02)."""
    check_scheduler_config(config)
    if config.get("rescale_betas_zero_snr"):
        raise InputError("rescale_betas_zero_snr=True makes alpha_N = 0 (infinite noise at the last step); the "
                         "continuous-time VP view needs alpha_T > 0: not supported")
    if config.get("trained_betas") is not None:
        betas = torch.as_tensor(config["trained_betas"], dtype=torch.float32)
    else:
        n = int(config.get("num_train_timesteps", 1000))
        b0, b1 = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
        schedule = config.get("beta_schedule", "linear")
        if schedule == "linear":
            betas = torch.linspace(b0, b1, n, dtype=torch.float32)
        elif schedule == "scaled_linear":
            betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float32) ** 2
        elif schedule == "squaredcos_cap_v2":  # Nichol & Dhariwal 2021, capped at 0.999
            ab = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
            betas = torch.tensor([min(1 - ab((i + 1) / n) / ab(i / n), 0.999) for i in range(n)], dtype=torch.float32)
        elif schedule == "sigmoid":
            betas = torch.sigmoid(torch.linspace(-6, 6, n)) * (b1 - b0) + b0
        else:
            raise InputError(f"unknown beta_schedule {schedule!r}; valid: {', '.join(BETA_SCHEDULES)} "
                             "(or trained_betas)")
    betas = betas.double()
    if betas.ndim != 1 or betas.numel() < 2 or not bool(((betas > 0) & (betas < 1)).all()):
        raise InputError("scheduler betas must be a 1-D sequence of at least 2 values in (0, 1)")
    return betas


def _prediction(config: dict, prediction: str | None) -> str:
    if prediction is not None:
        if prediction not in PREDICTION_TYPES and prediction not in PREDICTION_TYPES.values():
            raise InputError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTION_TYPES)} "
                             f"(or {', '.join(PREDICTION_TYPES.values())})")
        return PREDICTION_TYPES.get(prediction, prediction)
    ptype = config.get("prediction_type", "epsilon")
    if ptype not in PREDICTION_TYPES:
        raise InputError(f"unknown prediction_type {ptype!r} in the scheduler config; valid: "
                         f"{', '.join(PREDICTION_TYPES)}")
    return PREDICTION_TYPES[ptype]


def from_discrete(net, betas=None, *, scheduler_config: dict | None = None, prediction: str | None = None,
                  shape=None, name: str | None = None) -> ScoreModel:
    """A DDPM-style network ``net(x, k)`` trained on discrete steps k = 0..N-1, with its
    ``betas`` or a diffusers-style ``scheduler_config`` (betas and ``prediction_type``).
    ``prediction``: eps | x0 | v (or epsilon | sample | v_prediction); default the config's, else eps.
    Continuous time maps to the fractional step k = N t - 1 (see the module docstring)."""
    if (betas is None) == (scheduler_config is None):
        raise InputError("pass betas or scheduler_config (one of them)")
    if not callable(net):
        raise InputError(f"net must be callable (x, k) -> tensor, got {type(net).__name__}")
    config = scheduler_config or {}
    if betas is None:
        betas = betas_from_config(config)
    copies = _DtypeCopies(net)
    label = name or getattr(net, "__name__", type(net).__name__)

    def call(x, k):
        return _unwrap(copies.get(x.dtype, x.device)(x, k))

    call.__name__ = label
    try:
        return ScoreModel.from_discrete(call, betas, _prediction(config, prediction), shape=shape, name=label)
    except ValueError as e:
        raise InputError(str(e)) from None


def _read_json(path: pathlib.Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the JSON config: {e}") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: the config must be a JSON object ({{\"key\": value, ...}}), got a "
                         f"{type(config).__name__}")
    return config


#: a scheduler config's keys that set the model's betas and prediction: (check, what is allowed)
_CONFIG_KEYS = {
    "num_train_timesteps": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 10**6,
                            "an integer in [2, 1000000]"),
    "beta_start": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1,
                   "a number in (0, 1)"),
    "beta_end": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1,
                 "a number in (0, 1)"),
    "beta_schedule": (lambda v: v in BETA_SCHEDULES, ", ".join(BETA_SCHEDULES) + " (or trained_betas)"),
    "prediction_type": (lambda v: v in PREDICTION_TYPES, ", ".join(PREDICTION_TYPES)),
    "trained_betas": (lambda v: v is None or (isinstance(v, list) and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) for b in v)), "null or a list of numbers"),
    "rescale_betas_zero_snr": (lambda v: isinstance(v, bool), "true or false"),
}


def check_scheduler_config(config, where: str = "scheduler config") -> dict:
    """The keys of a diffusers scheduler config that define the model, checked: InputError naming
    ``where`` (its file) and the key, with what is allowed; other keys are the samplers' and ignored."""
    if not isinstance(config, dict):
        raise InputError(f"{where}: must be a JSON object / dict, got {type(config).__name__}")
    for key, (ok, allowed) in _CONFIG_KEYS.items():
        if key in config and not ok(config[key]):
            if key in ("beta_schedule", "prediction_type"):
                raise InputError(f"{where}: unknown {key} {config[key]!r}; valid: {allowed}")
            raise InputError(f"{where}: {key} must be {allowed}, got {config[key]!r}")
    return config


def from_diffusers(model_or_path, *, scheduler=None, subfolder: str | None = None, prediction: str | None = None,
                   shape=None, name: str | None = None) -> ScoreModel:
    """A diffusers model and its DDPM-style scheduler config, from a local directory.

    ``model_or_path``: a directory holding either a pipeline layout (``unet/`` and
    ``scheduler/scheduler_config.json``) or a model directory with ``config.json`` and a
    ``scheduler_config.json`` beside it; or an already-built diffusers model (then pass
    ``scheduler``). ``scheduler``: a path to a scheduler config (file or directory), a dict, or a
    diffusers scheduler object. ``subfolder``: the model's folder inside a pipeline (default
    ``unet``). The sample shape is read from the model config (in_channels, sample_size) unless
    given. The model is loaded with ``local_files_only=True``: nothing is downloaded."""
    label = name
    if isinstance(model_or_path, (str, pathlib.Path)):
        root = pathlib.Path(model_or_path)
        if not root.is_dir():
            raise InputError(f"{root}: not a directory (expected a diffusers model or pipeline directory)")
        sub = subfolder or ("unet" if (root / "unet" / "config.json").exists() else None)
        model_dir = root / sub if sub else root
        if not (model_dir / "config.json").exists():
            raise InputError(f"{model_dir}: no config.json (expected a diffusers model directory, or a pipeline "
                             "with unet/)")
        if scheduler is None:
            for cand in (root / "scheduler" / "scheduler_config.json", model_dir / "scheduler_config.json",
                         root / "scheduler_config.json"):
                if cand.exists():
                    scheduler = cand
                    break
            else:
                raise InputError(f"{root}: no scheduler config found (scheduler/scheduler_config.json or "
                                 "scheduler_config.json); pass scheduler=...")
        try:
            import diffusers
        except ImportError as e:
            raise InputError("from_diffusers needs the diffusers package (pip install diffusers; an optional "
                             "extra of this project)") from e
        cfg = _read_json(model_dir / "config.json")
        cls_name = cfg.get("_class_name", "UNet2DModel")
        cls = getattr(diffusers, cls_name, None)
        if cls is None or not hasattr(cls, "from_pretrained"):
            raise InputError(f"{model_dir}/config.json: unknown diffusers model class {cls_name!r}")
        try:
            model = cls.from_pretrained(str(model_dir), local_files_only=True)
        except Exception as e:
            raise InputError(f"{model_dir}: diffusers could not load {cls_name}: {type(e).__name__}: {e}") from None
        label = label or f"{cls_name}:{root.name}"
    else:
        model = model_or_path
        if scheduler is None:
            raise InputError("from_diffusers with a model object needs scheduler= (a config dict, path or object)")
        label = label or type(model).__name__
    if isinstance(scheduler, (str, pathlib.Path)):
        p = pathlib.Path(scheduler)
        p = p / "scheduler_config.json" if p.is_dir() else p
        config = check_scheduler_config(_read_json(p), str(p))
    elif isinstance(scheduler, dict):
        config = check_scheduler_config(dict(scheduler))
    elif hasattr(scheduler, "config"):
        config = check_scheduler_config(dict(scheduler.config), f"{type(scheduler).__name__}.config")
    else:
        raise InputError("scheduler must be a config dict, a path or a diffusers scheduler, "
                         f"got {type(scheduler).__name__}")
    if shape is None:
        mcfg = getattr(model, "config", None)
        if mcfg is not None and hasattr(mcfg, "get"):
            c, s = mcfg.get("in_channels"), mcfg.get("sample_size")
            if c is not None and s is not None:
                shape = (c, *((s, s) if isinstance(s, int) else tuple(s)))
    if isinstance(model, torch.nn.Module):
        model.eval().requires_grad_(False)
    return from_discrete(model, scheduler_config=config, prediction=prediction, shape=shape, name=label)
