"""The report: built from a small real run (and a second one), every section present, figures
valid PNGs of real content, the HTML self-contained and escaped, failed cells listed, two runs
in one report, and the convergence / ranking logic on hand-made cells. Sections: each built-in
builder alone on a small hand-made store, a plugin's section registered in one place, selection;
the rendering API's blocks in both formats."""
import html.parser
import io
import math
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench import report
from bench.harness import runner
from bench.harness.cell import Cell
from bench.harness.metrics import METRICS, Metric
from bench.harness.store import Store
from bench.harness.suite import load_suite
from bench.report import render
from bench.report.analysis import measured_metrics
from bench.report.sections import ReportContext, get_section
from solvers import InputError

EVIL = "<script>alert('x')</script>"

SUITE = """
name = "tiny-report{evil}"
models = ["gmm2d-vp"]
n = 64
seeds = [0]
nfe = {nfe}
metrics = ["discretization", "sliced_w2", "mmd2", "energy", "w2"]
repeats = 1
warmup = 0
threads = 1
reference = {{ ode_rtol = 1e-8, sde_steps = 256 }}

[[solvers]]
name = "euler"
[[solvers]]
name = "heun"
[[solvers]]
name = "euler_maruyama"
{extra}
"""
LIKELIHOOD = """
[[likelihood]]
solver = "dopri5"
rtol = [1e-2, 1e-4]
n = 16
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run 1: three solvers at NFE 5/10/20 plus likelihood cells, plus two injected cells (one
    failed, one with a hostile option string). Run 2: the same solvers at NFE 5/10 only."""
    tmp = tmp_path_factory.mktemp("report")
    store = Store(tmp / "results" / "s.sqlite")
    p1 = tmp / "one.toml"
    p1.write_text(SUITE.format(evil=EVIL, nfe="[5, 10, 20]", extra=LIKELIHOOD))
    r1 = runner.run_suite(load_suite(str(p1)), store, progress=False)
    cell = Cell(task="sample", model="gmm2d-vp", solver="heun", options={"note": EVIL}, grid=None, budget=None,
                steps=3, n=64, seed=0, exact_prior=True, device="cpu", dtype="float32", threads=1)
    store.add_cell(r1, cell,
                   {"nfe": 6, "steps": 3, "metrics": {"discretization": 0.1, "sliced_w2": 0.3, "sliced_w2_floor": 0.05},
                    "timing": {"median_s": 0.01}, "error": None})
    store.add_cell(r1, cell.replace(solver="euler", steps=7),
                   {"nfe": None, "steps": 7, "error": f"NonFiniteError: boom {EVIL}"})
    p2 = tmp / "two.toml"
    p2.write_text(SUITE.format(evil="", nfe="[5, 10]", extra=""))
    r2 = runner.run_suite(load_suite(str(p2)), store, progress=False)
    return store, r1, r2


@pytest.fixture(scope="module")
def single(runs):
    store, r1, _ = runs
    return report.write_report(store, [r1])  # default out_dir


@pytest.fixture(scope="module")
def double(runs, tmp_path_factory):
    store, r1, r2 = runs
    return report.write_report(store, [r1, r2], tmp_path_factory.mktemp("two"), trajectories=False)


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.urls, self.h2, self.tags = [], [], [], []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "section":
            self.ids.append(a.get("id"))
        self._in_h2 = tag == "h2"
        for k in ("src", "href", "action", "data", "poster"):
            if k in a:
                self.urls.append(a[k])

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


def _parse(path):
    p = _Collect()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    return p


