"""The README's Python examples run as written."""
import pathlib
import re

import solvers

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    try:
        for code in blocks:
            exec(compile(code, str(README), "exec"), {})
        assert "my_midpoint" in solvers.available()
    finally:
        solvers.registry._REGISTRY.pop("my_midpoint", None)


def test_readme_lists_every_registered_solver():
    text = README.read_text()
    missing = [n for n in solvers.available() if f"`{n}`" not in text]
    assert not missing, f"README's solver table lacks {missing}"


def test_benchmark_your_own_model_commands_run(tmp_path, monkeypatch):
    """The three commands of "Benchmark your own model", as written, on a tiny pipeline saved
    where they expect it (diffusers' default scheduler: clip_sample=True, hence the ignore)."""
    import shlex

    import pytest

    pytest.importorskip("diffusers")
    from conftest import cheap_scheduler, save_tiny_ddpm

    from bench.cli import main

    text = README.read_text().split("## Benchmark your own model", 1)[1]
    commands = re.search(r"```sh\n(.*?)```", text, re.S).group(1).strip().splitlines()
    suite = re.search(r"```toml\n(# my-suite.toml\n.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    save_tiny_ddpm(tmp_path / "my-ddpm", scheduler=cheap_scheduler())
    (tmp_path / "my-suite.toml").write_text(suite)
    assert [c.split()[1] for c in commands] == ["describe", "run", "report"]
    for line in commands:
        assert main(shlex.split(line)[1:]) == 0, line
    assert (tmp_path / "my-run-1" / "report.html").exists() or list(tmp_path.glob("*run-1/report.html"))


def test_three_commands_to_try_run(tmp_path, monkeypatch, capsys):
    """The README's "Three commands to try", as written (outputs under a temporary directory)."""
    import shlex

    from bench.cli import main

    text = README.read_text().split("## Three commands to try", 1)[1]
    commands = [line.split("#", 1)[0] for line in re.search(r"```sh\n(.*?)```", text, re.S).group(1).strip().splitlines()]
    assert [c.split()[1] for c in commands] == ["demo", "recommend", "likelihood"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SDEBENCH_STORE", str(tmp_path / "results" / "sdebench.sqlite"))
    for line in commands:
        assert main(shlex.split(line)[1:]) == 0, line
    out = capsys.readouterr().out
    assert "reproduce: sdebench sample gmm2d-vp" in out and "nats/dim" in out


def test_the_design_map_is_in_the_repository():
    """README links docs/design.md, its "where to change what" table names every registry, and no
    file of the project points outside the repository for its design."""
    root = README.parent
    design = root / "docs" / "design.md"
    assert "docs/design.md" in README.read_text() and design.exists()
    table = design.read_text().split("## Where to change what", 1)[1]
    for place in ("solvers.register", "Option(", "GRIDS", "metrics.register", "register_section",
                  "executors.register", "models.register", "TOML"):
        assert place in table, place
    files = [*root.glob("*.md"), *root.glob("docs/*.md"), *root.glob("Makefile"),
             *(f for d in ("bench", "solvers", "tests") for f in (root / d).rglob("*.py"))]
    outside = "../" + "shared"
    assert [f.name for f in files if outside in f.read_text()] == []
