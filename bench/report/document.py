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
    tuned-grids        tuned-grid cells against the same solver's best built-in grid at the same NFE,
                       the tuner's held-out objectives and cost, and the grids in log-SNR (bench.report.tuned)
    failed-cells       every cell whose ``error`` is set
    all-cells          a compact table of every cell
    environment        per run: commit, device, versions, threads, host, suite text

Several runs share one report: every figure draws run N with its own line style, and tables carry
a run column. Names from suites and options are HTML-escaped (and entity-escaped in Markdown).
Figures are drawn on bare ``matplotlib.figure.Figure`` objects (Agg; pyplot's global state is not
touched) in one seaborn style. In the HTML, each quality and work-precision figure is followed by an
interactive chart (``bench.report.interactive``; plotly.js inlined once per page).
"""
from __future__ import annotations

import base64
import datetime as dt
import pathlib
import platform
import re

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from bench.harness.metrics import METRICS
from bench.harness.store import Store
from bench.report import interactive as _iv
from bench.report.analysis import BUDGETS, SDE_REFERENCE_RATIO, best_per_budget, convergence_table
from bench.report.data import load_cells
from bench.report.figures import _likelihood_figure, _quality_figure, _Styles, _work_precision_figure, trajectory_figure
from bench.report.render import _Doc, _figure, _h3, _interactive, _p, _pre, _render_html, _render_md, _table
from bench.report.tuned import tuned_section
from solvers import InputError

__all__ = ["write_report", "SECTIONS"]

#: (id, heading) of every section, in order; the ids and headings are stable
SECTIONS = (
    ("summary", "Summary"),
    ("quality-vs-nfe", "Quality vs NFE"),
    ("work-precision", "Work-precision"),
    ("likelihood", "Likelihood error"),
    ("convergence-order", "Convergence order"),
    ("trajectories", "SDE vs ODE trajectories"),
    ("best-solver", "Best solver per NFE budget"),
    ("tuned-grids", "Tuned vs built-in grids"),
    ("failed-cells", "Failed cells"),
    ("all-cells", "All cells"),
    ("environment", "Environment"),
)


def _slug(s) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(s)).strip("_")[:80] or "x"


def _pm(value, se) -> str:
    """value ± 1.96 se (a 95% interval), 3 significant digits; the value alone without an se."""
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.3g} ± {1.96 * se:.2g}" if se is not None and np.isfinite(se) else f"{value:.3g}"


def _run_word(run_ids):
    return "this run" if len(run_ids) == 1 else "these runs"


def _versions() -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
         "pandas": pd.__version__, "matplotlib": matplotlib.__version__, "seaborn": sns.__version__}
    for mod in ("torchdiffeq", "torchsde", "ot"):
        try:
            v["POT" if mod == "ot" else mod] = __import__(mod).__version__
        except Exception:
            pass
    return v


def write_report(store, run_ids: list[int], out_dir: pathlib.Path | None = None, *,
                 trajectories: bool = True, interactive: bool = True) -> dict:
    """Write ``report.html`` (self-contained) and ``report.md`` + ``fig-*.png`` for ``run_ids``.

    ``store``: a ``bench.harness.store.Store`` (or a path to one). ``out_dir`` defaults to
    ``store.output_dir(run_ids[0])`` (``run-<id>/``, or ``<stem>-run-<id>/`` for a store not named
    sdebench.sqlite). Returns {"html": path, "markdown": path, "figures": [png paths]}. Raises
    ``InputError`` for an unknown run. ``interactive``: each quality and work-precision figure also as
    an interactive chart in the HTML (plotly.js inlined once; skipped when plotly is not installed;
    the Markdown keeps the PNGs)."""
    if not isinstance(store, Store):
        store = Store(store, create=False)
        try:
            return write_report(store, run_ids, out_dir, trajectories=trajectories, interactive=interactive)
        finally:
            store.close()
    run_ids = list(dict.fromkeys(int(r) for r in run_ids))
    if not run_ids:
        raise InputError("write_report needs at least one run id")
    runs = {r: store.run(r) for r in run_ids}  # InputError for an unknown run
    out_dir = pathlib.Path(out_dir) if out_dir is not None else store.output_dir(run_ids[0])
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
    interactive = interactive and _iv.available()
    charts: list = []  # the interactive charts' HTML, one per quality / work-precision figure

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
        if interactive:
            charts.append(_iv.quality_chart(sample[sample["model"] == model], model, f"iq-{_slug(model)}"))
            b.extend([_interactive(charts[-1])] if charts[-1] else [])

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
            if interactive:
                charts.append(_iv.work_precision_chart(sample[sample["model"] == model], model, f"iw-{_slug(model)}"))
                b.extend([_interactive(charts[-1])] if charts[-1] else [])
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
    conv = convergence_table(df)
    floors = ", ".join(f"{m}: {f:.0e}" for m, f in conv.groupby("model")["floor"].first().items()) or "-"
    b.append(_p(f"Fitted order p of discretization error ~ C steps^-p (error = median over seeds), over the "
                f"asymptotic range only: finite errors above the reference floor (10 x each model's reference "
                f"rtol: {floors}), for stochastic solvers on grids at least {SDE_REFERENCE_RATIO}x coarser than the "
                "model's fine-grid reference (sde_steps); the range is the finest points whose local slopes agree "
                "within 0.3; the interval is 95% (least squares with a t quantile, or the spread of the local slopes "
                "with 3 points). Status: 'ok' (the declared order lies in the interval widened by 0.5, which covers "
                "the next term of the error expansion), 'pre-asymptotic at these steps' (fewer than 3 settled "
                "points, or errors falling faster than declared: no verdict at these step counts), 'differs' "
                "(flagged: the widened interval lies wholly below the declared order). Stochastic solvers: the "
                "strong order (pathwise, same Brownian path)."))
    if conv.empty:
        b.append(_p(f"no sample cells in {word}"))
    else:
        cols = ["run", "model", "solver", "fitted", "interval", "declared", "status", "flag", "order of", "points",
                "steps", "floor", "sde_steps"]
        b.append(_table(cols, conv[cols].values.tolist(), flag_col="flag"))
        n_flag = int((conv["flag"] != "").sum())
        n_pre = int((conv["status"] == "pre-asymptotic at these steps").sum())
        b.append(_p((f"{n_flag} solver(s) flagged: their fitted order is below the declared one beyond the "
                     "interval. " if n_flag else "No solver is flagged. ")
                    + (f"{n_pre} fit(s) are pre-asymptotic at these step counts (no verdict: run finer steps)."
                       if n_pre else "")))

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
                "NFE within the budget, value = mean over seeds +- its standard error (the per-cell standard error "
                "stored with the metric, else the seed spread). Rankings: by exact KL(q || p_eps) among the "
                "samplers that have it (deterministic samplers on exact models; no sample-noise floor), and by a "
                "distribution metric against exact samples or held-out data for every sampler (sliced W2 when "
                "measured, else energy, W2, MMD^2; discretization error when none is). Ties: the best solver "
                "leads, and every solver whose difference from it is not significant at 5% (two-sided z-test on "
                "the two estimates and their standard errors; conservative for solvers sharing x_T) shares its "
                "rank, written 'k='; the procedure repeats on the rest. Values at or below the noise floor "
                "cannot be told apart: they share rank 1= (listed by wall time, cheapest first), and so do "
                "exact KL values within 2 standard errors of 0 and metrics that were at the floor at fewer "
                "steps of the same solver (not recomputed)."))
    best = best_per_budget(df)
    if not best:
        b.append(_p(f"no successful sample cells in {word}"))
    for entry in best:
        head = f"{entry['model']}" + (f" (run {entry['run']})" if len(run_ids) > 1 else "")
        label = METRICS[entry["metric"]].label
        b.append(_h3(f"{head}: ranked by {label}"))
        rows = []
        for budget, table in entry["tables"].items():
            if not table:
                rows.append([budget, "-", "no cell within this budget", "", "", "", "", "", "", ""])
            for r in table:
                rows.append([budget, r["rank"], r["solver"], r["nfe"], r["steps"], _pm(r["value"], r["stderr"]),
                             r["floor"], r["discretization"], r["time_median_s"], r["note"]])
        b.append(_table(["NFE budget", "rank", "solver", "NFE", "steps", f"{label} (± 1.96 se)", "floor",
                         "discretization", "wall s", "note"], rows, group_col="NFE budget"))

    # --- tuned vs built-in grids -----------------------------------------------------------
    tuned_section(doc.section(*SECTIONS[7]), df, fig_path, figures, word)

    # --- failed cells ---------------------------------------------------------------------
    b = doc.section(*SECTIONS[8])
    if failed.empty:
        b.append(_p(f"no failed cells in {word}"))
    else:
        b.append(_p(f"{len(failed)} failed cell(s): left out of figures and rankings, never dropped."))
        rows = [[r.run_id, r.task, r.model, r.label, r.budget, r.steps, r.seed, r.n, r.error]
                for r in failed.itertuples()]
        b.append(_table(["run", "task", "model", "solver", "budget", "steps", "seed", "n", "error"], rows))

    # --- all cells ------------------------------------------------------------------------
    b = doc.section(*SECTIONS[9])
    cols = ["run", "task", "model", "solver", "budget", "steps", "seed", "n", "NFE", "discretization", "sliced W2",
            "MMD^2", "energy", "W2", "logp err/dim", "wall s", "overhead", "error"]
    rows = [[r.run_id, r.task, r.model, r.label, r.budget, r.steps, r.seed, r.n, r.nfe, r.discretization,
             r.sliced_w2, r.mmd2, r.energy, r.w2, r.logp_error_per_dim, r.time_median_s, r.time_overhead,
             "" if r.ok else str(r.error)[:120]] for r in df.itertuples()]
    b.append(_p(f"{len(df)} cell(s). The full rows (all columns) are in the store: "
                f"'sdebench export RUN' writes them as CSV."))
    b.append(_table(cols, rows, collapse=f"show all {len(df)} cells" if len(df) > 80 else None))

    # --- environment ----------------------------------------------------------------------
    b = doc.section(*SECTIONS[10])
    keys = ["suite", "status", "git_commit", "device", "torch", "cuda", "dtype", "threads", "host", "executor",
            "started", "finished", "wall_s", "solve_s", "uuid"]
    for r in run_ids:
        info = runs[r]
        b.append(_h3(f"run {r}"))
        b.append(_table(["key", "value"], [[k, info.get(k)] for k in keys]))
        jobs = df.loc[df["run_id"] == r, "time_jobs"].max() if "time_jobs" in df else None
        if jobs is not None and jobs == jobs and jobs > 1:  # not NaN: cells ran concurrently
            b.append(_p(f"Timings of run {r} were measured with {int(jobs)} cells running at once (--jobs "
                        f"{int(jobs)}): they are noisier than a serial run's; quality metrics are unaffected."))
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
    head = _iv.script() if any(charts) else ""
    html_path.write_text(_render_html(doc, title, subtitle, images, head), encoding="utf-8")
    md_path.write_text(_render_md(doc, title, subtitle), encoding="utf-8")
    return {"html": html_path, "markdown": md_path, "figures": figures, "charts": sum(1 for c in charts if c)}
