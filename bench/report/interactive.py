"""Interactive versions of the report's quality-vs-NFE and work-precision figures (plotly).

The HTML report inlines plotly.js once (``script()``, ~4.8 MB, so the page works offline) and each
chart as a ``<div>`` plus a few lines of ``Plotly.newPlot`` with the figure's JSON, written here as
plotly.js reads it (``<``, ``>`` and ``&`` escaped, so names from suites cannot close the script;
plotly's Python figure objects validated every property, ~1 s a chart). The Markdown keeps the PNGs.

Panels are faceted by solver family (``family``: single-step ODE, multistep ODE, reverse SDE,
adaptive; from the cell's recorded solver metadata and the registered class), so no panel holds
more than a handful of lines; rows are metrics. Hover: solver, family, options, NFE, value +-
standard error (``<metric>_se`` where stored), seed range, run. Legend: click a solver to hide or
show it in every panel (double-click: only it); the buttons above toggle a whole family. Without
plotly installed, ``available()`` is False and the report keeps its static figures only.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from bench.harness.metrics import METRICS
from bench.report.analysis import measured_metrics
from bench.report.data import solver_class
from bench.report.render import count_ticks

__all__ = ["available", "script", "family", "FAMILIES", "quality_chart", "work_precision_chart"]

FAMILIES = ("single-step ODE", "multistep ODE", "reverse SDE", "adaptive")
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
_DASH = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def available() -> bool:
    try:
        import plotly  # noqa: F401
    except ImportError:
        return False
    return True


def script() -> str:
    """plotly.js, inlined once per page."""
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


def _is_multistep(cls) -> bool:
    """The class's ``multistep`` metadata (``solvers.Solver``): it reuses earlier network outputs."""
    return cls is not None and bool(cls.multistep)


def family(cell) -> str:
    """The solver family of a cell: from its recorded metadata (kind, adaptive, stochastic), and the
    registered class for the multistep marker (a subclass of either multistep base)."""
    meta = cell.solver_meta or {}
    cls = solver_class(cell.solver)
    if meta.get("adaptive", getattr(cls, "adaptive", False)):
        return "adaptive"
    kind = meta.get("kind", getattr(cls, "kind", "ode"))
    if kind != "ode" or meta.get("stochastic", False):
        return "reverse SDE"
    return "multistep ODE" if _is_multistep(cls) else "single-step ODE"


def _opts(o) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(o.items())) or "defaults"


def _points(g, x, y, se_col=None, agg_by=None):
    """Median over seeds per (run, series, agg_by): x, y, se, seed range, NFE, options."""
    agg_by = agg_by or x
    g = g[np.isfinite(g[x]) & np.isfinite(g[y])]
    rows = []
    for (rid, series, _), s in g.groupby(["run_id", "series", agg_by], sort=True):
        se = float(s[se_col].median()) if se_col and se_col in s and np.isfinite(s[se_col]).any() else math.nan
        rows.append({"run_id": rid, "series": series, "x": float(s[x].median()), "y": float(s[y].median()),
                     "se": se, "lo": float(s[y].min()), "hi": float(s[y].max()), "seeds": len(s),
                     "nfe": float(s["nfe"].median()), "opts": _opts(s["opts"].iloc[0]),
                     "family": s["family"].iloc[0], "solver": s["solver"].iloc[0]})
    return pd.DataFrame(rows)


def _hover(p, what, x_label=None):
    pm = ["" if not np.isfinite(se) else f" ± {se:.3g}" for se in p["se"]]
    spread = [f"{n} seed(s)" + (f", range {lo:.3g}–{hi:.3g}" if n > 1 else "")
              for n, lo, hi in zip(p["seeds"], p["lo"], p["hi"])]
    custom = np.array([[s, f, o, f"{int(n)}" if np.isfinite(n) else "–", f"{y:.4g}{e}", sp, str(r)]
                       for s, f, o, n, y, e, sp, r in zip(p["series"], p["family"], p["opts"], p["nfe"], p["y"], pm,
                                                          spread, p["run_id"])], dtype=object)
    tmpl = ("<b>%{customdata[0]}</b><br>%{customdata[1]}; options: %{customdata[2]}<br>NFE %{customdata[3]}"
            + (f"<br>{x_label}: %{{x:.4g}}" if x_label else "")
            + f"<br>{what}: %{{customdata[4]}}<br>%{{customdata[5]}}; run %{{customdata[6]}}<extra></extra>")
    return custom, tmpl


def _log_ticks(values):
    """Decades, with 2 and 5 in between when the data spans less than two decades."""
    lo, hi = float(values.min()), float(values.max())
    ks = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    mult = (1,) if hi / lo > 100 else (1, 2, 5)
    ticks = [m * 10.0**k for k in ks for m in mult if lo / 1.6 <= m * 10.0**k <= hi * 1.6]
    return ticks if len(ticks) >= 2 else None


