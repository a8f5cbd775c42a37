"""History, CI outputs of compare, pytest-benchmark import, interactive report.

A synthetic store of seven runs (no solving: cells written directly) holds four cells: one stable,
one drifting 4.5% worse per run (under compare's 5% every time, 27% in total), one with a step
change of +50% that persists, one with a single noisy run. History must mark the drift that
compare alone misses, the step, and the gate where compare fires; never the stable cell."""
import json
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from bench import cli
from bench.harness.benchmark_import import import_benchmark
from bench.harness.cell import Cell
from bench.harness.store import Store
from bench.report import ci
from bench.report.compare import compare
from bench.report.compare import load_run_or_export as load_cells
from bench.report.history import history_frames, step_changes, write_history
from solvers import InputError

RUNS = 7
BASE = dict(task="sample", model="gmm2d-vp", options={}, grid=None, budget=None, n=64, seed=0, exact_prior=True,
            device="cpu", dtype="float32", threads=1, metrics=("discretization", "sliced_w2"))
CELLS = {"stable": Cell(solver="heun", steps=10, **BASE), "drift": Cell(solver="euler", steps=10, **BASE),
         "step": Cell(solver="dpmpp_2m", steps=10, **BASE), "noisy": Cell(solver="ddim", steps=10, **BASE)}


def value(name, k):
    return {"stable": 0.010 * (1 + 0.004 * (-1) ** k), "drift": 0.020 * 1.045 ** k,
            "step": 0.005 * (1.0 if k < 4 else 1.5) * (1 + 0.003 * (-1) ** k),
            "noisy": 0.030 * (1.3 if k == 3 else 1.0)}[name]


def fill(store, runs=RUNS, suite="ci", day0=1):
    ids = []
    for k in range(runs):
        # recorded out of date order: history orders by start time, not by id
        day = day0 + (k if k != 1 else runs)
        rid = store.record_run({"suite": suite, "git_commit": f"c{k:06d}", "device": "cpu: test",
                                "started": f"2026-03-{day:02d}T12:00:00+00:00"})
        ids.append((day, rid, k))
    order = [rid for _, rid, _ in sorted(ids)]
    for pos, rid in enumerate(order):  # values follow the date order
        for name, cell in CELLS.items():
            v = value(name, pos)
            store.add_cell(rid, cell, {"nfe": 10, "steps": 10, "timing": {"median_s": 0.05, "min_s": 0.048,
                                                                            "max_s": 0.055},
                                       "metrics": {"discretization": v, "discretization_se": v * 0.01,
                                                   "sliced_w2": 0.1, "sliced_w2_floor": 0.12}})
    return order


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("history") / "s.sqlite")
    s.order = fill(s)
    return s


@pytest.fixture(scope="module")
def hist(store, tmp_path_factory):
    return write_history(store, out_dir=tmp_path_factory.mktemp("out"), metrics=["discretization"])


def marks(events, solver, rule=None):
    e = events[events["solver"] == solver]
    return e if rule is None else e[e["rule"] == rule]


def test_compare_alone_misses_the_drift(store):
    order = store.order
    for a, b in zip(order, order[1:]):
        table, code = compare(load_cells(a, store), load_cells(b, store))
        assert "euler" not in " ".join(table.loc[table["verdict"] == "REGRESSION", "cell"])
    total = value("drift", RUNS - 1) / value("drift", 0) - 1
    assert total > 0.25


def test_history_marks_drift_step_and_gate(hist, store):
    ev = hist["events"]
    drift = marks(ev, "euler")
    assert list(drift["rule"]) == ["drift"] and drift.iloc[0]["kind"] == "regression"
    assert drift.iloc[0]["pos"] == 2  # the first run beyond 5% of the first two, and it stays there
    assert "drift" in drift.iloc[0]["reason"] and "per run" in drift.iloc[0]["reason"]
    step = marks(ev, "dpmpp_2m", "step")
    assert len(step) == 1 and step.iloc[0]["pos"] == 4 and step.iloc[0]["run_id"] == store.order[4]
    assert len(marks(ev, "dpmpp_2m", "gate")) == 1 and marks(ev, "dpmpp_2m", "gate").iloc[0]["pos"] == 4
    assert len(marks(ev, "dpmpp_2m", "drift")) == 0  # the step explains it
    noisy = marks(ev, "ddim")  # one noisy run: compare fires, but no step and no drift
    assert list(noisy["rule"]) == ["gate"] and noisy.iloc[0]["pos"] == 3
    assert marks(ev, "heun").empty


