"""``sdebench train NAME...``: reproduce a shipped checkpoint (``bench.zoo.train``)."""
from __future__ import annotations

import pathlib

from bench.cli.common import positive_int, seed_int
from bench.zoo.train import DEFAULT_OUT, RECIPES, check_out, train
from solvers import InputError

__all__ = ["register", "train_"]


def train_(args) -> int:
    names = list(RECIPES) if args.name == ["all"] else args.name
    for name in names:
        if name not in RECIPES:
            raise InputError(f"unknown training recipe {name!r}; valid: {', '.join(RECIPES)}")
    for name in names:  # every output checked before the first training starts
        check_out(pathlib.Path(args.out) if args.out else DEFAULT_OUT, name, args.force)
    for name in names:
        train(name, args.out, seed=args.seed, steps=args.steps, threads=args.threads,
              log=lambda s: print(s, flush=True), force=args.force)
    return 0


def register(sub):
    p = sub.add_parser("train", help="reproduce a shipped checkpoint (continuous-time denoising score matching, "
                       "reproducible from its seed)")
    p.add_argument("name", nargs="+", help=f"recipe(s): {', '.join(RECIPES)}, or 'all'")
    p.add_argument("--out", default=None, help=f"output directory (default ./{DEFAULT_OUT}; never the installed "
                   "package's checkpoints)")
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint in --out")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--steps", type=positive_int, default=None, help="optimisation steps (default: the recipe's)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default 1: fastest for these small networks on a shared machine)")
    p.set_defaults(fn=train_)
