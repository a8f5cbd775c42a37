"""The results store: an embedded SQLite database (default ``results/sdebench.sqlite``).

    runs(id, uuid, suite, suite_text, git_commit, started, finished, status, host, device,
         torch, cuda, dtype, threads, executor, wall_s, solve_s, definition)
    cells(run_id, key, task, model, solver, options, grid, budget, steps, seed, n, nfe,
          metrics, timing, stats, error, cell_s, solve_s, created, cell)   UNIQUE(run_id, key)
    grids(key, model, solver, options, steps, method, seed, n, cost_nfe, wall_s, created, tuning,
          grid)   tuned grids (``bench.harness.tuned``), one per tuning key, shared by all runs

``cells.cell`` is the cell's whole JSON (``bench.harness.cell.Cell.to_json``): what every reader
uses for the definition; ``nfe, steps, metrics, timing, stats, error, cell_s, solve_s`` hold its
``CellResult`` (``to_dict``; ``Store.results`` gives it back typed, ``Store.cells`` as flat columns
for tables and CSV exports); the other columns are for SQL. ``runs.definition`` hashes the run's
resolved cells.

The schema is versioned (``PRAGMA user_version`` = ``SCHEMA_VERSION``). An older store is migrated
forward on open by the numbered steps in ``MIGRATIONS`` (one transaction each); a store newer
than this code is refused with a clear message.

Each finished cell is committed at once (one transaction), so a run killed at any moment,
SIGKILL included, loses at most the cell in flight; ``--resume`` skips the cells already in
the store, and the UNIQUE key makes a duplicate impossible. WAL journaling and a busy timeout
let several runs write to one store at the same time.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pathlib
import platform
import socket
import sqlite3
import subprocess
import uuid

import pandas as pd
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from bench.harness.cell import CellResult
from solvers import InputError

__all__ = ["Store", "StoreError", "DEFAULT_STORE", "environment", "SCHEMA_VERSION", "EXPORT_FORMAT", "process_alive"]

DEFAULT_STORE = pathlib.Path("results") / "sdebench.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT UNIQUE, suite TEXT, suite_text TEXT,
    git_commit TEXT, started TEXT, finished TEXT, status TEXT, host TEXT, device TEXT,
    torch TEXT, cuda TEXT, dtype TEXT, threads INTEGER, executor TEXT, wall_s REAL, solve_s REAL,
    definition TEXT);
CREATE TABLE IF NOT EXISTS cells (
    run_id INTEGER NOT NULL REFERENCES runs(id), key TEXT NOT NULL, task TEXT, model TEXT,
    solver TEXT, options TEXT, grid TEXT, budget INTEGER, steps INTEGER, seed INTEGER, n INTEGER,
    nfe INTEGER, metrics TEXT, timing TEXT, stats TEXT, error TEXT, cell_s REAL, solve_s REAL,
    created TEXT, cell TEXT, UNIQUE(run_id, key));
"""
#: which process runs a run (host, pid): a run still "running" whose process is gone was interrupted.
#: An optional side table: stores without it read the same, older sdebench versions ignore it.
PROCESS_TABLE = "CREATE TABLE IF NOT EXISTS run_process (run_id INTEGER PRIMARY KEY, host TEXT, pid INTEGER)"
#: columns every reader needs, by table (format 0 stores lack cells.cell and runs.definition: migrated)
_REQUIRED_COLUMNS = {"runs": {"id", "uuid", "suite", "status", "started"},
                     "cells": {"run_id", "key", "task", "model", "solver", "metrics", "timing", "error"}}
#: tuned grids (``bench.harness.tuned``): one row per tuning key, shared by every run of the store
GRIDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS grids (
    key TEXT PRIMARY KEY, model TEXT, solver TEXT, options TEXT, steps INTEGER, method TEXT,
    seed INTEGER, n INTEGER, cost_nfe INTEGER, wall_s REAL, created TEXT, tuning TEXT, grid TEXT);