def test_history_page_and_series(hist):
    html = hist["html"].read_text()
    assert "data:image/png;base64," in html and "src=\"http" not in html and "drift" in html
    md = hist["markdown"].read_text()
    assert md.count("](hist-") == len(hist["figures"]) == 4  # one chart per (model, solver)
    for p in hist["figures"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s = hist["series"].set_index("solver")
    assert s.loc["euler", "drift"] == "yes" and s.loc["euler", "change"] > 0.25
    assert abs(s.loc["euler", "trend/run"] - 0.045) < 1e-6


def test_filters_and_since(store):
    runs, long = history_frames(store, ["ci"], solvers=["euler"], metrics=["time"], since="2026-03-04")
    assert set(long["label"]) == {"euler"} and set(long["metric"]) == {"time"}
    assert (runs["when"] >= pd.Timestamp("2026-03-04", tz="UTC")).all() and len(runs) == 5  # days 4-8 (run 2 is day 8)
    with pytest.raises(InputError, match="suite"):
        history_frames(store, ["nope"])
    with pytest.raises(InputError, match="metric"):
        history_frames(store, metrics=["nope"])
    with pytest.raises(InputError, match="since"):
        history_frames(store, since="yesterday-ish")


def test_step_detection_needs_persistence():
    assert step_changes([1, 1, 1, 1.5, 1, 1, 1], tol=0.05) == []  # one noisy run
    assert [i for i, *_ in step_changes([1, 1, 1, 1.5, 1.5, 1.5], tol=0.05)] == [3]
    assert step_changes([1, 1, 1, 1, 1.5], tol=0.05) == []  # not yet confirmed by a second run
    assert step_changes([1, 1.03, 0.98, 1.02, 1.0, 1.01], tol=0.05) == []


def test_cli_history(store, tmp_path, capsys):
    code = cli.main(["history", "--store", str(store.path), "--out", str(tmp_path), "--metric", "discretization",
                     "--model", "gmm2d-vp"])
    assert code == 0 and (tmp_path / "history.html").exists()
    assert "drift: 1" in capsys.readouterr().out
    assert cli.main(["history", "--store", str(store.path), "--suite", "nope"]) == 2


# --- compare: JUnit and summary ---------------------------------------------------------------
def test_junit_and_summary(store, tmp_path):
    o = store.order
    base, head = load_cells(o[3], store), load_cells(o[4], store)  # dpmpp_2m steps +50%; ddim improves
    head = head.drop(index=CELLS["stable"].key)  # a missing cell
    extra = head.iloc[[0]].rename(index={head.index[0]: "newcell00000000"})
    head = pd.concat([head, extra])
    junit, summary = tmp_path / "ci" / "c.xml", tmp_path / "ci" / "s.md"
    code = cli.main(["compare", str(o[3]), str(o[4]), "--store", str(store.path), "--no-time",
                     "--junit", str(junit), "--summary", str(summary)])
    assert code == 1
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases) == 4
    failed = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failed) == 1
    f = failed[0].find("failure")
    assert "dpmpp_2m" in failed[0].get("name") and failed[0].get("classname") == "sdebench.gmm2d-vp"
    assert f.get("type") == "regression" and "discretization: 0.004985 -> 0.007522" in f.get("message")
    assert "+50.9%" in f.get("message")
    text = summary.read_text()
    assert text.startswith("## sdebench compare") and "FAIL" in text
    assert "### Regressions (1)" in text and "### Improvements (1)" in text and "\n| gmm2d-vp dpmpp\\_2m" in text
    # missing and new cells, through the library
    verdicts = ci.per_cell(base, head, time_factor=None)
    _, code = compare(base, head, time_factor=None)
    ci.write_junit(junit, verdicts)
    ci.write_summary(summary, verdicts, code)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert int(suite.get("tests")) == 5 and int(suite.get("failures")) == 2
    text = summary.read_text()
    assert "### Missing cells (1)" in text and "### New cells (1)" in text and "`newcell00000000`" in text
    passed = ET.parse(junit).getroot().find("testsuite").findall("testcase")
    assert any((c.findtext("system-out") or "").startswith("new") for c in passed)


