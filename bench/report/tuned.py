"""The report's "Tuned vs built-in grids" section: tuned-grid cells against the same solver's
built-in-grid cells of the same run at the same NFE, and a figure of the grids themselves.

    tuned_table(df) -> DataFrame    one row per tuned cell (median over seeds)
    grids_figure(df, path) -> path | None   node positions in log-SNR, one row per tuned grid
    tuned_section(ctx) -> [Block]   the section's builder (registered as "tuned-grids" by bench.report.document)
"""
from __future__ import annotations

import math
import pathlib

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from bench.harness.tuned import is_tuned
from bench.report.analysis import RANKING_PREFERENCE, first_measured
from bench.report.data import solver_label
from bench.report.render import DPI, Block, figure, figure_style, number_text, paragraph, table

__all__ = ["COLUMNS", "distribution_metric", "grids_figure", "markdown", "tuned_section", "tuned_table"]

#: distribution metrics, in order of preference: FD-digits where measured, then the rankings' preference
DISTRIBUTION = ("fd_digits", *RANKING_PREFERENCE)
COLUMNS = ["run", "model", "NFE", "solver", "tuned grid", "best built-in", "discretization (built-in)",
           "discretization (tuned)", "ratio", "metric", "built-in", "tuned", "metric ratio",
           "tuner held-out (built-in)", "tuner held-out (tuned)", "tuning NFE", "tuning s"]
MAX_FIGURE_ROWS = 24
SECTION_TEXT = (
    "Each tuned-grid cell against the same solver (same options) at the same NFE budget in the same run, on its "
    "best built-in grid (lowest discretization error among the run's built-in-grid cells; the tuner's own best when "
    "the run has none). Errors are measured on the evaluation x_T, which the tuning never saw; ratio = tuned / "
    "built-in (< 1: the tuned grid is better). 'tuner held-out' is the tuner's own median error on its held-out "
    "x_T; tuning cost is the teacher and solves it spent, paid once per model, solver, options, steps and method "
    "(kept in the store).")


def distribution_metric(g: pd.DataFrame) -> str | None:
    """The first of ``DISTRIBUTION`` measured in ``g`` (None when none is)."""
    return first_measured(g, DISTRIBUTION)


def _base_label(cell) -> str:
    return solver_label(cell.solver, cell.options)


def _med(g, col):
    return float(g[col].median()) if col in g and len(g) and np.isfinite(g[col]).any() else math.nan


def _ratio(a, b):
    return a / b if np.isfinite(a) and np.isfinite(b) and b > 0 else math.nan


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    s = df[(df["task"] == "sample") & df["ok"]].copy()
    if s.empty:
        return s
    s["tuned"] = [is_tuned(c.grid) for c in s["cell"]]
    s["base"] = [_base_label(c) for c in s["cell"]]
    s["size"] = [c.budget if c.budget else c.steps for c in s["cell"]]
    return s


def tuned_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (run, model, NFE budget, solver with options, tuned grid): the tuned cell's errors, the
    best built-in grid's (lowest discretization error among the same solver's built-in-grid cells
    of the run at that budget; the tuner's best built-in when the run has none), their ratio, the
    distribution metric likewise, the tuner's own held-out objectives and the tuning cost."""
    s = _frame(df)
    rows = []
    if s.empty or not s["tuned"].any():
        return pd.DataFrame(columns=COLUMNS)
    for (rid, model), g in s.groupby(["run_id", "model"], sort=True):
        metric = distribution_metric(g)
        for (base, size, grid), t in g[g["tuned"]].groupby(["base", "size", "grid"], sort=True):
            builtin = g[(~g["tuned"]) & (g["base"] == base) & (g["size"] == size)]
            per_grid = {k: v for k, v in builtin.groupby(builtin["grid"].fillna("default"))}
            best = min(per_grid, key=lambda k: _med(per_grid[k], "discretization"), default=None)
            b = per_grid.get(best, builtin.iloc[:0])
            tuning = t["cell"].iloc[0].tuning
            if best is None:
                best = f"{tuning.get('builtin_grid')} (tuner's)"
            d_b, d_t = _med(b, "discretization"), _med(t, "discretization")
            m_b, m_t = (_med(b, metric), _med(t, metric)) if metric else (math.nan, math.nan)
            rows.append([rid, model, int(size), base, grid, best, d_b, d_t, _ratio(d_t, d_b), metric or "-", m_b,
                         m_t, _ratio(m_t, m_b), tuning.get("builtin_test"), tuning.get("objective_test"),
                         tuning.get("cost_nfe"), tuning.get("wall_s")])
    return pd.DataFrame(rows, columns=COLUMNS)


