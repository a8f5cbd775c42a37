"""Suites: TOML files naming models x solvers (with options) x step counts x seeds x metrics.

    name = "quick"
    models = ["gmm2d-vp"]       # registered names or model specs; [[models]] tables name them and
                                # give their settings (bench.harness.suite_models)
    exact_prior = true          # x_T from the exact p_T (no prior mismatch)
    n = 1000                    # samples per cell
    seeds = [0]
    nfe = [10, 20, 50]          # NFE budgets (steps = the most that fit), or steps = [...]
    metrics = ["discretization", "sliced_w2", "mmd2", "energy", "w2"]   # [] or ["time"]: timing only
                                # (NFE, wall time, overhead, memory; the only way to run
                                # cifar10-unet-timing, whose weights are random)
    device = "auto"             # cpu | cuda | auto
    dtype = "float32"
    repeats = 3                 # timed repeats after `warmup` untimed runs
    warmup = 1
    threads = 1                 # torch CPU threads (recorded); more threads than free cores
                                # make CPU timings meaningless (BLAS/OpenMP threads wait on
                                # descheduled peers: 100x slowdowns seen on a loaded 2-core box)

    [[solvers]]
    name = "pc"
    corrector = "langevin"
    snr = 0.16                  # any other key is a solver option; a list makes one cell per value
    [[solvers]]
    name = "dopri5"
    rtol = [1e-2, 1e-3]         # adaptive solvers ignore steps/nfe

    imports = ["my_package.my_solvers"]   # modules to import first: they register your solvers, metrics, executors

    [[likelihood]]              # exact log-likelihood through the probability-flow ODE
    models = ["gmm2d-vp"]       # optional: only these of the suite's models
    solver = "dopri5"
    rtol = [1e-3, 1e-5]
    trace = "exact"

Each entry of ``solvers`` may also set ``grid``, ``grids``, ``steps`` or ``nfe`` for itself.

``grids = ["logsnr", "edm", "tuned"]`` (top level or in an entry; an entry's wins) gives one cell
per grid: a built-in grid's name, ``tuned`` (= ``tuned-dp``), ``tuned-dp``, ``tuned-search`` or a
path to a saved tuned-grid JSON (see ``bench.harness.tuned``: tuned once per model, solver,
options, steps and method, on x_T disjoint from the evaluation's, and kept in the store). At the
top level a tuned grid skips the solvers that cannot have one (adaptive, stochastic); in an entry
it is an error. ``tune = { n = 256, budget = 64 }`` sets the tuning's train size and budget.
``skip_at_floor = false`` measures every metric at every step count; by default a metric at its
noise floor for every seed at one step count of a solver is recorded as at floor, not measured, at
the finer ones (``bench.harness.at_floor``).
A bad file raises ``SuiteError`` naming the file, the key and what is allowed.
"""
from __future__ import annotations

import itertools
import math
import pathlib

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

import torch

import solvers
from bench.harness import limits, metrics, tuned
from bench.harness.cell import Cell, solver_meta
from bench.harness.execute import import_plugins
from bench.harness.suite_models import SuiteModels
from bench.harness.tuned import DEFAULT_TUNE
from bench.zoo import models
from solvers import InputError, validate
from solvers.adaptive import METHODS as ADAPTIVE_METHODS
from solvers.grids import ALIASES as GRID_ALIASES
from solvers.likelihood import TRACES

__all__ = ["Suite", "SuiteError", "load_suite", "available_suites", "SUITES_DIR", "import_plugins",
           "DEFAULT_REFERENCE"]

SUITES_DIR = pathlib.Path(__file__).parent / "suites"
DTYPES = ("float32", "float64")
TOP = {"name": str, "description": str, "models": list, "exact_prior": bool, "n": int, "seeds": list,
       "steps": list, "nfe": list, "grid": str, "metrics": list, "device": str, "dtype": str,
       "repeats": int, "warmup": int, "threads": int, "solvers": list, "likelihood": list,
       "reference": dict, "imports": list, "grids": list, "tune": dict, "skip_at_floor": bool}
