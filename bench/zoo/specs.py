"""Model specs: the models users bring, named by one string wherever a model name is accepted
(suites, ``sdebench run | sample | likelihood | tune | recommend | describe``,
``bench.zoo.models.load``).

    NAME                      a registered model (``bench.zoo.models.available()``)
    diffusers:PATH            a diffusers pipeline directory (``unet/`` + ``scheduler/``) or a UNet
                              directory with its scheduler config (``adapters.from_diffusers``)
    denoiser:MODULE:FUNCTION  a k-diffusion / EDM denoiser D(x, sigma) -> x0 on sigma in
                              [sigma_min, sigma_max] (``adapters.from_denoiser``, sigma-time SDE)
    callable:MODULE:FUNCTION  a network fn(x, t) -> eps | x0 | v | score trained on a
                              continuous-time SDE (``adapters.from_callable``)
    checkpoint:PATH           a card (.json) or weights file of this project's checkpoint format,
                              sha256 checked (``bench.zoo.trained``)

Settings follow a "?" as KEY=VALUE pairs joined by "&" (lists comma-separated), e.g.
``diffusers:my-ddpm?ignore=clip_sample``, or are keys of a suite's ``[[models]]`` table (the two
may not both set one key):

    diffusers   ignore (of ``adapters.IGNORABLE``: clip_sample, thresholding, variance_type),
                prediction (overrides the config's prediction_type)
    denoiser    sigma_min, sigma_max (default: the function's attributes, else 0.002 and 80), shape
    callable    sde (a name in ``solvers.SDES``), sde_args (a table; suites only), prediction, shape
    checkpoint  none
    every kind  data (held-out samples: a .npy/.npz/.pt file or MODULE:FUNCTION), features
                (MODULE:FUNCTION, x -> (n, k) features); see ``bench.zoo.own_data``

``shape``, ``sde`` and ``prediction`` default to the function's attributes of those names (a module
may declare ``fn.shape = (3, 32, 32)``, ``fn.sde = solvers.VP()``, ``fn.prediction = "eps"``);
what is neither given nor declared is an error naming it. MODULE must be importable (on
``sys.path``); FUNCTION may be dotted (``module:obj.method``). Relative paths are resolved against
``base`` (a suite file's directory; the working directory on the command line).

``ModelSpec.fingerprint()`` hashes what the model's outputs depend on: every file of the diffusers
model directory and its scheduler config; a checkpoint's weights sha256 (from its card); a
module's source file and, for an ``nn.Module``, its weights; and the settings. Not the path: a
model moved to another folder is the same model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import pathlib

import torch

from solvers import PREDICTIONS, SDE, SDES, InputError, ScoreModel

from . import adapters, own_data

__all__ = ["ModelSpec", "parse", "KINDS", "FORMS", "SETTINGS", "module_weights"]

#: spec prefix -> what follows it
FORMS_BY_KIND = {"diffusers": "PATH", "denoiser": "MODULE:FUNCTION", "callable": "MODULE:FUNCTION",
                 "checkpoint": "PATH"}
KINDS = tuple(FORMS_BY_KIND)
FORMS = tuple(f"{k}:{v}" for k, v in FORMS_BY_KIND.items())
#: the settings each kind takes (a suite table's keys or the spec's query)
SETTINGS = {kind: (*own, *own_data.KEYS) for kind, own in {
    "diffusers": ("ignore", "prediction"), "denoiser": ("sigma_min", "sigma_max", "shape"),
    "callable": ("sde", "sde_args", "prediction", "shape"), "checkpoint": ()}.items()}
#: the sigma range of a denoiser that declares none (EDM's)
SIGMA_RANGE = (0.002, 80.0)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: ``kind`` ("name" for a registered model, else a prefix of ``KINDS``),
    ``target`` (the name, an absolute path, or MODULE:FUNCTION) and its ``settings``."""

    kind: str
    target: str
    settings: dict = dataclasses.field(default_factory=dict)

    __hash__ = None  # a dict field

    @property
    def text(self) -> str:
        """The spec as one string (paths absolute, settings left out)."""
        return self.target if self.kind == "name" else f"{self.kind}:{self.target}"

    def to_dict(self) -> dict:
        return {"spec": self.text, "settings": dict(self.settings)}

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return parse(d["spec"], d.get("settings") or None)

    # --- loading ---------------------------------------------------------------------
    def load(self) -> ScoreModel:
        """The model (named by the spec; a registered name loads with ``bench.zoo.models.load``)."""
        if self.kind == "name":
            raise InputError(f"{self.text!r} is a registered name: load it with bench.zoo.models.load")
        model = getattr(self, f"_load_{self.kind}")(self.text)
        model.name = self.text
        return own_data.attach(model, self.settings)

    def _load_diffusers(self, label):
        s = self.settings
        return adapters.from_diffusers(self.target, ignore=s.get("ignore", ()), prediction=s.get("prediction"),
                                       name=label)

    def _load_checkpoint(self, label):
        from . import trained

        path = pathlib.Path(self.target)
        if path.suffix not in (".json", ".safetensors", ".pt", ".pth"):
            raise InputError(f"{self.text}: expected a checkpoint card (.json) or its weights file (.safetensors, "
                             ".pt, .pth)")
        if not path.is_file():
            raise InputError(f"{self.text}: no such file")
        return trained.load(path, verify=True)

    def _load_denoiser(self, label):
        fn, s = self.function(), self.settings
        lo = s.get("sigma_min", _attr_float(fn, "sigma_min", SIGMA_RANGE[0]))
        hi = s.get("sigma_max", _attr_float(fn, "sigma_max", SIGMA_RANGE[1]))
        if not 0 < lo < hi:
            raise InputError(f"{self.text}: needs 0 < sigma_min < sigma_max, got {lo} and {hi}")
        return adapters.from_denoiser(fn, sigma_min=lo, sigma_max=hi, shape=self._declared(fn, "shape"), name=label)

    def _load_callable(self, label):
        fn, s = self.function(), self.settings
        sde = s.get("sde") or self._declared(fn, "sde")
        args = s.get("sde_args", {})
        if isinstance(sde, SDE) and args:
            raise InputError(f"{self.text}: sde_args {sorted(args)} given with the function's own SDE instance; give "
                             "sde = NAME with them, or neither")
        return adapters.from_callable(fn, sde, self._declared(fn, "prediction"), shape=self._declared(fn, "shape"),
                                      name=label, **args)

    def _declared(self, fn, key):
        """A setting, else the function's attribute of that name, else an error naming it."""
        value = self.settings.get(key, getattr(fn, key, None))
        if value is None:
            raise InputError(f"{self.text}: needs {key} (give {key} = ... in the suite's [[models]] table or "
                             f"?{key}=... in the spec, or set {fn.__name__ if hasattr(fn, '__name__') else 'fn'}."
                             f"{key} in its module)")
        if key == "shape":
            return _shape(self.text, value)
        if key == "prediction" and value not in PREDICTIONS:
            raise InputError(f"{self.text}: prediction {value!r}; valid: {', '.join(PREDICTIONS)}")
        return value

    def function(self):
        """The object MODULE:FUNCTION names, imported."""
        module, _, attr = self.target.partition(":")
        try:
            obj = importlib.import_module(module)
        except Exception as e:
            hint = "; is its folder on PYTHONPATH?" if isinstance(e, ModuleNotFoundError) and \
                e.name == module.split(".")[0] else ""
            raise InputError(f"{self.text}: cannot import module {module!r}: {type(e).__name__}: {e}{hint}") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise InputError(f"{self.text}: module {module!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        if not callable(obj):
            raise InputError(f"{self.text}: {attr!r} is a {type(obj).__name__}, not a function or module")
        return obj

    # --- provenance ------------------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 of what the model's outputs depend on (see the module docstring)."""
        h = hashlib.sha256(json.dumps([self.kind, self.settings], sort_keys=True).encode())
        if self.kind == "diffusers":
            model_dir, scheduler = adapters.diffusers_files(self.target)
            files = sorted(p for p in model_dir.iterdir() if p.is_file()) + ([scheduler] if scheduler else [])
            for p in files:
                h.update(p.name.encode())
                _hash_file(h, p)
        elif self.kind == "checkpoint":
            from . import trained

            card = trained.read_card(pathlib.Path(self.target).with_suffix(".json"))
            h.update(str(card.get("sha256")).encode())
        elif self.kind in ("denoiser", "callable"):
            fn = self.function()
            module = importlib.import_module(self.target.partition(":")[0])
            source = getattr(module, "__file__", None)
            if source and os.path.isfile(source):
                _hash_file(h, pathlib.Path(source))
            for part in module_weights(fn):
                h.update(part)
        for part in own_data.source_bytes(self.settings):
            h.update(part)
        return h.hexdigest()


def module_weights(obj):
    """The bytes of the weights of ``obj`` if it (or its ``net``, or the object a bound method
    belongs to) is an ``nn.Module``, in state-dict order."""
    for cand in (obj, getattr(obj, "net", None), getattr(obj, "__self__", None)):
        if isinstance(cand, torch.nn.Module):
            for key, value in cand.state_dict().items():
                yield key.encode()
                yield value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
            return


def _hash_file(h, path: pathlib.Path):
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def _attr_float(fn, key, default):
    v = getattr(fn, key, None)
    return default if v is None else float(v)


def _shape(text, value) -> list[int]:
    if isinstance(value, (tuple, list, torch.Size)) and value and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return list(value)
    raise InputError(f"{text}: shape must be a non-empty list of positive integers (e.g. [3, 32, 32]), got {value!r}")


def _number(text, key, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not math.isfinite(v) or v <= 0:
        raise InputError(f"{text}: {key} must be a finite number > 0, got {value!r}")
    return v


def _query(text, query: str) -> dict:
    """KEY=VALUE&KEY=VALUE (lists comma-separated) -> settings."""
    out: dict = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise InputError(f"{text}: setting {part!r} is not KEY=VALUE (settings follow '?', joined by '&')")
        if key in out:
            raise InputError(f"{text}: setting {key!r} is given twice")
        if key in ("ignore", "shape"):
            items = [v.strip() for v in value.split(",") if v.strip()]
            out[key] = [int(v) if key == "shape" and v.isdigit() else v for v in items]
        else:
            out[key] = value
    return out


def _check_settings(text, kind, settings: dict, base=None) -> dict:
    """Each setting checked and made canonical (JSON types), so that provenance compares."""
    allowed = SETTINGS[kind]
    out = {}
    for key, value in settings.items():
        if key not in allowed:
            raise InputError(f"{text}: unknown setting {key!r} for a {kind} spec; allowed: "
                             f"{', '.join(allowed) or 'none'}")
        if key == "ignore":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                raise InputError(f"{text}: ignore must be a list of setting names, got {value!r}")
            bad = [v for v in items if v not in adapters.IGNORABLE]
            if bad:
                raise InputError(f"{text}: ignore: unknown setting {bad[0]!r}; ignorable: "
                                 f"{', '.join(adapters.IGNORABLE)}")
            out[key] = sorted(set(items))
        elif key == "shape":
            out[key] = _shape(text, value)
        elif key in ("sigma_min", "sigma_max"):
            out[key] = _number(text, key, value)
        elif key == "sde":
            if value not in SDES:
                raise InputError(f"{text}: unknown sde {value!r}; valid: {', '.join(SDES)}")
            out[key] = value
        elif key == "sde_args":
            if not isinstance(value, dict):
                raise InputError(f"{text}: sde_args must be a table of the SDE's parameters, got {value!r}")
            out[key] = dict(value)
        elif key in own_data.KEYS:
            if not isinstance(value, str) or not value.strip():
                raise own_data.DataError(key, f"{value!r}: must be a file path or MODULE:FUNCTION")
            path = pathlib.Path(value).expanduser()
            if own_data.is_file(value) and not path.is_absolute():
                path = pathlib.Path(base or os.getcwd()) / path
            out[key] = os.path.normpath(str(path)) if own_data.is_file(value) else value
        elif key == "prediction":
            valid = PREDICTIONS if kind != "diffusers" else (*adapters.PREDICTION_TYPES, *PREDICTIONS[:3])
            if value not in valid:
                raise InputError(f"{text}: prediction {value!r}; valid: {', '.join(valid)}")
            out[key] = value
    return out


def _target(text, kind, target: str, base) -> str:
    if FORMS_BY_KIND[kind] == "PATH":
        if not target.strip():
            raise InputError(f"{text!r}: {kind}: needs a PATH ({kind}:PATH)")
        path = pathlib.Path(target).expanduser()
        if not path.is_absolute():
            path = pathlib.Path(base or os.getcwd()) / path
        return os.path.normpath(str(path))
    module, sep, attr = target.partition(":")
    ok = sep and all(p.isidentifier() for p in module.split(".")) and all(p.isidentifier() for p in attr.split("."))
    if not ok:
        raise InputError(f"{text!r}: {kind}: expected {kind}:MODULE:FUNCTION (e.g. {kind}:my_models:net), "
                         f"got {target!r}")
    return target


def parse(spec, settings: dict | None = None, *, base=None) -> ModelSpec:
    """A ``ModelSpec`` from a spec string (or one given whole), with ``settings`` from a suite's
    table merged into the spec's own; relative paths resolved against ``base``."""
    if isinstance(spec, ModelSpec):
        return spec if not settings else parse(spec.text, {**spec.settings, **settings})
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"a model must be a name or a spec ({', '.join(FORMS)}), got {spec!r}")
    kind, sep, rest = spec.partition(":")
    if not sep:
        if settings:
            raise InputError(f"model {spec!r}: settings ({', '.join(sorted(settings))}) apply to model specs "
                             f"({', '.join(FORMS)}), not to a registered name")
        return ModelSpec("name", spec, {})
    if kind not in KINDS:
        raise InputError(f"unknown model spec prefix {kind!r} in {spec!r}; valid: {', '.join(FORMS)} (or a "
                         "registered model name)")
    target, _, query = rest.partition("?")
    given, settings = _query(spec, query), dict(settings or {})
    both = sorted(set(given) & set(settings))
    if both:
        raise InputError(f"{spec}: {', '.join(both)} set both in the spec and in its table; give each once")
    return ModelSpec(kind, _target(spec, kind, target, base), _check_settings(spec, kind, {**settings, **given}, base))
