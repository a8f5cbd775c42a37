"""Analysis of stored cells: fitted convergence orders and the best solver per NFE budget.
Returns frames and dicts that tests check without plotting."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.harness.at_floor import ZERO_VALUED, value_at_floor
from bench.harness.metrics import METRICS, WEAK_SE, Metric
from bench.harness.verdicts import fit_order_asymptotic, tied_ranking
from bench.report.data import discretization_floor, solver_class

__all__ = ["convergence_table", "best_per_budget", "rank_solvers", "first_measured", "measured_metrics", "BUDGETS",
           "LEVEL", "RANKING_PREFERENCE"]

#: the NFE budgets of the "what to pick" tables
BUDGETS = (5, 10, 20, 50)
#: the level of the rankings' and order fits' tests
LEVEL = 0.95
#: the SDE reference must be at least this many times finer than a fitted cell (cells stored with a
#: uniform fine-grid reference, without its error estimate)
SDE_REFERENCE_RATIO = 4
#: a stochastic solver's error is resolved when above this many times the SDE reference's own error
#: (its distance to the same path at half the refinement, stored as ``discretization_floor``)
SDE_FLOOR_FACTOR = 3
#: the distribution metrics a ranking uses, in order of preference (the first measured)
RANKING_PREFERENCE = ("sliced_w2", "energy", "w2", "mmd2")


def measured_metrics(g: pd.DataFrame, task: str | None = None) -> list[Metric]:
    """The gated metrics of the registry (``bench.harness.metrics.METRICS``, in its order; of one
    ``task`` when given) with a finite value in ``g``: the report's metric columns and panels."""
    return [m for m in METRICS.values() if m.gated and (task is None or m.task == task) and m.name in g
            and np.isfinite(g[m.name].to_numpy(float)).any()]


def first_measured(g: pd.DataFrame, names) -> str | None:
    """The first of ``names`` with a finite value in ``g`` (None when none has)."""
    return next((m for m in names if m in g and np.isfinite(g[m]).any()), None)


def _meta(cell) -> dict:
    """The solver metadata a cell recorded when it was defined; for cells stored without it (format
    0), the registered class's answer for the cell's options, or {} when that fails."""
    if cell.solver_meta:
        return cell.solver_meta
    cls = solver_class(cell.solver)
    if cls is None:
        return {}
    try:
        return {"kind": cls.kind, "declared_order": cls.declared_order(**cell.options),
                "stochastic": bool(cls.is_stochastic(**cell.options)), "weak_order": getattr(cls, "weak_order", None)}
    except Exception:
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
    """One row per (run, model, solver with options): the order of the discretization error fitted
    over the asymptotic range (``bench.harness.verdicts.fit_order_asymptotic``), its 95% interval,
    the declared order and a status: "ok", "pre-asymptotic at these steps" (the range is not reached:
    no verdict), or "differs" (flagged: the interval, widened by the fit's allowance, excludes the
    declared order).

    Per step count the error is the median over seeds. A point is resolved when finite, above
    ``discretization_floor`` (deterministic solvers) or ``SDE_FLOOR_FACTOR`` x the largest stored
    error of the SDE reference (stochastic solvers: the reference is Euler-Maruyama on the solver's
    own grid refined 2^m-fold, ``bench.harness.reference``); cells stored without that estimate (a
    uniform fine grid) keep only grids at least ``SDE_REFERENCE_RATIO`` times coarser than it."""
    rows = []
    sample = df[(df["task"] == "sample") & df["ok"]]
    for (rid, model, label), g in sample.groupby(["run_id", "model", "label"], sort=True):
        cell = g.iloc[0]["cell"]
        meta = _meta(cell)
        declared, declared_txt = _declared(meta)
        floor = discretization_floor(cell)
        sde_steps = cell.reference.get("sde_steps", 2048)
        row = {"run": rid, "model": model, "solver": label, "declared": declared_txt, "fitted": "",
               "interval": "", "status": "", "fitted_value": math.nan,
               "declared_value": declared if declared is not None else math.nan,
               "order of": "", "points": 0, "steps": "", "flag": "", "floor": floor, "sde_steps": sde_steps,
               **_weak_fit(g, meta)}
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
        ref_err = g["discretization_floor"].to_numpy(float) if "discretization_floor" in g else np.array([])
        if stochastic and np.isfinite(ref_err).any():  # the reference on the solver's own grid, with its error
            row["order of"] = "strong (vs EM on the refined own grid, same path)"
            floor = row["floor"] = SDE_FLOOR_FACTOR * float(np.nanmax(ref_err))
        elif stochastic:  # cells stored before: a uniform fine grid, no error estimate
            per = per[per.index * SDE_REFERENCE_RATIO <= sde_steps]
        fit = fit_order_asymptotic([float(s) for s in per.index], [float(e) for e in per.values],
                                   declared=declared, floor=floor)
        row["points"] = fit["points"]
        if fit["range"]:
            row["steps"] = f"{fit['range'][0]}-{fit['range'][1]}"
        row["status"] = fit["status"]
        if not math.isfinite(fit["slope"]):
            row["fitted"] = "unresolved"
            continue
        row["fitted_value"], row["fitted"] = fit["slope"], f"{fit['slope']:.2f}"
        row["interval"] = f"[{fit['low']:.2f}, {fit['high']:.2f}]"
        if fit["status"] == "differs":
            row["flag"] = fit["note"] or "differs"
    for row in rows:
        if row["weak status"] == "differs" and not row["flag"]:
            row["flag"] = "weak order differs"
    return pd.DataFrame(rows, columns=[*CONVERGENCE_COLUMNS, *WEAK_COLUMNS])


