"""``sdebench history``: every cell's metrics and median time across runs, as keyed series.

    write_history(store, suites=None, out_dir=None, *, models=(), solvers=(), metrics=(), since=None)
        -> {"html": path, "markdown": path, "figures": [...], "events": DataFrame, "series": DataFrame}

A series is one (suite, cell key, metric) across the suite's runs, ordered by run start time (the
commit's run date; ties by run id). Cells are matched by their key, as ``compare`` matches them, so
a cell whose definition changed starts a new series. Each run of a series can be marked by three
rules, small objects that give a reason (``GateRule``, ``StepRule``, ``DriftRule``):

- **gate**: ``compare``'s own rule between this run and the suite's previous run holding the cell
  (``bench.report.compare.compare`` on that one cell: quality worse than ``rtol``, NFE changed,
  failed, missing, or time slower than ``time_factor``) - the runs where CI would have failed.
- **step**: a change of level that persists. The series (log scale when positive) is split in two
  where the sum of absolute deviations from each part's median drops most (an L1 two-segment
  fit, as asv's ``step_detect`` fits piecewise-constant levels with an L1 cost, here by binary
  segmentation); the split is kept when both parts have at least ``min_size`` runs and the
  medians differ by more than the tolerance and by more than ``noise_k`` times the within-part
  noise (1.4826 x median absolute deviation), then each part is split again. One noisy run moves
  neither median, so it is never a step; a change in the last run is a step once it persists.
- **drift**: the value moved beyond the tolerance from where the series started (median of its
  first ``min_size`` runs) and stayed there for every later run (at least ``min_size`` runs), in
  the worse direction, with no step to explain it: e.g. 5% worse per run, each time under
  ``compare``'s 5% threshold, so the gate never fires. Marked at the first run of the excursion, and
  only when the total change exceeds twice the scatter around the series' trend line (jitter is
  not drift).

Besides the marks, each series has its total change (last vs first) and a robust trend (Theil-Sen
median of pairwise slopes of log values, in % per run).

The output: ``history.html`` (self-contained: PNGs inline) and ``history.md`` with ``hist-*.png``
beside it, one small trend chart per (suite, model, solver with options): one panel per metric,
one line per cell (budget or steps, seed), the noise band (the metric's standard error where
stored, min-max of the timing repeats for time), the noise floor, and the marks.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import pathlib

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.harness.metrics import METRICS
from bench.harness.store import Store
from bench.report import compare as gate
from bench.report.data import load_cells
from bench.report.render import (
    DPI,
    Document,
    figure,
    figure_style,
    number_text,
    paragraph,
    relative_change,
    slug,
    table,
)
from solvers import InputError

__all__ = ["write_history", "history_frames", "series_table", "SeriesSpec", "GateRule", "StepRule", "DriftRule",
           "step_changes", "SERIES", "SECTIONS"]

SECTIONS = (("summary", "Summary"), ("marked-runs", "Marked runs"), ("trends", "Trends"), ("series", "Series"))


@dataclasses.dataclass(frozen=True)
class SeriesSpec:
    """How one tracked quantity is read: its column, label, better direction, band and floor columns."""

    name: str
    column: str
    label: str
    better: str = "lower"
    se: str | None = None
    band: tuple | None = None
    floor: str | None = None


def _series_defs() -> dict:
    defs = {m.name: SeriesSpec(m.name, m.name, m.label, m.better, se=m.name + "_se",
                           floor=m.name + "_floor" if m.floor else None)
            for m in METRICS.values() if m.gated}
    defs["time"] = SeriesSpec("time", "time_median_s", "median time (s)", band=("time_min_s", "time_max_s"))
    defs["nfe"] = SeriesSpec("nfe", "nfe", "NFE")
    defs["overhead"] = SeriesSpec("overhead", "time_overhead", "overhead (wall / NFE x eval)")
    return defs


#: every tracked quantity, by the name ``--metric`` takes
SERIES = _series_defs()
_ALIASES = {"time_median_s": "time", "median_s": "time", "time_overhead": "overhead"}


# --------------------------------------------------------------------------------------------
# the rules: small objects, each returns events with a reason
# --------------------------------------------------------------------------------------------
def _event(s, pos, kind, rule, before, after, reason):
    return {"run_id": int(s["run_id"].iloc[pos]), "pos": int(s["pos"].iloc[pos]), "suite": s["suite"].iloc[0],
            "key": s["key"].iloc[0], "model": s["model"].iloc[0], "solver": s["label"].iloc[0],
            "cell": s["cell_label"].iloc[0], "metric": s["metric"].iloc[0], "kind": kind, "rule": rule,
            "before": before, "after": after, "reason": reason}


def _log(values):
    v = np.asarray(values, dtype=float)
    return (np.log(v), True) if len(v) and (v > 0).all() else (v, False)


def step_changes(values, *, tol: float, min_size: int = 2, noise_k: float = 3.0) -> list[tuple[int, float, float]]:
    """Persistent level changes of ``values`` (in order) as (first index of the new level, median
    before, median after), by L1 binary segmentation; see the module docstring."""
    y, logged = _log(values)
    thresh = math.log1p(tol) if logged else tol * np.nanmedian(np.abs(y))
    out = []

    def split(lo, hi):
        seg = y[lo:hi]
        best = None
        for i in range(min_size, len(seg) - min_size + 1):
            a, b = seg[:i], seg[i:]
            cost = np.abs(a - np.median(a)).sum() + np.abs(b - np.median(b)).sum()
            if best is None or cost < best[1]:
                best = (i, cost)
        if best is None:
            return
        i = best[0]
        a, b = seg[:i], seg[i:]
        shift = abs(np.median(b) - np.median(a))
        noise = 1.4826 * np.median(np.abs(np.concatenate([a - np.median(a), b - np.median(b)])))
        if shift > thresh and shift > noise_k * noise:
            back = (lambda v: float(np.exp(v))) if logged else float
            out.append((lo + i, back(np.median(a)), back(np.median(b))))
            split(lo, lo + i)
            split(lo + i, hi)

    split(0, len(y))
    return sorted(out)


def theil_sen(values) -> float:
    """Median pairwise slope of log values, as a relative change per run (nan when undefined)."""
    y, logged = _log(values)
    n = len(y)
    slopes = [(y[j] - y[i]) / (j - i) for i in range(n) for j in range(i + 1, n)]
    if not slopes or not logged:
        return math.nan
    return float(np.expm1(np.median(slopes)))


@dataclasses.dataclass
class StepRule:
    """A persistent step change (both directions; the reason says which)."""

    tol: float = 0.05
    min_size: int = 2
    noise_k: float = 3.0
    name: str = "step"

    def events(self, s: pd.DataFrame, spec: SeriesSpec) -> list[dict]:
        v = s["value"].to_numpy(float)
        out = []
        for i, before, after in step_changes(v, tol=self.tol, min_size=self.min_size, noise_k=self.noise_k):
            c = relative_change(before, after)
            worse = (after > before) == (spec.better == "lower")
            out.append(_event(s, i, "regression" if worse else "improvement", self.name, before, after,
                              f"step: level {before:.4g} -> {after:.4g} ({c:+.1%}) from this run on "
                              f"(medians of >= {self.min_size} runs each side)"))
        return out


@dataclasses.dataclass
class DriftRule:
    """Cumulative worsening beyond ``tol`` from the series' start that persists, no step explaining it,
    and larger than ``noise_k`` times the standard deviation around the series' Theil-Sen line (so a
    jittery series, e.g. wall time on a loaded machine, does not read as a drift)."""

    tol: float = 0.05
    min_size: int = 2
    noise_k: float = 2.0
    name: str = "drift"

    def events(self, s: pd.DataFrame, spec: SeriesSpec, steps: list | None = None) -> list[dict]:
        v = s["value"].to_numpy(float)
        if len(v) < 2 * self.min_size or steps or not self._beyond_noise(v):
            return []
        start = float(np.median(v[: self.min_size]))
        sign = 1 if spec.better == "lower" else -1
        beyond = sign * (v - start) > self.tol * abs(start)
        for i in range(self.min_size, len(v) - self.min_size + 1):
            if beyond[i:].all():
                total = relative_change(start, v[-1])
                return [_event(s, i, "regression", self.name, start, float(v[i]),
                               f"drift: {relative_change(start, v[i]):+.1%} vs the first {self.min_size} runs and "
                               f"beyond {self.tol:.0%} in every later run ({total:+.1%} by the last run); "
                               f"trend {theil_sen(v):+.1%} per run")]
        return []

    def _beyond_noise(self, v) -> bool:
        y, logged = _log(v)
        if not logged:
            return True
        i = np.arange(len(y))
        slope = np.median([(y[b] - y[a]) / (b - a) for a in range(len(y)) for b in range(a + 1, len(y))])
        resid = y - slope * i
        noise = float(np.std(resid, ddof=1))  # not robust on purpose: jitter is what it must see
        return abs(y[-1] - np.median(y[: self.min_size])) > self.noise_k * noise


@dataclasses.dataclass
class GateRule:
    """``compare``'s rule between consecutive runs of a suite, applied to one cell at a time."""

    rtol: float = 0.05
    time_factor: float | None = 2.0
    min_time_s: float = 0.02
    name: str = "gate"

    def events(self, frames: dict, order: list, key: str, info: dict) -> list[dict]:
        out, prev = [], None
        for pos, rid in order:
            f = frames[rid]
            if prev is not None:
                base = frames[prev].loc[[key]]
                head = f.loc[[key]] if key in f.index else f.iloc[:0]
                rows, _ = gate.compare(base, head, rtol=self.rtol, time_factor=self.time_factor,
                                       min_time_s=self.min_time_s)
                for r in rows[rows["verdict"].isin(["REGRESSION", "SLOWER"])].itertuples():
                    metric = {"time_median_s": "time"}.get(r.what, r.what)
                    out.append({**info, "run_id": rid, "pos": pos, "metric": metric, "kind": "regression",
                                "rule": self.name, "before": r.base, "after": r.head,
                                "reason": f"compare would fail ({r.verdict}, {r.what}: {number_text(r.base)} -> "
                                          f"{number_text(r.head)}; "
                                          f"rtol {self.rtol:g}, time factor {self.time_factor})"})
            if key in f.index:
                prev = rid
            elif prev is not None:
                break  # the cell left the suite: one 'missing' mark, no more
        return out


