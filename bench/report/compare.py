"""``sdebench compare BASE HEAD``: a regression gate between two runs.

BASE and HEAD are run ids in the store ("latest" for the newest) or CSV files written by ``sdebench export`` (e.g. a
committed baseline in results/baselines/). Cells are matched by their key (the hash of the
cell's definition), so the same suite gives the same keys on any machine.

A matched cell regresses when
  - its NFE changed (any change: it is a change of algorithm, not of noise);
  - a quality metric got worse by more than ``rtol`` relative (default 5%):
        head > base * (1 + rtol)  and  head - base > atol (default 1e-12)
    (for a lower-is-better metric; the metric's record says its direction, ``Metric.better``),
    except where both values are at or below the metric's noise floor (unresolved: no
    difference can be claimed; a value recorded at its floor at fewer steps, ``<metric>_at_floor``,
    counts as at the floor); quality metrics are the registry's gated ones
    (``bench.harness.metrics.quality()``: the discretization error, exact KL, mode TV, the
    distribution metrics, FD-digits, the likelihood error, and any a plugin registers);
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

import dataclasses
import json
import math
import pathlib

import pandas as pd

from bench.harness import metrics
from bench.harness.cell import Timing
from bench.harness.store import EXPORT_FORMAT
from solvers import InputError

__all__ = ["load_run_or_export", "compare", "definition_changes", "is_csv", "model_change", "EXIT_OK", "EXIT_QUALITY",
           "EXIT_TIME", "TIME_COLUMN"]

EXIT_OK, EXIT_QUALITY, EXIT_TIME = 0, 1, 3
#: the timing figure the gate reads
TIME_COLUMN = Timing.column("median_s")


def is_csv(ref) -> bool:
    """Whether ``ref`` names a CSV export (rather than a run id or "latest")."""
    path = pathlib.Path(str(ref))
    return path.suffix == ".csv" or path.exists()


def load_run_or_export(ref, store=None) -> pd.DataFrame:
    """One side of a comparison: the flat cells of a run id (from ``store``; "latest" for the
    newest) or of a CSV export, indexed by cell key. An empty, header-only or malformed one (no
    key/model/solver column, text in a numeric column) is refused: it would pass the gate."""
    df = _read_export(pathlib.Path(str(ref))) if is_csv(ref) else _read_run(ref, store)
    try:
        fmt = int(pd.to_numeric(df["format"]).max()) if "format" in df.columns and len(df) else 0
    except (TypeError, ValueError):
        raise InputError(f"{ref}: the 'format' column is not a number; export runs with `sdebench export`") from None
    if "key" in df.columns and df["key"].duplicated().any():
        raise InputError(f"{ref}: cell keys repeat ({df['key'][df['key'].duplicated()].iloc[0]}); not one run's cells")
    if fmt > EXPORT_FORMAT:
        raise InputError(f"{ref}: cells format {fmt} is newer than this sdebench reads ({EXPORT_FORMAT}); "
                         "upgrade sdebench")
    for col in ("key", "model", "solver"):
        if col not in df.columns:
            raise InputError(f"{ref}: no {col!r} column; not a cells table (export runs with `sdebench export`)")
    if not len(df):
        raise InputError(f"{ref}: has no cells (a header only, or a run with no finished cell): nothing to compare")
    _check_numeric(ref, df)
    return df.set_index("key")


def _check_numeric(ref, df):
    """Text in a column the gate reads as a number (a hand-edited or foreign table)."""
    gated = [m.column(part) for m in metrics.METRICS.values() if m.gated for part in ("value", "floor")]
    for col in ("nfe", "budget", "steps", TIME_COLUMN, *gated):
        if col in df.columns and not pd.api.types.is_numeric_dtype(df[col]):
            bad = df[col].notna() & pd.to_numeric(df[col], errors="coerce").isna()
            if bad.any():
                raise InputError(f"{ref}: column {col!r} holds {df[col][bad].iloc[0]!r} (cell "
                                 f"{df['key'][bad].iloc[0]}), not a number; not a cells table written by sdebench")


def _read_export(path: pathlib.Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{path}: no such baseline file")
    if not path.is_file():
        raise InputError(f"{path}: not a file (give a CSV written by `sdebench export`)")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, OSError) as e:
        raise InputError(f"{path}: not a cells CSV: {e}") from None


def _read_run(ref, store) -> pd.DataFrame:
    if store is None:
        raise InputError("a run id needs a store")
    return store.cells(store.resolve_run(ref))


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
    size += f" steps={int(_num(row, 'steps'))}" if math.isfinite(_num(row, "steps")) else ""
    grid = row.get("grid")
    grid = f" grid={grid}" if isinstance(grid, str) and grid else ""
    return f"{row.get('model')} {row.get('solver')}{opts}{grid}{size} seed={row.get('seed')}"


#: how bad a value is, by the metric's direction (``Metric.better``): larger is worse
_BADNESS = {"lower": lambda v: v, "higher": lambda v: -v, "zero": abs}


@dataclasses.dataclass(frozen=True)
class _Gate:
    """The rule for one matched cell (see the module docstring)."""

    rtol: float
    atol: float
    time_factor: float | None
    min_time_s: float

    def rows(self, b, h) -> list[tuple]:
        """(what, base, head, verdict) of a matched cell's changes."""
        out = []
        bn, hn = _num(b, "nfe"), _num(h, "nfe")
        if not (math.isnan(bn) and math.isnan(hn)) and bn != hn:
            out.append(("nfe", bn, hn, "REGRESSION"))
        for metric in metrics.METRICS.values():
            if metric.gated:
                out += self._quality(metric, b, h)
        if self.time_factor is not None:
            bt, ht = _num(b, TIME_COLUMN), _num(h, TIME_COLUMN)
            if bt >= self.min_time_s and (ht > bt * self.time_factor or math.isnan(ht)):
                out.append((TIME_COLUMN, bt, ht, "SLOWER"))
        return out

    def _quality(self, metric, b, h) -> list[tuple]:
        col = metric.column()
        bv, hv = _num(b, col), _num(h, col)
        floor = max(_num(b, metric.column("floor")), _num(h, metric.column("floor")))
        # a value recorded at its floor at fewer steps (not measured) stands at the floor
        b_at, h_at = _num(b, metric.column("at_floor")) == 1, _num(h, metric.column("at_floor")) == 1
        if (b_at or h_at) and math.isnan(floor):
            return []  # at a floor of 0 within its standard error (exact KL): nothing to compare with
        bv, hv = floor if b_at else bv, floor if h_at else hv
        if math.isnan(bv) and math.isnan(hv):
            return []
        if not math.isnan(floor) and bv <= floor and hv <= floor:
            return []  # both at or below the noise floor: unresolved, no difference can be claimed
        bad = _BADNESS[metric.better]
        change, scale = bad(hv) - bad(bv), self.rtol * abs(bv)  # abs: MMD^2 can be < 0
        if math.isnan(hv) or (change > scale and change > self.atol):
            return [(col, bv, hv, "REGRESSION")]
        if -change > scale and -change > self.atol:
            return [(col, bv, hv, "improved")]
        return []