def test_single_run_report_has_every_section_in_both_formats(runs, single):
    store, r1, _ = runs
    assert single["html"] == store.output_dir(r1) / "report.html"
    assert single["markdown"].parent == single["html"].parent and single["markdown"].exists()
    parsed = _parse(single["html"])
    assert parsed.ids == [sid for sid, _ in report.SECTIONS]
    assert parsed.h2 == [title for _, title in report.SECTIONS]
    md = single["markdown"].read_text(encoding="utf-8")
    for sid, title in report.SECTIONS:
        assert f'<a id="{sid}"></a>' in md and f"\n## {title}\n" in md
    names = {p.name for p in single["figures"]}
    assert {"fig-quality-vs-nfe-gmm2d-vp.png", "fig-work-precision-gmm2d-vp.png", "fig-likelihood.png",
            "fig-trajectories-gmm2d-vp.png"} <= names
    for p in single["figures"]:  # Markdown references the PNGs beside it
        assert f"]({p.name})" in md and p.parent == single["markdown"].parent
    text = single["html"].read_text(encoding="utf-8")
    assert "no likelihood cells" not in text and "dopri5" in text
    assert text.count("<img ") == len(single["figures"])


def test_figures_are_valid_png_of_real_content(single):
    assert single["figures"]
    for p in single["figures"]:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", p
        assert len(data) > 10_000, p
        img = Image.open(io.BytesIO(data))
        img.load()
        a = np.asarray(img.convert("RGB"))
        assert a.shape[0] > 200 and a.shape[1] > 400, p
        assert len(np.unique(a[::3, ::3].reshape(-1, 3), axis=0)) > 50, f"{p} is (nearly) one colour"


def _markup(text):
    """The HTML without the report's own inline scripts (plotly.js and the charts)."""
    return re.sub(r'<script type="text/javascript">.*?</script>', "", text, flags=re.S)


def test_html_is_self_contained(single, double):
    for out in (single, double):
        text = out["html"].read_text(encoding="utf-8")
        urls = _parse(out["html"]).urls
        assert urls and all(u.startswith("data:image/png;base64,") or u.startswith("#") for u in urls), \
            [u[:40] for u in urls if not u.startswith(("data:", "#"))]
        assert not re.search(r"<script[^>]*\bsrc=", text, re.I)  # scripts are inline (interactive charts)
        assert not re.search(r"<link\b|@import|url\(|<iframe|<script", _markup(text), re.I)
        srcs = [u for u in urls if u.startswith("data:")]
        assert len(srcs) == len(out["figures"])


def test_names_from_suites_and_options_are_escaped(single):
    text = single["html"].read_text(encoding="utf-8")
    assert "<script" not in _markup(text).lower() and "<script>alert" not in text
    assert html.escape(EVIL, quote=True) in text  # the suite name, the option and the error, escaped
    md = single["markdown"].read_text(encoding="utf-8")
    assert "&lt;script&gt;" in md
    prose = re.sub(r"\n(`{3,})text\n.*?\n\1\n", "\n", md, flags=re.S)  # fenced code renders literally
    assert "<script" not in prose.lower() and "[[solvers]]" not in prose and "<script" in md
    # the suite text in the environment appendix keeps the name, escaped
    env = text[text.index('<section id="environment">'):]
    assert "tiny-report" + html.escape(EVIL, quote=True) in env


def test_failed_cells_are_listed_not_dropped(runs, single):
    store, r1, _ = runs
    text = single["html"].read_text(encoding="utf-8")
    failed = text[text.index('<section id="failed-cells">'):text.index('<section id="all-cells">')]
    assert "NonFiniteError: boom" in failed and "no failed cells" not in failed
    assert failed.count("<tr") == 1 + int(store.cells(r1)["error"].notna().sum())
    cells = text[text.index('<section id="all-cells">'):text.index('<section id="environment">')]
    assert cells.count("<tr") == 1 + len(store.cells(r1))


