"""Tuned grids in sweeps: a cell whose ``grid`` is ``tuned`` / ``tuned-dp`` / ``tuned-search`` or
a path to a saved tuned-grid JSON (``solvers.TunedGrid.save``).

The cell's definition (hence its key) names the grid, never its times. Before dispatch the
driver (``bench.harness.runner``) calls ``resolve_grids``, which fills each such cell's
``times`` and ``tuning`` fields (not part of the key, like ``solver_meta``):

- a file: loaded with ``solvers.load_grid`` (checked against the model's SDE and the cell's
  solver and steps);
- a tuned name: looked up in the store's ``grids`` table by its *tuning key* (model, with its
  fingerprint for a spec (``Cell.model_id``), exact prior, solver, resolved options, steps, method,
  train size, budget, seed, teacher tolerance = the cell's reference ``ode_rtol``); tuned once with
  ``solvers.tune_grid`` when absent and stored there with its cost, so neither ``--resume`` nor
  a later run with the same definition tunes it again; a grid shipped with the package
  (``bench.harness.shipped``: the quick suite's, keyed by the tuning key, the model's
  fingerprint, the torch version and the code's hash) is put into the store instead of tuning.

Tuning x_T are drawn with seed ``TUNE_SEED`` (held-out: ``TUNE_SEED + 1000003``), far from every
evaluation seed (a cell's x_T use its own seed, its targets 1000003 (seed + 1) + 0/1), so the
grid is never fit to the x_T it is measured on. ``execute_cell`` then samples with ``times=``.

Built-in grids are those of ``solvers.grids.GRIDS``; ``tuned`` means ``DEFAULT_METHOD`` (``dp``:
about M S one-step solves, ~10-30 s per grid on one CPU core for the 2-D models at 5-10 NFE;
``search`` spends up to 1500 solves of the train set, minutes).
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import time

import torch

import solvers
from bench.harness import shipped
from bench.harness.execute import model_fingerprint
from bench.harness.reference import in_lambda, ode_reference
from bench.zoo import models

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_TUNE",
    "TUNED",
    "TUNE_SEED",
    "grid_file",
    "grid_summary",
    "is_tuned",
    "resolve_grids",
    "stored_grid",
    "tunable",
    "tune_for_cell",
    "tuned_method",
    "tuning_key",
]

DEFAULT_METHOD = "dp"
#: grid names that ask for tuning, and the method each means
TUNED = {"tuned": DEFAULT_METHOD, "tuned-dp": "dp", "tuned-search": "search"}
#: seed of the tuning (train) x_T; held-out x_T use TUNE_SEED + 1000003 (solvers.tuning)
TUNE_SEED = 10 ** 12
#: default tuning settings of a suite (its ``tune`` table overrides them)
DEFAULT_TUNE = {"n": 256, "budget": None}


def is_tuned(grid) -> bool:
    """True for a tuned grid's name or a tuned-grid file path."""
    return isinstance(grid, str) and (grid in TUNED or grid.endswith(".json"))


def tuned_method(grid) -> str | None:
    return TUNED.get(grid)


def tunable(cls, options: dict) -> str | None:
    """None when ``cls`` with ``options`` can have a tuned grid, else why not."""
    if cls.adaptive:
        return f"{cls.name} is adaptive: it has no grid"
    try:
        if cls.kind != "ode" or cls.is_stochastic(**options):
            return f"{cls.name} is stochastic with these options: grids are tuned on the probability-flow ODE"
    except Exception as e:
        return str(e)
    return None


def tuning_key(cell, tune: dict | None = None) -> dict:
    """What a tuned grid depends on (the ``grids`` table's identity)."""
    tune = {**DEFAULT_TUNE, **(tune or {})}
    cls = solvers.get(cell.solver)
    return {"model": cell.model_id, "exact_prior": bool(cell.exact_prior), "solver": cls.name,
            "options": cls.resolve_options(dict(cell.options)), "steps": int(cell.steps),
            "method": TUNED[cell.grid], "n": int(tune["n"]), "budget": tune["budget"], "seed": TUNE_SEED,
            "teacher_rtol": float(cell.reference.get("ode_rtol", 1e-10))}


def _hash(d: dict) -> str:
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def grid_summary(g: solvers.TunedGrid, **extra) -> dict:
    """The provenance a cell carries in ``tuning`` (stored with its JSON)."""
    return {"method": g.method, "objective_train": g.objective.get("train"), "objective_test": g.objective.get("test"),
            "builtin_grid": g.baseline.get("grid"), "builtin_train": g.baseline.get("train"),
            "builtin_test": g.baseline.get("test"), "builtin_train_all": g.baseline.get("train_all", {}),
            "cost_nfe": g.cost_nfe, "wall_s": g.wall_s, **extra}