def _check_tolerances(rtol, atol, time_factor, min_time_s):
    for name, v, low, strict in (("rtol", rtol, 0, False), ("atol", atol, 0, False),
                                 ("min_time_s", min_time_s, 0, False), ("time_factor", time_factor, 1, True)):
        if name == "time_factor" and v is None:
            continue
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > low if strict
                                                                                              else v >= low)
        if not ok:
            raise InputError(f"{name} must be a finite number {'>' if strict else '>='} {low}, got {v!r}")


def compare(base: pd.DataFrame, head: pd.DataFrame, *, rtol: float = 0.05, atol: float = 1e-12,
            time_factor: float | None = 2.0, min_time_s: float = 0.02):
    """Return (table of changes, exit code)."""
    _check_tolerances(rtol, atol, time_factor, min_time_s)
    gate, renamed, rows = _Gate(rtol, atol, time_factor, min_time_s), definition_changes(base, head), []
    for key, b in base.iterrows():
        cell = _label(b)
        if key not in head.index:
            rows.append((cell, "definition", *renamed[key][:2], "REGRESSION") if key in renamed
                        else (cell, "cell", "present", "missing", "REGRESSION"))
            continue
        h = head.loc[key]
        if isinstance(h.get("error"), str) and not isinstance(b.get("error"), str):
            rows.append((cell, "error", "", h.get("error"), "REGRESSION"))
            continue
        changed = model_change(b, h)
        if changed:
            rows.append((cell, "model", *changed, "model changed"))
            continue
        rows += [(cell, *r) for r in gate.rows(b, h)]
    matched = {v[2] for v in renamed.values()}
    rows += [(_label(head.loc[k]), "cell", "missing", "present", "new") for k in head.index.difference(base.index)
             if k not in matched]
    verdicts = {r[-1] for r in rows}
    code = EXIT_QUALITY if "REGRESSION" in verdicts else EXIT_TIME if "SLOWER" in verdicts else EXIT_OK
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


def _identity(d) -> tuple:
    return tuple(_canon(d.get(f)) for f in _IDENTITY)


def definition_changes(base, head) -> dict:
    """base key -> (what base had, what head has, head key) for BASE cells missing from HEAD that HEAD
    has under another definition (same model, solver, grid and size; other n, seed, options...)."""
    gone = [k for k in base.index if k not in head.index]
    new = [k for k in head.index if k not in base.index]
    if not gone or not new:
        return {}
    heads = {}
    for k in new:
        d = _definition(head.loc[k])
        heads.setdefault(_identity(d), []).append((k, d))
    out, used = {}, set()
    for k in gone:
        d = _definition(base.loc[k])
        match = _first_changed(d, [(hk, hd) for hk, hd in heads.get(_identity(d), []) if hk not in used])
        if match is not None:
            used.add(match[2])
            out[k] = match
    return out


def _first_changed(d, candidates):
    """(base's values, head's values, head key) of the first candidate whose definition differs
    from ``d`` in a variable field, or None."""
    for hk, hd in candidates:
        diff = [f for f in _VARIABLE if _canon(d.get(f)) != _canon(hd.get(f))]
        if diff:
            return (" ".join(f"{f}={_canon(d.get(f))}" for f in diff),
                    " ".join(f"{f}={_canon(hd.get(f))}" for f in diff), hk)
    return None
