"""Report sections as registered builders: the extension point of ``bench.report.write_report``.

A section is a stable id (the HTML ``<section id>`` and the Markdown anchor), a heading, and a
builder ``build(ctx: ReportContext) -> list[Block]`` that returns its content (blocks of
``bench.report.render``: paragraphs, tables, figures it wrote to ``ctx.figure_path(...)``,
interactive charts). ``write_report`` is a loop over the registry, in order. A plugin adds a
section in one call:

    from bench.report import paragraph, register_section

    def solver_count(ctx):
        return [paragraph(f"{ctx.sample['label'].nunique()} solvers sampled in {ctx.run_word}")]

    register_section("solver-count", "Solver count", solver_count, after="best-solver")

and ``unregister_section("solver-count")`` removes it. ``sections()`` lists the registry;
``write_report(..., sections=[ids])`` writes only those.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
import re
from collections.abc import Callable

import pandas as pd

from bench.harness.store import Store
from bench.report import interactive as iv
from bench.report.data import load_cells
from bench.report.render import Block, SeriesStyles, slug
from solvers import InputError

__all__ = ["ReportContext", "ReportSection", "register_section", "unregister_section", "get_section", "sections",
           "select_sections"]


@dataclasses.dataclass
class ReportContext:
    """What every section builder reads (build one by hand to build a section alone).

    ``cells``: every cell of the runs, one frame (``bench.report.data.load_cells``); ``runs``: run id
    -> the run's stored record (suite, status, commit, device, suite text...), in report order;
    ``out_dir``: where figures are written (``figure_path``) beside the report; ``store_path``: the
    store the cells came from (None for a frame built otherwise); ``trajectories``: draw the
    trajectory figure (fresh solves); ``interactive``: add interactive charts to the HTML (False
    when plotly is not installed); ``styles``: colour/marker per series and line style per run, the
    same in every figure (made from ``cells`` when not given).

    Analysed frames, computed once: ``sample`` (successful sample cells), ``likelihood``
    (successful likelihood cells), ``failed``; ``models`` (the sample cells' models, sorted);
    ``run_word`` ("this run" / "these runs")."""

    cells: pd.DataFrame
    runs: dict
    out_dir: pathlib.Path
    store_path: pathlib.Path | None = None
    trajectories: bool = True
    interactive: bool = False
    styles: SeriesStyles | None = None

    def __post_init__(self):
        self.out_dir = pathlib.Path(self.out_dir)
        self.interactive = bool(self.interactive) and iv.available()
        if self.styles is None:
            self.styles = SeriesStyles(self.cells["series"], self.run_ids)

    @classmethod
    def from_store(cls, store: Store, run_ids, out_dir=None, **options) -> ReportContext:
        """The context of ``run_ids`` (duplicates dropped; ``InputError`` for none or an unknown run);
        ``out_dir`` defaults to ``store.output_dir(first run)`` and is created."""
        run_ids = list(dict.fromkeys(int(r) for r in run_ids))
        if not run_ids:
            raise InputError("write_report needs at least one run id")
        runs = {r: store.run(r) for r in run_ids}  # InputError for an unknown run
        out_dir = pathlib.Path(out_dir) if out_dir is not None else store.output_dir(run_ids[0])
        out_dir.mkdir(parents=True, exist_ok=True)
        return cls(load_cells(store, run_ids), runs, out_dir, store_path=store.path, **options)

    @property
    def run_ids(self) -> list[int]:
        return list(self.runs)

    @property
    def run_word(self) -> str:
        return "this run" if len(self.runs) == 1 else "these runs"

    @functools.cached_property
    def sample(self) -> pd.DataFrame:
        return self.cells[(self.cells["task"] == "sample") & self.cells["ok"]]

    @functools.cached_property
    def likelihood(self) -> pd.DataFrame:
        return self.cells[(self.cells["task"] == "likelihood") & self.cells["ok"]]

    @functools.cached_property
    def failed(self) -> pd.DataFrame:
        return self.cells[~self.cells["ok"]]

    @functools.cached_property
    def models(self) -> list[str]:
        return sorted(self.sample["model"].dropna().unique())

    def figure_path(self, name) -> pathlib.Path:
        """Where a figure called ``name`` is written: ``<out_dir>/fig-<slug>.png``."""
        return self.out_dir / f"fig-{slug(name)}.png"


@dataclasses.dataclass(frozen=True)
class ReportSection:
    """A registered section: its stable id, its heading and its builder."""

    id: str
    heading: str
    build: Callable[[ReportContext], list[Block]]

    def blocks(self, ctx: ReportContext) -> list[Block]:
        """The builder's blocks, checked (a plugin's mistake is named, not rendered as a traceback)."""
        out = self.build(ctx)
        if not isinstance(out, (list, tuple)) or not all(isinstance(b, Block) for b in out):
            raise InputError(f"report section {self.id!r}: its builder must return a list of blocks "
                             f"(bench.report.render), got {type(out).__name__}")
        return list(out)


_REGISTRY: list[ReportSection] = []
_ID = re.compile(r"[a-z0-9][a-z0-9-]*\Z")


def _index(sid: str, role: str) -> int:
    ids = [s.id for s in _REGISTRY]
    if sid not in ids:
        raise InputError(f"{role} {sid!r}: no such report section; known: {', '.join(ids)}")
    return ids.index(sid)


def register_section(sid: str, heading: str, build=None, *, after: str | None = None, before: str | None = None):
    """Register a report section: id (lower-case letters, digits and '-'; not registered yet), heading,
    builder ``build(ctx) -> list[Block]``; at the end, or right ``after`` / ``before`` the section with
    that id. Returns ``build``; without it, a decorator."""
    if build is None:
        return lambda fn: register_section(sid, heading, fn, after=after, before=before)
    if not isinstance(sid, str) or not _ID.match(sid):
        raise InputError(f"report section id {sid!r}: use lower-case letters, digits and '-' (e.g. 'my-section')")
    if any(s.id == sid for s in _REGISTRY):
        raise InputError(f"report section {sid!r} is registered already; unregister_section({sid!r}) first")
    if not callable(build):
        raise InputError(f"report section {sid!r}: build must be a function of the report context")
    if after is not None and before is not None:
        raise InputError(f"report section {sid!r}: give after= or before=, not both")
    pos = (_index(after, "after") + 1 if after is not None else _index(before, "before") if before is not None
           else len(_REGISTRY))
    _REGISTRY.insert(pos, ReportSection(sid, str(heading), build))
    return build


def unregister_section(sid: str) -> ReportSection:
    """Remove a registered section (``InputError`` when there is none by that id); returns it."""
    return _REGISTRY.pop(_index(sid, "section"))


def get_section(sid: str) -> ReportSection:
    return _REGISTRY[_index(sid, "section")]


def sections() -> tuple[ReportSection, ...]:
    """The registered sections, in report order."""
    return tuple(_REGISTRY)


def select_sections(ids=None) -> list[ReportSection]:
    """Every registered section (``ids`` None), or those named, in the order given."""
    if ids is None:
        return list(_REGISTRY)
    if isinstance(ids, str):
        ids = [ids]
    chosen = [get_section(s) for s in dict.fromkeys(ids)]
    if not chosen:
        raise InputError("sections=[]: name at least one report section")
    return chosen
