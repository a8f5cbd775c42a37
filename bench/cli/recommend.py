"""``sdebench recommend MODEL --nfe N``: which solver, on which time grid, at this NFE budget, and
is the difference real?

Runs a small sweep (every deterministic fixed-step solver, or ``--solvers``, on every built-in
grid that applies, plus a tuned grid per solver with ``--tune``) as an ordinary run in the store,
ranks it by the metric of ``RANKING`` (exact KL on exact models, the discretization error against
the float64 teacher, sliced W2, FD-digits; those the model allows: a model without exact samples
or data has the discretization error alone) that resolves the most candidates (``choose``), ties
what the standard errors cannot separate and never ranks an unresolved value (at its noise floor,
or within 2 standard errors of 0) above a resolved one: it ties with the leaders (``rank``);
prints the ranked groups with intervals and the command that reproduces the winner, and writes
the report.
"""
from __future__ import annotations

import json
import math
import shlex

import solvers
from bench.cli.common import add_model, add_store, check_sample_memory, count, seed_int, step_count
from bench.harness.at_floor import ZERO_VALUED
from bench.harness.runner import run_suite
from bench.harness.store import Store
from bench.harness.suite import Suite
from bench.harness.tuned import TUNED, stored_grid
from bench.harness.verdicts import tied_ranking
from bench.report.analysis import best_per_budget
from bench.report.data import load_cells
from bench.report.render import slug
from bench.zoo import models

__all__ = ["recommend", "register", "candidates", "choose", "rank", "RANKING"]

BUILTIN_GRIDS = ("uniform", "quadratic", "logsnr", "edm", "tan")
#: the metrics a recommendation may rank by, preferred first (``choose`` takes the one that resolves most)
RANKING = ("exact_kl", "discretization", "sliced_w2", "fd_digits")


def candidates(names=None) -> list[str]:
    """The deterministic fixed-step solvers (default options), or the named ones, checked."""
    if names:
        out = []
        for name in names:
            cls = solvers.get(name)  # InputError for an unknown name
            if cls.adaptive or cls.is_stochastic() or cls.kind != "ode":
                raise solvers.InputError(f"recommend ranks deterministic fixed-step solvers; {name!r} is "
                                         f"{'adaptive' if cls.adaptive else 'stochastic'}")
            out.append(cls.name)
        return out
    return [n for n in solvers.available() if solvers.get(n).kind == "ode" and not solvers.get(n).adaptive
            and not solvers.get(n).is_stochastic()]


def _grids(model, tune: bool) -> list[str]:
    grids = [g for g in BUILTIN_GRIDS if g != "tan" or getattr(model, "data_std", None)]
    return grids + (["tuned"] if tune else [])


def _toml(value) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def _metrics(model, exact: bool) -> list[str]:
    """Exact KL on exact models; a distribution metric where there is a target (exact samples or
    data); the discretization error always (it needs neither)."""
    if exact:
        return ["exact_kl", "discretization", "sliced_w2"]
    if not hasattr(model, "data_sample"):
        return ["discretization"]
    return ["discretization", "sliced_w2"] + (["fd_digits"] if getattr(model, "data", None) == "digits" else [])


def _suite(args, model) -> Suite:
    exact = models.is_exact(args.model)
    data = {"name": f"recommend-{slug(args.model)}-nfe{args.nfe}",
            "description": f"sdebench recommend {args.model} --nfe {args.nfe}", "models": [args.model],
            "n": args.n, "seeds": [args.seed], "nfe": [args.nfe], "repeats": 3, "warmup": 1, "threads": 1,
            "metrics": _metrics(model, exact),
            "solvers": [{"name": s, "grid": g} for s in candidates(args.solvers) for g in _grids(model, args.tune)]}
    text = "\n".join(f"{k} = {_toml(v)}" for k, v in data.items() if k != "solvers")
    text += "".join(f'\n\n[[solvers]]\nname = "{e["name"]}"\ngrid = "{e["grid"]}"' for e in data["solvers"]) + "\n"
    return Suite(data, f"<recommend {args.model}>", text)


def rank(rows: list[dict], metric: str) -> list[dict]:
    """The rows of one metric (``best_per_budget``'s) in recommendation order: the resolved values
    ranked with ties (``tied_ranking``: not significantly different from the group's leader at
    5%); the unresolved ones (at or below the noise floor, or within 2 standard errors of 0: the
    metric cannot order them) join the leading group after its resolved members, tied with it,
    never above a resolved value; then those without a value."""
    resolved = [r for r in rows if not r["at_floor"] and math.isfinite(r["value"])]
    unresolved = sorted((r for r in rows if r["at_floor"]), key=lambda r: (r["time_median_s"], r["solver"]))
    by_name = {r["solver"]: r for r in resolved}
    groups: dict = {}
    for t in tied_ranking([{"name": r["solver"], "value": r["value"], "stderr": r["stderr"]} for r in resolved]):
        tied = t["vs"] and t["p_value"] >= 0.05  # a member of its group (a leader's "vs" is the group before)
        note = f"tied with {t['vs']} (p = {t['p_value']:.2f})" if tied else ""
        groups.setdefault(t["group"], []).append({**by_name[t["name"]], "note": note})
    floor = "within 2 se of 0" if metric in ZERO_VALUED else "at or below the noise floor"
    groups.setdefault(1, []).extend({**r, "note": f"{floor}: unresolved, tied with the leaders"} for r in unresolved)
    out = []
    for g in sorted(groups):
        tag = f"{len(out) + 1}=" if len(groups[g]) > 1 else str(len(out) + 1)
        out += [{**r, "rank": tag} for r in groups[g]]
    return out + [{**r, "rank": "-", "note": f"no {metric} value"} for r in rows
                  if not r["at_floor"] and not math.isfinite(r["value"])]


