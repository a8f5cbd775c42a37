"""Outputs: reports (analysis, figures, the rendering API, registered sections, the document), the
``compare`` gate.

A report section is added in one place: ``register_section(id, heading, build, after=...)`` with a
builder ``build(ctx: ReportContext) -> [Block]`` made of ``bench.report.render``'s blocks."""
from bench.report.analysis import BUDGETS, LEVEL, best_per_budget, convergence_table
from bench.report.data import discretization_floor, load_cells, solver_label
from bench.report.document import SECTIONS, write_report
from bench.report.figures import trajectory_figure
from bench.report.render import Block, chart, figure, heading, paragraph, preformatted, table
from bench.report.sections import ReportContext, register_section, sections, unregister_section

__all__ = ["write_report", "load_cells", "convergence_table", "best_per_budget", "trajectory_figure", "solver_label",
           "discretization_floor", "SECTIONS", "BUDGETS", "LEVEL", "register_section", "unregister_section",
           "sections", "ReportContext", "Block", "paragraph", "heading", "table", "preformatted", "figure", "chart"]