# --------------------------------------------------------------------------------------------
# data: runs in order, cells as long series
# --------------------------------------------------------------------------------------------
def _since(value) -> pd.Timestamp | None:
    if value is None or value == "":
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise InputError(f"--since {value!r}: not a date (e.g. 2026-01-31 or 2026-01-31T12:00)") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _runs(store: Store, suites, since) -> pd.DataFrame:
    runs = store.runs()
    known = sorted(runs["suite"].dropna().unique())
    if suites:
        unknown = sorted(set(suites) - set(known))
        if unknown:
            raise InputError(f"no runs of suite(s) {', '.join(unknown)} in {store.path}; "
                             f"suites there: {', '.join(known) or 'none'}")
        runs = runs[runs["suite"].isin(suites)]
    runs = runs.assign(when=pd.to_datetime(runs["started"], utc=True, errors="coerce", format="ISO8601"))
    cutoff = _since(since)
    if cutoff is not None:
        runs = runs[runs["when"] >= cutoff]
    runs = runs.sort_values(["when", "id"], na_position="first").reset_index(drop=True)
    runs["pos"] = runs.groupby("suite").cumcount()
    return runs


def _cell_label(row) -> str:
    size = (f"nfe<={int(row.budget)}" if row.budget == row.budget and row.budget is not None
            else f"steps={int(row.steps)}" if row.steps == row.steps and row.steps is not None else "adaptive")
    if row.task == "benchmark":  # pytest-benchmark cells: the batch is what tells them apart
        batch = f"batch={int(row.n) if row.n == row.n else '-'}"
        return f"steps={int(row.steps)} {batch}" if row.steps == row.steps and row.steps is not None else batch
    return f"{size} seed={int(row.seed) if row.seed == row.seed else '-'}"


