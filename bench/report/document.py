"""Reports: one self-contained HTML file and one Markdown file with PNG figures, from stored runs.

    write_report(store, [run_id, ...], out_dir=None, sections=None)
        -> {"html": path, "markdown": path, "figures": [...], "charts": n}

writes ``report.html`` (figures embedded as base64 PNG, no external resource) and ``report.md``
(referencing the ``fig-*.png`` files written beside it) into ``out_dir`` (default
``<store dir>/run-<first run id>/``). The report is a loop over the registered sections
(``bench.report.sections``: a plugin adds one with ``register_section``); the built-in ones, each
with a stable id (HTML ``<section id>``, a Markdown anchor) and one builder below:

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
    all-cells          a compact table of every cell, with a column per gated metric measured
    environment        per run: commit, device, versions, threads, host, suite text

Several runs share one report: every figure draws run N with its own line style, and tables carry
a run column. Names from suites and options are HTML-escaped (and entity-escaped in Markdown).
Figures are drawn in one seaborn style (``bench.report.render.figure_style``). In the HTML, each
quality and work-precision figure is followed by an interactive chart (``bench.report.interactive``;
plotly.js inlined once per page).
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from bench.harness.metrics import METRICS
from bench.harness.store import Store
from bench.report import interactive as iv
from bench.report.analysis import BUDGETS, SDE_REFERENCE_RATIO, best_per_budget, convergence_table, measured_metrics
from bench.report.figures import likelihood_figure, quality_figure, trajectory_figure, work_precision_figure
from bench.report.render import Document, chart, figure, heading, paragraph, plus_minus, preformatted, slug, table
from bench.report.sections import ReportContext, ReportSection, register_section, select_sections
from bench.report.tuned import tuned_section

__all__ = ["write_report", "SECTIONS", "BUILTIN"]

HOW_TO_READ = (
    "How to read: NFE = network evaluations actually made (counted). Discretization error = median over samples of "
    "|x - x_ref| / sqrt(d) against a reference from the same x_T (deterministic solvers: float64 dopri8 solution of "
    "the probability-flow ODE; stochastic solvers: fine-grid Euler-Maruyama on the same Brownian path, i.e. strong "
    "error). Distribution metrics compare the samples with exact samples of p_eps; each has a noise floor (the same "
    "metric between two independent exact sets): a value at or below it is unresolved. Several seeds: lines are "
    "medians, shading the seed range. Several runs: one line style per run.")
WORK_PRECISION = (
    "Cost against discretization error, as in numerical-analysis work-precision diagrams: each point is one step "
    "count (median over seeds), lower left is better. Stochastic solvers' errors are strong errors against their "
    "own fine-grid reference, so compare them with each other; deterministic ones against the ODE reference.")
CONVERGENCE = (
    "Fitted order p of discretization error ~ C steps^-p (error = median over seeds), over the asymptotic range "
    "only: finite errors above the reference floor (10 x each model's reference rtol: {floors}), for stochastic "
    "solvers on grids at least {ratio}x coarser than the model's fine-grid reference (sde_steps); the range is the "
    "finest points whose local slopes agree within 0.3; the interval is 95% (least squares with a t quantile, or "
    "the spread of the local slopes with 3 points). Status: 'ok' (the declared order lies in the interval widened "
    "by 0.5, which covers the next term of the error expansion), 'pre-asymptotic at these steps' (fewer than 3 "
    "settled points, or errors falling faster than declared: no verdict at these step counts), 'differs' "
    "(flagged: the widened interval lies wholly below the declared order). Stochastic solvers: the strong order "
    "(pathwise, same Brownian path) against Euler-Maruyama on the solver's own grid refined 2^m-fold, resolved above "
    "3 x that reference's own error (its distance to the same path at half the refinement; cells stored before "
    "this: the ratio rule above); and, next to it, the weak order: the weak error (max over fixed test functions of "
    "|E_q phi - E_p phi| against closed-form expectations, metric 'weak') fitted by the same rules, resolved above "
    "3 standard errors.")
TRAJECTORIES = (
    "SDE vs ODE on gmm2d-vp (computed fresh from the exact model, not from the store): euler_maruyama paths are "
    "jagged, heun paths on the probability-flow ODE are smooth; both end in the two modes. Background: exact "
    "density of x_1 at each t (left, middle) and exact p_eps in the plane (right).")
RANKING = (
    "For each model and NFE budget ({budgets}): each solver's cell with the most NFE within the budget, value = "
    "mean over seeds +- its standard error (the per-cell standard error stored with the metric, else the seed "
    "spread). Rankings: by exact KL(q || p_eps) among the samplers that have it (deterministic samplers on exact "
    "models; no sample-noise floor), and by a distribution metric against exact samples or held-out data for every "
    "sampler (sliced W2 when measured, else energy, W2, MMD^2; discretization error when none is). Ties: the best "
    "solver leads, and every solver whose difference from it is not significant at 5% (two-sided z-test on the two "
    "estimates and their standard errors; conservative for solvers sharing x_T) shares its rank, written 'k='; the "
    "procedure repeats on the rest. Values at or below the noise floor cannot be told apart: they share rank 1= "
    "(listed by wall time, cheapest first), and so do exact KL values within 2 standard errors of 0 and metrics "
    "that were at the floor at fewer steps of the same solver (not recomputed).")
ENVIRONMENT_KEYS = ("suite", "status", "git_commit", "device", "torch", "cuda", "dtype", "threads", "host",
                    "executor", "started", "finished", "wall_s", "solve_s", "uuid")


def _charts(ctx: ReportContext, make, cells, model: str, div_id: str) -> list:
    """The interactive version of a figure (HTML only), when asked for and there is something to draw."""
    markup = make(cells, model, div_id) if ctx.interactive else None
    return [chart(markup)] if markup else []


# --------------------------------------------------------------------------------------------
# the built-in sections: one builder each, ctx -> blocks
# --------------------------------------------------------------------------------------------
def summary(ctx: ReportContext) -> list:
    """The runs (suite, status, cells by task, failures, models, wall time, commit) and how to read."""
    rows = []
    for r, info in ctx.runs.items():
        d = ctx.cells[ctx.cells["run_id"] == r]
        rows.append([r, info.get("suite"), info.get("status"), info.get("started"), len(d),
                     int((d["task"] == "sample").sum()), int((d["task"] == "likelihood").sum()), int((~d["ok"]).sum()),
                     ", ".join(sorted(d["model"].dropna().unique())), info.get("wall_s"),
                     (info.get("git_commit") or "")[:12]])
    blocks = [table(["run", "suite", "status", "started", "cells", "sample", "likelihood", "failed", "models",
                     "wall s", "commit"], rows)]
    if len(ctx.failed):
        blocks.append(paragraph(f"{len(ctx.failed)} cell(s) failed; they are listed under 'Failed cells' and left "
                                "out of the figures and rankings."))
    return blocks + [paragraph(HOW_TO_READ)]


def quality_vs_nfe(ctx: ReportContext) -> list:
    """Per model: every gated sample metric against NFE (and its interactive chart)."""
    blocks = [paragraph(f"no successful sample cells in {ctx.run_word}")] if ctx.sample.empty else []
    for model in ctx.models:
        g = ctx.sample[ctx.sample["model"] == model]
        p = quality_figure(g, model, ctx.styles, ctx.figure_path(f"quality-vs-nfe-{model}"))
        if p is None:
            blocks.append(paragraph(f"{model}: no quality metric values"))
            continue
        blocks.append(figure(p, f"{model}: every quality metric against NFE, log-log, one panel per metric; dashed "
                                "line: noise floor (median over cells), grey: at or below it (unresolved)."))
        blocks += _charts(ctx, iv.quality_chart, g, model, f"iq-{slug(model)}")
    return blocks


def work_precision(ctx: ReportContext) -> list:
    """Per model: wall time and NFE against the discretization error (and its interactive chart)."""
    blocks = [paragraph(WORK_PRECISION)]
    for model in ctx.models:
        g = ctx.sample[ctx.sample["model"] == model]
        p = work_precision_figure(g, model, ctx.styles, ctx.figure_path(f"work-precision-{model}"))
        if p is not None:
            blocks.append(figure(p, f"{model}: wall time (left) and NFE (right) against discretization error."))
            blocks += _charts(ctx, iv.work_precision_chart, g, model, f"iw-{slug(model)}")
    if len(blocks) == 1:
        blocks.append(paragraph(f"no discretization errors in {ctx.run_word}"))
    return blocks


def likelihood(ctx: ReportContext) -> list:
    """Likelihood error per dimension against NFE and tolerance, and the likelihood cells' table."""
    lik = ctx.likelihood
    if lik.empty:
        return [paragraph(f"no likelihood cells in {ctx.run_word}")]
    blocks = []
    p = likelihood_figure(lik, ctx.styles, ctx.figure_path("likelihood"))
    if p is not None:
        blocks.append(figure(p, "Mean absolute error of the ODE log-likelihood per dimension against the exact "
                                "log p_eps, against NFE (left) and the solver tolerance (right)."))
    rows = [[r.run_id, r.model, r.label, r.nfe, r.logp_error_per_dim, r.logp_bias_per_dim, r.logp_stderr,
             r.time_median_s] for r in lik.sort_values(["run_id", "model", "label"]).itertuples()]
    return blocks + [table(["run", "model", "solver", "NFE", "|error|/dim", "bias/dim", "stderr", "wall s"], rows)]


