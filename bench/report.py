"""Reports: one self-contained HTML file and one Markdown file with PNG figures, from stored runs.

    write_report(store, [run_id, ...], out_dir=None) -> {"html": path, "markdown": path, "figures": [...]}

writes ``report.html`` (figures embedded as base64 PNG, no external resource) and ``report.md``
(referencing the ``fig-*.png`` files written beside it) into ``out_dir`` (default
``<store dir>/run-<first run id>/``). Sections, each with a stable id (HTML ``<section id>``, a
Markdown anchor):

    summary            the runs, their cells and failures, how to read the numbers
    quality-vs-nfe     every quality metric against NFE (log-log), one figure per model, one panel per metric,
                       the noise floor (two independent exact sample sets) drawn as a band/line
    work-precision     discretization error against wall time and against NFE
    likelihood         likelihood error per dimension against NFE and tolerance
    convergence-order  fitted order (slope of log error vs log steps over the resolved range)
                       next to the solver's declared order, flagged where they disagree
    trajectories       SDE vs ODE paths on the 2-D two-Gaussian mixture over the exact p_t,
                       computed fresh from the exact model
    best-solver        per model and NFE budget (5, 10, 20, 50): which solver to pick
    failed-cells       every cell whose ``error`` is set
    all-cells          a compact table of every cell
    environment        per run: commit, device, versions, threads, host, suite text

Several runs share one report: every figure draws run N with its own line style, and tables carry
a run column. Names from suites and options are HTML-escaped (and entity-escaped in Markdown).
Figures are drawn on bare ``matplotlib.figure.Figure`` objects (Agg; pyplot's global state is not
touched) in one seaborn style.
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import html
import json
import math
import pathlib
import platform
import re

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

import solvers
from bench import models
from bench.convergence import fit_order
from bench.models import GaussianMixture
from bench.store import Store
from solvers import InputError

__all__ = ["write_report", "load_cells", "convergence_table", "best_per_budget", "trajectory_figure", "solver_label",
           "discretization_floor",
           "SECTIONS", "BUDGETS", "ORDER_TOLERANCE"]

#: (id, heading) of every section, in order; the ids and headings are stable
SECTIONS = (
    ("summary", "Summary"),
    ("quality-vs-nfe", "Quality vs NFE"),
    ("work-precision", "Work-precision"),
    ("likelihood", "Likelihood error"),
    ("convergence-order", "Convergence order"),
    ("trajectories", "SDE vs ODE trajectories"),
    ("best-solver", "Best solver per NFE budget"),
    ("failed-cells", "Failed cells"),
    ("all-cells", "All cells"),
    ("environment", "Environment"),
)
#: the NFE budgets of the "what to pick" tables
BUDGETS = (5, 10, 20, 50)
#: a fitted order further than this from the declared one is flagged
ORDER_TOLERANCE = 0.25
#: fewest resolved step counts for an order fit
MIN_FIT_POINTS = 3
#: the SDE reference must be at least this many times finer than a fitted cell
SDE_REFERENCE_RATIO = 4
QUALITY_METRICS = ("discretization", "sliced_w2", "mmd2", "energy", "w2")
DISTRIBUTION_METRICS = ("sliced_w2", "energy", "w2", "mmd2")  # ranking preference
TOLERANCE_KEYS = ("rtol", "atol")
METRIC_LABELS = {
    "discretization": r"discretization error  (median $\|x - x_{ref}\| / \sqrt{d}$)",
    "sliced_w2": r"sliced $W_2$",
    "mmd2": r"$\mathrm{MMD}^2$ (unbiased)",
    "energy": "energy distance",
    "w2": r"$W_2$ (exact OT)",
    "logp_error_per_dim": r"mean $|\log p_{ODE} - \log p|$ / dim  (nats)",
}
METRIC_NAMES = {"discretization": "discretization", "sliced_w2": "sliced W2", "mmd2": "MMD^2",
                "energy": "energy distance", "w2": "W2", "logp_error_per_dim": "log-likelihood error / dim"}
DEFAULT_REFERENCE = {"ode_rtol": 1e-10, "sde_steps": 2048}
DPI = 110
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))
SDE_PATH_COLOR, ODE_PATH_COLOR = "#e8590c", "#111111"


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
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


def _solver_cls(name):
    try:
        return solvers.get(name)
    except (InputError, TypeError):
        return None


def load_cells(store: Store, run_ids) -> pd.DataFrame:
    """The cells of every run, one frame: ``run_id``, parsed ``opts``, ``label`` (solver and
    options), ``series`` (the label without tolerances for cells without a step count, so a
    tolerance sweep is one line), ``ok`` (no error), metric/timing columns as floats."""
    frames = [store.cells(r) for r in run_ids]
    frames = [f for f in frames if not f.empty]
    base = ["run_id", "task", "model", "solver", "options", "grid", "budget", "steps", "seed", "n", "nfe", "error"]
    df = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame(columns=base)
    numeric = ["budget", "steps", "seed", "n", "nfe", "time_median_s", "time_min_s", "time_max_s",
               "time_overhead", "time_one_eval_s", "time_peak_mem_bytes", "logp_error_per_dim",
               "logp_bias_per_dim", "logp_stderr"]
    numeric += [m for m in QUALITY_METRICS] + [m + "_floor" for m in QUALITY_METRICS]
    for c in base + numeric:
        if c not in df.columns:
            df[c] = np.nan
    for c in numeric:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    df["run_id"] = df["run_id"].astype(int)
    df["opts"] = [_loads(o) for o in df["options"]]
    df["grid"] = [g if isinstance(g, str) and g else None for g in df["grid"]]
    df["label"] = [solver_label(s, o, g) for s, o, g in zip(df["solver"], df["opts"], df["grid"])]
    df["series"] = [solver_label(s, {k: v for k, v in o.items() if k not in TOLERANCE_KEYS} if pd.isna(st) else o, g)
                    for s, o, g, st in zip(df["solver"], df["opts"], df["grid"], df["steps"])]
    df["ok"] = df["error"].isna()
    return df


def _reference(run: dict) -> dict:
    try:
        ref = tomllib.loads(run.get("suite_text") or "").get("reference", {})
    except (tomllib.TOMLDecodeError, TypeError):
        ref = {}
    return {**DEFAULT_REFERENCE, **{k: v for k, v in ref.items() if isinstance(v, (int, float))}}


def discretization_floor(run: dict) -> float:
    """Errors at or below this are the reference's, not the solver's: 10 x the ODE reference rtol."""
    return max(10 * float(_reference(run)["ode_rtol"]), 1e-14)


# --------------------------------------------------------------------------------------------
# convergence orders
# --------------------------------------------------------------------------------------------
def _declared(cls, opts):
    if cls is None:
        return None, "unknown (solver not registered here)"
    try:
        order = cls.declared_order(**opts)
    except Exception as e:  # noqa: BLE001 - options of another version, say so
        return None, f"unknown ({type(e).__name__})"
    if order is None:
        weak = getattr(cls, "weak_order", None)
        return None, f"none claimed (weak {weak:g})" if weak else "none claimed"
    return float(order), f"{order:g}"


def _is_stochastic(cls, opts):
    try:
        return bool(cls.is_stochastic(**opts))
    except Exception:  # noqa: BLE001
        return bool(getattr(cls, "stochastic", False))


def convergence_table(df: pd.DataFrame, runs: dict[int, dict]) -> pd.DataFrame:
    """One row per (run, model, solver with options): the fitted order of the discretization
    error against steps over the resolved range, the declared order, and a flag.

    Per step count the error is the median over seeds. A point is resolved when finite, above
    ``discretization_floor`` and, for stochastic solvers, on a grid at least
    ``SDE_REFERENCE_RATIO`` times coarser than the fine-grid reference. At least
    ``MIN_FIT_POINTS`` resolved step counts are needed, else the order is "unresolved"."""
    rows = []
    sample = df[(df["task"] == "sample") & df["ok"]]
    for (rid, model, label), g in sample.groupby(["run_id", "model", "label"], sort=True):
        first = g.iloc[0]
        cls, opts = _solver_cls(first["solver"]), first["opts"]
        declared, declared_txt = _declared(cls, opts)
        row = {"run": rid, "model": model, "solver": label, "declared": declared_txt, "fitted": "",
               "fitted_value": math.nan, "declared_value": declared if declared is not None else math.nan,
               "order of": "", "points": 0, "steps": "", "flag": ""}
        rows.append(row)
        if cls is not None and getattr(cls, "kind", "") == "corrector":
            row.update(fitted="n/a", **{"order of": "corrector: no pathwise reference"})
            continue
        if g["steps"].isna().all():
            row.update(fitted="n/a", **{"order of": "adaptive: tolerance-controlled"})
            continue
        stochastic = _is_stochastic(cls, opts) if cls is not None else False
        row["order of"] = "strong (vs fine-grid EM, same path)" if stochastic else "ODE (vs dopri8 reference)"
        ref = _reference(runs[rid])
        floor = discretization_floor(runs[rid])
        per = g.dropna(subset=["steps"]).groupby("steps")["discretization"].median()
        keep = per[np.isfinite(per.values) & (per.values > floor)]
        if stochastic:
            keep = keep[keep.index * SDE_REFERENCE_RATIO <= ref["sde_steps"]]
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
            "fitted_value", "declared_value"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------------
# best solver per budget
# --------------------------------------------------------------------------------------------
def _rank_metric(g: pd.DataFrame) -> str:
    for m in DISTRIBUTION_METRICS:
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


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _style():
    """The one style of every figure (no global state is changed)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(sns.axes_style("whitegrid", {"grid.color": ".9", "axes.edgecolor": ".3"}))
        stack.enter_context(sns.plotting_context("paper", font_scale=1.2))
        stack.enter_context(matplotlib.rc_context({"figure.dpi": DPI, "savefig.dpi": DPI, "axes.titleweight": "bold",
                                                   "legend.frameon": False, "mathtext.fontset": "dejavusans",
                                                   "figure.facecolor": "white", "savefig.facecolor": "white"}))
        yield


