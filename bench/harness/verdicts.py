"""Statistics behind a verdict: paired differences, bootstrap intervals, rankings with ties and
convergence-order fits over the asymptotic range. Pure functions: numbers in, dicts out.

- ``paired_difference(a, b)``: per-sample values of two solvers on the same x_T; mean of
  d_i = a_i - b_i, stderr = std(d)/sqrt(n), the paired t-test (two-sided p-value and a 95%
  t interval; for n >= 30 it is the paired z-test to 2 digits).
- ``bootstrap_interval(fn, *arrays)``: percentile bootstrap of any statistic of samples (sliced
  W2 ...): the same resampled indices for every array, so solvers sampled from shared x_T stay
  paired (pass ``fn = lambda xa, xb, y: sw(xa, y) - sw(xb, y)`` for a paired difference).
- ``tied_ranking(entries)``: the best entry leads; every entry whose difference from the leader
  is not significant at 5% (two-sided) shares its rank ("1="); the procedure repeats on the rest
  ("3=" after two tied at 1: competition ranking). The test is the paired t-test where both
  entries carry per-sample values on shared inputs, else a z-test on the two estimates and their
  standard errors (independent estimates assumed; for positively correlated ones it is
  conservative: more ties).
- ``fit_order_asymptotic(steps, errors, declared=...)``: slope of -log(error) against log(steps)
  over the asymptotic range only, with a 95% interval and a status that never cries wolf on a
  pre-asymptotic range (rules in its docstring).
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = ["paired_difference", "bootstrap_interval", "tied_ranking", "fit_order_asymptotic"]


def _t_quantile(q: float, dof: int) -> float:
    from scipy import stats  # a dependency of scikit-learn, so always present

    return float(stats.t.ppf(q, dof))


def _t_pvalue(z: float, dof: int) -> float:
    from scipy import stats

    return float(2 * stats.t.sf(abs(z), dof))


def _array(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=np.float64).ravel()


def paired_difference(a, b, *, level: float = 0.95) -> dict:
    """Mean of a_i - b_i over paired per-sample values (same x_T), by the paired t-test:

        d = a - b,  mean = d.mean(),  stderr = d.std(ddof=1)/sqrt(n),  t = mean/stderr (n-1 dof),
        interval = mean +- t_{(1+level)/2, n-1} stderr,  p = 2 P(T_{n-1} > |t|).

    Returns {"value", "stderr", "low", "high", "p_value", "n", "test"}."""
    a, b = _array(a), _array(b)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"paired_difference needs two equal-length sets of >= 2 values, got {a.size} and {b.size}")
    d = a - b
    n = d.size
    mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n)
    q = _t_quantile(0.5 + level / 2, n - 1)
    p = _t_pvalue(mean / se, n - 1) if se > 0 else (1.0 if mean == 0 else 0.0)
    return {"value": mean, "stderr": se, "low": mean - q * se, "high": mean + q * se, "p_value": p,
            "n": n, "test": "paired t-test"}


def bootstrap_interval(fn, *arrays, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap of ``fn(*arrays)`` (a float): resample the n indices with
    replacement, the *same* indices for every array (so arrays of paired samples stay paired),
    and recompute ``n_boot`` times. Arrays are tensors or numpy arrays of equal first dimension.

    Returns {"value": fn(*arrays), "stderr": std of the replicates, "low", "high" (the
    (1-level)/2 and (1+level)/2 quantiles of the replicates), "n", "n_boot", "method"}."""
    if not arrays:
        raise ValueError("bootstrap_interval needs at least one array")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"bootstrap_interval: arrays of unequal lengths {[len(a) for a in arrays]}")
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        reps.append(float(fn(*(a[_index_like(a, idx)] for a in arrays))))
    reps = np.asarray(reps)
    lo, hi = np.quantile(reps, [0.5 - level / 2, 0.5 + level / 2])
    return {"value": float(fn(*arrays)), "stderr": float(reps.std(ddof=1)), "low": float(lo), "high": float(hi),
            "n": n, "n_boot": n_boot, "method": "percentile bootstrap, shared indices"}


def _index_like(a, idx):
    if hasattr(a, "detach"):
        import torch

        return torch.as_tensor(idx, device=a.device)
    return idx


