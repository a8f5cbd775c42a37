"""Adapters: the models users bring, as ``solvers.ScoreModel``s. Each adapter overrides one thing,
how the user's network is called; the conversions between eps / x0 / v / score are the
ScoreModel's.

- ``from_diffusers(path)``: a diffusers ``UNet2DModel`` with its DDPM-type scheduler config
  (``prediction_type`` epsilon | sample | v_prediction; ``beta_schedule`` linear | scaled_linear |
  squaredcos_cap_v2 | sigmoid | laplace, or ``trained_betas``), loaded from a local directory; nothing is
  downloaded. What the benchmark cannot honour is refused (``check_diffusers``) unless
  ``ignore=`` names it.
- ``from_discrete(net, betas | scheduler_config)``: any DDPM-style network ``net(x, k)`` on
  integer steps k = 0..N-1.
- ``from_denoiser(D)``: a k-diffusion / EDM denoiser D(x, sigma) -> x0 (sigma-time).
- ``from_callable(fn, sde, prediction)``: any (x, t) -> eps | x0 | v | score network.
- ``diffusers_times(scheduler)``: the ``times`` that reproduce a configured diffusers
  scheduler's ``timesteps`` (its network evaluations), for step-for-step comparisons.

Discrete timesteps -> continuous VP time, one documented way (``ScoreModel.from_discrete``; Lu et
al., DPM-Solver, 2022): step k = 0..N-1 sits at t_k = (k + 1) / N, so continuous t in [1/N, 1]
is given to the network as the fractional step k = N t - 1, and the SDE is ``solvers.DiscreteVP``
of the same betas (log alpha piecewise linear in t between the knots, alpha_{t_k}^2 =
prod_{j<=k} (1 - beta_j) exactly). Solvers therefore query the network between integer steps;
DDPM-style networks take fractional timesteps through their sinusoidal embedding. At the grid's
end t = 1/N the network sees k = 0.

Sampler-side settings of a scheduler config (timestep_spacing, steps_offset, set_alpha_to_one,
solver_order, lower_order_final, a fixed variance_type ...) belong to diffusers' samplers, not to
the model: the solvers see the network's raw prediction, and ``diffusers_times`` reproduces the
timesteps they choose. Those that change the prediction itself (x0 clipping, thresholding, a
learned variance) are refused unless ignored, never dropped silently.
"""
from __future__ import annotations

import copy
import json
import math
import pathlib

import torch

from solvers import EDM, SDE, SDES, InputError, ScoreModel

__all__ = ["from_diffusers", "from_discrete", "from_denoiser", "from_callable", "betas_from_config",
           "diffusers_times", "diffusers_files", "check_diffusers", "check_scheduler_config", "PREDICTION_TYPES",
           "BETA_SCHEDULES",
           "DDPM_SCHEDULERS", "IGNORABLE", "SUPPORTED_MODELS"]

#: diffusers ``prediction_type`` -> ScoreModel prediction
PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace")


def _laplace_alpha_bar(s: float) -> float:
    """diffusers' "laplace" schedule: log-SNR Laplace-distributed in t (Hang & Gu 2024)."""
    lmb = -0.5 * math.copysign(1, 0.5 - s) * math.log(1 - 2 * abs(0.5 - s) + 1e-6)
    return math.sqrt(math.exp(lmb) / (1 + math.exp(lmb)))


#: alpha-bar(t) of the schedules defined by one (Nichol & Dhariwal 2021's cosine; Laplace)
_ALPHA_BAR = {"squaredcos_cap_v2": lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2,
              "laplace": _laplace_alpha_bar}
#: diffusers schedulers whose config is a DDPM-type training schedule (betas on discrete steps)
DDPM_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
                   "DDPMParallelScheduler", "DDIMParallelScheduler", "DPMSolverSinglestepScheduler",
                   "DPMSolverSDEScheduler", "DEISMultistepScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
                   "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
                   "KDPM2AncestralDiscreteScheduler", "LMSDiscreteScheduler", "SASolverScheduler", "LCMScheduler",
                   "TCDScheduler")
#: settings that change the prediction diffusers' samplers use, which ``ignore=`` may name (and why)
IGNORABLE = {"clip_sample": "diffusers' samplers clip the predicted x0 to [-clip_sample_range, clip_sample_range]",
             "thresholding": "diffusers' samplers threshold the predicted x0 dynamically",
             "variance_type": "a learned variance (half of the network's output channels, used by DDPM's sampler)"}