class _Styles:
    """Colour and marker per series, line style per run: the same in every figure."""

    def __init__(self, series, run_ids):
        series = sorted(set(series))
        n = max(len(series), 1)
        palette = sns.color_palette("tab10" if n <= 10 else "tab20" if n <= 20 else "husl", n)
        self.color = {s: palette[i] for i, s in enumerate(series)}
        self.marker = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(series)}
        self.runs = list(run_ids)
        self.ls = {r: LINESTYLES[i % len(LINESTYLES)] for i, r in enumerate(self.runs)}

    def handles(self, series, runs=None):
        hs = [Line2D([], [], color=self.color[s], marker=self.marker[s], lw=1.6, ms=6, label=s)
              for s in sorted(set(series))]
        runs = self.runs if runs is None else runs
        if len(runs) > 1:
            hs += [Line2D([], [], color="0.3", ls=self.ls[r], lw=1.6, label=f"run {r}") for r in runs]
        return hs


def _set_log(ax, axis, values, floors=()):
    """Log scale; symlog when a value is <= 0 (unbiased MMD^2), linear inside +-|noise floor|."""
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    floors = np.abs(np.asarray([f for f in floors if np.isfinite(f) and f != 0], dtype=float))
    if len(values) and (values <= 0).any():
        pos = np.abs(values[values != 0])
        thresh = float(np.median(floors)) if len(floors) else float(np.quantile(pos, 0.1)) if len(pos) else 1e-12
        (ax.set_xscale if axis == "x" else ax.set_yscale)("symlog", linthresh=thresh, linscale=1.0)
    else:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _count_axis(ax, axis, values):
    """A log axis of counts (NFE) labelled with plain integers at the values themselves."""
    ticks = []
    for v in sorted({int(v) for v in values if np.isfinite(v) and v > 0}):
        if not ticks or v >= 1.2 * ticks[-1]:  # thin out neighbours that would overlap (48, 50)
            ticks.append(v)
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    if 0 < len(ticks) <= 9:
        a.set_major_locator(FixedLocator(ticks))
        a.set_minor_locator(NullLocator())
    a.set_major_formatter(ScalarFormatter())
    a.set_minor_formatter(NullFormatter())