def test_convergence_orders_and_environment(runs, single):
    store, r1, _ = runs
    df = report.load_cells(store, [r1])
    conv = report.convergence_table(df).set_index("solver")
    assert 0.6 < conv.loc["euler", "fitted_value"] < 1.4 and conv.loc["euler", "declared"] == "1"
    assert conv.loc["heun", "declared"] == "2" and math.isfinite(conv.loc["heun", "fitted_value"])
    assert conv.loc["euler_maruyama", "order of"].startswith("strong")
    assert conv.loc["euler", "order of"].startswith("ODE")
    hostile = conv.loc[f"heun note={EVIL}"]
    assert hostile["fitted"].startswith("unresolved")  # one step count: no fit, no crash
    text = single["html"].read_text(encoding="utf-8")
    env = text[text.index('<section id="environment">'):]
    info = store.run(r1)
    for key in ("git_commit", "device", "torch", "threads", "host"):
        assert html.escape(str(info[key])) in env
    assert "seaborn" in env and "[[solvers]]" in env


def test_two_runs_in_one_report(runs, double):
    store, r1, r2 = runs
    text = double["html"].read_text(encoding="utf-8")
    assert _parse(double["html"]).ids == [sid for sid, _ in report.SECTIONS]
    env = text[text.index('<section id="environment">'):]
    assert f"<h3>run {r1}</h3>" in env and f"<h3>run {r2}</h3>" in env
    best = text[text.index('<section id="best-solver">'):text.index('<section id="failed-cells">')]
    assert f"(run {r1})" in best and f"(run {r2})" in best
    conv = text[text.index('<section id="convergence-order">'):text.index('<section id="trajectories">')]
    assert "pre-asymptotic at these steps" in conv  # run 2 has only two step counts per solver
    assert "fig-trajectories-gmm2d-vp.png" not in {p.name for p in double["figures"]}
    assert "fig-quality-vs-nfe-gmm2d-vp.png" in {p.name for p in double["figures"]}


def test_run_without_likelihood_cells_says_so(runs, tmp_path):
    store, _, r2 = runs
    out = report.write_report(store, [r2], tmp_path, trajectories=False)
    text = out["html"].read_text(encoding="utf-8")
    assert "no likelihood cells in this run" in text and "no failed cells in this run" in text
    assert "no likelihood cells in this run" in out["markdown"].read_text(encoding="utf-8")
    with pytest.raises(InputError):
        report.write_report(store, [r2 + 100], tmp_path)


def _cells(rows):
    df = pd.DataFrame(rows)
    for c in ("energy", "w2", "mmd2"):
        df[c] = np.nan
    df["energy_floor"] = df["w2_floor"] = df["mmd2_floor"] = np.nan
    return df.assign(run_id=1, model="m", task="sample", ok=True, seed=0)


def test_best_per_budget_ties_values_below_the_noise_floor():
    rows = []
    for label, nfe, v, t in [("a", 5, 0.04, 0.3), ("b", 5, 0.03, 0.1), ("c", 5, 0.5, 0.1), ("d", 5, 0.2, 0.1),
                             ("a", 10, 0.01, 0.5), ("e", 12, 0.001, 0.1)]:
        rows.append({"label": label, "nfe": float(nfe), "steps": float(nfe), "sliced_w2": v, "sliced_w2_floor": 0.05,
                     "discretization": 0.1, "time_median_s": t})
    (entry,) = report.best_per_budget(_cells(rows), budgets=(5, 10))
    assert entry["metric"] == "sliced_w2"
    five = [(r["rank"], r["solver"]) for r in entry["tables"][5]]
    assert five == [("1=", "b"), ("1=", "a"), ("3", "d"), ("4", "c")]  # ties ordered by wall time
    ten = {r["solver"]: r for r in entry["tables"][10]}
    assert ten["a"]["nfe"] == 10 and ten["a"]["value"] == 0.01 and "e" not in ten  # e needs 12 NFE
    assert all("unresolved" in r["note"] for r in entry["tables"][5][:2])