#: diffusers model classes loaded from a directory
SUPPORTED_MODELS = ("UNet2DModel",)


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
        if key not in self._copies:  # nn.Module.to itself: diffusers' override warns about any dtype cast
            cast = torch.nn.Module.to(copy.deepcopy(m), device=device, dtype=dtype)
            self._copies[key] = cast.eval().requires_grad_(False)
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


def _with_net(model: ScoreModel, fn) -> ScoreModel:
    """``model.net``: the user's ``nn.Module`` (its weights are the model's provenance), else None."""
    model.net = fn if isinstance(fn, torch.nn.Module) else None
    return model


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
    return _with_net(ScoreModel(call, _sde(sde, sde_kw), prediction, shape=shape, name=call.__name__), fn)


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
    return _with_net(ScoreModel(call, sde, "x0", shape=shape, name=label), denoiser)


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
        elif schedule in _ALPHA_BAR:  # a continuous alpha-bar discretized, capped at 0.999 (diffusers' rule)
            ab = _ALPHA_BAR[schedule]
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
        model = ScoreModel.from_discrete(call, betas, _prediction(config, prediction), shape=shape, name=label)
    except ValueError as e:
        raise InputError(str(e)) from None
    return _with_net(model, net)


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
    """The values of a diffusers scheduler config that define the model's betas and prediction,
    checked: InputError naming ``where`` (its file) and the key, with what is allowed."""
    if not isinstance(config, dict):
        raise InputError(f"{where}: must be a JSON object / dict, got {type(config).__name__}")
    for key, (ok, allowed) in _CONFIG_KEYS.items():
        if key in config and not ok(config[key]):
            if key in ("beta_schedule", "prediction_type"):
                raise InputError(f"{where}: unknown {key} {config[key]!r}; valid: {allowed}")
            raise InputError(f"{where}: {key} must be {allowed}, got {config[key]!r}")
    return config


def diffusers_files(path, subfolder: str | None = None) -> tuple[pathlib.Path, pathlib.Path | None]:
    """(model directory, scheduler config file or None) of a diffusers directory on disk: a
    pipeline (``unet/`` or ``subfolder``, with ``scheduler/scheduler_config.json``) or a model
    directory with ``config.json`` and a ``scheduler_config.json`` beside it."""
    root = pathlib.Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory (expected a diffusers model or pipeline directory)")
    sub = subfolder or ("unet" if (root / "unet" / "config.json").exists() else None)
    model_dir = root / sub if sub else root
    if not (model_dir / "config.json").exists():
        raise InputError(f"{model_dir}: no config.json (expected a diffusers model directory, or a pipeline "
                         "with unet/)")
    for cand in (root / "scheduler" / "scheduler_config.json", model_dir / "scheduler_config.json",
                 root / "scheduler_config.json"):
        if cand.exists():
            return model_dir, cand
    return model_dir, None


def _scheduler_config(scheduler) -> dict:
    """The scheduler's config, its values checked (``check_scheduler_config``: errors name its file)."""
    if isinstance(scheduler, (str, pathlib.Path)):
        p = pathlib.Path(scheduler)
        p = p / "scheduler_config.json" if p.is_dir() else p
        return check_scheduler_config(_read_json(p), str(p))
    if isinstance(scheduler, dict):
        return check_scheduler_config(dict(scheduler))
    if hasattr(scheduler, "config"):
        return check_scheduler_config({"_class_name": type(scheduler).__name__, **dict(scheduler.config)},
                                      f"{type(scheduler).__name__}.config")
    raise InputError("scheduler must be a config dict, a path or a diffusers scheduler, got "
                     f"{type(scheduler).__name__}")


