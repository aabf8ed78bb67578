"""What every figure and table function shares: results, skips, saving, run selection."""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from study import analysis
from study.collect import Collection


class Skip(Exception):
    """Raised by a figure/table function when the collection does not allow it; the message says why."""


@dataclass
class FigureResult:
    """A made figure: the matplotlib Figure, the data it plots (tidy), the files written, and extras.

    data: one row per plotted point (or heatmap cell), with a `panel` column where the figure has panels and a
    `series` column for lines. meta: markers, picked runs, parameters.
    """

    name: str
    fig: Figure | None
    data: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def _repr_png_(self):  # notebooks show the figure: the PNG already written, else a fresh rendering
        png = next((f for f in self.files if str(f).endswith(".png") and Path(f).exists()), None)
        if png is not None:
            return Path(png).read_bytes()
        if self.fig is None:
            return None
        import io

        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        return buf.getvalue()


@dataclass
class TableResult:
    """A made table: tidy data (one row per paper cell: paper, ours, diff), Markdown and LaTeX text, files."""

    name: str
    data: pd.DataFrame
    markdown: str
    latex: str
    files: list[Path] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def _repr_markdown_(self):
        return self.markdown


@dataclass
class Skipped:
    """What `make` returns instead of raising: the name and the reason."""

    name: str
    reason: str

    def _repr_markdown_(self):
        return f"**{self.name} skipped:** {self.reason}"

    def __str__(self):
        return f"{self.name} skipped: {self.reason}"


@contextmanager
def style():
    """The seaborn look for every figure (no global state left behind)."""
    import seaborn as sns

    with matplotlib.rc_context(), sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1):
        matplotlib.rcParams.update({"figure.dpi": 100, "legend.frameon": False})
        yield


def new_figure(nrows=1, ncols=1, *, width=4.2, height=3.2, **kw):
    """A Figure not registered with pyplot (nothing to close, no backend needed) and its axes array."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


FORMATS = ("png", "pdf")
_formats = {"current": FORMATS}  # set_formats changes it for the process (a notebook parameter, a test)


def set_formats(formats) -> tuple[str, ...]:
    """Which files every figure writes from now on: 'png,pdf' (default), 'png', ('pdf',) ...; returns them."""
    if isinstance(formats, str):
        formats = tuple(f.strip().lower() for f in formats.split(",") if f.strip())
    formats = tuple(formats) or FORMATS
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    if bad:
        raise ValueError(f"unknown figure format(s) {bad}; choose from png, pdf, svg")
    _formats["current"] = formats
    return formats


def save(fig: Figure, out_dir, name: str) -> list[Path]:
    """Write out_dir/name.png (150 dpi) and name.pdf (or the formats of set_formats); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, ext in enumerate(_formats["current"]):
        f = out / f"{name}.{ext}"
        fig.savefig(f, dpi=150 if ext == "png" else None)
        files.append(f)
        if i == 0:  # the layout is solved once; the other formats reuse it (figure-relative positions)
            fig.set_layout_engine("none")
    return files


def as_collection(results) -> Collection:
    if isinstance(results, Collection):
        return results
    if isinstance(results, (str, os.PathLike)):
        return analysis.open_results(results)
    raise TypeError(f"expected a Collection or a path, got {type(results).__name__}")


def isnum(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def completed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["state"] == "completed"]


