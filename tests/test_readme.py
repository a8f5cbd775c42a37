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