class _Teacher:
    """The teacher of the train and held-out x_T: float64 dopri8 at the cell's own reference
    tolerance (``reference.ode_rtol``, what its discretization error is measured against; tighter
    would be spent on nothing), remembering its answers, so that the solvers tuned for one model
    share one teacher solve; ``dp``'s fine teacher path is solved at the same tolerance. On a
    discrete-time schedule the end state is the ODE reference's own solve in lambda
    (``bench.harness.reference``: dopri8 in t stops at every knot); ``dp``'s fine path
    (``solvers.tuning.dopri8_teacher``, in t between its fine times) is not changed."""

    def __init__(self, model, rtol):
        self.model, self.rtol, self.memo = model, rtol, {}
        self.__name__ = f"dopri8 float64 rtol=atol={rtol:g} (shared)"

    def __call__(self, x_T):
        key = (tuple(x_T.shape), x_T.numpy().tobytes())
        if key not in self.memo:
            if in_lambda(self.model.sde):
                self.memo[key] = ode_reference(self.model, x_T.double(), rtol=self.rtol, atol=self.rtol)
            else:
                self.memo[key] = solvers.sample(self.model, "dopri8", x_T=x_T.double(), rtol=self.rtol,
                                                atol=self.rtol).x
        return self.memo[key]


_TEACHERS: dict = {}


def tune_for_cell(cell, tune: dict | None = None, model=None) -> solvers.TunedGrid:
    """Tune the grid of ``cell`` (a tuned name) with ``solvers.tune_grid``."""
    key = tuning_key(cell, tune)
    tk = (cell.model_id, cell.exact_prior, key["teacher_rtol"])
    if tk not in _TEACHERS:
        model = model or models.load(cell.model_ref(), exact_prior=cell.exact_prior)
        _TEACHERS[tk] = _Teacher(model, key["teacher_rtol"])
    teacher = _TEACHERS[tk]
    kw = {"budget": key["budget"]} if key["budget"] is not None else {}
    threads = torch.get_num_threads()
    if cell.threads:  # the cell's threads, as execute_cell sets them (OpenMP waits on a loaded machine)
        torch.set_num_threads(int(cell.threads))
    try:
        return solvers.tune_grid(teacher.model, key["solver"], steps=key["steps"], method=key["method"], n=key["n"],
                                 seed=key["seed"], teacher=teacher, **kw, **dict(cell.options))
    finally:
        torch.set_num_threads(threads)


def grid_file(cell, path):
    """(TunedGrid, provenance) of a tuned-grid file for ``cell``: checked against the cell's model
    (its SDE and times, ``solvers.load_grid``) and steps; InputError naming the file otherwise."""
    p = pathlib.Path(path)
    model = models.load(cell.model_ref(), exact_prior=cell.exact_prior)
    g = solvers.load_grid(p, model)
    if g.steps != cell.steps:
        raise solvers.InputError(f"tuned grid file {path!r} has steps={g.steps}, the cell {cell.describe()} "
                                 f"needs {cell.steps}")
    if solvers.get(g.solver).name != solvers.get(cell.solver).name:
        note = f"tuned for {g.solver}, used with {cell.solver}"
    else:
        note = ""
    digest = hashlib.sha1(p.read_bytes()).hexdigest()[:16]
    return g, {"source": "file", "path": str(path), "sha1": digest, "seed": g.data.get("seed"), "note": note}


def _tune_task(cell, tune=None):
    """``tune_for_cell`` in a worker (its suite's plugins imported first): the tuned grid, or the error's text."""
    from bench.harness.execute import import_plugins

    try:
        import_plugins(cell.imports)
        return tune_for_cell(cell, tune)
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def _tune_in_parallel(cells, store, tune, runner, stream) -> tuple[dict, set]:
    """Tune the grids missing from ``store`` over the executor's workers (one task per tuning
    key) and store them; returns ({hash: error} of failed tunings, hashes tuned here)."""
    import functools

    reps = {}
    for c in cells:
        if c.grid in TUNED and c.times is None:
            h = _hash(tuning_key(c, tune))
            if h not in reps and store.grid(h) is None and shipped.grid(tuning_key(c, tune), model_fingerprint) is None:
                reps[h] = c
    failed, fresh = {}, set()
    if len(reps) < 2:
        return failed, fresh
    if stream is not None:
        stream.write(f"tuning {len(reps)} grids on {runner.jobs} workers ...\n")
        stream.flush()
    t0 = time.perf_counter()
    for cell, g in runner.map(functools.partial(_tune_task, tune=tune), list(reps.values())):
        key = tuning_key(cell, tune)
        h = _hash(key)
        if isinstance(g, str):
            failed[h] = g
            if stream is not None:
                stream.write(f"  {cell.model} {key['solver']} steps={key['steps']}: tuning failed ({g}): its cells "
                             "are recorded as failed\n")
            continue
        store.add_grid(h, key, g.to_dict())
        fresh.add(h)
        if stream is not None:
            stream.write(f"  {cell.model} {key['solver']} steps={key['steps']}: tuned in {g.wall_s:.1f} s, "
                         f"{g.cost_nfe} NFE: train {g.objective['train']:.3g} (best built-in {g.baseline['grid']}: "
                         f"{g.baseline['train']:.3g}), held-out {g.objective['test']:.3g} ({g.baseline['test']:.3g})\n")
            stream.flush()
    if stream is not None:
        stream.write(f"  {len(reps)} grids in {time.perf_counter() - t0:.1f} s\n")
    return failed, fresh