def convergence_order(ctx: ReportContext) -> list:
    """Fitted orders next to the declared ones (``bench.report.analysis.convergence_table``)."""
    conv = convergence_table(ctx.cells)
    ode = conv[~conv["order of"].str.startswith("strong")] if not conv.empty else conv
    floors = ", ".join(f"{m}: {f:.0e}" for m, f in ode.groupby("model")["floor"].first().items()) or "-"
    blocks = [paragraph(CONVERGENCE.format(floors=floors, ratio=SDE_REFERENCE_RATIO))]
    if conv.empty:
        return blocks + [paragraph(f"no sample cells in {ctx.run_word}")]
    cols = ["run", "model", "solver", "fitted", "interval", "declared", "status", "flag", "order of", "points",
            "steps", "floor", "sde_steps", "weak fitted", "weak interval", "weak declared", "weak status"]
    n_flag = int((conv["flag"] != "").sum())
    n_pre = int((conv["status"] == "pre-asymptotic at these steps").sum())
    return blocks + [
        table(cols, conv[cols].values.tolist(), flag_col="flag"),
        paragraph((f"{n_flag} solver(s) flagged: their fitted order is below the declared one beyond the interval. "
                   if n_flag else "No solver is flagged. ")
                  + (f"{n_pre} fit(s) are pre-asymptotic at these step counts (no verdict: run finer steps)."
                     if n_pre else ""))]


