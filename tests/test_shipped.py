"""Shipped artefacts (bench.harness.shipped): current, equal to a fresh computation, and used only
when every key matches."""
import json

import pytest
import torch

from bench.harness import execute, make_shipped, shipped, tuned
from bench.harness.cache import DiskCache
from bench.harness.store import Store
from bench.harness.suite import load_suite


@pytest.fixture(scope="module")
def quick_cells():
    return load_suite("quick").cells()


@pytest.fixture(autouse=True)
def _shipped_on(monkeypatch):
    monkeypatch.delenv("SDEBENCH_NO_SHIPPED", raising=False)


def test_shipped_artefacts_are_current_and_small():
    index = json.loads((shipped.DATA_DIR / "index.json").read_text())
    assert index["code"] == shipped.code_hash(), (
        "the shipped artefacts were made by other code: remake them with `python -m bench.harness.make_shipped`")
    assert index["torch"] == torch.__version__
    data = shipped.load_index()
    assert data["entries"] and data["grids"]
    size = sum(f.stat().st_size for f in shipped.DATA_DIR.iterdir())
    assert size < 1_500_000, f"shipped data is {size} bytes"


def _first(cells, kind, model):
    for cell in cells:
        if cell.model != model or cell.task != "sample":
            continue
        for key in execute.shared_keys(cell):
            if key[0] == kind:
                return cell, key
    raise AssertionError(f"no {kind} of {model} in quick")


def test_shipped_reference_equals_recomputed(quick_cells, monkeypatch):
    cell, key = _first(quick_cells, "ode_ref", "gmm2d-vp")
    dk = execute.disk_key(key)
    assert shipped.contains(dk)
    ship = shipped.lookup(dk)
    monkeypatch.setenv("SDEBENCH_NO_SHIPPED", "1")
    monkeypatch.setattr(execute, "_CACHE", {})
    monkeypatch.setitem(execute._DISK, "cache", None)
    fresh = execute._ode_ref(cell)
    assert ship.shape == fresh.shape == (cell.n, 2)
    torch.testing.assert_close(ship, fresh, rtol=0, atol=1e-9)  # the reference's own tolerance is 1e-10


def test_shipped_grid_equals_retuned(quick_cells):
    tune = load_suite("quick").tune
    cells = [c for c in quick_cells if c.grid == "tuned" and c.model == "gmm2d-vp" and c.steps == min(
        x.steps for x in quick_cells if x.grid == "tuned")]
    cell = cells[0]
    key = tuned.tuning_key(cell, tune)
    ship = shipped.grid(key, execute.model_fingerprint)
    assert ship is not None, "the quick suite's tuned grid is not shipped"
    fresh = tuned.tune_for_cell(cell, tune)
    torch.testing.assert_close(torch.tensor(ship["times"], dtype=torch.float64), fresh.times, rtol=0, atol=1e-12)


def test_resolve_uses_shipped_grids_without_tuning(quick_cells, tmp_path):
    tune = load_suite("quick").tune
    cells = [c for c in quick_cells if c.grid == "tuned"]

    def never(cell, tune):
        raise AssertionError("tuned although shipped")

    store = Store(tmp_path / "s.sqlite")
    try:
        out = tuned.resolve_grids(cells, store, tune=tune, tuner=never)
        assert all(c.times is not None and c.tuning["source"] == "shipped" for c in out)
        assert store.grid(out[0].tuning["grid_key"]) is not None  # put into the store: the report reads it
        # a changed key (another tuning size) is tuned afresh
        tuned_here = []
        out = tuned.resolve_grids(cells[:1], store, tune={**tune, "n": tune["n"] + 1},
                                  tuner=lambda c, t: tuned_here.append(c) or tuned.tune_for_cell(c, t))
        assert len(tuned_here) == 1 and out[0].tuning["source"] == "tuned"
    finally:
        store.close()


def test_changed_key_or_code_is_recomputed(quick_cells, monkeypatch):
    cell, key = _first(quick_cells, "exact", "gmm2d-vp")
    dk = execute.disk_key(key)
    assert shipped.contains(dk)
    made = []
    other = {**dk, "key": [*dk["key"][:-2], dk["key"][-2] + 1, dk["key"][-1]]}  # another seed
    assert shipped.lookup(other, lambda: made.append(1) or "made") == "made" and made
    assert not shipped.contains({**dk, "model": dk["model"] + "-changed"})
    # other code: the whole index is ignored
    monkeypatch.setattr(shipped, "code_hash", lambda: "other")
    shipped.load_index.cache_clear()
    try:
        assert not shipped.contains(dk) and shipped.grid(tuned.tuning_key(
            next(c for c in quick_cells if c.grid == "tuned"), load_suite("quick").tune), execute.model_fingerprint) is None
    finally:
        monkeypatch.undo()
        shipped.load_index.cache_clear()
    # switched off
    monkeypatch.setenv("SDEBENCH_NO_SHIPPED", "1")
    assert not shipped.contains(dk)


def test_collect_round_trip(tmp_path):
    """What a run cached comes back from the shipped encoding as it was (tensors, tuples, dicts)."""
    cache = DiskCache(tmp_path / "s.sqlite.cache")
    value = {"floor": (torch.arange(6.0).reshape(3, 2), 0.25, "x"), "n": [1, 2]}
    cache.save({"kind": "floor", "key": ["floor", "gmm2d-vp", 3], "model": "gmm2d-vp"}, value)
    cache.save({"kind": "exact", "key": ["exact", "m@abc", 3], "model": "m@abc"}, torch.ones(2))  # a spec: not shipped
    store = Store(tmp_path / "s.sqlite")
    entries, grids, tensors = make_shipped.collect(store, cache.root)
    store.close()
    assert len(entries) == 1 and not grids
    (text, enc), = entries.items()
    back = shipped.decode(enc, tensors)
    torch.testing.assert_close(back["floor"][0], value["floor"][0])
    assert back["floor"][1:] == value["floor"][1:] and back["n"] == [1, 2]
    assert json.loads(text)["model"] == "gmm2d-vp"



@pytest.mark.parametrize("name", ["tensors.safetensors", "index.json"])
def test_damaged_shipped_files_are_ignored(name, tmp_path, monkeypatch):
    """A truncated tensor file or a malformed index means nothing is shipped (recomputed), not a crash."""
    import shutil

    shutil.copytree(shipped.DATA_DIR, tmp_path / "d")
    damaged = {"tensors.safetensors": (shipped.DATA_DIR / name).read_bytes()[:1000],
               "index.json": json.dumps({"code": shipped.code_hash()}).encode()}[name]
    (tmp_path / "d" / name).write_bytes(damaged)
    monkeypatch.setattr(shipped, "DATA_DIR", tmp_path / "d")
    shipped.load_index.cache_clear()
    try:
        assert shipped.load_index()["entries"] == {} and shipped.lookup({"k": 1}, lambda: "made") == "made"
    finally:
        monkeypatch.undo()
        shipped.load_index.cache_clear()