def history_frames(store: Store, suites=None, *, models=(), solvers=(), metrics=(), since=None):
    """(runs, long) where ``runs`` are the selected runs in order and ``long`` has one row per
    (run, cell, metric): suite, key, model, label (solver and options), cell_label, metric,
    value, lo, hi (band), floor, pos (the run's place in its suite's history)."""
    runs = _runs(store, suites, since)
    names = [_ALIASES.get(m, m) for m in metrics] or list(SERIES)
    unknown = [m for m in names if m not in SERIES]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(SERIES)}")
    df = load_cells(store, runs["id"].tolist()) if len(runs) else load_cells(store, [])
    if models:
        df = df[df["model"].isin(models)]
    if solvers:
        df = df[df["solver"].isin(solvers) | df["label"].isin(solvers)]
    info = runs.set_index("id")
    df = df.assign(suite=df["run_id"].map(info["suite"]), pos=df["run_id"].map(info["pos"]),
                   cell_label=[_cell_label(r) for r in df.itertuples()])
    parts = [_long_part(df, name) for name in names]
    parts = [p for p in parts if p is not None]
    cols = ["suite", "run_id", "pos", "key", "model", "label", "cell_label", "metric", "value", "lo", "hi", "floor"]
    long = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    return runs, long.sort_values(["suite", "model", "label", "cell_label", "metric", "pos"]).reset_index(drop=True)


