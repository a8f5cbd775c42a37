"""``sdebench compare BASE HEAD``: a regression gate between two runs.

BASE and HEAD are run ids in the store ("latest" for the newest) or CSV files written by ``sdebench export`` (e.g. a
committed baseline in results/baselines/). Cells are matched by their key (the hash of the
cell's definition), so the same suite gives the same keys on any machine.

A matched cell regresses when
  - its NFE changed (any change: it is a change of algorithm, not of noise);
  - a quality metric got worse by more than ``rtol`` relative (default 5%):
        head > base * (1 + rtol)  and  head - base > atol (default 1e-12),
    except where both values are at or below the metric's noise floor (unresolved: no
    difference can be claimed); quality metrics are the discretization error, the
    distribution metrics and the likelihood error;
  - it failed in HEAD but not in BASE;
  - (timing, when not disabled) its median wall time grew by more than ``time_factor``
    (default 2.0), for cells whose BASE time is at least ``min_time_s`` (default 20 ms;
    shorter cells are too noisy to gate on).
A cell of BASE missing from HEAD is a regression too (the suite lost coverage); where HEAD has
instead a cell that differs only in its definition (n, seed, options, reference...), the table
says what changed ("definition" rows) rather than listing one cell as missing and another as new.
A NaN in HEAD where BASE was finite (a metric, the NFE, the time) is a regression.
A matched cell whose model has another fingerprint in HEAD (other weights or config under the same
name: ``Cell.model_spec``) is "model changed": one row saying so, and none of its values gated,
neither a regression nor an improvement (a failure in HEAD still is one).

Exit codes: 0 no regression; 1 quality, NFE, failure or coverage regression; 3 timing
regression only; 2 bad input (unknown run, unreadable file).
"""
from __future__ import annotations

import json
import math
import pathlib

import pandas as pd

from bench.harness import metrics
from bench.harness.store import EXPORT_FORMAT
from solvers import InputError

__all__ = ["load_cells", "compare", "is_csv", "model_change", "QUALITY", "EXIT_OK", "EXIT_QUALITY", "EXIT_TIME"]

QUALITY = tuple(metrics.quality())  # from the metric registry
EXIT_OK, EXIT_QUALITY, EXIT_TIME = 0, 1, 3


def is_csv(ref) -> bool:
    """Whether ``ref`` names a CSV export (rather than a run id or "latest")."""
    path = pathlib.Path(str(ref))
    return path.suffix == ".csv" or path.exists()


def load_cells(ref, store=None) -> pd.DataFrame:
    """Cells of a run id (from ``store``) or of a CSV export."""
    path = pathlib.Path(str(ref))
    if is_csv(ref):
        if not path.exists():
            raise InputError(f"{path}: no such baseline file")
        if not path.is_file():
            raise InputError(f"{path}: not a file (give a CSV written by `sdebench export`)")
        try:
            df = pd.read_csv(path)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, OSError) as e:
            raise InputError(f"{path}: not a cells CSV: {e}") from None
    else:
        if store is None:
            raise InputError("a run id needs a store")
        if ref == "latest":
            ref = store.latest_run()
            if ref is None:
                raise InputError(f"no runs in {store.path}")
        try:
            run_id = int(ref)
        except ValueError:
            raise InputError(f"{ref!r} is neither a run id, 'latest', nor a CSV file") from None
        store.run(run_id)
        df = store.cells(run_id)
    try:
        fmt = int(pd.to_numeric(df["format"]).max()) if "format" in df.columns and len(df) else 0
    except (TypeError, ValueError):
        raise InputError(f"{ref}: the 'format' column is not a number; export runs with `sdebench export`") from None
    if "key" in df.columns and df["key"].duplicated().any():
        raise InputError(f"{ref}: cell keys repeat ({df['key'][df['key'].duplicated()].iloc[0]}); not one run's cells")
    if fmt > EXPORT_FORMAT:
        raise InputError(f"{ref}: cells format {fmt} is newer than this sdebench reads ({EXPORT_FORMAT}); "
                         "upgrade sdebench")
    if "key" not in df.columns:
        raise InputError(f"{ref}: no 'key' column; export runs with `sdebench export`")
    return df.set_index("key")


def _num(row, col):
    v = row.get(col) if col in row else None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v


def _label(row):
    opts = row.get("options")
    opts = "" if not isinstance(opts, str) or opts == "{}" else " " + " ".join(
        f"{k}={v}" for k, v in json.loads(opts).items())
    size = f" nfe<={int(row['budget'])}" if _num(row, "budget") == _num(row, "budget") else ""
    return f"{row.get('model')} {row.get('solver')}{opts}{size} seed={row.get('seed')}"


