"""Analysis of stored cells: fitted convergence orders and the best solver per NFE budget.
Returns frames and dicts that tests check without plotting."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.harness.convergence import fit_order
from bench.report.data import _solver_cls, discretization_floor

__all__ = ["convergence_table", "best_per_budget", "BUDGETS", "ORDER_TOLERANCE"]

#: the NFE budgets of the "what to pick" tables
BUDGETS = (5, 10, 20, 50)
#: a fitted order further than this from the declared one is flagged
ORDER_TOLERANCE = 0.25
#: fewest resolved step counts for an order fit
MIN_FIT_POINTS = 3
#: the SDE reference must be at least this many times finer than a fitted cell
SDE_REFERENCE_RATIO = 4
RANKING_PREFERENCE = ("sliced_w2", "energy", "w2", "mmd2")  # distribution metrics, in order of preference


def _meta(cell) -> dict:
    """The solver metadata a cell recorded when it was defined; for cells stored without it (format
    0), the registered class's answer for the cell's options, or {} when that fails."""
    if cell.solver_meta:
        return cell.solver_meta
    cls = _solver_cls(cell.solver)
    if cls is None:
        return {}
    try:
        return {"kind": cls.kind, "declared_order": cls.declared_order(**cell.options),
                "stochastic": bool(cls.is_stochastic(**cell.options)), "weak_order": getattr(cls, "weak_order", None)}
    except Exception:  # noqa: BLE001 - options of another version
        return {"kind": cls.kind}


def _declared(meta):
    if not meta:
        return None, "unknown (solver not registered here)"
    if "declared_order" not in meta:
        return None, "unknown (options of another version)"
    order = meta["declared_order"]
    if order is None:
        weak = meta.get("weak_order")
        return None, f"none claimed (weak {weak:g})" if weak else "none claimed"
    return float(order), f"{order:g}"


def convergence_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, model, solver with options): the fitted order of the discretization
    error against steps over the resolved range, the declared order, and a flag.

    Per step count the error is the median over seeds. A point is resolved when finite, above
    ``discretization_floor`` and, for stochastic solvers, on a grid at least
    ``SDE_REFERENCE_RATIO`` times coarser than the fine-grid reference; both read from the reference
    settings stored with the cells (per model). At least
    ``MIN_FIT_POINTS`` resolved step counts are needed, else the order is "unresolved"."""
    rows = []
    sample = df[(df["task"] == "sample") & df["ok"]]
    for (rid, model, label), g in sample.groupby(["run_id", "model", "label"], sort=True):
        cell = g.iloc[0]["cell"]
        meta = _meta(cell)
        declared, declared_txt = _declared(meta)
        floor = discretization_floor(cell)
        sde_steps = cell.reference.get("sde_steps", 2048)
        row = {"run": rid, "model": model, "solver": label, "declared": declared_txt, "fitted": "",
               "fitted_value": math.nan, "declared_value": declared if declared is not None else math.nan,
               "order of": "", "points": 0, "steps": "", "flag": "", "floor": floor, "sde_steps": sde_steps}
        rows.append(row)
        if meta.get("kind") == "corrector":
            row.update(fitted="n/a", **{"order of": "corrector: no pathwise reference"})
            continue
        if g["steps"].isna().all():
            row.update(fitted="n/a", **{"order of": "adaptive: tolerance-controlled"})
            continue
        stochastic = bool(meta.get("stochastic", False))
        row["order of"] = "strong (vs fine-grid EM, same path)" if stochastic else "ODE (vs dopri8 reference)"
        per = g.dropna(subset=["steps"]).groupby("steps")["discretization"].median()
        keep = per[np.isfinite(per.values) & (per.values > floor)]
        if stochastic:
            keep = keep[keep.index * SDE_REFERENCE_RATIO <= sde_steps]
        row["points"] = len(keep)
        if len(keep):
            row["steps"] = f"{int(keep.index.min())}-{int(keep.index.max())}"
        if len(keep) < MIN_FIT_POINTS:
            row["fitted"] = f"unresolved ({len(keep)} of {MIN_FIT_POINTS} points)"
            continue
        p = fit_order([float(s) for s in keep.index], [float(e) for e in keep.values])
        row["fitted_value"], row["fitted"] = p, f"{p:.2f}"
        if declared is not None and abs(p - declared) > ORDER_TOLERANCE:
            row["flag"] = f"differs by {p - declared:+.2f}"
    cols = ["run", "model", "solver", "order of", "fitted", "declared", "points", "steps", "flag",
            "fitted_value", "declared_value", "floor", "sde_steps"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------------
# best solver per budget
# --------------------------------------------------------------------------------------------
def _rank_metric(g: pd.DataFrame) -> str:
    for m in RANKING_PREFERENCE:
        if np.isfinite(g[m]).any():
            return m
    return "discretization"


def best_per_budget(df: pd.DataFrame, budgets=BUDGETS) -> list[dict]:
    """Per (run, model): the ranking metric and, per budget B, every solver (with options) ranked
    by its cell with the most NFE <= B (median over seeds). Values at or below the metric's noise
    floor are unresolved: they tie at the best rank (ordered by wall time) and say so."""
    out = []
    sample = df[(df["task"] == "sample") & df["ok"] & np.isfinite(df["nfe"])]
    for (rid, model), g in sample.groupby(["run_id", "model"], sort=True):
        metric = _rank_metric(g)
        floor_col = metric + "_floor" if metric != "discretization" else None
        tables = {}
        for b in budgets:
            cand = g[g["nfe"] <= b]
            rows = []
            for label, c in cand.groupby("label", sort=True):
                c = c[c["nfe"] == c["nfe"].max()]
                value = float(c[metric].median())
                floor = float(c[floor_col].median()) if floor_col else math.nan
                rows.append({"solver": label, "nfe": int(c["nfe"].max()),
                             "steps": int(c["steps"].max()) if np.isfinite(c["steps"]).any() else None,
                             "value": value, "floor": floor, "discretization": float(c["discretization"].median()),
                             "time_median_s": float(c["time_median_s"].median()),
                             "at_floor": bool(np.isfinite(floor) and np.isfinite(value) and value <= floor)})
            finite = [r for r in rows if np.isfinite(r["value"])]
            tied = sorted((r for r in finite if r["at_floor"]), key=lambda r: (r["time_median_s"], r["solver"]))
            resolved = sorted((r for r in finite if not r["at_floor"]), key=lambda r: (r["value"], r["solver"]))
            missing = sorted((r for r in rows if not np.isfinite(r["value"])), key=lambda r: r["solver"])
            for r in tied:
                r["rank"] = "1=" if len(tied) > 1 else "1"
                r["note"] = "below noise floor: unresolved, tied"
            start = 2 if tied else 1
            for i, r in enumerate(resolved):
                r["rank"] = str(start + i)
                r["note"] = ""
            for r in missing:
                r["rank"], r["note"] = "-", f"no {metric} value"
            tables[b] = tied + resolved + missing
        out.append({"run": rid, "model": model, "metric": metric, "tables": tables})
    return out