def choose(entries: list[dict], nfe: int) -> tuple[str, list[dict], dict]:
    """(metric, its ranked rows, resolved count by metric): the metric of ``RANKING`` that resolves
    the most candidates (ties: the earlier), so that a metric at its floor for every grid (sliced
    W2 on a trained model at a small n) never decides between them by speed alone."""
    tables = {e["metric"]: e["tables"][nfe] for e in entries if e["tables"][nfe]}
    resolved = {m: sum(not r["at_floor"] and math.isfinite(r["value"]) for r in t) for m, t in tables.items()}
    metric = max((m for m in RANKING if m in tables), key=lambda m: (resolved[m], -RANKING.index(m)))
    return metric, rank(tables[metric], metric), resolved


def _tuned_file(store, run_id, df, best):
    """The tuned grid of the ``best`` row, saved beside the run's report (what ``sample --grid`` reads)."""
    cell = df[(df["label"] == best["solver"]) & (df["nfe"] == best["nfe"])]["cell"].iloc[0]
    g = stored_grid(store, cell.tuning["grid_key"])
    path = store.output_dir(run_id) / f"{cell.model}_{cell.solver}_steps{cell.steps}_{cell.grid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return g.save(path)


def recommend(args) -> int:
    if args.model == models.TIMING_ONLY:
        raise solvers.InputError(f"model {args.model!r} is timing-only (random weights): no solver can be "
                                 "recommended for it; pick a trained or exact model (sdebench list models)")
    model = models.load(args.model)
    check_sample_memory(model, args.n, args.nfe)
    suite = _suite(args, model)
    store = Store(args.store)
    run_id = run_suite(suite, store, progress=not args.quiet)
    df = load_cells(store, [run_id])
    entries = best_per_budget(df, budgets=(args.nfe,), metrics=RANKING)
    if not any(e["tables"][args.nfe] for e in entries):
        raise solvers.InputError(f"no solver finished within {args.nfe} NFE on {args.model}: see `sdebench report "
                                 f"{run_id} --store {store.path}`")
    metric, table, resolved = choose(entries, args.nfe)
    others = ", ".join(f"{m}: {k}" for m, k in resolved.items() if m != metric)
    print(f"\n{args.model} at <= {args.nfe} NFE, ranked by {metric}, which resolves {resolved[metric]} of "
          f"{len(table)} candidates{f' ({others})' if others else ''} (mean +- 1.96 standard errors; 'k=' = tied: "
          "not significantly different from the group's leader at 5%; unresolved values tie with the leaders, never "
          "above them):")
    for r in table:
        v = "–" if not math.isfinite(r["value"]) else (
            f"{r['value']:.4g} +- {1.96 * r['stderr']:.2g}" if math.isfinite(r["stderr"]) else f"{r['value']:.4g}")
        print(f"  {r['rank']:>4}  {r['solver']:40s} {v:>22s}  NFE {r['nfe']:>3}  steps {r['steps']}  "
              f"{r['time_median_s'] * 1e3:8.2f} ms" + (f"  {r['note']}" if r["note"] else ""))
    best = table[0]
    leaders = [r["solver"] for r in table if r["rank"] == best["rank"]]
    solver, *rest = best["solver"].split()
    grid = next((p.split("=", 1)[1] for p in rest if p.startswith("grid=")), None)
    if grid in TUNED:  # sample reads a tuned grid from its file: write the winner's
        grid = str(_tuned_file(store, run_id, df, best))
    print(f"\nbest: {best['solver']}" + (f" (tied with {len(leaders) - 1} more: {', '.join(leaders[1:])})"
                                          if len(leaders) > 1 else "")
          + (" (no metric resolves these candidates: none is shown better)" if not resolved[metric] else ""))
    py_grid = f"solvers.load_grid({grid!r})" if grid and grid.endswith(".json") else repr(grid)
    print(f"reproduce: sdebench sample {shlex.quote(args.model)} {solver} --steps {best['steps']}"
          + (f" --grid {shlex.quote(grid)}" if grid else "")
          + f"\n       or: solvers.sample(models.load({args.model!r}), {solver!r}, steps={best['steps']}"
          + (f", grid={py_grid}" if grid else "") + ", n=...)")
    if not args.no_report:
        from bench.report import write_report

        out = write_report(store, [run_id], trajectories=False)
        print(f"report: {out['html']}")
    return 0


def register(sub):
    r = sub.add_parser("recommend", help="rank every deterministic solver x grid at an NFE budget on one model, "
                       "with ties where the uncertainty cannot separate them")
    add_model(r)
    r.add_argument("--nfe", type=step_count, required=True, help="the NFE budget")
    r.add_argument("--solvers", nargs="+", default=None, help="only these solvers (default: every deterministic "
                   "fixed-step solver)")
    r.add_argument("--tune", action="store_true", help="also a grid tuned to each solver (suite grid \"tuned\")")
    r.add_argument("--n", type=count(2), default=1000, help="samples (default 1000)")
    r.add_argument("--seed", type=seed_int, default=0)
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.add_argument("--no-report", action="store_true")
    add_store(r)
    r.set_defaults(fn=recommend)