def compare(base: pd.DataFrame, head: pd.DataFrame, *, rtol: float = 0.05, atol: float = 1e-12,
            time_factor: float | None = 2.0, min_time_s: float = 0.02):
    """Return (table of changes, exit code)."""
    for name, v, low, strict in (("rtol", rtol, 0, False), ("atol", atol, 0, False),
                                 ("min_time_s", min_time_s, 0, False),
                                 ("time_factor", time_factor, 1, True)):
        if name == "time_factor" and v is None:
            continue
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > low if strict
                                                                                              else v >= low)
        if not ok:
            raise InputError(f"{name} must be a finite number {'>' if strict else '>='} {low}, got {v!r}")
    rows, code = [], EXIT_OK
    renamed = _definition_changes(base, head)

    def flag(cell, what, b, h, verdict):
        rows.append({"cell": cell, "what": what, "base": b, "head": h, "verdict": verdict})

    for key, b in base.iterrows():
        cell = _label(b)
        if key not in head.index:
            if key in renamed:
                flag(cell, "definition", renamed[key][0], renamed[key][1], "REGRESSION")
            else:
                flag(cell, "cell", "present", "missing", "REGRESSION")
            code = EXIT_QUALITY
            continue
        h = head.loc[key]
        b_err, h_err = b.get("error"), h.get("error")
        if isinstance(h_err, str) and not isinstance(b_err, str):
            flag(cell, "error", "", h_err, "REGRESSION")
            code = EXIT_QUALITY
            continue
        changed = model_change(b, h)
        if changed:
            flag(cell, "model", *changed, "model changed")
            continue
        bn, hn = _num(b, "nfe"), _num(h, "nfe")
        if not (math.isnan(bn) and math.isnan(hn)) and bn != hn:
            flag(cell, "nfe", bn, hn, "REGRESSION")
            code = EXIT_QUALITY
        for m in QUALITY:
            bv, hv = _num(b, m), _num(h, m)
            if math.isnan(bv) and math.isnan(hv):
                continue
            floor = max(_num(b, m + "_floor"), _num(h, m + "_floor"))
            below = not math.isnan(floor) and bv <= floor and hv <= floor
            worse = math.isnan(hv) or (hv - bv > rtol * abs(bv) and hv - bv > atol)  # abs: MMD^2 can be < 0
            better = bv - hv > rtol * abs(bv) and bv - hv > atol
            if worse and not below:
                flag(cell, m, bv, hv, "REGRESSION")
                code = EXIT_QUALITY
            elif better and not below:
                flag(cell, m, bv, hv, "improved")
        if time_factor is not None:
            bt, ht = _num(b, "time_median_s"), _num(h, "time_median_s")
            if bt >= min_time_s and (ht > bt * time_factor or math.isnan(ht)):
                flag(cell, "time_median_s", bt, ht, "SLOWER")
                code = code or EXIT_TIME
    matched = {v[2] for v in renamed.values()}
    for key in head.index.difference(base.index):
        if key not in matched:
            flag(_label(head.loc[key]), "cell", "missing", "present", "new")
    return pd.DataFrame(rows, columns=["cell", "what", "base", "head", "verdict"]), code


_IDENTITY = ("task", "model", "solver", "grid", "budget", "steps")
_VARIABLE = ("n", "seed", "options", "exact_prior", "device", "dtype", "threads", "metrics", "repeats", "warmup",
             "reference", "imports")


def _definition(row) -> dict:
    """A row's cell definition: its stored JSON, else the columns a CSV has."""
    text = row.get("cell") if hasattr(row, "get") else None
    if isinstance(text, str) and text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            pass
    d = {k: row.get(k) for k in (*_IDENTITY, *_VARIABLE) if k in row}
    if isinstance(d.get("options"), str):
        try:
            d["options"] = json.loads(d["options"])
        except ValueError:
            pass
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def model_change(b, h) -> tuple[str, str] | None:
    """(base, head) fingerprints, shortened, when the two rows' models differ; None when they are
    the same or either row does not record one (cells stored before provenance was)."""
    fb, fh = (_definition(r).get("model_spec", {}).get("fingerprint") for r in (b, h))
    if fb and fh and fb != fh:
        return f"fingerprint {fb[:12]}", f"fingerprint {fh[:12]}"
    return None


def _canon(v) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return json.dumps(v, sort_keys=True, default=str)


def _definition_changes(base, head) -> dict:
    """base key -> (what base had, what head has, head key) for BASE cells missing from HEAD that HEAD
    has under another definition (same model, solver, grid and size; other n, seed, options...)."""
    gone = [k for k in base.index if k not in head.index]
    new = [k for k in head.index if k not in base.index]
    if not gone or not new:
        return {}
    heads = {}
    for k in new:
        d = _definition(head.loc[k])
        heads.setdefault(tuple(_canon(d.get(f)) for f in _IDENTITY), []).append((k, d))
    out, used = {}, set()
    for k in gone:
        d = _definition(base.loc[k])
        for hk, hd in heads.get(tuple(_canon(d.get(f)) for f in _IDENTITY), []):
            if hk in used:
                continue
            diff = [f for f in _VARIABLE if _canon(d.get(f)) != _canon(hd.get(f))]
            if diff:
                used.add(hk)
                out[k] = (" ".join(f"{f}={_canon(d.get(f))}" for f in diff),
                          " ".join(f"{f}={_canon(hd.get(f))}" for f in diff), hk)
                break
    return out