def _draw_floor(ax, floors):
    floors = np.asarray([f for f in floors if np.isfinite(f)], dtype=float)
    if not len(floors):
        return
    lo, hi, med = floors.min(), floors.max(), float(np.median(floors))
    ax.axhline(med, color="0.25", ls="--", lw=1.2, zorder=1)
    bottom, top = ax.get_ylim()
    ax.axhspan(bottom, hi, color="0.55", alpha=0.16, lw=0, zorder=0)
    if hi > lo:
        ax.axhspan(lo, hi, color="0.4", alpha=0.2, lw=0, zorder=0)
    ax.set_ylim(bottom, top)
    ax.annotate("noise floor", xy=(0.01, med), xycoords=("axes fraction", "data"), ha="left", va="top",
                fontsize=8, color="0.25")


def _lines(ax, g, x, y, styles, agg_by=None):
    """One line per (run, series): median of y over seeds at each value of ``agg_by`` (default x),
    with the min-max spread shaded when there are several seeds."""
    agg_by = agg_by or x
    drawn = set()
    for (rid, series), s in g.groupby(["run_id", "series"], sort=True):
        s = s[np.isfinite(s[x]) & np.isfinite(s[y])]
        if s.empty:
            continue
        a = s.groupby(agg_by).agg(xm=(x, "median"), ym=(y, "median"), lo=(y, "min"), hi=(y, "max"))
        kw = dict(color=styles.color[series], marker=styles.marker[series], ls=styles.ls[rid], lw=1.5, ms=5.5)
        ax.plot(a["xm"], a["ym"], **kw)
        if (a["hi"] > a["lo"]).any():
            ax.fill_between(a["xm"], a["lo"], a["hi"], color=styles.color[series], alpha=0.13, lw=0)
        drawn.add((rid, series))
    return drawn


