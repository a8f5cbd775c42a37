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
