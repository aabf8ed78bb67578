"""make_all: every figure and table the collection allows, and what was skipped and why."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path

from paper_figures._common import FigureResult, Skip, Skipped, TableResult, as_collection
from paper_figures.claims import claims_table
from paper_figures.curves import loss_curves, stability
from paper_figures.fig1 import fig_1
from paper_figures.fig2 import fig_2
from paper_figures.fig3 import fig_3
from paper_figures.fig4 import fig_4
from paper_figures.fig5 import fig_5
from paper_figures.fig6 import fig_6
from paper_figures.tables import table_2, table_3, table_4, table_6, table_7

# name -> (function, what it shows)
FIGURES = {
    "fig1": (fig_1, "eval perplexity vs depth per method"),
    "fig2": (fig_2, "spike scores of loss and grad norm vs depth, Pre-LN ± ProRes"),
    "fig3": (fig_3, "per-layer activation norm over training, without / with ProRes"),
    "fig4": (fig_4, "cosine similarity of branch outputs to the final checkpoint, early training"),
    "fig5": (fig_5, "loss gap ProRes − baseline with warmup-end and LR-decay markers"),
    "fig6": (fig_6, "every ProRes schedule's alpha(l, t)"),
    "loss_curves": (loss_curves, "train loss per grid"),
    "stability": (stability, "grad norm, loss spikes and diverged runs"),
}
TABLES = {
    "table2": (table_2, "C4 perplexity"),
    "table3": (table_3, "zero-shot accuracy at 1.3B"),
    "table4": (table_4, "OOD perplexity at 1.3B"),
    "table6": (table_6, "schedule ablation at 350M"),
    "table7": (table_7, "ClimbMix perplexity"),
    "claims": (claims_table, "the paper's claims: ours Δ ± 95% CI over seeds and a verdict"),
}
ALL = {**FIGURES, **TABLES}
_TABLE_OPTIONS = ("scales",)


def canonical_name(name: str) -> str:
    """'fig1', 'fig_1', 'figure1', 'Table 2', 'table_2' -> the key of ALL; KeyError if unknown."""
    key = name.strip().lower().replace("figure", "fig").replace(" ", "").replace("-", "_")
    if key not in ALL:
        key = key.replace("_", "") if key.replace("_", "") in ALL else key
    if key not in ALL:
        raise KeyError(f"unknown figure/table {name!r}; choose from {', '.join(ALL)}")
    return key


@dataclass
class Report:
    """What make_all did: made (name -> files), skipped (name -> reason), failed (name -> error), results."""

    out_dir: Path
    made: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"figures and tables in {self.out_dir}"]
        for name, files in self.made.items():
            lines.append(f"  made     {name:12s} {', '.join(Path(f).name for f in files)}")
        for name, reason in self.skipped.items():
            lines.append(f"  skipped  {name:12s} {reason}")
        for name, err in self.failed.items():
            lines.append(f"  FAILED   {name:12s} {err.strip().splitlines()[-1]}")
        return "\n".join(lines)


def make(name: str, collection, out_dir, **options):
    """One figure/table by name: its FigureResult/TableResult, or Skipped(name, reason)."""
    key = canonical_name(name)
    fn = ALL[key][0]
    if key not in TABLES:
        options = {k: v for k, v in options.items() if k not in _TABLE_OPTIONS}
    try:
        return fn(as_collection(collection), out_dir, **options)
    except Skip as exc:
        return Skipped(key, str(exc))


def make_all(collection, out_dir, only=None, *, scales: dict | None = None) -> Report:
    """Make every figure and table the collection allows (or those in `only`) under out_dir.

    A function that raises Skip is reported in `skipped` with its reason; any other exception in `failed` with
    its traceback (the others are still made). Writes out_dir/index.md linking everything made and listing
    what was skipped. scales: our scale preset -> the paper's table column (see paper_figures.tables).
    """
    col = as_collection(collection)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(ALL) if not only else [canonical_name(n) for n in only]
    report = Report(out)
    for name in names:
        fn = ALL[name][0]
        kwargs = {"scales": scales} if name in TABLES and scales else {}
        try:
            res = fn(col, out, **kwargs)
        except Skip as exc:
            report.skipped[name] = str(exc)
            continue
        except Exception:  # noqa: BLE001 - one broken figure must not stop the others
            report.failed[name] = traceback.format_exc()
            continue
        report.results[name] = res
        report.made[name] = list(res.files)
    _write_index(report, col)
    return report


def _write_index(report: Report, col) -> None:
    lines = ["# Figures and tables", "", f"Results: `{col.root}` ({len(col.runs)} runs)", ""]
    for name, res in report.results.items():
        what = ALL[name][1]
        if isinstance(res, FigureResult):
            png = next((f for f in res.files if str(f).endswith(".png")), None)
            lines += [f"## {name}: {what}", "", f"![{name}]({Path(png).name})" if png else "", ""]
        elif isinstance(res, TableResult):
            links = ", ".join(f"[{Path(f).suffix[1:]}]({Path(f).name})" for f in res.files)
            lines += [f"## {name}: {what} ({links})", "", res.markdown, ""]
    if report.skipped:
        lines += ["## Skipped", ""] + [f"- **{k}** ({ALL[k][1]}): {v}" for k, v in report.skipped.items()] + [""]
    if report.failed:
        lines += ["## Failed", ""] + [f"- **{k}**: `{v.strip().splitlines()[-1]}`" for k, v in report.failed.items()]
    (report.out_dir / "index.md").write_text("\n".join(lines) + "\n")
