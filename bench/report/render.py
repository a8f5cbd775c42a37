"""The reports' rendering API: a small document model rendered to one self-contained HTML file and
to Markdown, the text formats of their tables, and the style every figure shares.

    doc = Document()
    doc.section("my-id", "My heading").extend([paragraph("..."), table(["a", "b"], [[1, 2.5]]),
                                               figure(png_path, "caption")])
    html_path, md_path = doc.write(out / "report.html", out / "report.md", "title", "subtitle")

Blocks (each renders itself to HTML and to Markdown): ``paragraph``, ``heading`` (a sub-heading),
``table``, ``preformatted``, ``figure`` (a PNG: inlined as base64 in the HTML, referenced by file
name in the Markdown), ``chart`` (trusted HTML made by the report itself; HTML only). Everything
else - names from suites and options included - is escaped: HTML entities in the HTML
(``escape_html``), entities plus Markdown punctuation in the Markdown (``escape_markdown``).

Text: ``format_cell`` (a table cell: 3 significant digits, "–" for missing), ``plus_minus`` (a 95%
interval), ``number_text`` (4 significant digits), ``relative_change`` / ``change_text``, ``slug``
(a file-name part).

Figures: ``figure_style()`` (the one seaborn style, as a context manager: pyplot's global state is
not touched), ``SeriesStyles`` (colour and marker per series, line style per run), ``count_ticks``,
``DPI``.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import html
import math
import pathlib
import re

import matplotlib
import numpy as np
import seaborn as sns
from matplotlib.lines import Line2D

__all__ = ["Block", "Document", "paragraph", "heading", "table", "preformatted", "figure", "chart",
           "escape_html", "escape_markdown", "format_cell", "plus_minus", "number_text", "relative_change",
           "change_text", "slug", "DPI", "figure_style", "SeriesStyles", "count_ticks"]


# --------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------
def escape_html(s) -> str:
    """HTML text or attribute value: &, <, >, " and ' as entities."""
    return html.escape(str(s), quote=True)


def escape_markdown(s) -> str:
    """A Markdown table cell or text line: HTML entities for &<> (so raw HTML never renders), | and the
    Markdown punctuation \\`*_[] escaped, on one line."""
    s = html.escape(str(s), quote=False).replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return re.sub(r"([\\`*_\[\]])", lambda mt: mt.group(1) if mt.group(1) == "\\" else "\\" + mt.group(1), s)


def format_cell(v) -> str:
    """A table cell: "–" for None or a non-finite number, yes/no, integers as such, else 3 significant
    digits."""
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return "–"
        return str(int(f)) if f.is_integer() and abs(f) < 1e6 else f"{f:.3g}"
    return str(v)


def plus_minus(value, se) -> str:
    """value ± 1.96 se (a 95% interval), 3 significant digits; the value alone without an se."""
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.3g} ± {1.96 * se:.2g}" if se is not None and np.isfinite(se) else f"{value:.3g}"


def number_text(v, missing: str | None = None) -> str:
    """A float with 4 significant digits, anything else as text; ``missing`` (when given) for None
    and non-finite floats."""
    number = isinstance(v, (float, np.floating))
    if missing is not None and (v is None or (number and not math.isfinite(v))):
        return missing
    return f"{v:.4g}" if number and math.isfinite(v) else str(v)


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def relative_change(before, after) -> float:
    """after / before - 1; NaN unless both are finite numbers and ``before`` is not 0."""
    b, a = _float(before), _float(after)
    return a / b - 1 if math.isfinite(b) and math.isfinite(a) and b != 0 else math.nan


def change_text(before, after) -> str:
    """The relative change as "+12.3%"; "" where it is undefined."""
    c = relative_change(before, after)
    return f"{c:+.1%}" if math.isfinite(c) else ""


