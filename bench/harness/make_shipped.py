"""Remake the shipped artefacts (``bench.harness.shipped``): run a suite afresh and ship what it cached.

    python -m bench.harness.make_shipped [--suite quick] [--jobs 2]

Run it after a change to the code ``shipped.code_hash`` covers (``tests/test_shipped.py`` fails
until then). A script of its own, above the runner: ``bench.harness.shipped`` (read by execution
and tuning) imports nothing of the harness.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

import torch
from safetensors.torch import save_file

from bench.harness import shipped
from bench.harness.execute import model_fingerprint
from bench.harness.runner import run_suite
from bench.harness.store import Store
from bench.harness.suite import load_suite
from solvers import InputError

__all__ = ["collect", "make", "main"]


def collect(store, cache_dir) -> tuple[dict, dict, dict]:
    """(entries, grids, tensors) of what a run put into ``cache_dir`` and ``store``'s grids table."""
    tensors: dict = {}
    entries, grids = {}, {}
    for f in sorted(pathlib.Path(cache_dir).glob("*.pt")):
        blob = torch.load(f, map_location="cpu", weights_only=True)
        key = json.loads(blob["key"])
        if shipped.is_shipped_model(str(key.get("model", ""))):
            entries[blob["key"]] = shipped.encode(blob["value"], tensors)
    for (k,) in store.db.execute("SELECT key FROM grids ORDER BY key").fetchall():
        row = store.grid(k)
        if shipped.is_shipped_model(str(row["tuning"]["model"])):
            grids[shipped.grid_key(row["tuning"], model_fingerprint(row["tuning"]["model"]))] = row["grid"]
    return entries, grids, tensors


def make(suite_name: str = "quick", jobs: int = 2, out: pathlib.Path = shipped.DATA_DIR, stream=sys.stderr) -> dict:
    """Run ``suite_name`` afresh (shipped artefacts off) and ship what it cached; returns sizes."""
    os.environ["SDEBENCH_NO_SHIPPED"] = "1"  # inherited by the workers: nothing is read from an old index
    with tempfile.TemporaryDirectory(prefix="sdebench-shipped-") as tmp:
        store = Store(pathlib.Path(tmp) / "store.sqlite")
        run_suite(load_suite(suite_name), store, jobs=jobs, stream=stream)
        entries, grids, tensors = collect(store, pathlib.Path(tmp) / "store.sqlite.cache")
        store.close()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "tensors.safetensors"))
    index = {"code": shipped.code_hash(), "torch": torch.__version__, "suite": suite_name, "entries": entries,
             "grids": grids}
    (out / "index.json").write_text(json.dumps(index, sort_keys=True, indent=0) + "\n")
    shipped.load_index.cache_clear()
    sizes = {f.name: f.stat().st_size for f in out.iterdir()}
    stream.write(f"shipped {len(entries)} shared results and {len(grids)} grids to {out}: "
                 + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(sizes.items())) + "\n")
    return sizes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.harness.make_shipped", description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="quick")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    try:
        make(args.suite, args.jobs)
    except InputError as e:  # an unknown suite, a bad suite file: one line, not a traceback
        print(f"make_shipped: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