REFERENCE = {"ode_rtol": float, "sde_steps": int}
DEFAULT_REFERENCE = {"ode_rtol": 1e-10, "sde_steps": 2048}
#: the default ode_rtol of a discrete-time (DDPM) model: its reference in lambda costs ~1.15x the smooth VP
#: schedule's network calls here, but the knots kink the network's time input, so 1e-8 costs 6x and 1e-10
#: 27x (bench.harness.reference); its own error, estimated from two tolerances, is the floor
DISCRETE_ODE_RTOL = 1e-6
LIKELIHOOD = {"solver": str, "rtol": (float, list), "atol": (float, list), "trace": (str, list),
              "probes": (int, list), "n": int, "prior": str, "models": list}
ENTRY = ("name", "grid", "grids", "steps", "nfe")
TUNE = {"n": int, "budget": int}
PRIORS = ("exact", "sde")
#: ``metrics = ["time"]`` (or ``[]``): a timing-only suite
TIMING = "time"
N_MAX = limits.N_MAX


class SuiteError(InputError):
    """A malformed suite file."""


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def _expand(options: dict) -> list[dict]:
    """One dict per combination of list-valued options."""
    keys = sorted(options)
    values = [v if isinstance(v, list) else [v] for v in (options[k] for k in keys)]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


