"""The paper's figures and tables regenerated from a collected results store (study.collect).

Each function takes a Collection (or a results root / saved collection path) and an output folder, writes PNG and
PDF (figures) or Markdown, LaTeX and CSV (tables), and returns a FigureResult / TableResult holding the plotted
data, or raises Skip(reason) when the data does not allow it. The paper's printed numbers live in reference/.

    fig_1 .. fig_6, loss_curves, stability      figures (paper README §5)
    table_2, table_3, table_4, table_6, table_7 tables with paper / ours / difference
    make_all(collection, out_dir, only=None)     everything the data allows -> Report(made, skipped, failed)
    set_formats("png,pdf")                       which image files figures write
"""

from paper_figures._common import FigureResult, Skip, Skipped, TableResult, set_formats
from paper_figures.curves import loss_curves, stability
from paper_figures.fig1 import fig_1
from paper_figures.fig2 import fig_2
from paper_figures.fig3 import fig_3
from paper_figures.fig4 import fig_4
from paper_figures.fig5 import fig_5
from paper_figures.fig6 import fig_6
from paper_figures.make import ALL, FIGURES, TABLES, Report, canonical_name, make, make_all
from paper_figures.tables import reference, table_2, table_3, table_4, table_6, table_7

__all__ = ["FigureResult", "TableResult", "Skip", "Skipped", "Report", "fig_1", "fig_2", "fig_3", "fig_4", "fig_5",
           "fig_6", "loss_curves", "stability", "table_2", "table_3", "table_4", "table_6", "table_7", "make",
           "make_all", "canonical_name", "reference", "set_formats", "ALL", "FIGURES", "TABLES"]
