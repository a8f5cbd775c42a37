"""The report's data: stored cells as one frame, with labels and parsed options."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

import solvers
from bench.harness import metrics
from bench.harness.cell import Cell, Timing
from bench.harness.metrics import discretization_floor
from bench.harness.store import Store
from solvers import InputError

__all__ = ["load_cells", "numeric_columns", "solver_label", "solver_class", "discretization_floor", "TOLERANCE_KEYS"]

TOLERANCE_KEYS = ("rtol", "atol")


def _loads(s):
    if isinstance(s, dict):
        return s
    try:
        v = json.loads(s) if isinstance(s, str) and s else {}
    except ValueError:
        return {"options": str(s)}
    return v if isinstance(v, dict) else {"options": v}


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def solver_label(solver, options: dict, grid=None) -> str:
    """``solver k=v ...`` (options sorted), with ``grid=...`` when the cell set one."""
    parts = [str(solver)] + [f"{k}={_fmt_value(options[k])}" for k in sorted(options)]
    if isinstance(grid, str) and grid:
        parts.append(f"grid={grid}")
    return " ".join(parts)


def solver_class(name):
    try:
        return solvers.get(name)
    except (InputError, TypeError):
        return None


#: the identity columns every frame has (an empty one too)
_BASE = ("run_id", "task", "model", "solver", "options", "grid", "budget", "steps", "seed", "n", "nfe", "error")
#: the timing figures the report reads (``Timing.column``)
_TIMING = ("median_s", "min_s", "max_s", "overhead", "one_eval_s", "peak_mem_bytes")


def numeric_columns() -> list[str]:
    """The columns ``load_cells`` gives as floats: sizes, NFE, the timing figures, and every
    registered metric's columns (``Metric.columns``: value, se, floor, at floor, outputs)."""
    cols = ["budget", "steps", "seed", "n", "nfe"] + [Timing.column(f) for f in _TIMING]
    return list(dict.fromkeys(cols + [c for m in metrics.METRICS.values() for c in m.columns()]))


def load_cells(store: Store, run_ids) -> pd.DataFrame:
    """The cells of every run, one frame: ``run_id``, parsed ``opts``, ``label`` (solver and
    options), ``series`` (the label without tolerances for cells without a step count, so a
    tolerance sweep is one line), ``ok`` (no error), ``cell`` (the ``Cell``), ``result`` (its
    ``CellResult``), and the results' flat columns (``numeric_columns()`` as floats)."""
    frames = [store.cells(r, typed=True) for r in run_ids]
    frames = [f for f in frames if not f.empty]
    df = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame(columns=[*_BASE, "result"])
    numeric = numeric_columns()
    for c in [*_BASE, *numeric]:
        if c not in df.columns:
            df[c] = np.nan
    for c in numeric:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    df["run_id"] = df["run_id"].astype(int)
    _add_labels(df)
    df["ok"] = df["error"].isna()
    df["cell"] = [_cell(c, r) for c, r in zip(df["cell"] if "cell" in df else [None] * len(df), df.itertuples())]
    # stores written before adaptive cells stored no step count hold the solver's 1 output interval
    df.loc[[bool(c.solver_meta.get("adaptive")) and c.steps is None for c in df["cell"]], "steps"] = np.nan
    return df


def _add_labels(df):
    """``opts`` (parsed), ``grid`` (None when unset), ``label`` and ``series``."""
    df["opts"] = [_loads(o) for o in df["options"]]
    df["grid"] = [g if isinstance(g, str) and g else None for g in df["grid"]]
    df["label"] = [solver_label(s, o, g) for s, o, g in zip(df["solver"], df["opts"], df["grid"])]
    df["series"] = [solver_label(s, _without_tolerances(o) if pd.isna(st) else o, g)
                    for s, o, g, st in zip(df["solver"], df["opts"], df["grid"], df["steps"])]


def _without_tolerances(options: dict) -> dict:
    return {k: v for k, v in options.items() if k not in TOLERANCE_KEYS}


def _cell(text, row) -> Cell:
    """The stored cell (its JSON, whole); rows of a CSV without it get the columns they have."""
    if isinstance(text, str) and text:
        return Cell.from_json(text)
    return Cell(task=row.task, model=row.model, solver=row.solver, options=_loads(row.options), grid=row.grid,
                budget=None, steps=None, n=0, seed=0, exact_prior=False, device="cpu", dtype="float32", threads=None)
