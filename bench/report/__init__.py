"""Outputs: reports (analysis, figures, renderers, the document), the ``compare`` gate."""
from bench.report.analysis import BUDGETS, LEVEL, best_per_budget, convergence_table
from bench.report.data import discretization_floor, load_cells, solver_label
from bench.report.document import SECTIONS, write_report
from bench.report.figures import trajectory_figure

__all__ = ["write_report", "load_cells", "convergence_table", "best_per_budget", "trajectory_figure", "solver_label",
           "discretization_floor", "SECTIONS", "BUDGETS", "LEVEL"]
