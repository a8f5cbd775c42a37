"""Metrics at their noise floor are not recomputed at finer step counts ("at floor").

A *series* is a solver (with options and grid) on a model, swept over step counts: the cells
that differ only in ``steps``/``budget`` and ``seed``. Once a metric is at its noise floor for
every seed at one step count of a series, a finer step count cannot resolve it either (the
solver only gets closer to its limit), so the runner runs a series' step counts in waves,
coarsest first, and hands each cell the metrics its next-coarser step count left at the floor
(``Cell.at_floor``). The cell records ``<metric>_at_floor = 1`` instead of a value, and the
report ranks it with the solvers at the floor (tied at rank 1, unresolved). A suite measures
everything with ``skip_at_floor = false`` (the CI gate does: it compares every metric).

At the floor means what the metric's record says (``Metric.at_floor``, ``bench.harness.metrics``):
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
from bench.harness.metrics import ZERO_SE, MetricResult, discretization_floor

__all__ = ["ZERO_VALUED", "ZERO_SE", "discretization_floor", "value_at_floor", "metric_at_floor", "series_key",
           "StepSeries"]

#: the built-in metrics without a sample floor whose exact value is 0 (``Metric.zero_valued``)
ZERO_VALUED = tuple(m.name for m in metrics.METRICS.values() if m.zero_valued)


def value_at_floor(name: str, value: float, se: float = math.nan, floor: float = math.nan) -> bool:
    """Metric ``name``'s rule for a value without its cell (a cell's, or the report's mean over
    seeds with its standard error): at or below its noise floor, or, for the metrics whose exact
    value is 0 without a sample floor, within ``ZERO_SE`` standard errors of 0."""
    rule = metrics.get_metric(name).at_floor
    return bool(rule and rule(MetricResult(value, se, floor), None))


def metric_at_floor(name: str, result, cell) -> bool:
    """Whether metric ``name`` of a finished cell (its ``CellResult``) is at its noise floor."""
    r = result.metrics.get(name)
    if r is None:
        return False
    rule = metrics.get_metric(name).at_floor
    return r.at_floor or bool(rule and rule(r, cell))


def series_key(cell) -> str:
    """The cell's series: its definition without the step count, budget and seed."""
    d = cell.definition()
    for k in ("steps", "budget", "seed"):
        d.pop(k, None)
    return json.dumps(d, sort_keys=True, default=str)


def _swept(cell) -> bool:
    return cell.task == "sample" and cell.steps is not None


class StepSeries:
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
        count. ``results``: finished cells' ``CellResult`` by cell key (a missing or failed
        sibling means nothing is skipped)."""
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