class Suite:
    """A parsed, validated suite; ``cells()`` lists the work."""

    def __init__(self, data: dict, source: str = "<suite>", text: str = ""):
        self.source, self.text = source, text
        self.err = lambda key, msg: SuiteError(f"{source}: {key}: {msg}")
        self._validate_top(data)
        self.imports = data.get("imports", [])
        import_plugins(self.imports, lambda msg: self.err("imports", msg))
        self.name = data.get("name", pathlib.Path(source).stem)
        self.description = data.get("description", "")
        path = pathlib.Path(source)
        self.model_table = SuiteModels(data["models"], path.parent if path.is_file() else None, self.err)
        self.models = self.model_table.names
        self.exact_prior = data.get("exact_prior", True)
        self.n = data.get("n", 1000)
        self.seeds = data.get("seeds", [0])
        self.steps, self.nfe = data.get("steps"), data.get("nfe")
        self.grid = data.get("grid")
        self.grids = data.get("grids")
        self.tune = {**DEFAULT_TUNE, **data.get("tune", {})}
        self.skip_at_floor = data.get("skip_at_floor", True)
        self.metrics = data.get("metrics", metrics.requestable())
        self.device = self._device(data.get("device", "cpu"))
        self.dtype = data.get("dtype", "float32")
        self.repeats, self.warmup = data.get("repeats", 3), data.get("warmup", 1)
        self.threads = data.get("threads")
        self.reference_given = dict(data.get("reference", {}))
        self.reference = {**DEFAULT_REFERENCE, **self.reference_given}
        self.solver_entries = data.get("solvers", [])
        self.likelihood_entries = data.get("likelihood", [])
        self._validate_rest()

    # --- validation ------------------------------------------------------------------
    def _validate_top(self, data):
        for key, value in data.items():
            if key not in TOP:
                raise self.err(key, f"unknown key; allowed: {', '.join(sorted(TOP))}")
            want = TOP[key]
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise self.err(key, f"must be a {want.__name__}, got {type(value).__name__} {value!r}")
        if "models" not in data:
            raise self.err("models", f"required; available: {', '.join(models.available())}")
        if "steps" in data and "nfe" in data:
            raise self.err("steps", "give steps or nfe (budgets), not both")
        if "grid" in data and "grids" in data:
            raise self.err("grids", "give grid or grids, not both")
        if not data.get("solvers") and not data.get("likelihood"):
            raise self.err("solvers", "a suite needs at least one [[solvers]] or [[likelihood]] entry")

    def _ints(self, key, values, low=1, high=None):
        example = "[0, 1]" if low == 0 else "[10, 20]"
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        if not isinstance(values, list):
            raise self.err(key, f"must be a non-empty list of integers {rng} (e.g. {key.split('.')[-1]} = {example}), "
                           f"got {type(values).__name__} {values!r}")
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < low
               or (high is not None and v > high)]
        if not values or bad:
            raise self.err(key, f"must be a non-empty list of integers {rng}, got {values!r}")

    def _names(self, key, values, valid, what):
        if not values:
            raise self.err(key, f"is empty; name at least one {what} ({', '.join(valid)})")
        bad = [v for v in values if not isinstance(v, str) or v not in valid]
        if bad and what == "metric":
            raise self.err(key, f"unknown {bad}; allowed: {', '.join(valid)}")
        if bad:
            raise self.err(key, f"unknown {what} {bad[0]!r}; available: {', '.join(valid)}")
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise self.err(key, f"lists {', '.join(dup)} more than once")

    def _grid(self, key, grid):
        valid = [*solvers.GRIDS, *GRID_ALIASES]
        if isinstance(grid, str) and tuned.is_tuned(grid):
            return self._check_grids(key, [grid])
        if grid is not None and (not isinstance(grid, str) or grid not in valid):
            raise self.err(key, f"unknown grid {grid!r}; valid: {', '.join(valid)}")

    def _device(self, device):
        if device not in ("cpu", "cuda", "auto"):
            raise self.err("device", f"must be cpu, cuda or auto, got {device!r}")
        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise self.err("device", "cuda requested but torch.cuda.is_available() is False; use cpu or auto")
        return device

    def _check_numbers(self):
        """n, repeats, warmup, threads: also run again on CLI overrides (``override``)."""
        for key, low in (("n", 2), ("repeats", 1), ("warmup", 0), ("threads", 1)):
            v = getattr(self, key)
            if key == "threads" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < low or v > N_MAX:
                raise self.err(key, f"must be an integer in [{low}, {N_MAX}], got {v!r}")

    def _check_cell_count(self):
        """At most ``limits.CELLS_MAX`` cells, counted from the suite's lists before any is built
        (an upper bound: NFE budgets that leave no step are counted too)."""
        per_model = 0
        for entry in self.solver_entries:
            options = {k: v for k, v in entry.items() if k not in ENTRY}
            grids = entry.get("grids") or [None]
            sizes = entry.get("nfe") or entry.get("steps") or self.nfe or self.steps or [None]
            per_model += len(_expand(options)) * len(grids) * len(sizes)
        per_model += sum(len(_expand({k: v for k, v in e.items() if k not in ("n", "models")}))
                         for e in self.likelihood_entries)
        total = per_model * len(self.models) * len(self.seeds) * len(self.grids or [None])
        if total > limits.CELLS_MAX:
            raise self.err("seeds" if len(self.seeds) > 1000 else "solvers",
                           f"defines about {total:,} cells (models x seeds x solver entries x options x grids x "
                           f"steps), more than {limits.CELLS_MAX:,}; split it into several suites")

    def override(self, **values) -> Suite:
        """Set n, threads, repeats or warmup (e.g. from the command line) through the same checks;
        ``models`` keeps a subset of the suite's models (a comma-separated string or a list)."""
        for key, v in values.items():
            if key not in ("n", "threads", "repeats", "warmup", "models"):
                raise SuiteError(f"cannot override {key!r}")
            if key == "models" and v is not None:
                v = [m.strip() for m in (v.split(",") if isinstance(v, str) else v) if m.strip()]
                bad = [m for m in v if m not in self.models]
                if bad or not v:
                    raise SuiteError(f"{self.source}: --models {','.join(v)}: {'not in the suite: ' if bad else ''}"
                                     f"{', '.join(bad) or 'empty'}; this suite's models: {', '.join(self.models)}")
                v = list(dict.fromkeys(v))
            if key == "n" and v is not None:  # --n sets every model's samples, a table's batch included
                for entry in self.model_table.entries.values():
                    entry.batch = None
            if v is not None:
                setattr(self, key, v)
        given = {k for k, v in values.items() if v is not None}
        self.err = lambda key, msg, src=self.source: SuiteError(
            f"{src}: {key}{f' (command line --{key})' if key in given else ''}: {msg}")
        try:
            self._check_numbers()
            self._check_memory(self.cells())
        finally:
            self.err = lambda key, msg, src=self.source: SuiteError(f"{src}: {key}: {msg}")
        return self

    def _validate_rest(self):
        if not self.name.strip():
            raise self.err("name", "must be a non-empty string (runs are listed and resumed by it)")
        self._ints("seeds", self.seeds, low=0, high=validate.SEED_MAX)
        self._check_numbers()
        for key in ("steps", "nfe"):
            if getattr(self, key) is not None:
                self._ints(key, getattr(self, key), high=limits.STEPS_MAX)
        self._grid("grid", self.grid)
        if self.metrics in ([], [TIMING]):
            self.metrics = []  # a timing-only suite: NFE, wall time, overhead and memory
        else:
            self._names("metrics", self.metrics, [*metrics.requestable(), TIMING], "metric")
            if TIMING in self.metrics:
                raise self.err("metrics", f"{TIMING!r} means timing only: give metrics = [\"{TIMING}\"] alone, or "
                                          "the quality metrics (every cell is timed anyway)")
        if models.TIMING_ONLY in self.models and self.metrics:  # random weights (bench.zoo.cifar_unet)
            raise self.err("metrics", f"model {models.TIMING_ONLY!r} is timing-only (random weights): quality metrics "
                                      f"{self.metrics} are refused; use metrics = [] (or [\"{TIMING}\"])")
        self._check_targets()
        for where, dtype in [("dtype", self.dtype), *((f"{e.where}.dtype", e.dtype)
                                                        for e in self.model_table.entries.values() if e.dtype)]:
            if dtype not in DTYPES:
                raise self.err(where, f"must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if not all(isinstance(m, str) and m for m in self.imports):
            raise self.err("imports", f"must be a list of module names, got {self.imports!r}")
        for key, value in self.reference.items():
            if isinstance(value, dict):
                if key not in self.models:
                    raise self.err(f"reference.{key}", "a table of reference settings must be named after one "
                                   f"of the suite's models ({', '.join(self.models)})")
                for k, v in value.items():
                    self._reference_value(f"reference.{key}.{k}", k, v)
            else:
                self._reference_value(f"reference.{key}", key, value)
        for entry in self.model_table.entries.values():
            for key, value in entry.reference.items():
                self._reference_value(f"{entry.where}.reference.{key}", key, value)
        for key, value in self.tune.items():
            if key not in TUNE or (value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                                          or not 2 <= value <= N_MAX)):
                raise self.err(f"tune.{key}", f"allowed keys: {', '.join(TUNE)} (integers in [2, {N_MAX}]), got "
                               f"{value!r}")
        if self.grids is not None:
            self._check_grids("grids", self.grids)
        for i, entry in enumerate(self.solver_entries):
            self._check_solver_entry(i, entry)
        for i, entry in enumerate(self.likelihood_entries):
            self._check_likelihood_entry(i, entry)
        self._check_cell_count()
        cells = self.cells()
        keys = [c.key for c in cells]
        if len(set(keys)) < len(keys):
            dup = next(c for c in cells if keys.count(c.key) > 1)
            raise self.err("solvers", f"two entries define the same cell ({dup.describe()}); remove one")
        self._check_grid_files(cells)
        self._check_memory(cells)

    def _check_grid_files(self, cells):
        """Each tuned-grid file against each cell using it: its SDE, times and steps (``tuned``)."""
        seen = set()
        for c in cells:
            if isinstance(c.grid, str) and c.grid.endswith(".json") and (c.grid, c.model, c.steps) not in seen:
                seen.add((c.grid, c.model, c.steps))
                try:
                    tuned.grid_file(c, c.grid)
                except InputError as e:
                    raise SuiteError(f"{self.source}: {e}") from None

    def _check_memory(self, cells):
        """The dearest cell of each kind against this machine's free memory (``bench.harness.limits``),
        before a run exists: a size that cannot fit is refused, not killed for memory later."""
        dims, worst = {}, {}
        for c in cells:
            if c.model not in dims:
                dims[c.model] = math.prod(self.model_table.load(c.model).shape or (2,))
            d = dims[c.model]
            if c.task == "likelihood":
                need = limits.likelihood_bytes(c.n, d, c.options.get("trace", "exact"), c.options.get("probes", 1))
                todo = [("likelihood.n", need, f"a likelihood of {c.n} points of {c.model}")]
            else:
                steps = max(c.steps or 0, int(c.reference.get("sde_steps", 0)))  # the grid, or the SDE reference's
                todo = [("n", limits.sample_bytes(c.n, d, c.metrics, steps), f"a cell of {c.n} samples of {c.model}"
                                                                              f" over {steps} steps")]
            if c.grid in tuned.TUNED:
                need = limits.tuning_bytes(self.tune["n"], d, c.steps, tuned.TUNED[c.grid], self.tune["budget"])
                todo.append(("tune.n", need, f"tuning {c.solver}'s grid at {c.steps} steps on {self.tune['n']} x_T "
                                             f"of {c.model}"))
            for key, need, what in todo:
                if need > worst.get(key, (0.0, ""))[0]:
                    worst[key] = (need, what)
        for key, (need, what) in worst.items():
            try:
                limits.check_fits(what, need, f"lower {key}" + (" (or the steps)" if key != "likelihood.n" else ""))
            except InputError as e:
                raise self.err(key, str(e)) from None

    def _check_targets(self):
        """A metric that compares samples with a target set needs exact samples or data: refused
        for a model with neither (a spec without data), naming both."""
        for name in self.models:
            model = self.model_table.load(name)
            if models.is_exact(name) or hasattr(model, "data_sample"):
                continue
            bad = [m for m in self.metrics if {"target", "held_out"} & set(metrics.get_metric(m).needs)
                   and metrics.get_metric(m).applies_to(False, getattr(model, "data", None))]
            if bad:
                raise self.err("metrics", f"{', '.join(bad)} compare samples with exact samples or data; model "
                                          f"{name!r} has neither (the discretization error needs none)")

    def _reference_value(self, where, key, value):
        if key not in REFERENCE:
            raise self.err(where, f"unknown reference setting; allowed: {', '.join(REFERENCE)} (or a table of them "
                           "named after one of the suite's models)")
        if key == "ode_rtol":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                and 0 < value < 1
            if not ok:
                raise self.err(where, f"must be a number in (0, 1) (e.g. 1e-10), got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.err(where, f"must be an integer >= 1 (e.g. 2048), got {value!r}")

    def _check_solver_entry(self, i, entry):
        where = f"solvers[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise self.err(where, "each [[solvers]] entry needs name = \"<solver>\"")
        try:
            cls = solvers.get(entry["name"])
        except InputError as e:
            raise self.err(f"{where}.name", str(e)) from None
        for key in ("steps", "nfe"):
            if key in entry:
                self._ints(f"{where}.{key}", entry[key])
                if cls.adaptive:
                    raise self.err(f"{where}.{key}", f"{cls.name} is adaptive: its steps are set by rtol/atol; "
                                   "sweep the tolerance instead")
        if "steps" in entry and "nfe" in entry:
            raise self.err(where, "give steps or nfe (budgets), not both")
        self._grid(f"{where}.grid", entry.get("grid"))
        options = {k: v for k, v in entry.items() if k not in ENTRY}
        for k, v in options.items():
            if isinstance(v, list) and not v:
                raise self.err(f"{where}.{k}", "is an empty list (a list gives one cell per value)")
        model = self.model_table.load(self.models[0])
        combos = _expand(options)
        for combo in combos:
            try:  # a dry instance on a 2-step grid runs every option check
                cls(model, solvers.make_grid(model.sde, 2), dtype=torch.float64, **combo)
            except InputError as e:
                raise self.err(where, str(e)) from None
        if "grid" in entry and "grids" in entry:
            raise self.err(f"{where}.grids", "give grid or grids, not both")
        if "grids" in entry:
            self._check_grids(f"{where}.grids", entry["grids"])
            for g, combo in itertools.product(entry["grids"], _expand(options)):
                why = tuned.tunable(cls, combo) if tuned.is_tuned(g) else None
                if why:
                    raise self.err(f"{where}.grids", f"{g!r}: no tuned grid: {why}")

        if cls.adaptive:
            return
        if not (entry.get("steps") or entry.get("nfe") or self.steps or self.nfe):
            raise self.err(where, f"{cls.name} needs steps or nfe (in the entry or at the top level)")
        budgets = entry.get("nfe") or (None if entry.get("steps") else self.nfe)
        for combo in combos:
            for b in budgets or ():
                if cls.steps_for_nfe(b, **combo) < 1:
                    need = cls.expected_nfe(1, **combo)
                    opts = " ".join(f"{k}={v}" for k, v in combo.items())
                    raise self.err(f"{where}.nfe",
                                   f"budget {b} is too small for {cls.name}{' ' + opts if opts else ''}: "
                                   f"one step takes {need} NFE; use budgets >= {need}")

    def _check_grids(self, where, grids):
        if not isinstance(grids, list) or not grids or not all(isinstance(g, str) for g in grids):
            raise self.err(where, f"must be a non-empty list of grid names, got {grids!r}")
        for g in grids:
            if tuned.is_tuned(g):
                if g.endswith(".json") and not pathlib.Path(g).exists():
                    raise self.err(where, f"tuned grid file {g!r} does not exist")
                continue
            if solvers.grids.canonical(g) not in solvers.grids.GRIDS:
                raise self.err(where, f"unknown grid {g!r}; built-in: {', '.join(solvers.grids.GRIDS)}; tuned: "
                               f"{', '.join(tuned.TUNED)}, or a tuned-grid .json file")

    def _check_likelihood_entry(self, i, entry):
        where = f"likelihood[{i}]"
        if not isinstance(entry, dict):
            raise self.err(where, "must be a table")
        for key, value in entry.items():
            if key not in LIKELIHOOD:
                raise self.err(f"{where}.{key}", f"unknown key; allowed: {', '.join(LIKELIHOOD)}")
            want = LIKELIHOOD[key]
            values = value if isinstance(value, list) and key != "models" else [value]
            if isinstance(value, list) and not value:
                raise self.err(f"{where}.{key}", "is an empty list")
            scalar = want[0] if isinstance(want, tuple) else want
            for v in values:
                ok = isinstance(v, scalar) or (scalar is float and isinstance(v, int))
                if not ok or isinstance(v, bool):
                    raise self.err(f"{where}.{key}", f"must be {'a list of ' if isinstance(want, tuple) else ''}"
                                   f"{scalar.__name__}, got {v!r}")
                if key in ("rtol", "atol") and not (math.isfinite(v) and limits.TOL_MIN <= v < 1):
                    raise self.err(f"{where}.{key}", f"must be a number in [{limits.TOL_MIN:g}, 1), got {v!r}")
                if key in ("probes", "n") and not (1 if key == "probes" else 2) <= v <= N_MAX:
                    raise self.err(f"{where}.{key}", f"must be in [{1 if key == 'probes' else 2}, {N_MAX}], "
                                   f"got {v!r}")
                if key == "trace" and v not in TRACES:
                    raise self.err(f"{where}.trace", f"must be one of {', '.join(TRACES)}, got {v!r}")
                if key == "prior" and v not in PRIORS:
                    raise self.err(f"{where}.prior", f"must be one of {', '.join(PRIORS)}, got {v!r}")
                if key == "solver" and v not in ADAPTIVE_METHODS:
                    raise self.err(f"{where}.solver", f"must be one of {', '.join(ADAPTIVE_METHODS)}, got {v!r}")
        if "models" in entry:
            if not entry["models"]:
                raise self.err(f"{where}.models", "is empty; leave it out to use every model of the suite")
            for m in entry["models"]:
                if m not in self.models:
                    raise self.err(f"{where}.models", f"{m!r} is not one of the suite's models")
        if entry.get("prior") == "exact":
            trained = [m for m in entry.get("models", self.models) if not models.is_exact(m)]
            if trained:
                raise self.err(f"{where}.prior", f"'exact' needs an exact model; {', '.join(trained)} "
                               "has no exact p_T (use prior = \"sde\")")
        no_data = [m for m in entry.get("models", self.models) if m == models.TIMING_ONLY or
                   (not models.is_exact(m) and not hasattr(self.model_table.load(m), "data_sample"))]
        if no_data:
            raise self.err(f"{where}.models", f"{', '.join(no_data)} has no exact samples or data: likelihood cells "
                           "evaluate the log-density of data points")

    # --- cells -----------------------------------------------------------------------
    def _reference(self, model):
        """The suite's reference settings, with a per-model table overriding them, e.g.
        reference = { ode_rtol = 1e-10, "digits-vp" = { ode_rtol = 1e-7 } }, and the model's own
        [[models]] table's reference last; a discrete-time model's ode_rtol is ``DISCRETE_ODE_RTOL``
        unless the suite file gives one."""
        ref = self._merged(self.reference, model)
        if "ode_rtol" not in self._merged(self.reference_given, model) and \
                isinstance(self.model_table.load(model).sde, solvers.DiscreteVP):
            ref["ode_rtol"] = DISCRETE_ODE_RTOL
        return ref

    def _merged(self, reference: dict, model) -> dict:
        """``reference``'s top-level settings, then its table for ``model``, then the model's own."""
        top = {k: v for k, v in reference.items() if not isinstance(v, dict)}
        return {**top, **reference.get(model, {}), **self.model_table.entries[model].reference}

    def _common(self, model, seed):
        exact, entry = models.is_exact(model), self.model_table.entries[model]
        n = entry.batch or self.n
        data_size = getattr(self.model_table.load(model), "data_size", None)
        if not exact and data_size is not None:
            n = min(n, int(min(data_size(0), 1e9)))
        return {"model": model, "exact_prior": self.exact_prior and exact, "seed": seed, "n": n,
                "device": self.device, "dtype": entry.dtype or self.dtype, "threads": self.threads,
                "imports": tuple(self.imports), "model_spec": self.model_table.provenance(model)}

    def cells(self) -> list[Cell]:
        """Every cell of the suite, typed (``bench.harness.cell.Cell``), with its model's resolved
        reference settings and the solver's metadata."""
        out = []
        for model, seed in itertools.product(self.models, self.seeds):
            common = self._common(model, seed)
            for entry in self.solver_entries:
                cls = solvers.get(entry["name"])
                options = {k: v for k, v in entry.items() if k not in ENTRY}
                grids = entry.get("grids") or ([entry["grid"]] if "grid" in entry else None) or self.grids \
                    or [self.grid]
                for opts, grid in itertools.product(_expand(options), grids):
                    if tuned.is_tuned(grid) and tuned.tunable(cls, opts):
                        continue  # a top-level tuned grid skips what cannot be tuned (checked per entry)
                    base = Cell(**common, task="sample", solver=cls.name, options=opts, grid=grid, budget=None,
                                steps=None, metrics=tuple(self.metrics), repeats=self.repeats, warmup=self.warmup,
                                reference=self._reference(model), solver_meta=solver_meta(cls, opts))
                    if cls.adaptive:
                        if grid == grids[0]:
                            out.append(base)
                        continue
                    budgets = entry.get("nfe") or (None if entry.get("steps") else self.nfe)
                    if budgets:
                        for b in budgets:
                            steps = cls.steps_for_nfe(b, **opts)
                            if steps >= 1:
                                out.append(base.replace(budget=b, steps=steps))
                    else:
                        for s in entry.get("steps") or self.steps:
                            out.append(base.replace(steps=s))
            for entry in self.likelihood_entries:
                if model not in entry.get("models", [model]):
                    continue
                n = entry.get("n", min(self.n, 500))
                opts = {k: v for k, v in entry.items() if k not in ("n", "models")}
                for combo in _expand(opts):
                    name = combo.pop("solver", "dopri5")
                    out.append(Cell(**{**common, "n": n}, task="likelihood", solver=name, options=combo, grid=None,
                                    budget=None, steps=None, metrics=("likelihood",), repeats=1, warmup=0,
                                    reference={}, solver_meta=solver_meta(solvers.get(name), {})))
        return out


def load_suite(name_or_path: str) -> Suite:
    """A shipped suite by name (``available_suites()``) or a TOML file by path."""
    path = pathlib.Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SUITES_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise SuiteError(f"unknown suite {name_or_path!r}; shipped suites: {', '.join(available_suites())} "
                             "(or give a path to a .toml file)")
    if not path.exists():
        raise SuiteError(f"{path}: no such file")
    if not path.is_file():
        raise SuiteError(f"{path}: not a suite file ({'a directory' if path.is_dir() else 'not a regular file'}); "
                         "give a .toml file or a shipped suite name")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SuiteError(f"{path}: not a text file (a suite is TOML, UTF-8)") from None
    except OSError as e:
        raise SuiteError(f"{path}: cannot be read: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{path}: not valid TOML: {e}") from None
    return Suite(data, str(path), text)