class _Chart:
    """A grid of panels (rows x families) with one legend entry per solver and family toggles.

    Written as plotly.js's JSON directly (traces, axes, annotations, shapes: what plotly's
    ``make_subplots`` / ``add_scatter`` / ``add_hline`` would produce, without their per-property
    validation, which took ~1 s a chart): ``_domains`` is make_subplots's grid."""

    SPACING = 0.05  # between columns; between rows ROW_SPACING (none for one row)
    ROW_SPACING = 0.09

    def __init__(self, df, rows, title, row_titles):
        self.fams = [f for f in FAMILIES if f in set(df["family"])]
        self.series = sorted(df["series"].unique(), key=lambda s: (FAMILIES.index(
            df.loc[df["series"] == s, "family"].iloc[0]), s))
        self.color = {s: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(self.series)}
        self.runs = sorted(df["run_id"].unique())
        self.title, self.rows, self.legend_done, self.traces = title, rows, set(), []
        self.data: list = []
        self.layout: dict = {"annotations": [], "shapes": []}
        self.filled: set = set()  # panels with a trace (a floor line is drawn only there)
        xs, ys = self._domains(rows, len(self.fams), row_titles=bool(row_titles))
        for row in range(1, rows + 1):
            for col in range(1, len(self.fams) + 1):
                k = self._k(row, col)
                self.layout[f"xaxis{k}"] = {"anchor": f"y{k}", "domain": xs[col - 1]}
                self.layout[f"yaxis{k}"] = {"anchor": f"x{k}", "domain": ys[row - 1]}
        title_font = {"size": 16}
        for fam, (lo, hi) in zip(self.fams, xs):
            self.layout["annotations"].append({"font": title_font, "showarrow": False, "text": fam, "x": (lo + hi) / 2,
                                               "xanchor": "center", "xref": "paper", "y": 1.0, "yanchor": "bottom",
                                               "yref": "paper"})
        for text, (lo, hi) in zip(row_titles or (), ys):
            self.layout["annotations"].append({"font": title_font, "showarrow": False, "text": text, "textangle": 90,
                                               "x": xs[-1][1], "xanchor": "left", "xref": "paper", "y": (lo + hi) / 2,
                                               "yanchor": "middle", "yref": "paper"})

    @classmethod
    def _domains(cls, rows, cols, row_titles):
        """Axis domains as plotly's make_subplots lays them out: columns over [0, 0.98] when rows
        have titles (else [0, 1]), rows from the top."""
        right, v = (0.98 if row_titles else 1.0), (cls.ROW_SPACING if rows > 1 else 0.0)
        w, h = (right - cls.SPACING * (cols - 1)) / cols, (1.0 - v * (rows - 1)) / rows
        xs = [[c * (w + cls.SPACING), c * (w + cls.SPACING) + w] for c in range(cols)]
        ys = [[1.0 - r * (h + v) - h, 1.0 - r * (h + v)] for r in range(rows)]
        return xs, ys

    def _k(self, row, col) -> str:
        k = (row - 1) * len(self.fams) + col
        return "" if k == 1 else str(k)

    def add(self, p, row, what, errors=True, x_label=None):
        for col, fam in enumerate(self.fams, 1):
            for (rid, series), s in p[p["family"] == fam].groupby(["run_id", "series"], sort=True):
                s = s.sort_values("x")
                custom, tmpl = _hover(s, what, x_label)
                name = series if len(self.runs) == 1 else f"{series} (run {rid})"
                k = self._k(row, col)
                trace = {"type": "scatter", "x": s["x"].tolist(), "y": s["y"].tolist(), "mode": "lines+markers",
                         "name": name, "legendgroup": name, "showlegend": name not in self.legend_done,
                         "customdata": custom.tolist(), "hovertemplate": tmpl, "xaxis": f"x{k}", "yaxis": f"y{k}",
                         "legendrank": 1000 + self.series.index(series),
                         "line": {"color": self.color[series], "width": 1.6,
                                  "dash": _DASH[self.runs.index(rid) % len(_DASH)]},
                         "marker": {"size": 6}}
                if errors and np.isfinite(s["se"]).any():
                    trace["error_y"] = {"type": "data", "array": s["se"].fillna(0).tolist(), "visible": True,
                                        "thickness": 1, "width": 2}
                self.data.append(trace)
                self.filled.add(k)
                self.legend_done.add(name)
                self.traces.append(fam)

    def axis(self, row, axis, values, title, counts=False):
        values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
        log = bool(len(values)) and (values > 0).all()
        ticks = (count_ticks(values, 1.25, 10) if counts else _log_ticks(values)) if log else None
        for col in range(1, len(self.fams) + 1):
            a = self.layout[f"{axis}axis{self._k(row, col)}"]
            a.update(type="log" if log else "linear", showgrid=True, gridcolor="#e9ecef", zeroline=False,
                     linecolor="#adb5bd", mirror=True, tickfont={"size": 10})
            if axis == "x" or col == 1:
                a["title"] = {"text": title, "font": {"size": 11}}
            if ticks:
                a.update(tickvals=list(ticks), ticktext=[f"{t:g}" for t in ticks])

    def floor(self, row, floors):
        floors = [f for f in floors if np.isfinite(f)]
        if floors:
            y, line = float(np.median(floors)), {"color": "#868e96", "dash": "dash", "width": 1}
            for col in range(1, len(self.fams) + 1):
                k = self._k(row, col)
                if k in self.filled:
                    self.layout["shapes"].append({"type": "line", "line": line, "x0": 0, "x1": 1,
                                                  "xref": f"x{k} domain", "y0": y, "y1": y, "yref": f"y{k}"})

    def html(self, div_id) -> str:
        n = len(self.traces)
        buttons = [dict(label="all families", method="restyle", args=[{"visible": True}, list(range(n))])]
        for fam in self.fams:
            idx = [i for i, f in enumerate(self.traces) if f == fam]
            buttons.append(dict(label=f"{fam} on/off", method="restyle", args=[{"visible": "legendonly"}, idx],
                                args2=[{"visible": True}, idx]))
        height, top, bottom = 250 * self.rows + 170, 135, 50
        self.layout.update(
            height=height, margin=dict(l=70, r=20, t=top, b=bottom),
            title=dict(text=self.title, font={"size": 14}, x=0.01), font=dict(family="DejaVu Sans, Arial", size=11),
            hovermode="closest", legend=dict(font={"size": 10}, groupclick="togglegroup"),
            updatemenus=[dict(type="buttons", direction="right", buttons=buttons, x=0.0, xanchor="left",
                              y=1 + 34 / (height - top - bottom), yanchor="bottom", showactive=False,
                              font={"size": 10})])
        spec = _script_json({"data": self.data, "layout": self.layout})
        return (f'<div class="plot" id="{div_id}"></div><script type="text/javascript">(function(){{'
                f'var s={spec};Plotly.newPlot("{div_id}",s.data,s.layout,{{responsive:true,displaylogo:false}});'
                f"}})();</script>")