"""
#: the store's schema version (PRAGMA user_version); 0 = stores written before it was versioned
SCHEMA_VERSION = 2
#: the format of exported cell tables (the ``format`` column of a CSV export)
EXPORT_FORMAT = 1
_FORMAT0_REFERENCE = {"ode_rtol": 1e-10, "sde_steps": 2048}


def _migrate_0_to_1(db):
    """Format 0 kept selected columns only. Add ``cells.cell`` and ``runs.definition``, and rebuild
    each cell's JSON: from the run's stored suite text where it still parses (cells matched by key,
    so per-model reference settings are recovered exactly), else from the columns with the
    suite's top-level reference (marked ``"migrated": "partial"``)."""
    db.execute("ALTER TABLE cells ADD COLUMN cell TEXT")
    db.execute("ALTER TABLE runs ADD COLUMN definition TEXT")
    for run_id, text in db.execute("SELECT id, suite_text FROM runs").fetchall():
        by_key = _cells_of_suite_text(text)
        rows = db.execute("SELECT rowid, key, task, model, solver, options, grid, budget, steps, seed, n"
                          " FROM cells WHERE run_id=?", (run_id,)).fetchall()
        for rowid, key, task, model, solver, options, grid, budget, steps, seed, n in rows:
            if key in by_key:
                cell = by_key[key].to_dict()
            else:
                cell = {"format": 0, "migrated": "partial", "key": key, "task": task, "model": model,
                        "solver": solver, "options": json.loads(options or "{}"), "grid": grid, "budget": budget,
                        "steps": steps, "seed": seed, "n": n,
                        "reference": {} if task == "likelihood" else _top_reference(text)}
            db.execute("UPDATE cells SET cell=? WHERE rowid=?", (json.dumps(cell, sort_keys=True, default=str), rowid))


def _top_reference(text):
    try:
        ref = tomllib.loads(text or "").get("reference", {})
    except (tomllib.TOMLDecodeError, TypeError):
        ref = {}
    return {**_FORMAT0_REFERENCE, **{k: v for k, v in ref.items() if isinstance(v, (int, float))}}


def _cells_of_suite_text(text) -> dict:
    """key -> Cell of a stored suite text, or {} when it no longer parses here."""
    from bench.harness.suite import Suite  # the sweep, only to migrate old stores

    try:
        return {c.key: c for c in Suite(tomllib.loads(text or ""), "<stored suite>", text).cells()}
    except Exception:
        return {}


def _migrate_1_to_2(db):
    """Add the ``grids`` table (tuned grids and their cost)."""
    # one statement: executescript would commit the migration's transaction
    db.execute(GRIDS_SCHEMA.strip().rstrip(";"))


#: MIGRATIONS[v] takes a store from version v to v + 1
MIGRATIONS = {0: _migrate_0_to_1, 1: _migrate_1_to_2}


def definition_hash(cells) -> str:
    """One hash of a run's resolved cells (their keys, in order)."""
    return hashlib.sha1("\n".join(c.key for c in cells).encode()).hexdigest()[:16]


def _git_commit() -> str:
    here = pathlib.Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"cpu: {platform.processor() or platform.machine()}"


def environment(device: str, dtype: str, threads: int | None) -> dict:
    """What a figure needs to be reproduced: commit, host, device, versions, threads."""
    return {"git_commit": _git_commit(), "host": socket.gethostname(), "device": _device_name(device),
            "torch": torch.__version__, "cuda": torch.version.cuda or "none", "dtype": dtype,
            "threads": threads or torch.get_num_threads()}


def _now():
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class StoreError(InputError):
    """A results store that cannot be used (not SQLite, damaged, another schema, an unusable path,
    a full disk); the message names the file and what to do."""


def _explain(path, e) -> str:
    """One line for an sqlite3 error on the store at ``path``."""
    text = str(e)
    low = text.lower()
    if "not a database" in low:
        what = "is not an SQLite database (another kind of file, or its header is damaged)"
    elif "malformed" in low or "corrupt" in low:
        what = "is damaged (SQLite: database disk image is malformed)"
    elif "disk is full" in low or "disk i/o" in low:
        what = f"cannot be written: {text}; free some space"
    elif "readonly" in low or "read-only" in low:
        what = "is read-only here (no permission to write it or its directory)"
    elif "unable to open" in low:
        what = "cannot be opened or created there (check the path and its permissions)"
    elif "locked" in low or "busy" in low:
        what = f"is locked by another process ({text}); try again when it has finished"
    else:
        what = f"cannot be used: {type(e).__name__}: {text}"
    return f"results store {path} {what}; restore it, or pass another --store (or $SDEBENCH_STORE)"


def process_alive(pid) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, TypeError):
        return True
    return True