def _long_part(df: pd.DataFrame, name: str) -> pd.DataFrame | None:
    """The rows of ``history_frames``' long frame for one tracked quantity (None when it has no value)."""
    spec = SERIES[name]
    if spec.column not in df.columns:
        return None
    part = df[np.isfinite(pd.to_numeric(df[spec.column], errors="coerce").astype(float))]
    if part.empty:
        return None
    value = part[spec.column].astype(float)
    lo = hi = value
    if spec.se and spec.se in part:
        se = pd.to_numeric(part[spec.se], errors="coerce").fillna(0.0)
        lo, hi = value - se, value + se
    elif spec.band and all(c in part for c in spec.band):
        lo = pd.to_numeric(part[spec.band[0]], errors="coerce").fillna(value)
        hi = pd.to_numeric(part[spec.band[1]], errors="coerce").fillna(value)
    floor = pd.to_numeric(part[spec.floor], errors="coerce") if spec.floor and spec.floor in part else np.nan
    return pd.DataFrame({"suite": part["suite"], "run_id": part["run_id"], "pos": part["pos"], "key": part["key"],
                         "model": part["model"], "label": part["label"], "cell_label": part["cell_label"],
                         "metric": name, "value": value, "lo": lo, "hi": hi, "floor": floor})


def _events(store, runs, long, *, rtol, time_factor, min_time_s, min_size, names):
    """Every mark: the gate on each (suite, cell) (its reasons kept for the shown metrics and for
    failed or missing cells), step and drift on each series."""
    step, drift = StepRule(rtol, min_size), DriftRule(rtol, min_size)
    gate_rule = GateRule(rtol, time_factor, min_time_s)
    events = []
    for (_, _, name), s in long.groupby(["suite", "key", "metric"], sort=False):
        spec = SERIES[name]
        found = step.events(s, spec)
        events += found + drift.events(s, spec, [e for e in found if e["kind"] == "regression"])
    frames = {}
    for (suite, key), s in long.groupby(["suite", "key"], sort=False):
        order = [(int(p), int(r)) for p, r in zip(runs.loc[runs["suite"] == suite, "pos"],
                                                   runs.loc[runs["suite"] == suite, "id"])]
        for _, rid in order:
            if rid not in frames:
                cells = store.cells(rid)
                frames[rid] = cells.set_index("key") if len(cells) else pd.DataFrame(columns=["nfe"]).rename_axis("key")
        info = {"suite": suite, "key": key, "model": s["model"].iloc[0], "solver": s["label"].iloc[0],
                "cell": s["cell_label"].iloc[0]}
        events += [e for e in gate_rule.events(frames, order, key, info)
                   if e["metric"] in names or e["metric"] in ("cell", "error")]
    cols = ["suite", "run_id", "pos", "key", "model", "solver", "cell", "metric", "kind", "rule", "before",
            "after", "reason"]
    return pd.DataFrame(events, columns=cols).sort_values(["suite", "pos", "model", "solver", "cell"]).reset_index(
        drop=True)