def _script_json(obj) -> str:
    """JSON safe inside a <script> element: <, > and & escaped (as plotly's own to_json does), so
    no name from a suite can end the script; NaN and infinities written as null (as plotly does)."""
    text = json.dumps(_finite(obj), default=_json_default, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _json_default(v):
    if isinstance(v, np.generic):
        return _finite(v.item())
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _with_family(g):
    return g.assign(family=[family(c) for c in g["cell"]])


def quality_chart(g: pd.DataFrame, model: str, div_id: str) -> str | None:
    """Every gated sample metric against NFE: one row per metric, one column per family."""
    names = [m.name for m in measured_metrics(g, "sample")]
    if not names:
        return None
    g = _with_family(g)
    chart = _Chart(g, len(names), f"{model}: quality vs NFE (interactive; median over seeds, bars ± standard "
                                  "error where stored, dashed: noise floor)", [METRICS[m].label for m in names])
    for row, m in enumerate(names, 1):
        chart.add(_points(g, "nfe", m, m + "_se"), row, METRICS[m].label)
        chart.axis(row, "x", g["nfe"], "NFE", counts=True)
        chart.axis(row, "y", g[m], METRICS[m].label)
        if m + "_floor" in g:
            chart.floor(row, g[m + "_floor"])
    return chart.html(div_id)


def work_precision_chart(g: pd.DataFrame, model: str, div_id: str) -> str | None:
    """Wall time and NFE against the discretization error, one column per family."""
    g = g[np.isfinite(g["discretization"]) & (g["discretization"] > 0)]
    if g.empty:
        return None
    g = _with_family(g).assign(_key=g["steps"].fillna(g["nfe"]))
    chart = _Chart(g, 2, f"{model}: work-precision (interactive; lower left is better)",
                   ["wall time (s)", "NFE"])
    label = METRICS["discretization"].label
    for row, y in ((1, "time_median_s"), (2, "nfe")):
        p = _points(g, "discretization", y, None, "_key")
        chart.add(p, row, "time (s)" if row == 1 else "NFE", errors=False, x_label=label)
        chart.axis(row, "x", g["discretization"], label)
        chart.axis(row, "y", g[y], "wall time per call (s)" if row == 1 else "NFE", counts=row == 2)
    return chart.html(div_id)