class Store:
    def __init__(self, path=DEFAULT_STORE, *, create: bool = True):
        """Open (``create``: or create) the store at ``path``; every problem is a ``StoreError``
        naming the file. ``create=False`` (read-only commands) never creates a file or directory."""
        self.path = pathlib.Path(path)
        self._check_path(create)
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(_explain(self.path, e)) from None
        try:
            self.db.execute("PRAGMA busy_timeout=60000")
            self._refuse_foreign()  # before anything is written (journal_mode=WAL writes the header)
            self.db.execute("PRAGMA journal_mode=WAL")
            self._open_schema()
        except sqlite3.Error as e:
            self.db.close()
            raise StoreError(_explain(self.path, e)) from None
        except BaseException:
            self.db.close()
            raise

    def _check_path(self, create: bool):
        p = self.path
        if p.exists() or p.is_symlink():
            if p.is_dir():
                raise StoreError(f"results store {p} is a directory; pass a file path such as {p / DEFAULT_STORE.name}")
            if not p.is_file():
                raise StoreError(f"results store {p} is not a regular file (a device, pipe or broken link); "
                                 "pass a file path to --store")
            self._check_header()
            return
        if not create:
            raise StoreError(f"no results store at {p} (nothing has been run into it yet); run a suite first "
                             "(sdebench run SUITE) or pass --store")
        for parent in p.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise StoreError(f"results store {p} cannot be created: {parent} is a file, not a directory")
                break
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"results store {p} cannot be created: {e.strerror or e} ({p.parent}); "
                             "pass another --store") from None

    def _check_header(self):
        """A truncated file: SQLite would read it as a smaller database, so say so before it does."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(100)
            size = self.path.stat().st_size
        except OSError as e:
            raise StoreError(f"results store {self.path} cannot be read: {e.strerror or e}") from None
        if not head:
            return  # an empty file: a new store
        if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
            raise StoreError(_explain(self.path, "file is not a database"))
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        pages = int.from_bytes(head[28:32], "big")
        valid = pages and head[24:28] == head[92:96]
        if valid and size < pages * page:
            raise StoreError(f"results store {self.path} is damaged (truncated: {size} bytes of the {pages * page} "
                             "its header records); restore it, or pass another --store (or $SDEBENCH_STORE)")

    def _refuse_foreign(self):
        """Refuse, reading only, a database of something else or of a newer sdebench."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema version {version} is newer than this sdebench "
                             f"(version {SCHEMA_VERSION}); upgrade sdebench or use another --store")
        ours = tables & {"runs", "cells"}
        if not ours and tables - {"run_process", "sqlite_sequence"}:
            raise StoreError(f"{self.path} is an SQLite database of something else (tables: "
                             f"{', '.join(sorted(tables)[:6])}), not an sdebench results store; pass another --store")
        for table, need in _REQUIRED_COLUMNS.items():
            if not ours:
                break
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if not need <= have:
                missing = sorted(need - have)
                raise StoreError(f"{self.path}: table {table!r} lacks {', '.join(missing) if have else 'everything'}: "
                                 "not an sdebench results store (or a damaged one); pass another --store")

    def _open_schema(self):
        """Create a new store, migrate an older one (``_refuse_foreign`` has refused the rest)."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables & {"runs", "cells"}:  # a new store
            self.db.executescript(SCHEMA + GRIDS_SCHEMA)
            self.db.execute(PROCESS_TABLE)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            return
        if "run_process" not in tables:
            self.db.execute(PROCESS_TABLE)
        while version < SCHEMA_VERSION:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if self.db.execute("PRAGMA user_version").fetchone()[0] == version:  # not done by a peer
                    MIGRATIONS[version](self.db)
                    self.db.execute(f"PRAGMA user_version={version + 1}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            version = self.db.execute("PRAGMA user_version").fetchone()[0]

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def close(self):
        self.db.close()

    # --- runs ------------------------------------------------------------------------
    def start_run(self, suite, executor: str, cells=None) -> int:
        env = environment(suite.device, suite.dtype, suite.threads)
        cells = suite.cells() if cells is None else cells
        cur = self.db.execute(
            "INSERT INTO runs (uuid, suite, suite_text, started, status, executor, git_commit, host, device,"
            " torch, cuda, dtype, threads, definition) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (uuid.uuid4().hex, suite.name, suite.text, _now(), "running", executor, env["git_commit"],
             env["host"], env["device"], env["torch"], env["cuda"], env["dtype"], env["threads"],
             definition_hash(cells)))
        return int(cur.lastrowid)

    def set_status(self, run_id: int, status: str):
        """Set a run's status; "running" also records this process (host, pid) as its owner."""
        finished = _now() if status == "complete" else None
        self.db.execute("UPDATE runs SET finished=?, status=? WHERE id=?", (finished, status, run_id))
        if status == "running":
            self.db.execute("INSERT OR REPLACE INTO run_process (run_id, host, pid) VALUES (?,?,?)",
                            (run_id, socket.gethostname(), os.getpid()))

    def _status(self, run_id, status) -> str:
        """"interrupted" for a run marked running whose process (on this host) is gone."""
        if status != "running":
            return status
        row = self.db.execute("SELECT host, pid FROM run_process WHERE run_id=?", (run_id,)).fetchone()
        if row and row[0] == socket.gethostname() and row[1] != os.getpid() and not process_alive(row[1]):
            return "interrupted"
        return status

    def owner(self, run_id: int):
        """(host, pid) of the process that last ran ``run_id``, or None."""
        return self.db.execute("SELECT host, pid FROM run_process WHERE run_id=?", (run_id,)).fetchone()

    def record_run(self, fields: dict) -> int:
        """Insert a finished run made elsewhere (an imported pytest-benchmark file, a synthetic
        history) with the given ``runs`` columns; unknown columns are an error. Returns its id."""
        cols = [c[1] for c in self.db.execute("PRAGMA table_info(runs)")]
        unknown = sorted(set(fields) - set(cols) - {"id"})
        if unknown:
            raise InputError(f"unknown run field(s) {', '.join(unknown)}; known: {', '.join(cols)}")
        fields = {"uuid": uuid.uuid4().hex, "started": _now(), "status": "complete", **fields}
        fields.pop("id", None)
        cur = self.db.execute(f"INSERT INTO runs ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",
                              tuple(fields.values()))
        return int(cur.lastrowid)

    def run(self, run_id: int) -> dict:
        cur = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,))
        row = cur.fetchone()
        if row is None:
            n = self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            raise InputError(f"no run {run_id} in {self.path}" + (" (it has no runs)" if not n else
                                                                   " (sdebench list runs shows them)"))
        out = dict(zip([c[0] for c in cur.description], row))
        out["status"] = self._status(run_id, out["status"])
        return out

    def output_dir(self, run_id: int) -> pathlib.Path:
        """Where a run's report and CSV go: ``run-<id>/`` next to the default store, ``<stem>-run-<id>/``
        next to any other, so that two stores in one directory never share an output folder."""
        stem = self.path.stem
        return self.path.parent / (f"run-{run_id}" if stem == DEFAULT_STORE.stem else f"{stem}-run-{run_id}")

    def latest_run(self, suite: str | None = None) -> int | None:
        """The newest run (of ``suite``, if given)."""
        if suite is None:
            row = self.db.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        else:
            row = self.db.execute("SELECT id FROM runs WHERE suite=? ORDER BY id DESC LIMIT 1", (suite,)).fetchone()
        return None if row is None else int(row[0])

    def runs(self) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT id, suite, status, started, finished, git_commit, device, torch, threads,"
                               " wall_s, solve_s, (SELECT COUNT(*) FROM cells WHERE run_id=runs.id) AS cells"
                               " FROM runs ORDER BY id", self.db)
        df["status"] = [self._status(i, s) for i, s in zip(df["id"], df["status"])]
        return df

    # --- cells -----------------------------------------------------------------------
    def done_keys(self, run_id: int) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT key FROM cells WHERE run_id=?", (run_id,))}

    def results(self, run_id: int) -> dict[str, CellResult]:
        """Every cell's ``CellResult`` by cell key, as execution made it."""
        rows = self.db.execute(f"SELECT key, {', '.join(_RESULT_COLUMNS)} FROM cells WHERE run_id=? ORDER BY rowid",
                               (run_id,)).fetchall()
        return {row[0]: _result(dict(zip(_RESULT_COLUMNS, row[1:]))) for row in rows}

    def add_cell(self, run_id: int, cell, result: CellResult, wall_s: float = 0.0) -> bool:
        """Commit one finished cell (and the run's time spent on it) in one transaction;
        False if it was already there. ``result``: a ``CellResult`` (or its ``to_dict`` form)."""
        if not isinstance(result, CellResult):
            result = CellResult.from_dict(result)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            added = self._insert(run_id, cell, result)
            if added:
                self.db.execute("UPDATE runs SET wall_s=COALESCE(wall_s, 0) + ?, solve_s=COALESCE(solve_s, 0) + ?"
                                " WHERE id=?", (wall_s, result.solve_s or 0.0, run_id))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return added

    def _insert(self, run_id, cell, result: CellResult) -> bool:
        row = result.to_dict()
        cur = self.db.execute(
            "INSERT OR IGNORE INTO cells (run_id, key, task, model, solver, options, grid, budget, steps, seed,"
            " n, nfe, metrics, timing, stats, error, cell_s, solve_s, created, cell)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run_id, cell.key, cell.task, cell.model, cell.solver, json.dumps(cell.options, sort_keys=True),
             cell.grid, cell.budget, row["steps"], cell.seed, cell.n, row["nfe"], json.dumps(row["metrics"]),
             json.dumps(row["timing"]), json.dumps(row["stats"], default=str), row["error"], row["cell_s"],
             row["solve_s"], _now(), cell.to_json()))
        return cur.rowcount == 1

    # --- tuned grids -------------------------------------------------------------------
    def grid(self, key: str) -> dict | None:
        """The tuned grid stored under ``key``: {"key", "tuning": its tuning key, "grid":
        ``TunedGrid.to_dict()``, "cost_nfe", "wall_s", "created"}, or None."""
        row = self.db.execute("SELECT key, tuning, grid, cost_nfe, wall_s, created FROM grids WHERE key=?",
                              (key,)).fetchone()
        if row is None:
            return None
        return {"key": row[0], "tuning": json.loads(row[1]), "grid": json.loads(row[2]), "cost_nfe": row[3],
                "wall_s": row[4], "created": row[5]}

    def add_grid(self, key: str, tuning: dict, grid: dict) -> bool:
        """Store a tuned grid (``TunedGrid.to_dict()``) under its tuning key; False if there was one."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO grids (key, model, solver, options, steps, method, seed, n, cost_nfe, wall_s,"
            " created, tuning, grid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (key, tuning.get("model"), tuning.get("solver"), json.dumps(tuning.get("options", {}), sort_keys=True,
                                                                         default=str),
             tuning.get("steps"), tuning.get("method"), tuning.get("seed"), tuning.get("n"), grid.get("cost_nfe"),
             grid.get("wall_s"), _now(), json.dumps(tuning, sort_keys=True, default=str),
             json.dumps(grid, default=str)))
        return cur.rowcount == 1

    def grids(self) -> pd.DataFrame:
        """Every stored tuned grid (without its times)."""
        return pd.read_sql_query("SELECT key, model, solver, options, steps, method, seed, n, cost_nfe, wall_s, created"
                                 " FROM grids ORDER BY created", self.db)

    def cells(self, run_id: int, *, typed: bool = False) -> pd.DataFrame:
        """One row per cell: the identity columns, then each ``CellResult``'s flat ``columns()``
        (metrics, then timing); ``cell`` the cell's JSON; with ``typed``, ``result`` its ``CellResult``."""
        df = pd.read_sql_query("SELECT * FROM cells WHERE run_id=? ORDER BY rowid", self.db, params=(run_id,))
        if df.empty:
            return df
        results = [_result(row) for row in df[list(_RESULT_COLUMNS)].to_dict("records")]
        flat = pd.DataFrame([r.columns() for r in results], index=df.index)
        base = df.drop(columns=list(_JSON_COLUMNS))
        df = pd.concat([base, flat.drop(columns=[c for c in flat.columns if c in base.columns])], axis=1)
        if typed:
            df["result"] = results
        return df

    def to_csv(self, run_id: int, path) -> pathlib.Path:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        df = self.cells(run_id)
        df.insert(0, "format", EXPORT_FORMAT)
        df.to_csv(path, index=False)
        return path


#: the columns of a cell's row that hold its result (``CellResult.to_dict``); the JSON ones are expanded
_RESULT_COLUMNS = ("nfe", "steps", "metrics", "timing", "stats", "error", "cell_s", "solve_s")
_JSON_COLUMNS = ("metrics", "timing", "stats")


def _result(row: dict) -> CellResult:
    """A stored row's ``CellResult``."""
    d = {k: (json.loads(v if isinstance(v, str) and v else "{}") if k in _JSON_COLUMNS else v)
         for k, v in row.items()}
    for k in ("nfe", "steps"):  # pandas reads an INTEGER column with NULLs as floats
        if isinstance(d.get(k), float):
            d[k] = None if d[k] != d[k] else int(d[k])
    if isinstance(d.get("error"), float):
        d["error"] = None
    return CellResult.from_dict(d)


def default_store_path() -> pathlib.Path:
    return pathlib.Path(os.environ.get("SDEBENCH_STORE", DEFAULT_STORE))
