"""CI-native outputs of ``compare``: a JUnit XML file and a Markdown step summary.

    per_cell(base, head, **gate) -> [CellVerdict, ...]       compare's rule, one cell at a time
    write_junit(path, verdicts, name)                        one <testcase> per cell
    write_summary(path, verdicts, code, name)                Markdown: regressions, improvements, missing/new

``per_cell`` runs ``bench.report.compare.compare`` on each cell (matched by key, or by compare's
definition match) alone, so every row of its verdict belongs to that cell and the gate's rule is
written in one place only. Labels are compare's: model, solver, options, grid, budget, steps, seed.

JUnit: ``<testsuites><testsuite name tests failures errors skipped>`` with one ``<testcase
classname="sdebench.<model>" name="<cell>">`` per cell of BASE and HEAD; a regression
(quality/NFE/failed/missing) is a ``<failure type="regression">`` and a timing-only one a
``<failure type="timing">``, each with the numbers in its message (what, base -> head, relative
change); a new cell passes with a ``<system-out>`` note, an improvement too. Test names are the
cells' labels, with the key appended where cells share one.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
import xml.etree.ElementTree as ET

import pandas as pd

from bench.report import compare as gate
from bench.report.render import change_text, escape_markdown, number_text

__all__ = ["CellVerdict", "per_cell", "write_junit", "write_summary"]

_FAIL = {"REGRESSION": "regression", "SLOWER": "timing"}


@dataclasses.dataclass
class CellVerdict:
    key: str
    model: str
    label: str
    rows: pd.DataFrame  # compare's rows for this cell (what, base, head, verdict)
    time_s: float = 0.0

    @property
    def failures(self) -> pd.DataFrame:
        return self.rows[self.rows["verdict"].isin(list(_FAIL))]

    def status(self) -> str:
        v = set(self.rows["verdict"])
        if "REGRESSION" in v:
            return "regression"
        if "SLOWER" in v:
            return "slower"
        if "new" in v:
            return "new"
        if "model changed" in v:
            return "model changed"
        return "improved" if "improved" in v else "ok"


def _time(row) -> float:
    try:
        t = float(row.get("time_median_s"))
    except (TypeError, ValueError):
        return 0.0
    return t if math.isfinite(t) else 0.0


def per_cell(base: pd.DataFrame, head: pd.DataFrame, **gate_kw) -> list[CellVerdict]:
    """Every cell of BASE and HEAD (by key) with compare's verdict rows for it alone; a BASE cell
    that HEAD has under another definition is one verdict with its HEAD counterpart (compare's
    "definition" row), as in compare's table, not a missing cell and a new one."""
    out = []
    renamed = {k: v[2] for k, v in gate.definition_changes(base, head).items()}
    for key in list(base.index) + [k for k in head.index if k not in base.index and k not in renamed.values()]:
        b = base.loc[[key]] if key in base.index else base.iloc[:0]
        hk = renamed.get(key, key)
        h = head.loc[[hk]] if hk in head.index else head.iloc[:0]
        rows, _ = gate.compare(b, h, **gate_kw)
        row = (h if len(h) else b).iloc[0]
        out.append(CellVerdict(str(key), str(row.get("model")), gate._label(row), rows, _time(row) if len(h) else 0.0))
    return out


def _message(rows: pd.DataFrame) -> str:
    return "; ".join(f"{r.what}: {number_text(r.base)} -> {number_text(r.head)}"
                     + (f" ({c})" if (c := change_text(r.base, r.head)) else "") for r in rows.itertuples())


def write_junit(path, verdicts: list[CellVerdict], name: str = "sdebench compare") -> pathlib.Path:
    """One test case per cell; a regression is a failure whose message has the numbers."""
    failures = sum(1 for v in verdicts if len(v.failures))
    root = ET.Element("testsuites", name=name, tests=str(len(verdicts)), failures=str(failures), errors="0")
    suite = ET.SubElement(root, "testsuite", name=name, tests=str(len(verdicts)), failures=str(failures),
                          errors="0", skipped="0", time=f"{sum(v.time_s for v in verdicts):.6f}")
    repeated = pd.Series([v.label for v in verdicts]).duplicated(keep=False).tolist() if verdicts else []
    for v, dup in zip(verdicts, repeated):  # a label shared by cells (e.g. step counts) gets the key
        case = ET.SubElement(suite, "testcase", classname=f"sdebench.{v.model}",
                             name=f"{v.label} [{v.key}]" if dup else v.label, time=f"{v.time_s:.6f}")
        bad = v.failures
        if len(bad):
            kind = "regression" if (bad["verdict"] == "REGRESSION").any() else "timing"
            msg = _message(bad)
            fail = ET.SubElement(case, "failure", type=kind, message=msg)
            fail.text = f"cell {v.key}: {v.label}\n" + "\n".join(
                f"{r.verdict}: {r.what} base={number_text(r.base)} head={number_text(r.head)} "
                f"{change_text(r.base, r.head)}".rstrip() for r in bad.itertuples())
        elif len(v.rows):
            ET.SubElement(case, "system-out").text = f"{v.status()}: {_message(v.rows)}"
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def _rows_table(verdicts, verdict_names) -> list[str]:
    lines = ["| cell | what | base | head | change |", "|---|---|---|---|---|"]
    for v in verdicts:
        for r in v.rows[v.rows["verdict"].isin(verdict_names)].itertuples():
            cells = [v.label, r.what, number_text(r.base), number_text(r.head), change_text(r.base, r.head)]
            lines.append("| " + " | ".join(escape_markdown(c) for c in cells) + " |")
    return lines


_VERDICT = {gate.EXIT_OK: "OK: no regression", gate.EXIT_QUALITY: "FAIL: quality/NFE/coverage regression",
            gate.EXIT_TIME: "FAIL: timing regression"}


def _head(verdicts, code, name) -> list[str]:
    counts = pd.Series([v.status() for v in verdicts]).value_counts().to_dict() if verdicts else {}
    return [f"## {escape_markdown(name)}: {_VERDICT.get(code, f'exit {code}')}", "",
            f"{len(verdicts)} cells: {counts.get('ok', 0)} unchanged, {counts.get('regression', 0)} regressed, "
            f"{counts.get('slower', 0)} slower only, {counts.get('improved', 0)} improved, "
            f"{counts.get('new', 0)} new, {counts.get('model changed', 0)} on a changed model.", ""]


def write_summary(path, verdicts: list[CellVerdict], code: int, name: str = "sdebench compare") -> pathlib.Path:
    """Markdown for a CI step summary: the verdict, then regressions, improvements, missing and new cells."""
    lines = _head(verdicts, code, name)
    missing = [v for v in verdicts if ((v.rows["what"] == "cell") & (v.rows["head"] == "missing")).any()]
    new = [v for v in verdicts if v.status() == "new"]
    sections = (("Regressions", [v for v in verdicts if len(v.failures) and v not in missing],
                 ["REGRESSION", "SLOWER"]),
                ("Improvements", [v for v in verdicts if (v.rows["verdict"] == "improved").any()], ["improved"]),
                ("Model changed (other weights or config under the same name: not gated)",
                 [v for v in verdicts if v.status() == "model changed"], ["model changed"]))
    for title, vs, names in sections:
        lines += [f"### {title} ({len(vs)})", ""]
        lines += (_rows_table(vs, names) if vs else ["none"]) + [""]
    for title, vs in (("Missing cells", missing), ("New cells", new)):
        lines += [f"### {title} ({len(vs)})", ""]
        lines += ([f"- {escape_markdown(v.label)} (`{v.key}`)" for v in vs] if vs else ["none"]) + [""]
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
