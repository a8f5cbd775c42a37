"""A tiny document model (sections of paragraphs, tables, figures), rendered to one
self-contained HTML file and to Markdown. Everything from suites and options is escaped."""
from __future__ import annotations

import html
import pathlib
import re

import numpy as np


class _Doc:
    def __init__(self):
        self.sections = []  # (id, title, blocks)

    def section(self, sid, title):
        blocks = []
        self.sections.append((sid, title, blocks))
        return blocks


def _p(text):
    return ("p", str(text))


def _h3(text):
    return ("h3", str(text))


def _table(columns, rows, flag_col=None, collapse=None, group_col=None):
    """A table; rows whose ``flag_col`` is set are highlighted, a change of ``group_col`` draws a rule,
    ``collapse`` (HTML) puts it in a closed <details> with that summary."""
    return ("table", [str(c) for c in columns], [[_cell(v) for v in r] for r in rows], flag_col, collapse,
            group_col)


def _pre(text):
    return ("pre", str(text))


def _figure(path, caption):
    return ("figure", pathlib.Path(path), str(caption))


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        if float(v).is_integer() and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.3g}"
    return str(v)


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _md(s) -> str:
    """Markdown table/text cell: HTML entities for &<> (so raw HTML never renders), | escaped,
    one line."""
    s = html.escape(str(s), quote=False).replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return re.sub(r"([\\`*_\[\]])", lambda mt: mt.group(1) if mt.group(1) == "\\" else "\\" + mt.group(1), s)


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


def _interactive(html_text):
    """Trusted HTML made by the report itself (an interactive chart); HTML output only."""
    return ("html", str(html_text))


def _render_html(doc, title, subtitle, images: dict, head: str = "") -> str:
    """``head``: trusted markup for <head> (the inlined chart library, once per page)."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_esc(title)}</title><style>{CSS}</style>{head}</head><body><main>",
           f"<header><h1>{_esc(title)}</h1><p class=\"meta\">{_esc(subtitle)}</p><nav><ol>"]
    out += [f'<li><a href="#{sid}">{_esc(t)}</a></li>' for sid, t, _ in doc.sections]
    out.append("</ol></nav></header>")
    for sid, t, blocks in doc.sections:
        out.append(f'<section id="{sid}"><h2>{_esc(t)}</h2>')
        for b in blocks:
            kind = b[0]
            if kind == "p":
                out.append(f"<p>{_esc(b[1])}</p>")
            elif kind == "h3":
                out.append(f"<h3>{_esc(b[1])}</h3>")
            elif kind == "pre":
                out.append(f"<pre>{_esc(b[1])}</pre>")
            elif kind == "html":
                out.append(b[1])
            elif kind == "figure":
                data = images[b[1]]
                out.append(f'<figure><img alt="{_esc(b[2])}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{_esc(b[2])}</figcaption></figure>")
            elif kind == "table":
                _, cols, rows, flag_col, collapse, group_col = b
                fi = cols.index(flag_col) if flag_col in cols else None
                gi = cols.index(group_col) if group_col in cols else None
                err = {i for i, c in enumerate(cols) if c == "error"}
                t_html = ['<div class="tw"><table><thead><tr>', "".join(f"<th>{_esc(c)}</th>" for c in cols),
                          "</tr></thead><tbody>"]
                for j, r in enumerate(rows):
                    classes = (["flag"] if fi is not None and r[fi] not in ("", "–") else []) + (
                        ["grp"] if gi is not None and j and r[gi] != rows[j - 1][gi] else [])
                    cls = f' class="{" ".join(classes)}"' if classes else ""
                    t_html.append(f"<tr{cls}>" + "".join(
                        f'<td class="err">{_esc(v)}</td>' if i in err else f"<td>{_esc(v)}</td>"
                        for i, v in enumerate(r)) + "</tr>")
                t_html.append("</tbody></table></div>")
                if collapse:
                    out.append(f"<details><summary>{_esc(collapse)}</summary>{''.join(t_html)}</details>")
                else:
                    out.append("".join(t_html))
        out.append("</section>")
    out.append("</main></body></html>")
    return "\n".join(out)


def _render_md(doc, title, subtitle) -> str:
    out = [f"# {_md(title)}", "", _md(subtitle), ""]
    out += [f"{i + 1}. [{_md(t)}](#{sid})" for i, (sid, t, _) in enumerate(doc.sections)]
    for sid, t, blocks in doc.sections:
        out += ["", f'<a id="{sid}"></a>', "", f"## {_md(t)}", ""]
        for b in blocks:
            kind = b[0]
            if kind == "p":
                out += [_md(b[1]), ""]
            elif kind == "h3":
                out += [f"### {_md(b[1])}", ""]
            elif kind == "pre":
                fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", b[1])), default=0))
                out += [fence + "text", b[1].rstrip("\n"), fence, ""]
            elif kind == "figure":
                out += [f"![{_md(b[2])}]({b[1].name})", "", f"*{_md(b[2])}*", ""]
            elif kind == "table":
                _, cols, rows, flag_col, _, _ = b
                fi = cols.index(flag_col) if flag_col in cols else None
                out.append("| " + " | ".join(_md(c) for c in cols) + " |")
                out.append("|" + "---|" * len(cols))
                for r in rows:
                    cells = [_md(v) for v in r]
                    if fi is not None and r[fi] not in ("", "–"):
                        cells[fi] = "**⚠ " + cells[fi] + "**"
                    out.append("| " + " | ".join(cells) + " |")
                out.append("")
    return "\n".join(out) + "\n"