# ------------------------------------------------------------------------------------------
# rankings with ties
# ------------------------------------------------------------------------------------------
def _compare(lead: dict, other: dict, level: float) -> dict:
    """Difference other - leader and whether it is significant (two-sided, 1 - level)."""
    pa, pb = other.get("per_sample"), lead.get("per_sample")
    if pa is not None and pb is not None and len(pa) == len(pb):
        r = paired_difference(pa, pb, level=level)
        diff = float(other["value"]) - float(lead["value"])
        return {"diff": diff, "diff_stderr": r["stderr"], "p_value": r["p_value"], "test": r["test"]}
    diff = float(other["value"]) - float(lead["value"])
    se = math.hypot(float(other.get("stderr", math.nan)), float(lead.get("stderr", math.nan)))
    if not math.isfinite(se):
        p = 0.0 if diff != 0 else 1.0  # no uncertainty given: exact values
    elif se == 0:
        p = 1.0 if diff == 0 else 0.0
    else:
        p = 2 * (1 - NormalDist().cdf(abs(diff) / se))
    return {"diff": diff, "diff_stderr": se, "p_value": p, "test": "z-test (independent estimates)"}


def tied_ranking(entries, *, lower_is_better: bool = True, level: float = 0.95) -> list[dict]:
    """Rank entries, tying those the uncertainty cannot separate.

    ``entries``: dicts (or (name, value, stderr) tuples) with "name", "value" and "stderr" and/or
    "per_sample" (values on x_T shared by all entries). Procedure: the best remaining entry
    leads a group; every remaining entry whose difference from the leader has p >= 1 - level
    (``_compare``: paired t-test on per-sample values, else z-test) joins the group; repeat on
    the rest. A group's rank is 1 + the number ranked before it, written "k=" when the group
    has several members. Entries with a non-finite value come last, rank "-".

    Returns rows {"name", "value", "stderr", "rank", "group", "diff", "diff_stderr", "p_value",
    "test", "vs"}, best first: diff = value - value of "vs", the leader this entry was compared
    with last (its own group's leader; for a group's leader, the previous group's leader that it
    differs from significantly; none for the overall leader)."""
    items = []
    for e in entries:
        e = dict(zip(("name", "value", "stderr"), e)) if isinstance(e, (tuple, list)) else dict(e)
        items.append(e)
    sign = 1.0 if lower_is_better else -1.0
    finite = [e for e in items if math.isfinite(float(e["value"]))]
    rest = sorted(finite, key=lambda e: (sign * float(e["value"]), str(e["name"])))
    rows, group, rest = [], 0, [(e, None) for e in rest]
    while rest:
        (lead, why), group = rest[0], group + 1
        members, others = [(lead, why)], []
        for e, _ in rest[1:]:
            c = {**_compare(lead, e, level), "vs": lead["name"]}
            (members if c["p_value"] >= 1 - level else others).append((e, c))
        start = len(rows) + 1
        tag = f"{start}=" if len(members) > 1 else str(start)
        for e, c in members:
            c = c or {"diff": 0.0, "diff_stderr": 0.0, "p_value": 1.0, "test": "", "vs": ""}
            rows.append({"name": e["name"], "value": float(e["value"]), "stderr": float(e.get("stderr", math.nan)),
                         "rank": tag, "group": group, **c})
        rest = others
    for e in items:
        if not math.isfinite(float(e["value"])):
            rows.append({"name": e["name"], "value": float(e["value"]), "stderr": float(e.get("stderr", math.nan)),
                         "rank": "-", "group": None, "diff": math.nan, "diff_stderr": math.nan,
                         "p_value": math.nan, "test": "", "vs": ""})
    return rows


# ------------------------------------------------------------------------------------------
# convergence order over the asymptotic range
# ------------------------------------------------------------------------------------------
def _finest_run(slopes, tol):
    """(first, last) indices of the longest run of local slopes ending at the finest one whose
    spread (max - min) stays within tol."""
    last = first = len(slopes) - 1
    while first > 0 and max(slopes[first - 1:]) - min(slopes[first - 1:]) <= tol:
        first -= 1
    return first, last