def series_table(long: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """One row per series: runs, first, last, total change, trend per run, and its marks."""
    rows = []
    for (suite, key, name), s in long.groupby(["suite", "key", "metric"], sort=False):
        v = s["value"].to_numpy(float)
        e = events[(events["suite"] == suite) & (events["key"] == key) & (events["metric"] == name)]
        rows.append({"suite": suite, "model": s["model"].iloc[0], "solver": s["label"].iloc[0],
                     "cell": s["cell_label"].iloc[0], "metric": name, "runs": len(v), "first": v[0], "last": v[-1],
                     "change": relative_change(v[0], v[-1]), "trend/run": theil_sen(v) if len(v) > 2 else math.nan,
                     "gate": int((e["rule"] == "gate").sum()), "steps": int((e["rule"] == "step").sum()),
                     "drift": "yes" if (e["rule"] == "drift").any() else ""})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------
_MARK = {"gate": dict(marker="X", color="#c92a2a", s=70), "step": dict(marker="D", color="#1c7ed6", s=42),
         "drift": dict(marker="^", color="#e8590c", s=60)}


def _tick_labels(runs, suite):
    r = runs[runs["suite"] == suite]
    short = len(r) > 5  # commits only where they fit; the summary table has them all
    return {int(p): f"r{int(i)}" + ("" if short else f"\n{str(c or '')[:7]}")
            for p, i, c in zip(r["pos"], r["id"], r["git_commit"])}


def _panel(ax, g, ev, spec, colors):
    for cell_label, s in g.groupby("cell_label", sort=True):
        c = colors[cell_label]
        ax.plot(s["pos"], s["value"], marker="o", ms=3.5, lw=1.4, color=c)
        if (s["hi"] > s["lo"]).any():
            ax.fill_between(s["pos"], s["lo"], s["hi"], color=c, alpha=0.15, lw=0)
    floors = g["floor"].dropna()
    if len(floors):
        ax.axhline(float(floors.median()), color="0.35", ls="--", lw=1)
    for e in ev.itertuples():
        y = g[(g["pos"] == e.pos)]["value"]
        if e.rule == "step":  # a dotted line where the new level starts, the diamond on the top edge
            ax.axvline(e.pos - 0.5, color=_MARK["step"]["color"], ls=":", lw=1.2)
            ax.scatter([e.pos - 0.5], [0.97], transform=ax.get_xaxis_transform(), zorder=4, clip_on=False,
                       **_MARK["step"])
        elif len(y):
            ax.scatter([e.pos] * len(y), y, zorder=4, edgecolor="white", lw=0.6, **_MARK[e.rule])
    if len(g) and (g["value"] > 0).all() and g["value"].max() / g["value"].min() > 8:
        ax.set_yscale("log")
    ax.set_title(spec.label, fontsize=10)


def _trend_figure(g, ev, runs, title, path):
    """One small chart: a panel per metric, a line per cell, the marks."""
    metrics = [m for m in SERIES if m in set(g["metric"])]
    cells = sorted(g["cell_label"].unique())
    palette = ["#364fc7", "#2b8a3e", "#862e9c", "#5f3dc4", "#0b7285", "#495057", "#a61e4d", "#5c940d"]
    colors = {c: palette[i % len(palette)] for i, c in enumerate(cells)}
    ticks = _tick_labels(runs, g["suite"].iloc[0])
    positions = sorted(ticks)
    with figure_style():
        ncols = min(4, len(metrics))
        nrows = math.ceil(len(metrics) / ncols)
        width, height = 3.2 * ncols + 2.0, 2.4 * nrows + 0.7
        fig = Figure(figsize=(width, height))  # fixed margins: constrained layout triples the drawing time
        fig.subplots_adjust(left=0.75 / width, right=1 - 1.9 / width, bottom=0.55 / height, top=1 - 0.6 / height,
                            wspace=0.32, hspace=0.55)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, m in zip(axes, metrics):
            _panel(ax, g[g["metric"] == m], ev[ev["metric"] == m], SERIES[m], colors)
            shown = positions if len(positions) <= 8 else positions[:: math.ceil(len(positions) / 8)]
            ax.set_xticks(shown, [ticks[p] for p in shown], fontsize=7)
            ax.set_xlim(min(positions) - 0.5, max(positions) + 0.5)
            ax.tick_params(axis="y", labelsize=8)
            if ax.get_yscale() == "linear":
                ax.yaxis.get_major_formatter().set_useOffset(False)
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        handles = [Line2D([], [], color=colors[c], marker="o", ms=4, label=c) for c in cells]
        handles += [Line2D([], [], ls="", marker=_MARK[k]["marker"], color=_MARK[k]["color"], label=lab)
                    for k, lab in (("gate", "compare fires"), ("step", "step change"), ("drift", "drift"))
                    if (ev["rule"] == k).any()]
        fig.legend(handles=handles, loc="center right", fontsize=8)
        fig.suptitle(title, fontsize=10.5)
        fig.savefig(path, format="png", dpi=DPI)
    return path


# --------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------
def _summary(doc, runs, events, long, tol):
    b = doc.section(*SECTIONS[0])
    rows = [[r.suite, r.pos + 1, r.id, r.started, str(r.git_commit or "")[:12], r.status, r.cells]
            for r in runs.sort_values(["suite", "pos"]).itertuples()]
    b.append(table(["suite", "#", "run", "started", "commit", "status", "cells"], rows, group_col="suite"))
    n_series = long.groupby(["suite", "key", "metric"]).ngroups if len(long) else 0
    counts = events.groupby("rule").size().to_dict() if len(events) else {}
    b.append(paragraph(f"{len(runs)} run(s), {n_series} series (cell x metric). Marks: "
                f"{counts.get('gate', 0)} where compare would fail, {counts.get('step', 0)} step change(s), "
                f"{counts.get('drift', 0)} drift(s)."))
    b.append(paragraph(f"How to read: runs are ordered by start time within each suite; cells are matched by key. "
                f"Red X: compare's rule fires against the previous run (quality worse than {tol:.0%}, NFE "
                f"changed, cell failed or missing, time slower than the factor). Blue diamond and dotted line: a "
                f"step change that persists (two-segment L1 fit, at least 2 runs each side, beyond the tolerance "
                f"and the noise). Orange triangle: drift, worse than the first runs by more than {tol:.0%} in "
                f"every later run while no single step explains it - what a run-to-run gate misses. Bands: "
                f"standard error where stored, timing min-max; dashed: noise floor."))


def _marked(doc, events):
    b = doc.section(*SECTIONS[1])
    if events.empty:
        b.append(paragraph("no run is marked"))
        return
    rows = [[e.suite, e.run_id, e.model, e.solver, e.cell, e.metric, e.rule, e.kind, e.before, e.after, e.reason]
            for e in events.itertuples()]
    b.append(table(["suite", "run", "model", "solver", "cell", "metric", "rule", "kind", "before", "after",
                     "reason"], rows, flag_col="kind", group_col="run"))


def _trends(doc, runs, long, events, out_dir):
    b = doc.section(*SECTIONS[2])
    figures = []
    if long.empty:
        b.append(paragraph("no values to draw"))
        return figures
    for (suite, model, label), g in long.groupby(["suite", "model", "label"], sort=True):
        ev = events[(events["suite"] == suite) & (events["model"] == model) & (events["solver"] == label)]
        path = out_dir / f"hist-{slug(suite, 90)}-{slug(model, 90)}-{slug(label, 90)}.png"
        figures.append(_trend_figure(g, ev, runs, f"{suite}: {model} {label}", path))
        marks = ", ".join(f"{k} {v}" for k, v in ev.groupby("rule").size().items()) or "no marks"
        b.append(figure(path, f"{suite}: {model} {label} - {g['cell_label'].nunique()} cell(s), "
                               f"{g['metric'].nunique()} metric(s); {marks}."))
    return figures


def _series(doc, series):
    b = doc.section(*SECTIONS[3])
    b.append(paragraph("Per series: first and last value, total change, Theil-Sen trend (median pairwise slope of log "
                       "values, % per run), and how many times each rule marked it."))
    if len(series):
        b.append(table(list(series.columns), series.values.tolist(), flag_col="drift",
                       collapse=f"show all {len(series)} series" if len(series) > 60 else None))


def write_history(store, suites=None, out_dir=None, *, models=(), solvers=(), metrics=(), since=None,
                  rtol: float = 0.05, time_factor: float | None = 2.0, min_time_s: float = 0.02,
                  min_size: int = 2) -> dict:
    """Write ``history.html`` (self-contained) and ``history.md`` + ``hist-*.png`` into ``out_dir``
    (default ``<store dir>/history``). ``suites`` None: every suite in the store."""
    if not isinstance(store, Store):
        store = Store(store)
    if rtol < 0 or min_size < 1:
        raise InputError("rtol must be >= 0 and min_size >= 1")
    runs, long = history_frames(store, suites, models=models, solvers=solvers, metrics=metrics, since=since)
    out_dir = pathlib.Path(out_dir) if out_dir is not None else store.path.parent / "history"
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [_ALIASES.get(m, m) for m in metrics] or list(SERIES)
    events = _events(store, runs, long, rtol=rtol, time_factor=time_factor, min_time_s=min_time_s,
                     min_size=min_size, names=names)
    doc = Document()
    _summary(doc, runs, events, long, rtol)
    _marked(doc, events)
    figures = _trends(doc, runs, long, events, out_dir)
    series = series_table(long, events)
    _series(doc, series)
    suites_txt = ", ".join(dict.fromkeys(runs["suite"].astype(str))) or "-"
    title = f"sdebench history: {suites_txt}"
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    subtitle = f"{len(runs)} runs; store {store.path}; generated {when}" + (f"; since {since}" if since else "")
    html_path, md_path = doc.write(out_dir / "history.html", out_dir / "history.md", title, subtitle)
    return {"html": html_path, "markdown": md_path, "figures": figures, "events": events, "series": series}