def resolve_grids(cells, store=None, *, tune: dict | None = None, stream=None, tuner=None, runner=None) -> list:
    """The cells with every tuned grid resolved (``times`` and ``tuning`` filled in); others
    unchanged. Tuned names are looked up in ``store`` (``Store.grid``) and tuned once when
    absent, with a progress line on ``stream``; ``tuner`` replaces ``tune_for_cell`` (tests).
    ``runner``: an executor with several workers tunes the missing grids in parallel first."""
    tuner = tuner or tune_for_cell
    out, memo, fresh = [], {}, set()
    if runner is not None and getattr(runner, "jobs", 1) > 1 and store is not None and tuner is tune_for_cell:
        failed, fresh = _tune_in_parallel(cells, store, tune, runner, stream)
        memo.update({h: (None, err) for h, err in failed.items()})
    todo = len({_hash(tuning_key(c, tune)) for c in cells if c.grid in TUNED and c.times is None})
    for cell in cells:
        if not (is_tuned(cell.grid) and cell.times is None):
            out.append(cell)
            continue
        if cell.grid.endswith(".json"):
            if (cell.grid, cell.model) not in memo:
                memo[(cell.grid, cell.model)] = grid_file(cell, cell.grid)
            g, info = memo[(cell.grid, cell.model)]
            out.append(cell.replace(times=tuple(g.times.tolist()), tuning=grid_summary(g, **info)))
            continue
        key = tuning_key(cell, tune)
        h = _hash(key)
        if h not in memo:
            row = store.grid(h) if store is not None else None
            ship = shipped.grid(key, model_fingerprint) if row is None else None
            if row is not None:
                g, reused = solvers.TunedGrid(**_fields(row["grid"])), True
            elif ship is not None:  # shipped with the package (bench.harness.shipped): into the store as if tuned
                g, reused = solvers.TunedGrid(**_fields(ship)), "shipped"
                if store is not None:
                    store.add_grid(h, key, ship)
            else:
                t0 = time.perf_counter()
                if stream is not None:
                    stream.write(f"tuning grid {len(memo) + 1}/{todo} (at most): {cell.model} "
                                 f"{key['solver']} steps={key['steps']} method={key['method']} n={key['n']} ...\n")
                    stream.flush()
                try:
                    g, reused = tuner(cell, tune), False
                except Exception as e:
                    memo[h] = (None, f"{type(e).__name__}: {e}")
                    if stream is not None:
                        stream.write(f"  tuning failed ({memo[h][1]}): its cells are recorded as failed\n")
                    out.append(cell.replace(tuning={"error": memo[h][1]}))
                    continue
                if stream is not None:
                    stream.write(f"  tuned in {time.perf_counter() - t0:.1f} s, {g.cost_nfe} NFE: train "
                                 f"{g.objective['train']:.3g} (best built-in {g.baseline['grid']}: "
                                 f"{g.baseline['train']:.3g}), held-out {g.objective['test']:.3g} "
                                 f"({g.baseline['test']:.3g})\n")
                    stream.flush()
                if store is not None:
                    store.add_grid(h, key, g.to_dict())
            memo[h] = (g, reused)
        g, reused = memo[h]
        if g is None:  # the tuning failed: the cell fails with its reason
            out.append(cell.replace(tuning={"error": reused}))
            continue
        out.append(cell.replace(times=tuple(g.times.tolist()),
                                tuning=grid_summary(g, source=_source(reused, h in fresh),
                                                    grid_key=h,
                                                    seed=key["seed"], n=key["n"])))
    return out


def _source(reused, fresh: bool) -> str:
    """Where a resolved grid came from: "shipped", "store" or "tuned" (here, now)."""
    if reused == "shipped":
        return "shipped"
    return "store" if reused and not fresh else "tuned"


def stored_grid(store, key: str) -> solvers.TunedGrid | None:
    """The tuned grid stored under ``key`` in ``store``'s grids table, or None."""
    row = store.grid(key)
    return None if row is None else solvers.TunedGrid(**_fields(row["grid"]))


def _fields(d: dict) -> dict:
    """A stored ``TunedGrid.to_dict()`` back to constructor fields."""
    d = {k: v for k, v in d.items() if k not in ("format", "format_version")}
    d["times"] = torch.tensor(d["times"], dtype=torch.float64)
    return d