def test_junit_all_pass(store, tmp_path):
    o = store.order
    verdicts = ci.per_cell(load_cells(o[0], store), load_cells(o[0], store))
    ci.write_junit(tmp_path / "ok.xml", verdicts)
    suite = ET.parse(tmp_path / "ok.xml").getroot().find("testsuite")
    assert suite.get("failures") == "0" and len(suite.findall("testcase")) == 4
    ci.write_summary(tmp_path / "ok.md", verdicts, 0)
    assert "OK: no regression" in (tmp_path / "ok.md").read_text()
    # cells sharing a label (e.g. two step counts) get distinct test names
    base = load_cells(o[0], store)
    both = pd.concat([base, base.iloc[[0]].rename(index={base.index[0]: "k2"})])
    ci.write_junit(tmp_path / "dup.xml", ci.per_cell(both, both))
    names = [c.get("name") for c in ET.parse(tmp_path / "dup.xml").getroot().iter("testcase")]
    assert len(set(names)) == len(names) == 5 and any(n.endswith("[k2]") for n in names)


# --- pytest-benchmark import ---------------------------------------------------------------------
def bench_json(commit, when, median, dirty=False):
    def entry(name, steps, batch, med, nfe):
        return {"group": f"sample gmm2d-vp batch={batch} steps={steps}", "name": f"test_sampling[{name}-{steps}-{batch}]",
                "fullname": f"bench/perf/test_perf_sampling.py::test_sampling[{name}-{steps}-{batch}]",
                "params": {"name": name, "steps": steps, "batch": batch}, "param": f"{name}-{steps}-{batch}",
                "extra_info": {"nfe": nfe, "one_eval_s": med / nfe / 1.2, "overhead": 1.2, "device": "cpu",
                               "threads": 1},
                "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 5, "max_time": 1.0,
                            "min_time": 5e-06, "warmup": False},
                "stats": {"min": med * 0.9, "max": med * 1.3, "mean": med * 1.05, "stddev": med * 0.1, "rounds": 5,
                          "median": med, "iqr": med * 0.1, "q1": med * 0.95, "q3": med * 1.05, "iqr_outliers": 0,
                          "stddev_outliers": 1, "outliers": "1;0", "ld15iqr": med * 0.9, "hd15iqr": med * 1.3,
                          "ops": 1 / med, "total": med * 5, "iterations": 1}}

    return {"machine_info": {"node": "ci-host", "processor": "x86_64", "machine": "x86_64",
                             "python_version": "3.11.9", "system": "Linux", "cpu": {"brand_raw": "Test CPU"}},
            "commit_info": {"id": commit, "time": when, "author_time": when, "dirty": dirty, "project": "sdebench",
                            "branch": "main"},
            "benchmarks": [entry("heun", 50, 1000, median, 100), entry("euler", 50, 1000, 0.02, 50),
                           {**entry("bare", 50, 1000, 0.015, 50), "name": "test_bare_evaluations[1000]",
                            "params": {"batch": 1000}, "param": "1000"}],
            "datetime": when, "version": "4.0.0"}


def test_import_benchmark(tmp_path, capsys):
    store = Store(tmp_path / "s.sqlite")
    fill(store, runs=4)
    files = []
    for k, med in enumerate([0.03, 0.031, 0.07, 0.072]):
        p = tmp_path / f"b{k}.json"
        p.write_text(json.dumps(bench_json(f"{k:040x}", f"2026-03-{k + 1:02d}T13:00:00+00:00", med, dirty=k == 3)))
        files.append(p)
    assert cli.main(["import-benchmark", str(files[0]), "--store", str(store.path)]) == 0
    assert "3 benchmark cell(s)" in capsys.readouterr().out
    with pytest.raises(InputError, match="already imported"):
        import_benchmark(store, files[0])
    for p in files[1:]:
        import_benchmark(store, p)
    rid = store.latest_run("perf")
    info = store.run(rid)
    assert info["git_commit"] == f"{3:040x}+dirty" and info["started"].startswith("2026-03-04")
    cells = store.cells(rid).set_index("solver")
    assert set(cells.index) == {"heun", "euler", "bare_evaluations"}
    assert cells.loc["heun", "time_median_s"] == pytest.approx(0.072)
    assert cells.loc["heun", "nfe"] == 100 and cells.loc["heun", "time_overhead"] == pytest.approx(1.2)
    cell = Cell.from_json(cells.loc["heun", "cell"])
    assert cell.task == "benchmark" and cell.steps == 50 and cell.n == 1000 and cell.model == "gmm2d-vp"
    # the same benchmark has one key across imports: history shows speed next to quality
    out = write_history(store, out_dir=tmp_path / "h", metrics=["time", "discretization"], solvers=["heun"])
    ev = out["events"]
    heun = ev[(ev["suite"] == "perf") & ev["solver"].str.startswith("heun ") & (ev["metric"] == "time")]
    assert set(heun["rule"]) == {"gate", "step"} and set(heun["pos"]) == {2}
    assert set(out["series"]["suite"]) == {"ci", "perf"}
    with pytest.raises(InputError, match="pytest-benchmark"):
        (tmp_path / "bad.json").write_text("{}")
        import_benchmark(store, tmp_path / "bad.json")