def fit_order_asymptotic(steps, errors, *, declared: float | None = None, floor: float | None = None,
                         tol: float = 0.3, allowance: float = 0.5, level: float = 0.95) -> dict:
    """Convergence order p of error ~ C steps^-p, fitted over the asymptotic range only.

    1. Points with a non-finite error, or one at/under ``floor`` (the reference's accuracy),
       are dropped; the rest are sorted by steps. Local slopes
       s_j = -log(e_{j+1}/e_j) / log(N_{j+1}/N_j) join successive points.
    2. Asymptotic range: the finest points whose local slopes all agree within ``tol``
       (max - min <= tol), grown from the finest pair towards coarser steps; if it holds only
       the two finest points, the range is not reached.
    3. Slope: least squares of -log e on log N over the range. 95% interval: with k >= 4 points
       slope +- t_{0.975, k-2} x its least-squares stderr; with 3 points slope +- the spread
       |s_1 - s_2| of the two local slopes; with 2 points slope +- ``tol``.
    4. Status ("ok" / "pre-asymptotic at these steps" / "differs" / "no declared order"):
       fewer than 3 points in the range -> "pre-asymptotic at these steps". Else the interval
       is widened by ``allowance`` and compared with ``declared``: inside -> "ok"; wholly
       below it -> "differs"; wholly above -> "pre-asymptotic at these steps" (errors falling
       faster than the declared order: higher-order terms still dominate, or the declared
       order is understated; the note says so). The interval is statistical (it measures how
       well one power law fits the range); the allowance covers what it cannot: the next term
       of e = C N^-p (1 + O(N^-1)) on a range that looks settled but is not. Seen at the quick
       suite's 5-50 NFE: Euler fits 0.86 [0.84, 0.88] on gmm2d-vp, DEIS order 2 fits 1.47
       [1.37, 1.58] on gmm2d-edm (1.93 over 50-1600 steps); hence 0.5 by default, which still
       flags a lost stage (a whole order). Over a fine range pass a smaller allowance.

    Returns {"slope", "low", "high" (the 95% interval, statistical part only), "allowance",
    "points", "range" (steps min, max), "local_slopes", "status", "note", "method"}."""
    pts = sorted((float(s), float(e)) for s, e in zip(steps, errors)
                 if math.isfinite(float(e)) and float(e) > 0 and (floor is None or float(e) > floor))
    out = {"slope": math.nan, "low": math.nan, "high": math.nan, "allowance": allowance, "points": len(pts),
           "range": None, "local_slopes": [], "declared": declared, "status": "pre-asymptotic at these steps",
           "note": "", "method": ""}
    if len(pts) < 2:
        out["note"] = f"{len(pts)} point(s) above the floor: nothing to fit"
        return out
    x = np.log([p[0] for p in pts])
    y = -np.log([p[1] for p in pts])
    slopes = list(np.diff(y) / np.diff(x))
    out["local_slopes"] = [float(s) for s in slopes]
    lo_i, hi_i = _finest_run(slopes, tol)
    xs, ys = x[lo_i:hi_i + 2], y[lo_i:hi_i + 2]
    k = len(xs)
    slope, icpt = np.polyfit(xs, ys, 1)
    if k >= 4:
        resid = ys - (slope * xs + icpt)
        se = math.sqrt(float(resid @ resid) / (k - 2) / float(((xs - xs.mean()) ** 2).sum()))
        half = _t_quantile(0.5 + level / 2, k - 2) * se
        out["method"] = f"least squares over {k} points, t interval ({k - 2} dof)"
    elif k == 3:
        half = abs(slopes[lo_i] - slopes[lo_i + 1])
        out["method"] = "least squares over 3 points, interval = spread of the 2 local slopes"
    else:
        half = tol
        out["method"] = "2 points: one local slope, interval = +- tol"
    out.update(slope=float(slope), low=float(slope - half), high=float(slope + half), points=k,
               range=(int(round(math.exp(xs[0]))), int(round(math.exp(xs[-1])))))
    if k < 3:
        out["note"] = "local slopes have not settled (the two finest differ by more than tol)"
        return out
    if declared is None:
        out["status"] = "no declared order"
        return out
    if out["high"] + allowance < declared:
        out["status"] = "differs"
        out["note"] = f"fitted {slope:.2f} [{out['low']:.2f}, {out['high']:.2f}] is below the declared {declared:g}"
    elif out["low"] - allowance > declared:
        out["note"] = (f"fitted {slope:.2f} is above the declared {declared:g}: higher-order terms still dominate "
                       "(or the declared order is understated)")
    else:
        out["status"] = "ok"
        if out["high"] < declared:
            out["note"] = (f"fitted {slope:.2f} [{out['low']:.2f}, {out['high']:.2f}] is below the declared "
                           f"{declared:g} by less than the allowance {allowance:g}: check over finer steps")
    return out
