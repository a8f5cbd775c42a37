"""A suite's models: registered names, model specs, or tables of settings.

    models = ["gmm2d-vp", "diffusers:pipes/my-ddpm"]   # a spec in the list is its own name

or, to name a model and give its settings (TOML: ``[[models]]`` tables, or inline tables in the list)::

    [[models]]
    name = "my-ddpm"                   # what cells, the report and compare call it (default: the spec)
    spec = "diffusers:pipes/my-ddpm"   # a registered name or a spec (bench.zoo.specs); paths are
                                       # relative to the suite file
    ignore = ["clip_sample"]           # the spec's own settings (bench.zoo.specs.SETTINGS)
    batch = 64                         # samples per cell for this model (instead of the suite's n)
    dtype = "float32"                  # this model's cells' dtype (instead of the suite's)
    reference = { ode_rtol = 1e-6 }    # this model's reference settings
    data = "heldout.npy"               # held-out samples in the model's space (.npy/.npz/.pt or
                                       # MODULE:FUNCTION): the data-based metrics' target and floor
    features = "my_feats:embed"        # x -> (n, k) features: fd_features (bench.zoo.own_data)

Every model is loaded once when the suite is read, so a wrong spec (a typo in the prefix, a
missing directory or module, an unsupported setting) fails there, before any store exists; and
fingerprinted once (``bench.zoo.models.fingerprint``) for the cells' provenance.
"""
from __future__ import annotations

import dataclasses
import pathlib

from bench.zoo import models, own_data, specs
from solvers import InputError, ScoreModel

__all__ = ["ModelEntry", "SuiteModels", "TABLE"]

#: the keys of a [[models]] table besides the spec's own settings
TABLE = {"name": str, "spec": str, "batch": int, "dtype": str, "reference": dict}
SPEC_SETTINGS = sorted({k for keys in specs.SETTINGS.values() for k in keys})


@dataclasses.dataclass
class ModelEntry:
    name: str
    spec: specs.ModelSpec
    where: str                      # where the suite file defines it, for messages
    batch: int | None = None
    dtype: str | None = None
    reference: dict = dataclasses.field(default_factory=dict)


class SuiteModels:
    """The parsed ``models`` of a suite: ``names`` in order, an entry per name, each model loaded
    and fingerprinted once (``load``, ``provenance``). ``err(key, message)`` makes the suite's error."""

    def __init__(self, items, base: pathlib.Path | None, err):
        self.err, self.base = err, base
        self.entries: dict[str, ModelEntry] = {}
        self._loaded: dict[str, ScoreModel] = {}
        self._fingerprints: dict[str, str] = {}
        if not isinstance(items, list) or not items:
            raise err("models", f"is empty; name at least one model ({', '.join(models.available())}) or a model "
                                f"spec ({', '.join(specs.FORMS)})")
        for i, item in enumerate(items):
            entry = self._entry(i, item)
            if entry.name in self.entries:
                raise err("models", f"lists {entry.name} more than once")
            self.entries[entry.name] = entry
        for entry in self.entries.values():
            self.load(entry.name)

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def _entry(self, i, item) -> ModelEntry:
        if isinstance(item, str):
            return ModelEntry(item, self._parse("models", item, None), "models")
        where = f"models[{i}]"
        if not isinstance(item, dict):
            raise self.err(where, f"must be a model name, a spec or a table with spec = ..., got {item!r}")
        for key, value in item.items():
            want = TABLE.get(key)
            if want is None and key not in SPEC_SETTINGS:
                raise self.err(f"{where}.{key}", f"unknown key; allowed: {', '.join(TABLE)} and the spec's "
                                                 f"settings ({', '.join(SPEC_SETTINGS)})")
            if want is not None and (not isinstance(value, want) or isinstance(value, bool)):
                raise self.err(f"{where}.{key}", f"must be a {want.__name__}, got {value!r}")
        if "spec" not in item:
            raise self.err(where, "needs spec = \"<a model name or a spec>\"")
        settings = {k: v for k, v in item.items() if k in SPEC_SETTINGS}
        spec = self._parse(f"{where}.spec", item["spec"], settings)
        name = item.get("name", item["spec"])
        if not name.strip():
            raise self.err(f"{where}.name", "must be a non-empty string")
        if spec.kind == "name" and name != spec.target:
            raise self.err(f"{where}.name", f"{spec.target!r} is a registered model: it keeps its name")
        if spec.kind != "name" and name in models.available():
            raise self.err(f"{where}.name", f"{name!r} is a registered model's name; give yours another")
        if "batch" in item and not 2 <= item["batch"] <= 10**9:
            raise self.err(f"{where}.batch", f"must be an integer in [2, 1000000000], got {item['batch']!r}")
        return ModelEntry(name, spec, where, item.get("batch"), item.get("dtype"), dict(item.get("reference", {})))

    def _parse(self, where, text, settings) -> specs.ModelSpec:
        try:
            return specs.parse(text, settings, base=self.base)
        except own_data.DataError as e:
            raise self.err(f"{where.rsplit('.', 1)[0]}.{e.key}", str(e)) from None
        except InputError as e:
            raise self.err(where, str(e)) from None

    def load(self, name: str) -> ScoreModel:
        """The model (loaded once; the suite's dry runs and data sizes use it)."""
        if name not in self._loaded:
            entry = self.entries[name]
            try:
                self._loaded[name] = models.load(entry.spec)
            except own_data.DataError as e:
                raise self.err(f"{entry.where}.{e.key}", str(e)) from None
            except InputError as e:
                raise self.err("models" if entry.where == "models" else f"{entry.where}.spec", str(e)) from None
        return self._loaded[name]

    def provenance(self, name: str) -> dict:
        """What a cell records of its model: the spec (paths absolute), its settings and the
        fingerprint of its weights and config."""
        entry = self.entries[name]
        if name not in self._fingerprints:
            self._fingerprints[name] = models.fingerprint(entry.spec, self.load(name))
        return {**entry.spec.to_dict(), "fingerprint": self._fingerprints[name]}
