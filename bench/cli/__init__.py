"""The ``sdebench`` command.

    sdebench run SUITE [--resume [RUN]] [--n N] [--threads T]   sweep a suite into the results store
    sdebench list solvers|models|suites|runs                     what there is
    sdebench export RUN [--csv PATH]                             a run's cells as CSV
    sdebench report RUN [RUN...] [--out DIR]                     HTML + Markdown report with figures
    sdebench compare BASE HEAD [--junit F] [--summary F]         regression gate (exit 1 quality/NFE, 3 time)
    sdebench history [--suite S] [--since DATE]                  metrics and time across runs, marked changes
    sdebench import-benchmark FILE                               a pytest-benchmark JSON file as a run
    sdebench describe MODEL                                      what the benchmark understood of a model
    sdebench sample MODEL SOLVER [-o KEY=VALUE ...]              sample once: NFE, time, error
    sdebench likelihood MODEL                                    ODE log-likelihood vs the exact one
    sdebench demo                                                every solver on the 2-D mixture, printed
    sdebench train NAME... [--out DIR] [--force] [--seed S]      reproduce a shipped checkpoint
    sdebench tune MODEL SOLVER --nfe N [--method dp|search]      tune a time grid, compare, save as JSON
    sdebench recommend MODEL --nfe N [--tune]                    rank solvers x grids at a budget, ties included

Exit codes: 0 success; 2 bad input of any kind (a one-line message, never a traceback: a bad
argument, suite, store, checkpoint or output path, a size that cannot fit in memory); 1 a
regression (compare), a non-finite result, or a run whose every cell failed (recorded with status
"failed"); 3 a timing-only regression (compare); 130 interrupted (with the command that resumes,
overrides included).

MODEL is a registered name (``sdebench list models``) or a model spec (``bench.zoo.specs``):
``diffusers:PATH``, ``denoiser:MODULE:FUNCTION``, ``callable:MODULE:FUNCTION``, ``checkpoint:PATH``.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys

import torch

import solvers
from bench.cli import outputs, recommend, sweep, tools, train, tune

__all__ = ["main"]

#: the command groups, one module each; each adds its subcommands with ``register(sub)``
GROUPS = (tools, sweep, outputs, tune, recommend, train)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="sdebench", description="Benchmark numerical SDE/ODE solvers of "
                                "score-based diffusion models on models with exact answers.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for group in GROUPS:
        group.register(sub)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = p.parse_args(argv)
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        return args.fn(args)
    except SystemExit as e:  # argparse: --help (0) or a bad argument (2, message printed)
        return e.code if isinstance(e.code, int) else 2
    except solvers.InputError as e:  # bad input of any kind, a store or checkpoint that cannot be used
        print(f"sdebench: error: {e}", file=sys.stderr)
        return 2
    except sqlite3.Error as e:  # a store damaged after it was opened
        print(f"sdebench: error: the results store failed: {type(e).__name__}: {e}; restore it or pass another "
              "--store", file=sys.stderr)
        return 2
    except OSError as e:  # an output that cannot be written (permissions, a full disk, a file in the way)
        where = f"{e.filename}: " if e.filename else ""
        print(f"sdebench: error: {where}{e.strerror or e} (a path that cannot be written or read: check that "
              f"its folders exist, are folders and are writable, and that the disk has room)", file=sys.stderr)
        return 2
    except solvers.NonFiniteError as e:
        print(f"sdebench: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sdebench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