def grids_figure(df: pd.DataFrame, path: pathlib.Path) -> pathlib.Path | None:
    """Node positions in log-SNR lambda = log(alpha / sigma): one row per tuned grid (model, solver,
    steps, method), each with the built-in grids of the same steps beneath it."""
    s = _frame(df)
    if s.empty or not s["tuned"].any():
        return None
    seen, entries = set(), []
    for c in s[s["tuned"]]["cell"]:
        key = (c.model, _base_label(c), c.steps, c.grid)
        if c.times is None or key in seen:
            continue
        seen.add(key)
        entries.append((key, c))
    entries = sorted(entries, key=lambda e: e[0])[:MAX_FIGURE_ROWS]
    if not entries:
        return None
    with figure_style():
        fig = Figure(figsize=(11, 1.0 + 1.25 * len(entries)), layout="constrained")
        axes = fig.subplots(len(entries), 1, squeeze=False)[:, 0]
        for ax, ((model, base, steps, grid), c) in zip(axes, entries):
            _grid_panel(ax, c.model_ref(), grid, steps, np.asarray(c.times))
            ax.set_title(f"{model}: {base}, {steps} steps", fontsize=9, loc="left")
        axes[-1].set_xlabel("log-SNR lambda = log(alpha / sigma)   (T on the left, eps on the right)")
        fig.savefig(path, format="png", dpi=DPI)
    return path


def _grid_panel(ax, model, grid: str, steps: int, times):
    """A tuned grid's nodes (dots, top row) and the built-in grids of the same steps (ticks) in log-SNR;
    ``model``: what loads the cell's model (``Cell.model_ref``)."""
    import solvers
    from bench.zoo import models

    m = models.load(model)
    rows = {f"{grid}": times}
    for k in solvers.grids.GRIDS:
        if k == "tan" and getattr(m, "data_std", None) is None:
            continue
        kw = {"data_std": m.data_std} if k == "tan" else {}
        rows[k] = solvers.make_grid(m.sde, steps, k, **kw).numpy()
    names = list(rows)
    for i, name in enumerate(names):
        lam = m.sde.lam(torch.tensor(rows[name], dtype=torch.float64)).numpy()
        y = len(names) - 1 - i
        ax.hlines(y, lam.min(), lam.max(), color="0.85", lw=1)
        ax.plot(lam, np.full_like(lam, y), "o" if i == 0 else "|", ms=6 if i == 0 else 10,
                color="#d6336c" if i == 0 else "0.25")
    ax.set_yticks(range(len(names)), names[::-1], fontsize=8)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.grid(axis="y", visible=False)


def tuned_section(ctx) -> list[Block]:
    """The report section (``bench.report.sections``): the table of ``tuned_table`` and the grids'
    figure, written to ``ctx.figure_path("tuned-grids")``."""
    t = tuned_table(ctx.cells)
    if t.empty:
        return [paragraph(f"no tuned-grid cells in {ctx.run_word} (a suite asks for them with grids = [..., "
                          "\"tuned\"])")]
    blocks = [paragraph(SECTION_TEXT), table(list(t.columns), t.values.tolist(), group_col="model")]
    p = grids_figure(ctx.cells, ctx.figure_path("tuned-grids"))
    if p is not None:
        blocks.append(figure(p, "Grid nodes in log-SNR: per tuned grid (dots, top row) the built-in grids of the same "
                                "steps (ticks) beneath it."))
    return blocks


def markdown(df: pd.DataFrame, title: str = "Tuned vs built-in grids") -> str:
    """Every sample cell of the solvers that have a tuned cell, one row per grid, per model and NFE
    budget: the teacher distance (discretization error on the evaluation x_T, which tuning never
    saw), the model's distribution metric and, for tuned grids, the tuner's figures; then the
    summary table of ``tuned_table``."""
    s = _frame(df)
    lines = [f"# {title}", ""]
    if s.empty or not s["tuned"].any():
        return "\n".join(lines + ["no tuned-grid cells", ""])
    for (model, size), g in s.groupby(["model", "size"], sort=True):
        metric = distribution_metric(g)
        lines += [f"## {model}, NFE budget {int(size)}", "",
                  f"| solver | grid | NFE | teacher distance | {metric or '-'} | tuner held-out | tuning NFE "
                  "| tuning s |",
                  "|---|---|---|---|---|---|---|---|"]
        bases = sorted(set(g.loc[g["tuned"], "base"]))
        for base in bases:
            b = g[g["base"] == base].copy()
            for r in b.sort_values("discretization").itertuples():
                tu = r.cell.tuning
                val = getattr(r, metric) if metric else math.nan
                lines.append(f"| {base} | {r.grid or 'default'}{' **(tuned)**' if r.tuned else ''} | {int(r.nfe)} | "
                             f"{r.discretization:.4g} | {val:.4g} | {_dash(tu.get('objective_test'))} | "
                             f"{_dash(tu.get('cost_nfe'))} | {_dash(tu.get('wall_s'))} |")
        lines.append("")
    t = tuned_table(df)
    lines += ["## Summary: tuned / best built-in (same run, same NFE)", "",
              "| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(_dash(v) for v in row) + " |" for row in t.values.tolist()]
    return "\n".join(lines) + "\n"


def _dash(v) -> str:
    return number_text(v, missing="-")


if __name__ == "__main__":  # python -m bench.report.tuned STORE RUN [OUT.md]
    import sys

    from bench.harness.store import Store
    from bench.report.data import load_cells

    store = Store(sys.argv[1])
    text = markdown(load_cells(store, [int(sys.argv[2])]))
    if len(sys.argv) > 3:
        pathlib.Path(sys.argv[3]).write_text(text)
    print(text)