def _finish(fig, styles, drawn, path: pathlib.Path):
    """Legend of what was drawn (series; runs when more than one), then save."""
    if drawn:
        series = {s for _, s in drawn}
        runs = [r for r in styles.runs if r in {rid for rid, _ in drawn}]
        fig.legend(handles=styles.handles(series, runs), loc="outside right center", fontsize=9)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _quality_figure(g, model, styles, path):
    metrics = [m for m in QUALITY_METRICS if np.isfinite(g[m]).any()]
    if not metrics:
        return None
    with _style():
        ncols = min(3, len(metrics))
        nrows = math.ceil(len(metrics) / ncols)
        fig = Figure(figsize=(4.3 * ncols + 3.2, 3.6 * nrows + 0.5), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        series = set()
        for ax, m in zip(axes, metrics):
            series |= _lines(ax, g, "nfe", m, styles)
            floors = g[m + "_floor"] if m != "discretization" else []
            _count_axis(ax, "x", g["nfe"])
            _set_log(ax, "y", list(g[m]) + list(floors), floors)
            _draw_floor(ax, floors)
            ax.set_title(METRIC_NAMES[m])
            ax.set_xlabel("NFE")
            ax.set_ylabel(METRIC_LABELS[m], fontsize=9)
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        fig.suptitle(f"{model}: quality vs NFE (median over seeds; shaded: seed range; grey: below noise floor)",
                     fontsize=11)
        return _finish(fig, styles, series, path)


def _work_precision_figure(g, model, styles, path):
    g = g[np.isfinite(g["discretization"]) & (g["discretization"] > 0)]
    if g.empty:
        return None
    with _style():
        fig = Figure(figsize=(11.5, 4.2), layout="constrained")
        ax_t, ax_n = fig.subplots(1, 2)
        key = g["steps"].fillna(g["nfe"])
        g = g.assign(_key=key)
        series = _lines(ax_t, g[np.isfinite(g["time_median_s"])], "discretization", "time_median_s", styles, "_key")
        series |= _lines(ax_n, g[np.isfinite(g["nfe"])], "discretization", "nfe", styles, "_key")
        for ax, ylabel in ((ax_t, "wall time per call (s, median of repeats)"), (ax_n, "NFE")):
            ax.set_xscale("log")
            ax.set_yscale("log")
        _count_axis(ax_n, "y", g["nfe"])
        for ax, ylabel in ((ax_t, "wall time per call (s, median of repeats)"), (ax_n, "NFE")):
            ax.set_xlabel(METRIC_LABELS["discretization"], fontsize=9)
            ax.set_ylabel(ylabel)
        ax_t.set_title("work-precision: time")
        ax_n.set_title("work-precision: NFE")
        fig.suptitle(f"{model}: cost vs discretization error (lower left is better)", fontsize=11)
        return _finish(fig, styles, series, path)


def _likelihood_figure(g, styles, path):
    g = g[np.isfinite(g["logp_error_per_dim"])]
    if g.empty:
        return None
    g = g.assign(rtol=[float(o["rtol"]) if isinstance(o.get("rtol"), (int, float)) else np.nan for o in g["opts"]])
    with _style():
        fig = Figure(figsize=(11.5, 4.2), layout="constrained")
        ax_n, ax_r = fig.subplots(1, 2)
        series = set()
        for (model,), gm in g.groupby(["model"], sort=True):
            series |= _lines(ax_n, gm, "nfe", "logp_error_per_dim", styles)
            if np.isfinite(gm["rtol"]).any():
                series |= _lines(ax_r, gm, "rtol", "logp_error_per_dim", styles)
        _count_axis(ax_n, "x", g["nfe"])
        _set_log(ax_n, "y", g["logp_error_per_dim"])
        ax_n.set_xlabel("NFE")
        ax_n.set_title("likelihood error vs NFE")
        ax_r.set_xscale("log")
        _set_log(ax_r, "y", g["logp_error_per_dim"])
        ax_r.set_xlabel("rtol (= atol unless set)")
        ax_r.set_title("likelihood error vs tolerance")
        for ax in (ax_n, ax_r):
            ax.set_ylabel(METRIC_LABELS["logp_error_per_dim"], fontsize=9)
        models_ = ", ".join(sorted(g["model"].unique()))
        fig.suptitle(f"likelihood through the probability-flow ODE ({models_})", fontsize=11)
        return _finish(fig, styles, series, path)


def trajectory_figure(path, *, model_name: str = "gmm2d-vp", paths: int = 8, plane_sde_paths: int = 3, seed: int = 3,
                      sde_solver: str = "euler_maruyama", ode_solver: str = "heun",
                      sde_steps: int = 500, ode_steps: int = 60) -> pathlib.Path:
    """Paths of a stochastic and a deterministic solver from the same x_T over the exact density,
    computed fresh from the exact model: (a, b) x_1 against t over the exact marginal density of
    x_1 (the 1-D marginal of a Gaussian mixture is the mixture of the 1-D marginals), reverse time
    left to right; (c) both in the plane over the exact p_eps."""
    m = models.load(model_name, exact_prior=True)
    sde = m.sde
    x_T = m.sample_prior(paths, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out_s = solvers.sample(m, sde_solver, steps=sde_steps, x_T=x_T, seed=seed, return_trajectory=True)
    out_o = solvers.sample(m, ode_solver, steps=ode_steps, x_T=x_T, seed=seed, return_trajectory=True)
    gmm = m.gmm
    g1 = GaussianMixture(gmm.weights, gmm.means[:, :1], gmm.covs[:, :1, :1])
    ts = torch.linspace(sde.eps, sde.T, 260, dtype=torch.float64)
    lo, hi = -3.6, 3.6
    xs = torch.linspace(lo, hi, 320, dtype=torch.float64)
    dens = torch.stack([g1.log_prob(xs[:, None], float(sde.alpha(t)), float(sde.sigma(t))).exp() for t in ts])
    # p_eps in the plane
    u = torch.linspace(-3.4, 3.4, 220, dtype=torch.float64)
    uu, vv = torch.meshgrid(u, u, indexing="xy")
    plane = m.exact_log_prob(torch.stack([uu.reshape(-1), vv.reshape(-1)], 1), sde.eps).exp().reshape(uu.shape)
    cmap = sns.light_palette("#2f6690", as_cmap=True)
    with _style():
        fig = Figure(figsize=(16, 4.6), layout="constrained")
        axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.25, 1.25, 1]})
        for ax, out, color, name, kind in ((axes[0], out_s, SDE_PATH_COLOR, sde_solver, "reverse SDE"),
                                           (axes[1], out_o, ODE_PATH_COLOR, ode_solver, "probability-flow ODE")):
            mesh = ax.pcolormesh(ts.numpy(), xs.numpy(), dens.T.numpy(), cmap=cmap, shading="auto",
                                 vmin=0, vmax=float(dens.max()) * 0.9, rasterized=True)
            tr = out.trajectory[:, :, 0].numpy()
            tt = out.times.numpy()
            for k in range(tr.shape[1]):
                ax.plot(tt, tr[:, k], color="white", lw=2.6, alpha=0.55)
                ax.plot(tt, tr[:, k], color=color, lw=1.1)
            ax.set_xlim(float(sde.T), 0.0)
            ax.set_ylim(lo, hi)
            ax.grid(False)
            ax.set_xlabel("t  (reverse time runs left to right)")
            ax.set_ylabel("$x_1$")
            ax.set_title(f"{kind}: {name}, {out.steps} steps")
        fig.colorbar(mesh, ax=axes[:2], label="exact marginal density $p_t(x_1)$", shrink=0.9, pad=0.01)
        ax = axes[2]
        ax.contourf(uu.numpy(), vv.numpy(), plane.numpy(), levels=14, cmap=cmap)
        k_plane = min(plane_sde_paths, paths)
        for out, color, lw, k_max in ((out_s, SDE_PATH_COLOR, 0.8, k_plane), (out_o, ODE_PATH_COLOR, 1.6, paths)):
            tr = out.trajectory.numpy()[:, :k_max]
            for k in range(tr.shape[1]):
                ax.plot(tr[:, k, 0], tr[:, k, 1], color=color, lw=lw, alpha=0.85)
            ax.scatter(tr[-1, :, 0], tr[-1, :, 1], color=color, s=26, zorder=3, edgecolor="white", lw=0.7)
        ax.scatter(x_T[:, 0].numpy(), x_T[:, 1].numpy(), marker="x", color="0.15", s=30, zorder=4)
        ax.set_aspect("equal")
        ax.set_xlim(-3.4, 3.4)
        ax.set_ylim(-3.4, 3.4)
        ax.grid(False)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_title("in the plane, over exact $p_{eps}$")
        handles = [Line2D([], [], color=SDE_PATH_COLOR, lw=1.5,
                          label=f"{sde_solver} (stochastic; {k_plane} of {paths})"),
                   Line2D([], [], color=ODE_PATH_COLOR, lw=1.5, label=f"{ode_solver} (deterministic)"),
                   Line2D([], [], color="0.15", marker="x", ls="", label="x_T (shared)")]
        ax.legend(handles=handles, loc="lower right", fontsize=8, frameon=True)
        fig.suptitle(f"{model_name}: {paths} paths from the same x_T (exact p_T), seed {seed}; "
                     "jagged stochastic paths, smooth deterministic ones", fontsize=11)
        path = pathlib.Path(path)
        fig.savefig(path, format="png", dpi=DPI)
        return path


