"""Helpers of the bad-input tests (test_bad_input.py, test_hardening.py): a tiny suite and the CLI
called in-process, asserting that no traceback ever reaches the user."""
from bench import cli

BASE = ('name = "tiny"\nmodels = ["gmm2d-vp"]\nn = 16\nsteps = [2, 4]\nmetrics = ["sliced_w2"]\n'
        'repeats = 1\nwarmup = 0\n')
EULER = '[[solvers]]\nname = "euler"\n'


def call(argv, capsys):
    """(exit code, stdout, stderr) of ``sdebench ARGV``."""
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    assert "Traceback" not in out.err, out.err
    return code, out.out, out.err


def suite_file(tmp_path, text=BASE + EULER, name="tiny.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def run_cli(tmp_path, capsys, *extra, suite=None, store=None):
    suite = suite or suite_file(tmp_path)
    store = store or tmp_path / "s.sqlite"
    return call(["run", suite, "--store", store, "--no-report", "--quiet", *extra], capsys)


def interrupt_at_second_cell(monkeypatch):
    """Ctrl-C while the run's second cell executes; returns the real ``execute_cell`` (to undo)."""
    from bench.harness import runner

    real, calls = runner.execute_cell, []

    def interrupted(cell, **_):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cell)

    monkeypatch.setattr(runner, "execute_cell", interrupted)
    return real