def slug(s, max_len: int = 80) -> str:
    """A file-name part: runs of anything but letters, digits and ._- as one "_", at most ``max_len``
    characters ("x" when nothing is left)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(s)).strip("_")[:max_len] or "x"


# --------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------
class Block:
    """One piece of a section; renders itself. ``images``: figure path -> base64 PNG."""

    def html(self, images: dict) -> str:
        raise NotImplementedError

    def markdown(self) -> list[str]:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class _Text(Block):
    text: str
    tag: str = "p"

    def html(self, images):
        return f"<{self.tag}>{escape_html(self.text)}</{self.tag}>"

    def markdown(self):
        return [("### " if self.tag == "h3" else "") + escape_markdown(self.text), ""]


@dataclasses.dataclass(frozen=True)
class _Preformatted(Block):
    text: str

    def html(self, images):
        return f"<pre>{escape_html(self.text)}</pre>"

    def markdown(self):
        fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", self.text)), default=0))
        return [fence + "text", self.text.rstrip("\n"), fence, ""]


@dataclasses.dataclass(frozen=True)
class _Figure(Block):
    path: pathlib.Path
    caption: str

    def html(self, images):
        return (f'<figure><img alt="{escape_html(self.caption)}" src="data:image/png;base64,{images[self.path]}">'
                f"<figcaption>{escape_html(self.caption)}</figcaption></figure>")

    def markdown(self):
        return [f"![{escape_markdown(self.caption)}]({self.path.name})", "", f"*{escape_markdown(self.caption)}*", ""]


@dataclasses.dataclass(frozen=True)
class _Chart(Block):
    markup: str

    def html(self, images):
        return self.markup

    def markdown(self):
        return []


@dataclasses.dataclass(frozen=True)
class _Table(Block):
    columns: list
    rows: list
    flag_col: str | None = None
    collapse: str | None = None
    group_col: str | None = None

    def _flagged(self, row) -> bool:
        return self.flag_col in self.columns and row[self.columns.index(self.flag_col)] not in ("", "–")

    def _row_html(self, j, row, error_cols) -> str:
        gi = self.columns.index(self.group_col) if self.group_col in self.columns else None
        classes = (["flag"] if self._flagged(row) else []) + (
            ["grp"] if gi is not None and j and row[gi] != self.rows[j - 1][gi] else [])
        cls = f' class="{" ".join(classes)}"' if classes else ""
        return f"<tr{cls}>" + "".join(f'<td class="err">{escape_html(v)}</td>' if i in error_cols
                                      else f"<td>{escape_html(v)}</td>" for i, v in enumerate(row)) + "</tr>"

    def html(self, images):
        error_cols = {i for i, c in enumerate(self.columns) if c == "error"}
        body = "".join(['<div class="tw"><table><thead><tr>',
                        "".join(f"<th>{escape_html(c)}</th>" for c in self.columns), "</tr></thead><tbody>",
                        *(self._row_html(j, r, error_cols) for j, r in enumerate(self.rows)),
                        "</tbody></table></div>"])
        return f"<details><summary>{escape_html(self.collapse)}</summary>{body}</details>" if self.collapse else body

    def markdown(self):
        out = ["| " + " | ".join(escape_markdown(c) for c in self.columns) + " |", "|" + "---|" * len(self.columns)]
        for r in self.rows:
            cells = [escape_markdown(v) for v in r]
            if self._flagged(r):
                i = self.columns.index(self.flag_col)
                cells[i] = "**⚠ " + cells[i] + "**"
            out.append("| " + " | ".join(cells) + " |")
        return out + [""]


def paragraph(text) -> Block:
    return _Text(str(text))


def heading(text) -> Block:
    """A sub-heading inside a section (HTML h3, Markdown ###)."""
    return _Text(str(text), "h3")


def preformatted(text) -> Block:
    return _Preformatted(str(text))


def figure(path, caption) -> Block:
    """A PNG written beforehand at ``path`` (the Markdown references it by name: keep it beside)."""
    return _Figure(pathlib.Path(path), str(caption))


def chart(markup) -> Block:
    """Trusted HTML made by the report itself (an interactive chart); left out of the Markdown."""
    return _Chart(str(markup))


def table(columns, rows, flag_col=None, collapse=None, group_col=None) -> Block:
    """A table of ``format_cell``-formatted values; rows whose ``flag_col`` is set are highlighted, a
    change of ``group_col`` draws a rule, ``collapse`` (HTML) puts it in a closed <details> with that
    summary."""
    return _Table([str(c) for c in columns], [[format_cell(v) for v in r] for r in rows], flag_col, collapse,
                  group_col)


# --------------------------------------------------------------------------------------------
# the document
# --------------------------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0;color:#1d232a;
background:#f6f7f9;line-height:1.45}
main{max-width:1320px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{margin:0 0 4px;font-size:26px} h2{margin-top:40px;padding-top:12px;border-top:2px solid #dde2e8;font-size:21px}
h3{font-size:16px;margin:22px 0 8px}
nav ol{columns:2;font-size:14px;margin:8px 0 0} nav a{color:#1c5fa8;text-decoration:none}
p.meta{color:#5a6672;margin:0 0 12px}
figure{margin:12px 0 20px} figure img{max-width:100%;height:auto;border:1px solid #e3e7ec}
figcaption{font-size:13px;color:#4a5560;margin-top:4px}
.tw{overflow-x:auto;margin:6px 0 14px}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #e1e5ea;padding:3px 8px;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#eef1f5;position:sticky;top:0} tr:nth-child(even) td{background:#fafbfc}
tr.flag td{background:#fff1e6 !important} tr.grp td{border-top:2px solid #9aa5b1}
td.err{white-space:normal;max-width:560px;color:#9b1c1c}
pre{background:#f3f5f7;border:1px solid #e1e5ea;padding:10px;font-size:12px;overflow-x:auto;white-space:pre-wrap}
details summary{cursor:pointer;color:#1c5fa8;margin:6px 0}
div.plot{width:100%;margin:4px 0 22px;border:1px solid #e3e7ec}
"""


class Document:
    """Sections of blocks, in order; each section has an id (HTML ``<section id>``, a Markdown anchor)
    and a heading. ``section`` opens one and returns its block list to fill."""

    def __init__(self):
        self.sections: list[tuple[str, str, list[Block]]] = []

    def section(self, sid: str, title: str) -> list[Block]:
        blocks: list[Block] = []
        self.sections.append((sid, title, blocks))
        return blocks

    def blocks(self):
        return [b for _, _, blocks in self.sections for b in blocks]

    def figures(self) -> list[pathlib.Path]:
        """The PNGs of the figure blocks, in document order."""
        return [b.path for b in self.blocks() if isinstance(b, _Figure)]

    def charts(self) -> int:
        return sum(isinstance(b, _Chart) for b in self.blocks())

    def to_html(self, title, subtitle, images: dict, head: str = "") -> str:
        """``head``: trusted markup for <head> (the inlined chart library, once per page)."""
        out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
               '<meta name="viewport" content="width=device-width, initial-scale=1">',
               f"<title>{escape_html(title)}</title><style>{CSS}</style>{head}</head><body><main>",
               f"<header><h1>{escape_html(title)}</h1><p class=\"meta\">{escape_html(subtitle)}</p><nav><ol>"]
        out += [f'<li><a href="#{sid}">{escape_html(t)}</a></li>' for sid, t, _ in self.sections]
        out.append("</ol></nav></header>")
        for sid, t, blocks in self.sections:
            out.append(f'<section id="{sid}"><h2>{escape_html(t)}</h2>')
            out += [b.html(images) for b in blocks]
            out.append("</section>")
        out.append("</main></body></html>")
        return "\n".join(out)

    def to_markdown(self, title, subtitle) -> str:
        out = [f"# {escape_markdown(title)}", "", escape_markdown(subtitle), ""]
        out += [f"{i + 1}. [{escape_markdown(t)}](#{sid})" for i, (sid, t, _) in enumerate(self.sections)]
        for sid, t, blocks in self.sections:
            out += ["", f'<a id="{sid}"></a>', "", f"## {escape_markdown(t)}", ""]
            for b in blocks:
                out += b.markdown()
        return "\n".join(out) + "\n"

    def write(self, html_path, md_path, title, subtitle, head: str = "") -> tuple[pathlib.Path, pathlib.Path]:
        """Write the self-contained HTML (figures inlined) and the Markdown (figures by file name)."""
        html_path, md_path = pathlib.Path(html_path), pathlib.Path(md_path)
        images = {p: base64.b64encode(p.read_bytes()).decode("ascii") for p in self.figures()}
        html_path.write_text(self.to_html(title, subtitle, images, head), encoding="utf-8")
        md_path.write_text(self.to_markdown(title, subtitle), encoding="utf-8")
        return html_path, md_path


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------
DPI = 110
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))


@contextlib.contextmanager
def figure_style():
    """The one style of every figure (seaborn whitegrid, paper context; no global state is changed).
    Draw on bare ``matplotlib.figure.Figure`` objects inside it and save with ``dpi=DPI``."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(sns.axes_style("whitegrid", {"grid.color": ".9", "axes.edgecolor": ".3"}))
        stack.enter_context(sns.plotting_context("paper", font_scale=1.2))
        stack.enter_context(matplotlib.rc_context({"figure.dpi": DPI, "savefig.dpi": DPI, "axes.titleweight": "bold",
                                                   "legend.frameon": False, "mathtext.fontset": "dejavusans",
                                                   "figure.facecolor": "white", "savefig.facecolor": "white"}))
        yield


class SeriesStyles:
    """Colour and marker per series, line style per run: the same in every figure of a report."""

    def __init__(self, series, run_ids):
        series = sorted(set(series))
        n = max(len(series), 1)
        palette = sns.color_palette("tab10" if n <= 10 else "tab20" if n <= 20 else "husl", n)
        self.color = {s: palette[i] for i, s in enumerate(series)}
        self.marker = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(series)}
        self.runs = list(run_ids)
        self.ls = {r: LINESTYLES[i % len(LINESTYLES)] for i, r in enumerate(self.runs)}

    def handles(self, series, runs=None):
        """Legend handles: one per series, one per run when there are several."""
        hs = [Line2D([], [], color=self.color[s], marker=self.marker[s], lw=1.6, ms=6, label=s)
              for s in sorted(set(series))]
        runs = self.runs if runs is None else runs
        if len(runs) > 1:
            hs += [Line2D([], [], color="0.3", ls=self.ls[r], lw=1.6, label=f"run {r}") for r in runs]
        return hs


def count_ticks(values, min_ratio: float = 1.2, max_count: int = 9) -> list[int] | None:
    """Ticks of a log axis of counts (NFE): the positive values themselves as integers, a neighbour
    less than ``min_ratio`` times the previous tick left out (48 after 40); None when none or more than
    ``max_count`` remain."""
    ticks: list[int] = []
    for v in sorted({int(v) for v in values if np.isfinite(v) and v > 0}):
        if not ticks or v >= min_ratio * ticks[-1]:
            ticks.append(v)
    return ticks if 0 < len(ticks) <= max_count else None