def downsample(df: pd.DataFrame, n: int = 1000, value: str | None = None) -> pd.DataFrame:
    """At most ~n rows for plotting a long curve, always keeping the first and last rows.

    With `value`, each of n/2 buckets keeps its minimum and maximum row of that column, so single-step spikes
    survive (min/max decimation); without, rows are evenly spaced.
    """
    if len(df) <= n:
        return df
    if value is None:
        idx = np.unique(np.r_[np.linspace(0, len(df) - 1, n).astype(int), len(df) - 1])
        return df.iloc[idx]
    v = df[value].to_numpy(dtype=float)
    buckets = max(n // 2, 1)
    ids = np.arange(len(v)) * buckets // len(v)
    hi = pd.Series(np.where(np.isnan(v), -np.inf, v)).groupby(ids).idxmax().to_numpy()
    lo = pd.Series(np.where(np.isnan(v), np.inf, v)).groupby(ids).idxmin().to_numpy()
    idx = np.unique(np.r_[hi, lo, 0, len(v) - 1].astype(int))
    return df.iloc[idx]


# The paper's order of series in Figure 1 (others follow alphabetically)
SERIES_ORDER = ["Pre-LN", "Pre-LN (DS-Init)", "Pre-LN (Scaled Init)", "Sandwich-LN", "LayerNorm Scaling",
                "Post-LN", "DeepNorm", "Pre-LN (ProRes)", "Pre-LN (ProRes-equal)"]


def order_series(labels) -> list[str]:
    labels = list(dict.fromkeys(labels))
    known = [s for s in SERIES_ORDER if s in labels]
    return known + sorted(s for s in labels if s not in known)


def depth_group(runs: pd.DataFrame, grid: str | None = None) -> pd.DataFrame:
    """Completed runs of the depth-scaling study: the (grid, width) group with the most distinct depths (>= 2).

    A grid where the width (d_model) is fixed and n_layers varies is a depth study (grids/paper/depth.yaml:
    71M width at 12...120 layers); a grid mixing widths (130M/1.3B) is not.
    """
    df = completed(runs).dropna(subset=["n_layers"])
    if grid is not None:
        df = df[df["grid"] == grid]
    if df.empty:
        raise Skip("no completed runs" + (f" in grid {grid!r}" if grid else ""))
    width = df["d_model"] if "d_model" in df else pd.Series(0, index=df.index)
    groups = df.assign(_w=width.fillna(-1)).groupby(["grid", "_w"], dropna=False)
    best, best_key = None, None
    for _key, g in groups:
        score = (g["n_layers"].nunique(), len(g))
        if g["n_layers"].nunique() >= 2 and (best_key is None or score > best_key):
            best, best_key = g, score
    if best is None:
        raise Skip("no grid has completed runs of one width at two or more depths "
                   "(a depth-scaling grid such as grids/paper/depth.yaml)")
    return best.drop(columns="_w")


def pick_pair(col: Collection, *, need=("metrics",), prefer_method="pre-ln", prefer_schedule="linear"):
    """The (ProRes, baseline) pair to draw: completed runs that differ only in prores.*, having `need` data.

    Preference: method `prefer_method`, schedule `prefer_schedule`, then the largest model (params, then depth).
    need: any of 'metrics', 'evals', 'probes', 'probe_files' (each run must have rows there).
    """
    pairs = analysis.pair_runs(col.runs, states=("completed",))
    if pairs.empty:
        raise Skip("no completed ProRes run has a completed baseline that differs only in prores.*")
    have = {table: col.runs_with(table) for table in need}
    ok = pairs[[all(a in have[t] and b in have[t] for t in need)
                for a, b in zip(pairs["prores_run_id"], pairs["baseline_run_id"], strict=True)]]
    if ok.empty:
        raise Skip(f"no ProRes/baseline pair where both runs have {' and '.join(need)}")
    runs = col.runs.set_index("run_id")
    params = runs["params"] if "params" in runs else pd.Series(np.nan, index=runs.index)
    ok = ok.assign(
        _m=(ok["method"] == prefer_method).astype(int),
        _s=(ok["schedule"] == prefer_schedule).astype(int),
        _p=pd.to_numeric(params.reindex(ok["prores_run_id"]).to_numpy(), errors="coerce"),
        _l=pd.to_numeric(ok["n_layers"], errors="coerce"))
    ok = ok.sort_values(["_m", "_s", "_p", "_l"], ascending=False, na_position="last")
    return ok.iloc[0]