CONVERGENCE_COLUMNS = ("run", "model", "solver", "order of", "fitted", "interval", "declared", "status", "points",
                       "steps", "flag", "fitted_value", "declared_value", "floor", "sde_steps")
#: the weak order's columns, next to the strong one's
WEAK_COLUMNS = ("weak fitted", "weak interval", "weak declared", "weak status", "weak steps", "weak_fitted_value")


def _weak_fit(g: pd.DataFrame, meta: dict) -> dict:
    """The weak order of a stochastic solver: the ``weak`` metric (``bench.harness.weak``; per step
    count the median over seeds, resolved when above ``WEAK_SE`` x its standard error) fitted by the
    rules of the strong fit (``fit_order_asymptotic``) against the declared ``weak_order``."""
    out = {**dict.fromkeys(WEAK_COLUMNS, ""), "weak_fitted_value": math.nan}
    if not meta.get("stochastic") and meta.get("kind") != "corrector":
        return out
    declared = meta.get("weak_order")
    out["weak declared"] = f"{declared:g}" if declared is not None else "none claimed"
    if "weak" not in g or g["steps"].isna().all() or not np.isfinite(g["weak"].to_numpy(float)).any():
        out["weak fitted"] = "not measured"
        return out
    c = g.dropna(subset=["steps", "weak"])
    se = c["weak_se"] if "weak_se" in c else pd.Series(np.nan, index=c.index)
    resolved = c[c["weak"].to_numpy(float) > WEAK_SE * se.to_numpy(float)]
    per = resolved.groupby("steps")["weak"].median()
    fit = fit_order_asymptotic([float(s) for s in per.index], [float(e) for e in per.values],
                               declared=None if declared is None else float(declared))
    out["weak status"] = fit["status"]
    if fit["range"]:
        out["weak steps"] = f"{fit['range'][0]}-{fit['range'][1]}"
    if not math.isfinite(fit["slope"]):
        out["weak fitted"] = "unresolved"
        return out
    out.update({"weak fitted": f"{fit['slope']:.2f}", "weak interval": f"[{fit['low']:.2f}, {fit['high']:.2f}]",
                "weak_fitted_value": fit["slope"]})
    return out


# --------------------------------------------------------------------------------------------
# best solver per budget
# --------------------------------------------------------------------------------------------
def _rank_metrics(g: pd.DataFrame) -> list[str]:
    """The rankings of a model: by exact KL among the samplers that have it (deterministic ones on
    an exact model), and by the first distribution metric measured (else the discretization error)
    for every sampler."""
    out = [m for m in ("exact_kl",) if m in g and np.isfinite(g[m]).any()]
    return out + [first_measured(g, RANKING_PREFERENCE) or "discretization"]


def _estimate(c: pd.DataFrame, metric: str) -> tuple[float, float]:
    """Value and standard error of a metric over a solver's seeds: the mean, with the stored
    per-cell standard errors combined (sqrt(mean se^2 / k)), or the seed spread (std / sqrt(k))
    where no per-cell error was stored."""
    v = c[metric].to_numpy(float)
    v = v[np.isfinite(v)]
    if not len(v):
        return math.nan, math.nan
    se_col = metric + "_se"
    se = c[se_col].to_numpy(float) if se_col in c else np.full(len(c), np.nan)
    se = se[np.isfinite(se)]
    if len(se) == len(v):
        return float(v.mean()), float(np.sqrt((se ** 2).mean() / len(v)))
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else math.nan