def test_rankings_tie_what_the_standard_errors_cannot_separate():
    rows = [{"label": name, "nfe": 10.0, "steps": 10.0, "sliced_w2": v, "sliced_w2_se": se, "sliced_w2_floor": 0.01,
             "discretization": 0.1, "time_median_s": 0.1}
            for name, v, se in [("a", 0.100, 0.01), ("b", 0.105, 0.01), ("c", 0.300, 0.01), ("d", 0.310, 0.01)]]
    (entry,) = report.best_per_budget(_cells(rows), budgets=(10,))
    ranks = {r["solver"]: r["rank"] for r in entry["tables"][10]}
    assert ranks == {"a": "1=", "b": "1=", "c": "3=", "d": "3="}
    notes = {r["solver"]: r["note"] for r in entry["tables"][10]}
    assert "tied with a" in notes["b"] and "tied with c" in notes["d"]
    assert notes["c"].startswith("worse than a") and "tied" not in notes["c"]  # a group's leader is not tied


class _DroppedStageHeun(__import__("solvers").get("heun")):
    """A planted bug: Heun whose second stage is dropped (so Euler), still declaring order 2."""

    name = "planted_heun"

    def step(self, i, x):
        return x + self.h[i] * self.drift(x, i)


def test_order_table_flags_a_planted_wrong_solver_and_no_correct_one(tmp_path):
    import solvers
    from solvers import registry

    solvers.register(_DroppedStageHeun)
    try:
        p = tmp_path / "orders.toml"
        p.write_text('''name = "orders"
models = ["gmm2d-vp"]
n = 200
steps = [8, 16, 32, 64, 128]
metrics = ["discretization"]
repeats = 1
warmup = 0
[[solvers]]
name = "planted_heun"
[[solvers]]
name = "heun"
[[solvers]]
name = "euler"
[[solvers]]
name = "dpmpp_2m"
''')
        store = Store(tmp_path / "s.sqlite")
        run_id = runner.run_suite(load_suite(str(p)), store, progress=False)
    finally:
        registry._REGISTRY.pop("planted_heun", None)
    conv = report.convergence_table(report.load_cells(store, [run_id])).set_index("solver")
    assert conv.loc["planted_heun", "status"] == "differs" and conv.loc["planted_heun", "flag"]
    for name in ("heun", "euler", "dpmpp_2m"):
        assert conv.loc[name, "status"] in ("ok", "pre-asymptotic at these steps") and not conv.loc[name, "flag"]


def test_adaptive_cells_store_no_step_count_and_the_order_table_says_tolerance_controlled(tmp_path):
    p = tmp_path / "adaptive.toml"
    p.write_text('name = "adaptive"\nmodels = ["gmm2d-vp"]\nn = 32\nsteps = [4]\nmetrics = ["discretization"]\n'
                 'repeats = 1\nwarmup = 0\nthreads = 1\nreference = { ode_rtol = 1e-6, sde_steps = 64 }\n'
                 '[[solvers]]\nname = "dopri5"\nrtol = 1e-3\natol = 1e-6\n')
    store = Store(tmp_path / "s.sqlite")
    run_id = runner.run_suite(load_suite(str(p)), store, progress=False)
    assert store.cells(run_id)["steps"].isna().all()  # not the solver's one output interval
    for stored in (None, 1):  # 1: what stores written before this held; the report reads it as none
        if stored:
            store.db.execute("UPDATE cells SET steps=1")
            store.db.commit()
        df = report.load_cells(store, [run_id])
        assert df["steps"].isna().all()
        row = report.convergence_table(df).iloc[0]
        assert row["fitted"] == "n/a" and row["order of"].startswith("adaptive")