def check_diffusers(scheduler_config: dict, model_config: dict | None = None, ignore=(), where: str = "diffusers"
                    ) -> tuple[str, ...]:
    """Refuse what the benchmark cannot honour in a diffusers model and its scheduler config
    (``InputError`` naming the setting), except the settings named in ``ignore`` (a subset of
    ``IGNORABLE``). Returns the settings that are set and ignored.

    Never honoured: a scheduler that is not DDPM-type (``DDPM_SCHEDULERS``: VE, EDM, flow
    matching ...), continuous timesteps (``timestep_type``), a time embedding other than the
    sinusoidal one (a learned table takes integer steps only; Fourier features take log sigma),
    a class-conditional network. ``IGNORABLE``: x0 clipping and thresholding (diffusers' samplers
    apply them; this benchmark's solvers see the raw network), a learned variance (its channels
    are dropped: every solver here uses the eps/x0/v half)."""
    ignore = tuple(ignore)
    bad = [k for k in ignore if k not in IGNORABLE]
    if bad:
        raise InputError(f"{where}: ignore: unknown setting(s) {', '.join(map(repr, bad))}; ignorable: "
                         f"{', '.join(IGNORABLE)}")
    cls = scheduler_config.get("_class_name")
    if cls is not None and cls not in DDPM_SCHEDULERS:
        what = "a VE (variance-exploding) scheduler" if "Ve" in cls or "sigma_max" in scheduler_config else \
            "not a DDPM-type (discrete-time VP) scheduler"
        raise InputError(f"{where}: scheduler {cls}: {what}; supported: the DDPM-type schedulers "
                         f"({', '.join(DDPM_SCHEDULERS[:4])}, ...), whose config holds the training betas")
    if scheduler_config.get("timestep_type", "discrete") != "discrete":
        raise InputError(f"{where}: timestep_type={scheduler_config['timestep_type']!r}: the network takes "
                         "continuous timesteps, not DDPM steps; not supported")
    found = [k for k in ("clip_sample", "thresholding") if scheduler_config.get(k)]
    if str(scheduler_config.get("variance_type", "")).startswith("learned"):
        found.append("variance_type")
    model_config = model_config or {}
    embedding = model_config.get("time_embedding_type", "positional")
    if embedding != "positional":
        raise InputError(f"{where}: time_embedding_type={embedding!r}: only the sinusoidal ('positional') time "
                         "embedding takes the fractional steps continuous-time solvers ask for; not supported")
    if model_config.get("num_class_embeds") is not None or model_config.get("class_embed_type") is not None:
        raise InputError(f"{where}: a class-conditional network (num_class_embeds / class_embed_type): not supported")
    refused = [k for k in found if k not in ignore]
    if refused:
        k = refused[0]
        raise InputError(f"{where}: {k}={scheduler_config[k]!r}: {IGNORABLE[k]}, which this benchmark does not "
                         f"apply; to benchmark the raw network anyway say so: ignore=[{k!r}] (suite table: "
                         f"ignore = [\"{k}\"]; spec: diffusers:PATH?ignore={k})")
    return tuple(k for k in found if k in ignore)


class _FirstChannels(torch.nn.Module):
    """The prediction half of a learned-variance network's output (diffusers splits it the same way)."""

    def __init__(self, net, channels: int):
        super().__init__()
        self.net, self.channels = net, channels

    def forward(self, x, t):
        return _unwrap(self.net(x, t))[:, : self.channels]


def _load_diffusers_model(model_dir: pathlib.Path):
    try:
        import diffusers
    except ImportError as e:
        raise InputError("from_diffusers needs the diffusers package (pip install diffusers; an optional "
                         "extra of this project)") from e
    cfg = _read_json(model_dir / "config.json")
    cls_name = cfg.get("_class_name", "UNet2DModel") if isinstance(cfg, dict) else None
    if cls_name not in SUPPORTED_MODELS:
        known = isinstance(cls_name, str) and hasattr(diffusers, cls_name)
        raise InputError(f"{model_dir}/config.json: {'' if known else 'unknown '}diffusers model class {cls_name!r}"
                         f"{' is not supported' if known else ''}; supported: {', '.join(SUPPORTED_MODELS)} "
                         "(unconditional: model(x, timestep).sample)")
    try:
        return getattr(diffusers, cls_name).from_pretrained(str(model_dir), local_files_only=True,
                                                            low_cpu_mem_usage=False)
    except Exception as e:
        raise InputError(f"{model_dir}: diffusers could not load {cls_name}: {type(e).__name__}: {e}") from None


