"""Metrics at their noise floor are not recomputed at finer step counts ("at floor").

A *series* is a solver (with options and grid) on a model, swept over step counts: the cells
that differ only in ``steps``/``budget`` and ``seed``. Once a metric is at its noise floor for
every seed at one step count of a series, a finer step count cannot resolve it either (the
solver only gets closer to its limit), so the runner runs a series' step counts in waves,
coarsest first, and hands each cell the metrics its next-coarser step count left at the floor
(``Cell.at_floor``). The cell records ``<metric>_at_floor = 1`` instead of a value, and the
report ranks it with the solvers at the floor (tied at rank 1, unresolved). A suite measures
everything with ``skip_at_floor = false`` (the CI gate does: it compares every metric).

At the floor means:
  * a metric with a noise floor (two independent exact/held-out sets): value <= floor, the
    report's "unresolved" rule (sliced W2, MMD^2, energy, W2, mode TV, FD-digits);
  * exact KL and the cross-entropy gap (no sample floor; their value is 0 at the exact sampler):
    |value| <= 2 standard errors;
  * the discretization error of a deterministic solver: value <= 10 x the ODE reference's rtol
    (``discretization_floor``: below it the error is the reference's); stochastic solvers have
    no such floor and are always measured;
  * or the metric was already at the floor at a coarser step count.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict

from bench.harness import metrics

__all__ = ["ZERO_VALUED", "discretization_floor", "value_at_floor", "metric_at_floor", "series_key", "Series"]

#: metrics without a sample floor whose exact value is 0: at the floor within ``ZERO_SE`` standard errors
ZERO_VALUED = ("exact_kl", "xent_gap")
ZERO_SE = 2.0


def discretization_floor(cell) -> float:
    """Errors at or below this are the reference's, not the solver's: 10 x the cell's own ODE
    reference rtol (its model's resolved setting, as stored with the cell)."""
    return max(10 * float(cell.reference.get("ode_rtol", 1e-10)), 1e-14)


def _num(res: dict, key: str) -> float:
    try:
        return float(res.get(key, math.nan))
    except (TypeError, ValueError):
        return math.nan


def value_at_floor(name: str, value: float, se: float = math.nan, floor: float = math.nan) -> bool:
    """The rule for a distribution or exact-density metric's value (a cell's, or the report's
    mean over seeds with its standard error): at or below its noise floor, or, for the metrics
    whose exact value is 0 without a sample floor, within ``ZERO_SE`` standard errors of 0."""
    if not math.isfinite(value):
        return False
    if name in ZERO_VALUED:
        return math.isfinite(se) and abs(value) <= ZERO_SE * se
    return math.isfinite(floor) and value <= floor


def metric_at_floor(name: str, res: dict, cell) -> bool:
    """Whether metric ``name`` of a finished cell (its metrics ``res``) is at its noise floor."""
    if res.get(name + "_at_floor"):
        return True
    v = _num(res, name)
    if name == "discretization":
        return math.isfinite(v) and not cell.solver_meta.get("stochastic", True) and v <= discretization_floor(cell)
    if name in ZERO_VALUED or (name in metrics.METRICS and metrics.get_metric(name).floor):
        return value_at_floor(name, v, _num(res, name + "_se"), _num(res, name + "_floor"))
    return False


def series_key(cell) -> str:
    """The cell's series: its definition without the step count, budget and seed."""
    d = cell.definition()
    for k in ("steps", "budget", "seed"):
        d.pop(k, None)
    return json.dumps(d, sort_keys=True, default=str)


def _swept(cell) -> bool:
    return cell.task == "sample" and cell.steps is not None


class Series:
    """The suite's cells by series and step count: ``waves`` and ``at_floor`` read it."""

    def __init__(self, cells):
        self.by = defaultdict(lambda: defaultdict(list))  # series -> steps -> cells
        for c in cells:
            if _swept(c):
                self.by[series_key(c)][c.steps].append(c)

    def waves(self, pending) -> list[list]:
        """``pending`` in waves: wave k holds the k-th coarsest step count of every series (over
        all of the suite's cells, so a resumed run keeps its waves); cells without a step count
        (adaptive, likelihood) are in the first wave. The cells of a wave can run at once."""
        out = defaultdict(list)
        for c in pending:
            out[sorted(self.by[series_key(c)]).index(c.steps) if _swept(c) else 0].append(c)
        return [out[k] for k in sorted(out)]

    def at_floor(self, cell, results: dict) -> tuple:
        """The metrics of ``cell`` at the floor, for every seed, at its series' next-coarser step
        count. ``results``: finished cells' metrics by cell key (a missing or failed sibling means
        nothing is skipped)."""
        if not _swept(cell):
            return ()
        steps = self.by[series_key(cell)]
        coarser = [s for s in steps if s < cell.steps]
        if not coarser:
            return ()
        siblings = steps[max(coarser)]
        if any(c.key not in results for c in siblings):
            return ()
        return tuple(m for m in cell.metrics if all(metric_at_floor(m, results[c.key], c) for c in siblings))