# --------------------------------------------------------------------------------------------
# a tiny document model, rendered to HTML and Markdown
# --------------------------------------------------------------------------------------------
class _Doc:
    def __init__(self):
        self.sections = []  # (id, title, blocks)

    def section(self, sid, title):
        blocks = []
        self.sections.append((sid, title, blocks))
        return blocks


def _p(text):
    return ("p", str(text))


def _h3(text):
    return ("h3", str(text))


def _table(columns, rows, flag_col=None, collapse=None, group_col=None):
    """A table; rows whose ``flag_col`` is set are highlighted, a change of ``group_col`` draws a rule,
    ``collapse`` (HTML) puts it in a closed <details> with that summary."""
    return ("table", [str(c) for c in columns], [[_cell(v) for v in r] for r in rows], flag_col, collapse,
            group_col)


def _pre(text):
    return ("pre", str(text))


def _figure(path, caption):
    return ("figure", pathlib.Path(path), str(caption))


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        if float(v).is_integer() and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.3g}"
    return str(v)


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _md(s) -> str:
    """Markdown table/text cell: HTML entities for &<> (so raw HTML never renders), | escaped,
    one line."""
    s = html.escape(str(s), quote=False).replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return re.sub(r"([\\`*_\[\]])", lambda mt: mt.group(1) if mt.group(1) == "\\" else "\\" + mt.group(1), s)


CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0;color:#1d232a;
background:#f6f7f9;line-height:1.45}
main{max-width:1320px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{margin:0 0 4px;font-size:26px} h2{margin-top:40px;padding-top:12px;border-top:2px solid #dde2e8;font-size:21px}
h3{font-size:16px;margin:22px 0 8px}
nav ol{columns:2;font-size:14px;margin:8px 0 0} nav a{color:#1c5fa8;text-decoration:none}
p.meta{color:#5a6672;margin:0 0 12px}
figure{margin:12px 0 20px} figure img{max-width:100%;height:auto;border:1px solid #e3e7ec}
figcaption{font-size:13px;color:#4a5560;margin-top:4px}
.tw{overflow-x:auto;margin:6px 0 14px}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #e1e5ea;padding:3px 8px;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#eef1f5;position:sticky;top:0} tr:nth-child(even) td{background:#fafbfc}
tr.flag td{background:#fff1e6 !important} tr.grp td{border-top:2px solid #9aa5b1}
td.err{white-space:normal;max-width:560px;color:#9b1c1c}
pre{background:#f3f5f7;border:1px solid #e1e5ea;padding:10px;font-size:12px;overflow-x:auto;white-space:pre-wrap}
details summary{cursor:pointer;color:#1c5fa8;margin:6px 0}
"""


def _render_html(doc, title, subtitle, images: dict) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_esc(title)}</title><style>{CSS}</style></head><body><main>",
           f"<header><h1>{_esc(title)}</h1><p class=\"meta\">{_esc(subtitle)}</p><nav><ol>"]
    out += [f'<li><a href="#{sid}">{_esc(t)}</a></li>' for sid, t, _ in doc.sections]
    out.append("</ol></nav></header>")
    for sid, t, blocks in doc.sections:
        out.append(f'<section id="{sid}"><h2>{_esc(t)}</h2>')
        for b in blocks:
            kind = b[0]
            if kind == "p":
                out.append(f"<p>{_esc(b[1])}</p>")
            elif kind == "h3":
                out.append(f"<h3>{_esc(b[1])}</h3>")
            elif kind == "pre":
                out.append(f"<pre>{_esc(b[1])}</pre>")
            elif kind == "figure":
                data = images[b[1]]
                out.append(f'<figure><img alt="{_esc(b[2])}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{_esc(b[2])}</figcaption></figure>")
            elif kind == "table":
                _, cols, rows, flag_col, collapse, group_col = b
                fi = cols.index(flag_col) if flag_col in cols else None
                gi = cols.index(group_col) if group_col in cols else None
                err = {i for i, c in enumerate(cols) if c == "error"}
                t_html = ['<div class="tw"><table><thead><tr>', "".join(f"<th>{_esc(c)}</th>" for c in cols),
                          "</tr></thead><tbody>"]
                for j, r in enumerate(rows):
                    classes = (["flag"] if fi is not None and r[fi] not in ("", "–") else []) + (
                        ["grp"] if gi is not None and j and r[gi] != rows[j - 1][gi] else [])
                    cls = f' class="{" ".join(classes)}"' if classes else ""
                    t_html.append(f"<tr{cls}>" + "".join(
                        f'<td class="err">{_esc(v)}</td>' if i in err else f"<td>{_esc(v)}</td>"
                        for i, v in enumerate(r)) + "</tr>")
                t_html.append("</tbody></table></div>")
                if collapse:
                    out.append(f"<details><summary>{_esc(collapse)}</summary>{''.join(t_html)}</details>")
                else:
                    out.append("".join(t_html))
        out.append("</section>")
    out.append("</main></body></html>")
    return "\n".join(out)


def _render_md(doc, title, subtitle) -> str:
    out = [f"# {_md(title)}", "", _md(subtitle), ""]
    out += [f"{i + 1}. [{_md(t)}](#{sid})" for i, (sid, t, _) in enumerate(doc.sections)]
    for sid, t, blocks in doc.sections:
        out += ["", f'<a id="{sid}"></a>', "", f"## {_md(t)}", ""]
        for b in blocks:
            kind = b[0]
            if kind == "p":
                out += [_md(b[1]), ""]
            elif kind == "h3":
                out += [f"### {_md(b[1])}", ""]
            elif kind == "pre":
                fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", b[1])), default=0))
                out += [fence + "text", b[1].rstrip("\n"), fence, ""]
            elif kind == "figure":
                out += [f"![{_md(b[2])}]({b[1].name})", "", f"*{_md(b[2])}*", ""]
            elif kind == "table":
                _, cols, rows, flag_col, _, _ = b
                fi = cols.index(flag_col) if flag_col in cols else None
                out.append("| " + " | ".join(_md(c) for c in cols) + " |")
                out.append("|" + "---|" * len(cols))
                for r in rows:
                    cells = [_md(v) for v in r]
                    if fi is not None and r[fi] not in ("", "–"):
                        cells[fi] = "**⚠ " + cells[fi] + "**"
                    out.append("| " + " | ".join(cells) + " |")
                out.append("")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------
def _slug(s) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(s)).strip("_")[:80] or "x"


def _run_word(run_ids):
    return "this run" if len(run_ids) == 1 else "these runs"


def _versions() -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
         "pandas": pd.__version__, "matplotlib": matplotlib.__version__, "seaborn": sns.__version__}
    for mod in ("torchdiffeq", "torchsde", "ot"):
        try:
            v["POT" if mod == "ot" else mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return v


def write_report(store, run_ids: list[int], out_dir: pathlib.Path | None = None, *,
                 trajectories: bool = True) -> dict:
    """Write ``report.html`` (self-contained) and ``report.md`` + ``fig-*.png`` for ``run_ids``.

    ``store``: a ``bench.store.Store`` (or a path to one). ``out_dir`` defaults to
    ``store.path.parent / f"run-{run_ids[0]}"``. Returns {"html": path, "markdown": path,
    "figures": [png paths]}. Raises ``InputError`` for an unknown run."""
    if not isinstance(store, Store):
        store = Store(store)
        try:
            return write_report(store, run_ids, out_dir, trajectories=trajectories)
        finally:
            store.close()
    run_ids = list(dict.fromkeys(int(r) for r in run_ids))
    if not run_ids:
        raise InputError("write_report needs at least one run id")
    runs = {r: store.run(r) for r in run_ids}  # InputError for an unknown run
    out_dir = pathlib.Path(out_dir) if out_dir is not None else store.path.parent / f"run-{run_ids[0]}"
    out_dir.mkdir(parents=True, exist_ok=True)
    df = load_cells(store, run_ids)
    styles = _Styles(df["series"], run_ids)
    figures: list[pathlib.Path] = []
    doc = _Doc()
    word = _run_word(run_ids)
    sample = df[(df["task"] == "sample") & df["ok"]]
    lik = df[(df["task"] == "likelihood") & df["ok"]]
    failed = df[~df["ok"]]
    model_names = sorted(sample["model"].dropna().unique())

    def fig_path(name):
        return out_dir / f"fig-{_slug(name)}.png"

    # --- summary --------------------------------------------------------------------------
    b = doc.section(*SECTIONS[0])
    rows = []
    for r in run_ids:
        d = df[df["run_id"] == r]
        info = runs[r]
        rows.append([r, info.get("suite"), info.get("status"), info.get("started"), len(d),
                     int((d["task"] == "sample").sum()), int((d["task"] == "likelihood").sum()), int((~d["ok"]).sum()),
                     ", ".join(sorted(d["model"].dropna().unique())), info.get("wall_s"),
                     (info.get("git_commit") or "")[:12]])
    b.append(_table(["run", "suite", "status", "started", "cells", "sample", "likelihood", "failed", "models",
                     "wall s", "commit"], rows))
    if len(failed):
        b.append(_p(f"{len(failed)} cell(s) failed; they are listed under 'Failed cells' and left out of the "
                    "figures and rankings."))
    b.append(_p("How to read: NFE = network evaluations actually made (counted). Discretization error = median "
                "over samples of |x - x_ref| / sqrt(d) against a reference from the same x_T (deterministic "
                "solvers: float64 dopri8 solution of the probability-flow ODE; stochastic solvers: fine-grid "
                "Euler-Maruyama on the same Brownian path, i.e. strong error). Distribution metrics compare the "
                "samples with exact samples of p_eps; each has a noise floor (the same metric between two "
                "independent exact sets): a value at or below it is unresolved. Several seeds: lines are "
                "medians, shading the seed range. Several runs: one line style per run."))

    # --- quality vs NFE -------------------------------------------------------------------
    b = doc.section(*SECTIONS[1])
    if sample.empty:
        b.append(_p(f"no successful sample cells in {word}"))
    for model in model_names:
        p = _quality_figure(sample[sample["model"] == model], model, styles, fig_path(f"quality-vs-nfe-{model}"))
        if p is None:
            b.append(_p(f"{model}: no quality metric values"))
            continue
        figures.append(p)
        b.append(_figure(p, f"{model}: every quality metric against NFE, log-log, one panel per metric; dashed "
                            "line: noise floor (median over cells), grey: at or below it (unresolved)."))

    # --- work-precision -------------------------------------------------------------------
    b = doc.section(*SECTIONS[2])
    b.append(_p("Cost against discretization error, as in numerical-analysis work-precision diagrams: each "
                "point is one step count (median over seeds), lower left is better. Stochastic solvers' errors "
                "are strong errors against their own fine-grid reference, so compare them with each other; "
                "deterministic ones against the ODE reference."))
    any_wp = False
    for model in model_names:
        p = _work_precision_figure(sample[sample["model"] == model], model, styles, fig_path(f"work-precision-{model}"))
        if p is not None:
            any_wp = True
            figures.append(p)
            b.append(_figure(p, f"{model}: wall time (left) and NFE (right) against discretization error."))
    if not any_wp:
        b.append(_p(f"no discretization errors in {word}"))

    # --- likelihood -----------------------------------------------------------------------
    b = doc.section(*SECTIONS[3])
    if lik.empty:
        b.append(_p(f"no likelihood cells in {word}"))
    else:
        p = _likelihood_figure(lik, styles, fig_path("likelihood"))
        if p is not None:
            figures.append(p)
            b.append(_figure(p, "Mean absolute error of the ODE log-likelihood per dimension against the exact "
                                "log p_eps, against NFE (left) and the solver tolerance (right)."))
        rows = [[r.run_id, r.model, r.label, r.nfe, r.logp_error_per_dim, r.logp_bias_per_dim, r.logp_stderr,
                 r.time_median_s] for r in lik.sort_values(["run_id", "model", "label"]).itertuples()]
        b.append(_table(["run", "model", "solver", "NFE", "|error|/dim", "bias/dim", "stderr", "wall s"], rows))

    # --- convergence orders ---------------------------------------------------------------
    b = doc.section(*SECTIONS[4])
    conv = convergence_table(df, runs)
    floors = ", ".join(f"run {r}: {discretization_floor(runs[r]):.0e}" for r in run_ids)
    b.append(_p(f"Fitted order p of discretization error ~ C steps^-p (least squares in log-log, error = median "
                f"over seeds) over the resolved range: finite errors above the reference floor ({floors}), for "
                f"stochastic solvers on grids at least {SDE_REFERENCE_RATIO}x coarser than the fine-grid "
                f"reference; at least {MIN_FIT_POINTS} step counts, else 'unresolved'. Stochastic solvers: the "
                f"strong order (pathwise, same Brownian path). Flagged where |fitted - declared| > "
                f"{ORDER_TOLERANCE}. Coarse step counts can be pre-asymptotic, which lowers or raises a fit."))
    if conv.empty:
        b.append(_p(f"no sample cells in {word}"))
    else:
        cols = ["run", "model", "solver", "fitted", "declared", "flag", "order of", "points", "steps"]
        b.append(_table(cols, conv[cols].values.tolist(), flag_col="flag"))
        n_flag = int((conv["flag"] != "").sum())
        b.append(_p(f"{n_flag} solver(s) flagged." if n_flag else "No fitted order disagrees with its declared "
                    "order beyond the tolerance."))

    # --- trajectories ---------------------------------------------------------------------
    b = doc.section(*SECTIONS[5])
    if trajectories:
        p = trajectory_figure(fig_path("trajectories-gmm2d-vp"))
        figures.append(p)
        b.append(_figure(p, "SDE vs ODE on gmm2d-vp (computed fresh from the exact model, not from the store): "
                            "euler_maruyama paths are jagged, heun paths on the probability-flow ODE are smooth; "
                            "both end in the two modes. Background: exact density of x_1 at each t (left, middle) "
                            "and exact p_eps in the plane (right)."))
    else:
        b.append(_p("trajectory figure not requested"))

    # --- best solver per budget -----------------------------------------------------------
    b = doc.section(*SECTIONS[6])
    b.append(_p(f"For each model and NFE budget ({', '.join(map(str, BUDGETS))}): each solver's cell with the most "
                "NFE within the budget (median over seeds), ranked by a distribution metric against exact samples "
                "(sliced W2 when measured, else energy, W2, MMD^2; discretization error when none is). Values at "
                "or below the noise floor cannot be told apart: they share rank 1= (listed by wall time, "
                "cheapest first)."))
    best = best_per_budget(df)
    if not best:
        b.append(_p(f"no successful sample cells in {word}"))
    for entry in best:
        head = f"{entry['model']}" + (f" (run {entry['run']})" if len(run_ids) > 1 else "")
        b.append(_h3(f"{head}: ranked by {METRIC_NAMES[entry['metric']]}"))
        rows = []
        for budget, table in entry["tables"].items():
            if not table:
                rows.append([budget, "-", "no cell within this budget", "", "", "", "", "", "", ""])
            for r in table:
                rows.append([budget, r["rank"], r["solver"], r["nfe"], r["steps"], r["value"], r["floor"],
                             r["discretization"], r["time_median_s"], r["note"]])
        b.append(_table(["NFE budget", "rank", "solver", "NFE", "steps", METRIC_NAMES[entry["metric"]], "floor",
                         "discretization", "wall s", "note"], rows, group_col="NFE budget"))

    # --- failed cells ---------------------------------------------------------------------
    b = doc.section(*SECTIONS[7])
    if failed.empty:
        b.append(_p(f"no failed cells in {word}"))
    else:
        b.append(_p(f"{len(failed)} failed cell(s): left out of figures and rankings, never dropped."))
        rows = [[r.run_id, r.task, r.model, r.label, r.budget, r.steps, r.seed, r.n, r.error]
                for r in failed.itertuples()]
        b.append(_table(["run", "task", "model", "solver", "budget", "steps", "seed", "n", "error"], rows))

    # --- all cells ------------------------------------------------------------------------
    b = doc.section(*SECTIONS[8])
    cols = ["run", "task", "model", "solver", "budget", "steps", "seed", "n", "NFE", "discretization", "sliced W2",
            "MMD^2", "energy", "W2", "logp err/dim", "wall s", "overhead", "error"]
    rows = [[r.run_id, r.task, r.model, r.label, r.budget, r.steps, r.seed, r.n, r.nfe, r.discretization,
             r.sliced_w2, r.mmd2, r.energy, r.w2, r.logp_error_per_dim, r.time_median_s, r.time_overhead,
             "" if r.ok else str(r.error)[:120]] for r in df.itertuples()]
    b.append(_p(f"{len(df)} cell(s). The full rows (all columns) are in the store: "
                f"'sdebench export RUN' writes them as CSV."))
    b.append(_table(cols, rows, collapse=f"show all {len(df)} cells" if len(df) > 80 else None))

    # --- environment ----------------------------------------------------------------------
    b = doc.section(*SECTIONS[9])
    keys = ["suite", "status", "git_commit", "device", "torch", "cuda", "dtype", "threads", "host", "executor",
            "started", "finished", "wall_s", "solve_s", "uuid"]
    for r in run_ids:
        info = runs[r]
        b.append(_h3(f"run {r}"))
        b.append(_table(["key", "value"], [[k, info.get(k)] for k in keys]))
        b.append(_p("suite text:"))
        b.append(_pre(info.get("suite_text") or "(none stored)"))
    b.append(_h3("report generated with"))
    b.append(_table(["key", "value"], [[k, v] for k, v in _versions().items()]
                    + [["generated", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")],
                       ["store", str(store.path)]]))

    suites = ", ".join(dict.fromkeys(str(runs[r].get("suite")) for r in run_ids))
    title = f"sdebench report: run{'s' if len(run_ids) > 1 else ''} {', '.join(map(str, run_ids))}"
    subtitle = f"suite {suites}; {len(df)} cells; models {', '.join(sorted(df['model'].dropna().unique())) or '-'}"
    images = {p: base64.b64encode(p.read_bytes()).decode("ascii") for p in figures}
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    html_path.write_text(_render_html(doc, title, subtitle, images), encoding="utf-8")
    md_path.write_text(_render_md(doc, title, subtitle), encoding="utf-8")
    return {"html": html_path, "markdown": md_path, "figures": figures}
