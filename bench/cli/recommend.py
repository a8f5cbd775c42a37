"""``sdebench recommend MODEL --nfe N``: which solver, on which time grid, at this NFE budget, and
is the difference real?

Runs a small sweep (every deterministic fixed-step solver, or ``--solvers``, on every built-in
grid that applies, plus a tuned grid per solver with ``--tune``) as an ordinary run in the store,
ranks it by the best metric the model allows (exact KL on exact models; else the discretization
error against the float64 teacher; the distribution metric, where the model has exact samples or
data, is shown beside it), ties what the
standard errors cannot separate (``bench.report.analysis.best_per_budget``), prints the ranked
groups with intervals and the command that reproduces the winner, and writes the report.
"""
from __future__ import annotations

import json
import math
import shlex

import solvers
from bench.cli.common import add_model, add_store
from bench.harness.runner import run_suite
from bench.harness.store import Store
from bench.harness.suite import Suite
from bench.report.analysis import best_per_budget
from bench.report.data import load_cells
from bench.report.render import slug
from bench.zoo import models

__all__ = ["recommend", "register", "candidates"]

BUILTIN_GRIDS = ("uniform", "quadratic", "logsnr", "edm", "tan")


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


def _primary(entries) -> dict:
    by = {e["metric"]: e for e in entries}
    for metric in ("exact_kl", "discretization", "sliced_w2", "fd_digits"):
        if metric in by:
            return by[metric]
    return entries[0]


def recommend(args) -> int:
    model = models.load(args.model)
    suite = _suite(args, model)
    store = Store(args.store)
    run_id = run_suite(suite, store, progress=not args.quiet)
    df = load_cells(store, [run_id])
    entries = best_per_budget(df, budgets=(args.nfe,))
    if not entries or not entries[0]["tables"][args.nfe]:
        raise solvers.InputError(f"no solver finished within {args.nfe} NFE on {args.model}: see `sdebench report "
                                 f"{run_id} --store {store.path}`")
    entry = _primary(entries)
    table = entry["tables"][args.nfe]
    print(f"\n{args.model} at <= {args.nfe} NFE, ranked by {entry['metric']} (mean +- 1.96 standard errors; "
          "'k=' = tied: not significantly different from the group's leader at 5%):")
    for r in table:
        v = "–" if not math.isfinite(r["value"]) else (
            f"{r['value']:.4g} +- {1.96 * r['stderr']:.2g}" if math.isfinite(r["stderr"]) else f"{r['value']:.4g}")
        print(f"  {r['rank']:>4}  {r['solver']:40s} {v:>22s}  NFE {r['nfe']:>3}  steps {r['steps']}  "
              f"{r['time_median_s'] * 1e3:8.2f} ms")
    best = table[0]
    leaders = [r["solver"] for r in table if r["rank"] == best["rank"]]
    solver, *rest = best["solver"].split()
    grid = next((p.split("=", 1)[1] for p in rest if p.startswith("grid=")), None)
    print(f"\nbest: {best['solver']}" + (f" (tied with {len(leaders) - 1} more: {', '.join(leaders[1:])})"
                                          if len(leaders) > 1 else ""))
    print(f"reproduce: sdebench sample {shlex.quote(args.model)} {solver} --steps {best['steps']}"
          + (f" --grid {grid}" if grid else "")
          + f"\n       or: solvers.sample(models.load({args.model!r}), {solver!r}, steps={best['steps']}"
          + (f", grid={grid!r}" if grid else "") + ", n=...)")
    if not args.no_report:
        from bench.report import write_report

        out = write_report(store, [run_id], trajectories=False)
        print(f"report: {out['html']}")
    return 0


def register(sub):
    r = sub.add_parser("recommend", help="rank every deterministic solver x grid at an NFE budget on one model, "
                       "with ties where the uncertainty cannot separate them")
    add_model(r)
    r.add_argument("--nfe", type=int, required=True, help="the NFE budget")
    r.add_argument("--solvers", nargs="+", default=None, help="only these solvers (default: every deterministic "
                   "fixed-step solver)")
    r.add_argument("--tune", action="store_true", help="also a grid tuned to each solver (suite grid \"tuned\")")
    r.add_argument("--n", type=int, default=1000, help="samples (default 1000)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.add_argument("--no-report", action="store_true")
    add_store(r)
    r.set_defaults(fn=recommend)