# --- sections: each built-in alone, a plugin's in one place ------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A store of hand-made cells (no solving): euler and heun on gmm2d-vp at 5-40 steps whose
    errors follow C steps^-p exactly, two likelihood cells and one failed cell."""
    tmp = tmp_path_factory.mktemp("small")
    store = Store(tmp / "s.sqlite")
    rid = store.record_run({"suite": "tiny", "suite_text": "name = 'tiny'\n", "device": "cpu"})
    base = dict(task="sample", model="gmm2d-vp", options={}, grid=None, budget=None, n=64, seed=0, exact_prior=True,
                device="cpu", dtype="float32", threads=1, reference={"ode_rtol": 1e-10, "sde_steps": 2048})
    for solver, order, per_step in (("euler", 1, 1), ("heun", 2, 2)):
        for steps in (5, 10, 20, 40):
            store.add_cell(rid, Cell(solver=solver, steps=steps, **base),
                           {"nfe": per_step * steps, "steps": steps, "timing": {"median_s": 0.001 * steps},
                            "metrics": {"discretization": 0.5 * steps ** -order, "sliced_w2": 0.2 / steps + 0.01,
                                        "sliced_w2_se": 0.001, "sliced_w2_floor": 0.012}})
    lik = {**base, "task": "likelihood", "n": 16}
    for rtol, err in ((1e-3, 2e-3), (1e-5, 3e-5)):
        store.add_cell(rid, Cell(solver="dopri5", steps=None, **{**lik, "options": {"rtol": rtol}}),
                       {"nfe": 50 if rtol > 1e-4 else 80, "timing": {"median_s": 0.05},
                        "metrics": {"logp_error_per_dim": err, "logp_bias_per_dim": err / 2, "logp_stderr": err / 10}})
    store.add_cell(rid, Cell(solver="euler", steps=3, **base), {"nfe": None, "steps": 3, "error": "NonFiniteError: boom"})
    return store, rid


def _context(small, out_dir, cells=None, **kw):
    store, rid = small
    return ReportContext(report.load_cells(store, [rid]) if cells is None else cells, {rid: store.run(rid)}, out_dir,
                         store_path=store.path, **kw)


def _alone(ctx, sid):
    doc = render.Document()
    spec = get_section(sid)
    doc.section(spec.id, spec.heading).extend(spec.blocks(ctx))
    return doc, doc.to_markdown("t", "s")


#: per built-in section: what its Markdown must hold and the figures it must write, built alone
ALONE = {
    "summary": (["| tiny | complete |", "1 cell(s) failed", "How to read"], []),
    "quality-vs-nfe": (["every quality metric against NFE"], ["fig-quality-vs-nfe-gmm2d-vp.png"]),
    "work-precision": (["wall time (left) and NFE (right)"], ["fig-work-precision-gmm2d-vp.png"]),
    "likelihood": (["| dopri5 rtol=0.001 | 50 | 0.002 | 0.001 | 0.0002 |", "| dopri5 rtol=1e-05 | 80 |"],
                   ["fig-likelihood.png"]),
    "convergence-order": (["| euler | 1.00 |", "| heun | 2.00 |", "No solver is flagged"], []),
    "trajectories": (["euler\\_maruyama paths are jagged"], ["fig-trajectories-gmm2d-vp.png"]),
    "best-solver": (["### gmm2d-vp: ranked by sliced W2", "| 50 | 1 | euler | 40 | 40 | 0.015 ± 0.002 |",
                    "| 50 | 2 | heun | 40 | 20 | 0.02 ± 0.002 |"], []),
    "tuned-grids": (["no tuned-grid cells in this run"], []),
    "failed-cells": (["1 failed cell(s)", "NonFiniteError: boom"], []),
    "all-cells": (["11 cell(s)", "| discretization error | sliced W2 | log-likelihood error / dim | wall s |"], []),
    "environment": (["### run 1", "```text\nname = 'tiny'\n```", "### report generated with", "| device | cpu |"], []),
}


def test_every_built_in_section_has_an_alone_test():
    assert list(ALONE) == [sid for sid, _ in report.SECTIONS]


@pytest.mark.parametrize("sid", list(ALONE))
def test_each_built_in_section_builds_alone_on_a_small_frame(small, tmp_path, sid):
    doc, md = _alone(_context(small, tmp_path), sid)
    texts, figures = ALONE[sid]
    for text in texts:
        assert text in md, (sid, text)
    assert [p.name for p in doc.figures()] == figures
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(figures)  # no other section's figure


def test_sections_say_so_when_there_is_nothing_to_show(small, tmp_path):
    ctx = _context(small, tmp_path, cells=report.load_cells(small[0], []), trajectories=False)
    for sid, text in (("quality-vs-nfe", "no successful sample cells in this run"),
                      ("work-precision", "no discretization errors in this run"),
                      ("likelihood", "no likelihood cells in this run"), ("failed-cells", "no failed cells in this run"),
                      ("trajectories", "trajectory figure not requested"),
                      ("best-solver", "no successful sample cells in this run")):
        assert text in _alone(ctx, sid)[1], sid


def test_all_cells_columns_follow_the_metric_registry(small, tmp_path, monkeypatch):
    monkeypatch.setitem(METRICS, "toy_metric", Metric("toy_metric", "toy metric", "toy"))
    ctx = _context(small, tmp_path)
    assert [m.name for m in measured_metrics(ctx.cells)] == ["discretization", "sliced_w2", "logp_error_per_dim"]
    assert [m.name for m in measured_metrics(ctx.cells, "sample")] == ["discretization", "sliced_w2"]
    ctx = _context(small, tmp_path, cells=ctx.cells.assign(toy_metric=0.25))
    assert measured_metrics(ctx.cells)[-1] is METRICS["toy_metric"]
    md = _alone(ctx, "all-cells")[1]
    assert "| log-likelihood error / dim | toy metric | wall s |" in md and "| 0.25 |" in md


def _anchors(md):
    return re.findall(r'<a id="([^"]+)"></a>', md)


def test_a_plugin_section_is_added_in_one_place_and_removed(runs, tmp_path):
    store, _, r2 = runs
    ids = [sid for sid, _ in report.SECTIONS]
    seen = []

    @report.register_section("toy-section", "Toy section", after="best-solver")
    def toy(ctx):
        seen.append(ctx.run_ids)
        return [report.paragraph(f"toy: {len(ctx.sample)} sample cells <b>"), report.table(["solvers"], [[3]])]

    try:
        out = report.write_report(store, [r2], tmp_path, trajectories=False, interactive=False)
    finally:
        report.unregister_section("toy-section")
    expected = ids[:ids.index("best-solver") + 1] + ["toy-section"] + ids[ids.index("best-solver") + 1:]
    parsed = _parse(out["html"])
    assert seen == [[r2]] and parsed.ids == expected and parsed.h2[expected.index("toy-section")] == "Toy section"
    html_text = out["html"].read_text(encoding="utf-8")
    section = html_text[html_text.index('<section id="toy-section">'):html_text.index('<section id="tuned-grids">')]
    assert "sample cells &lt;b&gt;</p>" in section and "<th>solvers</th>" in section
    md = out["markdown"].read_text(encoding="utf-8")
    assert _anchors(md) == expected and "\n## Toy section\n" in md and "8. [Toy section](#toy-section)" in md
    assert "sample cells &lt;b&gt;" in md[md.index('<a id="toy-section">'):md.index('<a id="tuned-grids">')]
    # removed: the registry is the built-in one again, and a report has no toy section
    assert [s.id for s in report.sections()] == ids
    again = report.write_report(store, [r2], tmp_path / "again", trajectories=False, interactive=False,
                                sections=["best-solver", "tuned-grids"])
    assert _anchors(again["markdown"].read_text(encoding="utf-8")) == ["best-solver", "tuned-grids"]


def test_sections_are_selected_by_id_and_bad_registrations_are_named(runs, tmp_path):
    store, _, r2 = runs
    out = report.write_report(store, [r2], tmp_path, sections=["all-cells", "summary"])
    assert _parse(out["html"]).ids == ["all-cells", "summary"] and out["figures"] == [] and out["charts"] == 0
    with pytest.raises(InputError, match="'nope': no such report section; known: summary, quality-vs-nfe"):
        report.write_report(store, [r2], tmp_path, sections=["nope"])
    with pytest.raises(InputError, match="lower-case"):
        report.register_section("Bad id", "x", lambda ctx: [])
    with pytest.raises(InputError, match="registered already"):
        report.register_section("summary", "x", lambda ctx: [])
    with pytest.raises(InputError, match="after 'nope'"):
        report.register_section("x-y", "x", lambda ctx: [], after="nope")
    with pytest.raises(InputError, match="not both"):
        report.register_section("x-y", "x", lambda ctx: [], after="summary", before="summary")
    report.register_section("broken", "Broken", lambda ctx: "not blocks", before="summary")
    try:
        assert report.sections()[0].id == "broken"
        with pytest.raises(InputError, match="'broken': its builder must return a list of blocks"):
            report.write_report(store, [r2], tmp_path, sections=["broken"])
    finally:
        report.unregister_section("broken")
    assert [s.id for s in report.sections()] == [sid for sid, _ in report.SECTIONS]


# --- the rendering API ------------------------------------------------------------------------------
def test_document_renders_every_block_in_both_formats(tmp_path):
    png = tmp_path / "fig-x.png"
    Image.new("RGB", (4, 4), "red").save(png)
    doc = render.Document()
    doc.section("a-b", "A <b>").extend([
        render.paragraph("x|y *z* <i>"), render.heading("H"),
        render.table(["k", "flag", "error"], [[1, "bad", "e<1>"], [1, "", "f"], [2.5, None, float("nan")]],
                     flag_col="flag", group_col="k"),
        render.preformatted("```code```"), render.figure(png, "cap"), render.chart("<div id='c'></div>")])
    doc.section("c", "C").append(render.table(["n"], [[1]], collapse="show 1"))
    html_path, md_path = doc.write(tmp_path / "r.html", tmp_path / "r.md", "T & t", "sub")
    h, md = html_path.read_text(), md_path.read_text()
    for text in ('<section id="a-b"><h2>A &lt;b&gt;</h2>', "<p>x|y *z* &lt;i&gt;</p>", "<h3>H</h3>",
                 '<tr class="flag"><td>1</td>', '<tr class="grp"><td>2.5</td><td>–</td>', '<td class="err">e&lt;1&gt;</td>',
                 "<pre>```code```</pre>", "data:image/png;base64,", "<figcaption>cap</figcaption>",
                 "<div id='c'></div>", "<details><summary>show 1</summary>", "<title>T &amp; t</title>"):
        assert text in h, text
    for text in ("x\\|y \\*z\\* &lt;i&gt;", "### H", "| 1 | **⚠ bad** | e&lt;1&gt; |", "| 2.5 | – | – |",
                 "````text\n```code```\n````", "![cap](fig-x.png)", "1. [A &lt;b&gt;](#a-b)", '<a id="c"></a>'):
        assert text in md, text
    assert "id='c'" not in md and doc.figures() == [png] and doc.charts() == 1


def test_text_formats_have_one_home():
    assert render.slug("gmm2d-vp: heun <x>") == "gmm2d-vp_heun_x" and render.slug("***") == "x"
    assert render.slug("a" * 100) == "a" * 80 and render.slug("a" * 100, 90) == "a" * 90
    assert render.plus_minus(0.5, 0.01) == "0.5 ± 0.02" and render.plus_minus(0.5, None) == "0.5"
    assert render.plus_minus(float("nan"), 0.1) == "–"
    assert render.number_text(0.123456) == "0.1235" and render.number_text("missing") == "missing"
    assert render.number_text(float("nan")) == "nan" and render.number_text(None, missing="-") == "-"
    assert render.number_text(12345) == "12345" and render.number_text(np.float32(0.5)) == "0.5"
    assert render.change_text(2.0, 3.0) == "+50.0%" and render.change_text(0, 1) == "" and \
        render.change_text("present", "missing") == ""
    assert render.format_cell(True) == "yes" and render.format_cell(3.0) == "3" and render.format_cell(0.12345) == "0.123"
    assert render.count_ticks([5, 10, 20, 48, 50]) == [5, 10, 20, 48] and render.count_ticks(range(1, 40)) is None
