"""compare: detects an injected regression, passes an unchanged run."""
import pandas as pd
import pytest

from bench import cli
from bench.report.compare import EXIT_OK, EXIT_QUALITY, EXIT_TIME, compare, load_run_or_export


def cells(changes=None):
    df = pd.DataFrame([
        {"key": "a", "model": "gmm2d-vp", "solver": "heun", "options": "{}", "budget": 10, "seed": 0, "nfe": 10,
         "discretization": 0.02, "sliced_w2": 0.2, "sliced_w2_floor": 0.05, "time_median_s": 0.5, "error": None},
        {"key": "b", "model": "gmm2d-vp", "solver": "euler", "options": "{}", "budget": 50, "seed": 0, "nfe": 50,
         "discretization": 0.005, "sliced_w2": 0.04, "sliced_w2_floor": 0.05, "time_median_s": 0.5, "error": None},
    ]).set_index("key")
    for (key, col), value in (changes or {}).items():
        df.loc[key, col] = value
    return df


def test_unchanged_run_passes():
    table, code = compare(cells(), cells())
    assert code == EXIT_OK and table.empty


@pytest.mark.parametrize("change, expect, what", [
    ({("a", "discretization"): 0.03}, EXIT_QUALITY, "discretization"),
    ({("a", "sliced_w2"): 0.3}, EXIT_QUALITY, "sliced_w2"),
    ({("a", "nfe"): 11}, EXIT_QUALITY, "nfe"),
    ({("a", "error"): "NonFiniteError: boom"}, EXIT_QUALITY, "error"),
    ({("a", "discretization"): float("nan")}, EXIT_QUALITY, "discretization"),
    ({("a", "time_median_s"): 1.5}, EXIT_TIME, "time_median_s"),
])
def test_injected_regressions_are_caught(change, expect, what):
    table, code = compare(cells(), cells(change))
    assert code == expect
    assert what in set(table["what"]) and table["verdict"].isin(["REGRESSION", "SLOWER"]).any()


def test_small_changes_below_tolerance_or_noise_floor_pass():
    _, code = compare(cells(), cells({("a", "discretization"): 0.0204}))  # +2% < 5%
    assert code == EXIT_OK
    # both below the floor: unresolved, never a regression
    _, code = compare(cells(), cells({("b", "sliced_w2"): 0.049}))
    assert code == EXIT_OK
    _, code = compare(cells(), cells({("a", "time_median_s"): 1.5}), time_factor=None)
    assert code == EXIT_OK


def test_lost_cell_is_a_regression_and_improvements_are_reported():
    table, code = compare(cells(), cells().drop(index="b"))
    assert code == EXIT_QUALITY and "missing" in set(table["head"])
    table, code = compare(cells(), cells({("a", "discretization"): 0.01}))
    assert code == EXIT_OK and "improved" in set(table["verdict"])


def test_cli_compare_against_a_csv_baseline(tmp_path, capsys):
    base, head = tmp_path / "base.csv", tmp_path / "head.csv"
    cells().reset_index().to_csv(base, index=False)
    cells({("b", "discretization"): 0.01}).reset_index().to_csv(head, index=False)
    assert cli.main(["compare", str(base), str(base), "--store", str(tmp_path / "s.sqlite")]) == EXIT_OK
    assert cli.main(["compare", str(base), str(head), "--store", str(tmp_path / "s.sqlite")]) == EXIT_QUALITY
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "FAIL" in out
    assert cli.main(["compare", str(tmp_path / "nope.csv"), str(head)]) == 2
    assert "no such baseline" in capsys.readouterr().err


def test_load_run_or_export_rejects_files_without_keys(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(Exception, match="no 'key' column"):
        load_run_or_export(p)