def trajectories(ctx: ReportContext) -> list:
    """SDE vs ODE paths over the exact density, solved fresh (not from the store)."""
    if not ctx.trajectories:
        return [paragraph("trajectory figure not requested")]
    return [figure(trajectory_figure(ctx.figure_path("trajectories-gmm2d-vp")), TRAJECTORIES)]


def best_solver(ctx: ReportContext) -> list:
    """Per model and NFE budget: the solvers ranked, ties where the uncertainty cannot separate them."""
    blocks = [paragraph(RANKING.format(budgets=", ".join(map(str, BUDGETS))))]
    best = best_per_budget(ctx.cells)
    if not best:
        blocks.append(paragraph(f"no successful sample cells in {ctx.run_word}"))
    for entry in best:
        head = f"{entry['model']}" + (f" (run {entry['run']})" if len(ctx.runs) > 1 else "")
        label = METRICS[entry["metric"]].label
        rows = []
        for budget, ranked in entry["tables"].items():
            if not ranked:
                rows.append([budget, "-", "no cell within this budget", "", "", "", "", "", "", ""])
            rows += [[budget, r["rank"], r["solver"], r["nfe"], r["steps"], plus_minus(r["value"], r["stderr"]),
                      r["floor"], r["discretization"], r["time_median_s"], r["note"]] for r in ranked]
        blocks += [heading(f"{head}: ranked by {label}"),
                   table(["NFE budget", "rank", "solver", "NFE", "steps", f"{label} (± 1.96 se)", "floor",
                          "discretization", "wall s", "note"], rows, group_col="NFE budget")]
    return blocks


def failed_cells(ctx: ReportContext) -> list:
    """Every failed cell with its error (left out of figures and rankings, never dropped)."""
    failed = ctx.failed
    if failed.empty:
        return [paragraph(f"no failed cells in {ctx.run_word}")]
    rows = [[r.run_id, r.task, r.model, r.label, r.budget, r.steps, r.seed, r.n, r.error] for r in failed.itertuples()]
    return [paragraph(f"{len(failed)} failed cell(s): left out of figures and rankings, never dropped."),
            table(["run", "task", "model", "solver", "budget", "steps", "seed", "n", "error"], rows)]


def all_cells(ctx: ReportContext) -> list:
    """Every cell in one compact table (collapsed beyond 80 rows)."""
    df = ctx.cells
    metrics = measured_metrics(df)  # a column per gated metric of the registry measured in the runs
    cols = ["run", "task", "model", "solver", "budget", "steps", "seed", "n", "NFE", *(m.label for m in metrics),
            "wall s", "overhead", "error"]
    rows = [[r.run_id, r.task, r.model, r.label, r.budget, r.steps, r.seed, r.n, r.nfe,
             *(getattr(r, m.name) for m in metrics), r.time_median_s, r.time_overhead,
             "" if r.ok else str(r.error)[:120]] for r in df.itertuples()]
    return [paragraph(f"{len(df)} cell(s). The full rows (all columns) are in the store: "
                      f"'sdebench export RUN' writes them as CSV."),
            table(cols, rows, collapse=f"show all {len(df)} cells" if len(df) > 80 else None)]