def from_diffusers(model_or_path, *, scheduler=None, subfolder: str | None = None, prediction: str | None = None,
                   shape=None, name: str | None = None, ignore=()) -> ScoreModel:
    """A diffusers model and its DDPM-style scheduler config, from a local directory.

    ``model_or_path``: a directory holding either a pipeline layout (``unet/`` and
    ``scheduler/scheduler_config.json``) or a model directory with ``config.json`` and a
    ``scheduler_config.json`` beside it; or an already-built diffusers model (then pass
    ``scheduler``). ``scheduler``: a path to a scheduler config (file or directory), a dict, or a
    diffusers scheduler object. ``subfolder``: the model's folder inside a pipeline (default
    ``unet``). The sample shape is read from the model config (in_channels, sample_size) unless
    given. The model is loaded with ``local_files_only=True``: nothing is downloaded.

    Settings the benchmark cannot honour are refused (``check_diffusers``) unless ``ignore``
    names them: e.g. ``ignore=["clip_sample"]`` benchmarks the raw network of a scheduler config
    with ``clip_sample=True`` (diffusers' default). The returned model records them in
    ``model.ignored``."""
    if isinstance(model_or_path, (str, pathlib.Path)):
        model_dir, found = diffusers_files(model_or_path, subfolder)
        where = str(pathlib.Path(model_or_path))
        if scheduler is None and found is None:
            raise InputError(f"{where}: no scheduler config found (scheduler/scheduler_config.json or "
                             "scheduler_config.json); pass scheduler=...")
        config = _scheduler_config(scheduler if scheduler is not None else found)
        mcfg = _read_json(model_dir / "config.json")
        ignored = check_diffusers(config, mcfg, ignore, where)  # before the weights are read
        model = _load_diffusers_model(model_dir)
        label = name or f"{type(model).__name__}:{pathlib.Path(model_or_path).name}"
    else:
        model = model_or_path
        if scheduler is None:
            raise InputError("from_diffusers with a model object needs scheduler= (a config dict, path or object)")
        config, where, label = _scheduler_config(scheduler), type(model).__name__, name or type(model).__name__
        mcfg = dict(getattr(model, "config", None) or {})
        ignored = check_diffusers(config, mcfg, ignore, where)
    if shape is None:
        c, s = mcfg.get("in_channels"), mcfg.get("sample_size")
        if c is not None and s is not None:
            shape = (c, *((s, s) if isinstance(s, int) else tuple(s)))
    if isinstance(model, torch.nn.Module):
        model.eval().requires_grad_(False)
        if "variance_type" in ignored and mcfg.get("out_channels") == 2 * (mcfg.get("in_channels") or 0):
            model = _FirstChannels(model, mcfg["in_channels"])
    out = from_discrete(model, scheduler_config=config, prediction=prediction, shape=shape, name=label)
    out.ignored = ignored
    return out


def diffusers_times(scheduler) -> torch.Tensor:
    """The float64 ``times`` that reproduce a configured diffusers scheduler's ``timesteps``
    (after ``scheduler.set_timesteps(S)``): t = (k + 1) / N for each timestep k, N =
    ``num_train_timesteps`` (the map of ``ScoreModel.from_discrete``). These are the nodes where
    diffusers evaluates the network; each diffusers step goes from one to the next.

    diffusers' last step goes from the last node to alpha = 1 (DDPM; DDIM with
    ``set_alpha_to_one=True``; multistep schedulers with ``final_sigmas_type="zero"``, their
    defaults): that step is ``denoise=True`` here (x0 predicted at the last node). Where it ends
    at ``alphas_cumprod[0]`` instead (``set_alpha_to_one=False``, ``final_sigmas_type="sigma_min"``)
    append ``model.sde.eps`` (= 1/N) to the times and keep ``denoise=False``.

    Refused (``InputError``): a scheduler without timesteps, fractional or non-decreasing
    timesteps, DDIM whose step target ``k - N // S`` is not the next timestep (``timestep_spacing=
    "linspace"``), and sigmas that are not the training schedule's at the timesteps (Karras,
    exponential, beta, Lu lambdas, flow sigmas)."""
    config = dict(getattr(scheduler, "config", None) or {})
    who = type(scheduler).__name__
    steps = getattr(scheduler, "timesteps", None)
    if not config or steps is None or getattr(scheduler, "num_inference_steps", None) is None:
        raise InputError(f"diffusers_times: {who} has no timesteps; call scheduler.set_timesteps(steps) first")
    ks = torch.as_tensor(steps).double().cpu()
    n = int(config.get("num_train_timesteps", 1000))
    if not bool((ks == ks.round()).all()) or not bool((ks[1:] < ks[:-1]).all()) or ks.min() < 0 or ks.max() >= n:
        raise InputError(f"diffusers_times: {who}.timesteps {ks.tolist()[:6]}...: expected decreasing integer steps in "
                         f"[0, {n - 1}]")
    flags = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
                         "use_flow_sigmas") if config.get(k)]
    if flags:
        raise InputError(f"diffusers_times: {who} has {flags[0]}=True: its sigmas are not the training schedule's at "
                         "its (rounded) timesteps, so no time grid reproduces it")
    if who.startswith("DDIM") and len(ks) > 1:
        jump = n // int(scheduler.num_inference_steps)
        if not bool((ks[:-1] - jump == ks[1:]).all()):
            raise InputError(f"diffusers_times: {who} with timestep_spacing={config.get('timestep_spacing')!r} steps "
                             f"from k to k - {jump}, which is not its next timestep; use 'leading' or 'trailing'")
    return (ks + 1) / n
