"""The ``sdebench`` command.

    sdebench run SUITE [--resume [RUN]] [--executor local|ray]   sweep a suite into the results store
    sdebench list solvers|models|suites|runs                     what there is
    sdebench export RUN [--csv PATH]                             a run's cells as CSV
    sdebench report RUN [RUN...] [--out DIR]                     HTML + Markdown report with figures
    sdebench compare BASE HEAD                                   regression gate (exit 1 quality/NFE, 3 time)
    sdebench sample MODEL SOLVER                                 sample once: NFE, time, error
    sdebench likelihood MODEL                                    ODE log-likelihood vs the exact one
    sdebench demo                                                every solver on the 2-D mixture, printed
    sdebench train NAME... [--out DIR] [--seed S]                reproduce a shipped checkpoint
    sdebench tune MODEL SOLVER --nfe N [--method dp|search]      tune a time grid, compare, save as JSON
"""
from __future__ import annotations

import argparse
import sys

import torch

import solvers
from bench.cli import outputs, sweep, tools, tune

__all__ = ["main"]

#: the command groups, one module each; each adds its subcommands with ``register(sub)``
GROUPS = (tools, sweep, outputs, tune)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="sdebench", description="Benchmark numerical SDE/ODE solvers of "
                                "score-based diffusion models on models with exact answers.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for group in GROUPS:
        group.register(sub)
    sub.add_parser("train", add_help=False, help="reproduce a shipped checkpoint (sdebench train --help)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from bench.zoo.train import main as train_main

        return train_main(argv[1:])
    args = p.parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return args.fn(args)
    except solvers.InputError as e:
        print(f"sdebench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
