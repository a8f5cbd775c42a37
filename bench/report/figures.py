"""The report's figures, drawn on bare ``matplotlib.figure.Figure`` objects (Agg; pyplot's global
state is not touched) in ``bench.report.render.figure_style``; each is written as a PNG to ``path``
and its path returned (None where there is nothing to draw):

    quality_figure(cells, model, styles, path)        every gated sample metric against NFE, a panel each
    work_precision_figure(cells, model, styles, path) wall time and NFE against the discretization error
    likelihood_figure(cells, styles, path)            likelihood error against NFE and tolerance
    trajectory_figure(path, ...)                      SDE vs ODE paths over the exact density (fresh solves)

``cells``: rows of ``bench.report.data.load_cells``; ``styles``: a ``render.SeriesStyles``.
"""
from __future__ import annotations

import math
import pathlib

import numpy as np
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

import solvers
from bench.harness.metrics import METRICS
from bench.report.analysis import measured_metrics
from bench.report.render import DPI, count_ticks, figure_style
from bench.zoo import models
from bench.zoo.models import GaussianMixture

__all__ = ["quality_figure", "work_precision_figure", "likelihood_figure", "trajectory_figure"]

SDE_PATH_COLOR, ODE_PATH_COLOR = "#e8590c", "#111111"


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
    ticks = count_ticks(values)
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    if ticks:
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
    with the min-max spread shaded when there are several seeds, and error bars of +-1.96 standard
    errors (the stored ``<y>_se``, root-mean-square over seeds) where the metric has one."""
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
        if y + "_se" in s and np.isfinite(s[y + "_se"]).any():
            se = s.groupby(agg_by)[y + "_se"].apply(lambda v: float(np.sqrt(np.nanmean(v.to_numpy(float) ** 2))))
            half = 1.96 * se.reindex(a.index).to_numpy(float)
            ym = a["ym"].to_numpy(float)
            low = np.where(ym > 0, np.minimum(half, 0.999 * ym), half)  # a log axis cannot go below 0
            ax.errorbar(a["xm"], a["ym"], yerr=[np.nan_to_num(low), np.nan_to_num(half)], fmt="none",
                        ecolor=styles.color[series], elinewidth=1, capsize=2, alpha=0.8)
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


def quality_figure(g, model, styles, path):
    metrics = [m.name for m in measured_metrics(g, "sample")]
    if not metrics:
        return None
    with figure_style():
        ncols = min(3, len(metrics))
        nrows = math.ceil(len(metrics) / ncols)
        fig = Figure(figsize=(4.3 * ncols + 3.2, 3.6 * nrows + 0.5), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        series = set()
        for ax, m in zip(axes, metrics):
            series |= _lines(ax, g, "nfe", m, styles)
            floors = g[m + "_floor"] if METRICS[m].floor else []
            _count_axis(ax, "x", g["nfe"])
            _set_log(ax, "y", list(g[m]) + list(floors), floors)
            _draw_floor(ax, floors)
            ax.set_title(METRICS[m].label)
            ax.set_xlabel("NFE")
            ax.set_ylabel(METRICS[m].tex, fontsize=9)
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        fig.suptitle(f"{model}: quality vs NFE (median over seeds; shaded: seed range; grey: below noise floor)",
                     fontsize=11)
        return _finish(fig, styles, series, path)


def work_precision_figure(g, model, styles, path):
    g = g[np.isfinite(g["discretization"]) & (g["discretization"] > 0)]
    if g.empty:
        return None
    with figure_style():
        fig = Figure(figsize=(11.5, 4.2), layout="constrained")
        ax_t, ax_n = fig.subplots(1, 2)
        key = g["steps"].fillna(g["nfe"])
        g = g.assign(_key=key)
        series = _lines(ax_t, g[np.isfinite(g["time_median_s"])], "discretization", "time_median_s", styles, "_key")
        series |= _lines(ax_n, g[np.isfinite(g["nfe"])], "discretization", "nfe", styles, "_key")
        for ax in (ax_t, ax_n):
            ax.set_xscale("log")
            ax.set_yscale("log")
        _count_axis(ax_n, "y", g["nfe"])
        for ax, ylabel in ((ax_t, "wall time per call (s, median of repeats)"), (ax_n, "NFE")):
            ax.set_xlabel(METRICS["discretization"].tex, fontsize=9)
            ax.set_ylabel(ylabel)
        ax_t.set_title("work-precision: time")
        ax_n.set_title("work-precision: NFE")
        fig.suptitle(f"{model}: cost vs discretization error (lower left is better)", fontsize=11)
        return _finish(fig, styles, series, path)


def likelihood_figure(g, styles, path):
    g = g[np.isfinite(g["logp_error_per_dim"])]
    if g.empty:
        return None
    g = g.assign(rtol=[float(o["rtol"]) if isinstance(o.get("rtol"), (int, float)) else np.nan for o in g["opts"]])
    with figure_style():
        fig = Figure(figsize=(11.5, 4.2), layout="constrained")
        ax_n, ax_r = fig.subplots(1, 2)
        series = set()
        for _, gm in g.groupby(["model"], sort=True):
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
            ax.set_ylabel(METRICS["logp_error_per_dim"].tex, fontsize=9)
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
    x_T = m.sample_prior(paths, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out_s = solvers.sample(m, sde_solver, steps=sde_steps, x_T=x_T, seed=seed, return_trajectory=True)
    out_o = solvers.sample(m, ode_solver, steps=ode_steps, x_T=x_T, seed=seed, return_trajectory=True)
    cmap = sns.light_palette("#2f6690", as_cmap=True)
    with figure_style():
        fig = Figure(figsize=(16, 4.6), layout="constrained")
        axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.25, 1.25, 1]})
        _marginal_panels(fig, axes[:2], m, ((out_s, SDE_PATH_COLOR, sde_solver, "reverse SDE"),
                                            (out_o, ODE_PATH_COLOR, ode_solver, "probability-flow ODE")), cmap)
        k_plane = min(plane_sde_paths, paths)
        _plane_panel(axes[2], m, x_T, ((out_s, SDE_PATH_COLOR, 0.8, k_plane), (out_o, ODE_PATH_COLOR, 1.6, paths)),
                     cmap)
        handles = [Line2D([], [], color=SDE_PATH_COLOR, lw=1.5,
                          label=f"{sde_solver} (stochastic; {k_plane} of {paths})"),
                   Line2D([], [], color=ODE_PATH_COLOR, lw=1.5, label=f"{ode_solver} (deterministic)"),
                   Line2D([], [], color="0.15", marker="x", ls="", label="x_T (shared)")]
        axes[2].legend(handles=handles, loc="lower right", fontsize=8, frameon=True)
        fig.suptitle(f"{model_name}: {paths} paths from the same x_T (exact p_T), seed {seed}; "
                     "jagged stochastic paths, smooth deterministic ones", fontsize=11)
        path = pathlib.Path(path)
        fig.savefig(path, format="png", dpi=DPI)
        return path


def _marginal_panels(fig, axes, m, runs, cmap, lo=-3.6, hi=3.6):
    """x_1 against t over the exact marginal density p_t(x_1), one panel per (output, colour, name, kind)."""
    sde, gmm = m.sde, m.gmm
    g1 = GaussianMixture(gmm.weights, gmm.means[:, :1], gmm.covs[:, :1, :1])
    ts = torch.linspace(sde.eps, sde.T, 260, dtype=torch.float64)
    xs = torch.linspace(lo, hi, 320, dtype=torch.float64)
    dens = torch.stack([g1.log_prob(xs[:, None], float(sde.alpha(t)), float(sde.sigma(t))).exp() for t in ts])
    for ax, (out, color, name, kind) in zip(axes, runs):
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
    fig.colorbar(mesh, ax=axes, label="exact marginal density $p_t(x_1)$", shrink=0.9, pad=0.01)


def _plane_panel(ax, m, x_T, runs, cmap, lim=3.4):
    """Paths in the plane over the exact p_eps, per (output, colour, line width, paths drawn)."""
    u = torch.linspace(-lim, lim, 220, dtype=torch.float64)
    uu, vv = torch.meshgrid(u, u, indexing="xy")
    plane = m.exact_log_prob(torch.stack([uu.reshape(-1), vv.reshape(-1)], 1), m.sde.eps).exp().reshape(uu.shape)
    ax.contourf(uu.numpy(), vv.numpy(), plane.numpy(), levels=14, cmap=cmap)
    for out, color, lw, k_max in runs:
        tr = out.trajectory.numpy()[:, :k_max]
        for k in range(tr.shape[1]):
            ax.plot(tr[:, k, 0], tr[:, k, 1], color=color, lw=lw, alpha=0.85)
        ax.scatter(tr[-1, :, 0], tr[-1, :, 1], color=color, s=26, zorder=3, edgecolor="white", lw=0.7)
    ax.scatter(x_T[:, 0].numpy(), x_T[:, 1].numpy(), marker="x", color="0.15", s=30, zorder=4)
    ax.set_aspect("equal")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.grid(False)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title("in the plane, over exact $p_{eps}$")