# --- interactive report ------------------------------------------------------------------------------
def test_interactive_report_inlines_plotly_once_and_one_chart_per_figure(store, tmp_path):
    from bench.report import interactive, write_report

    if not interactive.available():
        pytest.skip("plotly not installed")
    ev = Cell(solver="euler_maruyama", steps=10, **BASE)
    store2 = Store(tmp_path / "s.sqlite")
    rid = store2.record_run({"suite": "x"})
    for cell in list(CELLS.values()) + [ev]:
        for steps in (5, 10, 20):
            store2.add_cell(rid, cell.replace(steps=steps, options={"note": "<script>alert(1)</script>"}),
                            {"nfe": steps, "steps": steps, "timing": {"median_s": 0.01 * steps},
                             "metrics": {"discretization": 0.1 / steps, "discretization_se": 0.001,
                                         "sliced_w2": 1.0 / steps, "sliced_w2_floor": 0.01}})
    out = write_report(store2, [rid], tmp_path / "rep", trajectories=False)
    html = out["html"].read_text()
    static = [p for p in out["figures"] if p.name.startswith(("fig-quality", "fig-work"))]
    assert out["charts"] == len(static) == 2
    assert html.count("Plotly.newPlot(") == 2 and html.count('<div class="plot"') == 2
    assert html.count("plotly.js v") >= 1 and len(html) > 3_000_000  # the library inlined
    assert html.index("plotly.js v") < html.index("<main>")  # once, in <head>
    assert "<script>alert" not in html and "\\u003cscript\\u003e" in html  # names escaped in the JSON
    assert "Plotly.newPlot" not in out["markdown"].read_text()
    # panels by family, hover with NFE and +- standard error
    for name in ("single-step ODE", "multistep ODE", "reverse SDE", "all families", "customdata[3]", "\\u00b1 0.001"):
        assert name in html, name
    assert interactive.family(CELLS["step"]) == "multistep ODE"
    assert interactive.family(CELLS["stable"]) == "single-step ODE"
    assert interactive.family(ev) == "reverse SDE"
    assert interactive.family(Cell(solver="dopri5", steps=None, **BASE)) == "adaptive"
    assert interactive.family(Cell(solver="ddim", steps=5, **{**BASE, "options": {"eta": 1.0}},
                                   solver_meta={"kind": "ode", "stochastic": True})) == "reverse SDE"


def test_drift_needs_more_than_jitter():
    from bench.report.history import SERIES, DriftRule

    def series(v):
        return pd.DataFrame({"run_id": range(len(v)), "pos": range(len(v)), "suite": "s", "key": "k", "model": "m",
                             "label": "l", "cell_label": "c", "metric": "time", "value": v})

    jitter = [1.0, 1.02, 1.3, 1.08, 1.35, 1.1, 1.4, 1.12]  # beyond 5% from run 3 on, but it is noise
    assert DriftRule(0.05).events(series(jitter), SERIES["time"]) == []
    assert step_changes(jitter, tol=0.05) == []
    drift = [1.0 * 1.04**k for k in range(8)]
    assert len(DriftRule(0.05).events(series(drift), SERIES["time"])) == 1
    better = [1.0 / 1.04**k for k in range(8)]  # improving: no drift mark
    assert DriftRule(0.05).events(series(better), SERIES["time"]) == []


def test_chart_json_cannot_end_its_script_and_writes_nan_as_null():
    import json

    from bench.report.interactive import _script_json

    text = _script_json({"name": "</script><b>&", "y": [1.0, float("nan"), float("inf")]})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"name": "</script><b>&", "y": [1.0, None, None]}