def _versions() -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
         "pandas": pd.__version__, "matplotlib": matplotlib.__version__, "seaborn": sns.__version__}
    for dist in ("torchdiffeq", "torchsde", "POT"):  # read from the metadata: importing POT takes 2 s
        try:
            v[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return v


def environment(ctx: ReportContext) -> list:
    """Per run: its recorded environment and suite text; then the versions the report was made with."""
    blocks = []
    for r, info in ctx.runs.items():
        blocks += [heading(f"run {r}"), table(["key", "value"], [[k, info.get(k)] for k in ENVIRONMENT_KEYS])]
        jobs = ctx.cells.loc[ctx.cells["run_id"] == r, "time_jobs"].max() if "time_jobs" in ctx.cells else None
        if jobs is not None and jobs == jobs and jobs > 1:  # not NaN: cells ran concurrently
            blocks.append(paragraph(f"Timings of run {r} were measured with {int(jobs)} cells running at once (--jobs "
                                    f"{int(jobs)}): they are noisier than a serial run's; quality metrics are "
                                    "unaffected."))
        blocks += [paragraph("suite text:"), preformatted(info.get("suite_text") or "(none stored)")]
    generated = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return blocks + [heading("report generated with"),
                     table(["key", "value"], [[k, v] for k, v in _versions().items()]
                           + [["generated", generated], ["store", str(ctx.store_path)]])]


#: the built-in sections, registered in this order (ids and headings are stable)
BUILTIN = (
    ReportSection("summary", "Summary", summary),
    ReportSection("quality-vs-nfe", "Quality vs NFE", quality_vs_nfe),
    ReportSection("work-precision", "Work-precision", work_precision),
    ReportSection("likelihood", "Likelihood error", likelihood),
    ReportSection("convergence-order", "Convergence order", convergence_order),
    ReportSection("trajectories", "SDE vs ODE trajectories", trajectories),
    ReportSection("best-solver", "Best solver per NFE budget", best_solver),
    ReportSection("tuned-grids", "Tuned vs built-in grids", tuned_section),
    ReportSection("failed-cells", "Failed cells", failed_cells),
    ReportSection("all-cells", "All cells", all_cells),
    ReportSection("environment", "Environment", environment),
)
for _s in BUILTIN:
    register_section(_s.id, _s.heading, _s.build)

#: (id, heading) of the built-in sections, in order (``bench.report.sections.sections()`` has plugins too)
SECTIONS = tuple((s.id, s.heading) for s in BUILTIN)


def _titles(ctx: ReportContext) -> tuple[str, str]:
    ids = ctx.run_ids
    suites = ", ".join(dict.fromkeys(str(ctx.runs[r].get("suite")) for r in ids))
    title = f"sdebench report: run{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
    models = ", ".join(sorted(ctx.cells["model"].dropna().unique())) or "-"
    return title, f"suite {suites}; {len(ctx.cells)} cells; models {models}"


def write_report(store, run_ids: list[int], out_dir=None, *, trajectories: bool = True, interactive: bool = True,
                 sections=None) -> dict:
    """Write ``report.html`` (self-contained) and ``report.md`` + ``fig-*.png`` for ``run_ids``.

    ``store``: a ``bench.harness.store.Store`` (or a path to one). ``out_dir`` defaults to
    ``store.output_dir(run_ids[0])`` (``run-<id>/``, or ``<stem>-run-<id>/`` for a store not named
    sdebench.sqlite). ``sections``: the ids of the sections to write, in that order (default: every
    registered section). Returns {"html": path, "markdown": path, "figures": [png paths], "charts": n}.
    Raises ``InputError`` for an unknown run or section. ``interactive``: each quality and
    work-precision figure also as an interactive chart in the HTML (plotly.js inlined once; skipped
    when plotly is not installed; the Markdown keeps the PNGs)."""
    if not isinstance(store, Store):
        store = Store(store, create=False)
        try:
            return write_report(store, run_ids, out_dir, trajectories=trajectories, interactive=interactive,
                                sections=sections)
        finally:
            store.close()
    chosen = select_sections(sections)
    ctx = ReportContext.from_store(store, run_ids, out_dir, trajectories=trajectories, interactive=interactive)
    doc = Document()
    for spec in chosen:
        doc.section(spec.id, spec.heading).extend(spec.blocks(ctx))
    html_path, md_path = doc.write(ctx.out_dir / "report.html", ctx.out_dir / "report.md", *_titles(ctx),
                                   head=iv.script() if doc.charts() else "")
    return {"html": html_path, "markdown": md_path, "figures": doc.figures(), "charts": doc.charts()}