def best_per_budget(df: pd.DataFrame, budgets=BUDGETS, metrics=None) -> list[dict]:
    """Per (run, model, ranking metric): per budget B, every solver (with options) ranked by its
    cell with the most NFE <= B, with ties where the uncertainty cannot separate them.

    Value = mean over seeds with its standard error (``_estimate``). Ranking: values at or below
    the metric's noise floor (exact KL: within 2 standard errors of 0), and metrics at the floor
    at fewer steps of the same series (not recomputed), are unresolved and share rank 1 (listed
    by wall time; the rule is ``bench.harness.at_floor``'s); the others are
    ranked by ``bench.harness.verdicts.tied_ranking`` (a leader and every solver whose difference
    from it is not significant at 5%, two-sided z-test on the two estimates, share one rank "k=";
    repeated on the rest). Solvers without a value come last ("-"). ``metrics``: rank by these
    (those measured) instead of the model's default rankings."""
    out = []
    sample = df[(df["task"] == "sample") & df["ok"] & np.isfinite(df["nfe"])]
    for (rid, model), g in sample.groupby(["run_id", "model"], sort=True):
        chosen = [m for m in metrics if m in g and (np.isfinite(g[m]).any() or g[m + "_at_floor"].eq(1).any())] \
            if metrics is not None else _rank_metrics(g)
        for metric in chosen:
            # the samplers it is defined for (measured, or at floor at fewer steps)
            has = g if metric != "exact_kl" else g[np.isfinite(g["exact_kl"]) | (g["exact_kl_at_floor"] == 1)]
            out.append({"run": rid, "model": model, "metric": metric,
                        "tables": {b: rank_solvers(has[has["nfe"] <= b], metric) for b in budgets}})
    return out


def _solver_row(label: str, c: pd.DataFrame, metric: str) -> dict:
    """A solver's entry at a budget: its cells with the most NFE, the metric's estimate and floor."""
    c = c[c["nfe"] == c["nfe"].max()]
    value, se = _estimate(c, metric)
    floor_col = metric + "_floor"
    floor = float(c[floor_col].median()) if floor_col in c else math.nan
    skipped = metric + "_at_floor" in c and bool(c[metric + "_at_floor"].eq(1).all())
    return {"solver": label, "nfe": int(c["nfe"].max()),
            "steps": int(c["steps"].max()) if np.isfinite(c["steps"]).any() else None,
            "value": value, "stderr": se, "floor": floor,
            "discretization": float(c["discretization"].median()),
            "time_median_s": float(c["time_median_s"].median()),
            "skipped": skipped, "at_floor": skipped or value_at_floor(metric, value, se, floor)}


def _ranked_resolved(rest: list[dict], offset: int, metric: str) -> list[dict]:
    """The resolved solvers by ``tied_ranking``, their ranks after the ``offset`` tied at the floor."""
    by_name = {r["solver"]: r for r in rest}
    ordered, leaders = [], set()
    for t in tied_ranking([{"name": r["solver"], "value": r["value"], "stderr": r["stderr"]} for r in rest]):
        r = by_name[t["name"]]
        if t["rank"] == "-":
            r.update(rank="-", note=f"no {metric} value")
        else:
            k = int(t["rank"].rstrip("=")) + offset
            r["rank"] = f"{k}=" if t["rank"].endswith("=") else str(k)
            r["note"] = _rank_note(t, leads=t["group"] not in leaders)
            leaders.add(t["group"])
        ordered.append(r)
    return ordered


def _rank_note(t: dict, leads: bool) -> str:
    """A group's leader is compared with the previous group's leader, which it is worse than
    (p < 0.05); a member with its own leader, which it is tied with."""
    if not t["vs"]:
        return ""
    return (f"worse than {t['vs']} (p = {t['p_value']:.2g})" if leads
            else f"tied with {t['vs']} (p = {t['p_value']:.2f})")


def rank_solvers(cand: pd.DataFrame, metric: str) -> list[dict]:
    """Every solver (label) of ``cand`` by its cells with the most NFE, ranked by ``metric``: those at
    the floor first, tied at 1= (cheapest first), then the rest by ``tied_ranking``. One dict per
    solver: solver, nfe, steps, value, stderr, floor, discretization, time_median_s, rank, note."""
    rows = [_solver_row(label, c, metric) for label, c in cand.groupby("label", sort=True)]
    tied = sorted((r for r in rows if r["at_floor"]), key=lambda r: (r["time_median_s"], r["solver"]))
    floor_note = "within 2 se of 0" if metric in ZERO_VALUED else "at or below the noise floor"
    for r in tied:
        r.update(rank="1=" if len(tied) > 1 else "1",
                 note="at floor at fewer steps: not recomputed, unresolved, tied" if r["skipped"]
                 else f"{floor_note}: unresolved, tied")
    return tied + _ranked_resolved([r for r in rows if not r["at_floor"]], len(tied), metric)
