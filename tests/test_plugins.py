"""A user's solver module, named in a suite's ``imports`` or in $SDEBENCH_PLUGINS, is registered
and then run by the harness and the registry-driven tests like a built-in."""
import os
import subprocess
import sys

import solvers
from bench.harness import runner
from bench.harness.store import Store
from bench.harness.suite import load_suite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = '''
import solvers


@solvers.register
class PlugEuler(solvers.Solver):
    """Euler on the PF-ODE, as a plugin. Order 1, 1 NFE per step."""
    name, order = "plug_euler", 1

    def step(self, i, x):
        f, c = self.nodes.ode_coefs(i)
        return x + self.h[i] * (x * f + self.eval(x, i) * c)
'''


def test_suite_imports_register_a_users_solver(tmp_path, monkeypatch):
    (tmp_path / "user_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = tmp_path / "s.toml"
    suite.write_text('imports = ["user_plugin"]\nmodels = ["gmm2d-vp"]\nn = 32\nnfe = [4, 8]\nrepeats = 1\n'
                     'warmup = 0\nmetrics = ["discretization", "sliced_w2"]\n[[solvers]]\nname = "plug_euler"\n'
                     '[[solvers]]\nname = "euler"\n')
    try:
        s = load_suite(str(suite))
        store = Store(tmp_path / "db.sqlite")
        df = store.cells(runner.run_suite(s, store, progress=False))
        plug, ref = (df[df.solver == n].set_index("budget")["discretization"] for n in ("plug_euler", "euler"))
        assert (plug - ref).abs().max() < 1e-12  # the same algorithm gives the same error
    finally:
        solvers.registry._REGISTRY.pop("plug_euler", None)


def test_bad_import_is_reported_with_the_module(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text('imports = ["no_such_module_xyz"]\nmodels = ["gmm2d-vp"]\nnfe = [4]\n[[solvers]]\nname = "euler"\n')
    import pytest

    from bench.harness.suite import SuiteError
    with pytest.raises(SuiteError, match="imports: cannot import 'no_such_module_xyz'"):
        load_suite(str(suite))


def test_registry_tests_pick_up_plugins_from_the_environment(tmp_path):
    (tmp_path / "user_plugin.py").write_text(PLUGIN)
    env = dict(os.environ, SDEBENCH_PLUGINS="user_plugin", PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_convergence.py",
                        "tests/test_sampling.py", "-k", "plug_euler"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    assert " passed" in r.stdout and "deselected" in r.stdout
    # order (2-D and 64-D), NFE with and without denoise, float64/reproducibility
    assert int(r.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1]) >= 5
