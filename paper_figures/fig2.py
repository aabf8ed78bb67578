"""Figure 2: spike scores of the training loss and the gradient norm vs depth, Pre-LN ± ProRes (§5.2)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from paper_figures._common import FigureResult, Skip, depth_group, new_figure, order_series, save, style
from study import analysis

PANELS = {"loss": "train loss", "grad_norm": "gradient norm"}


def fig_2(collection, out_dir, *, grid: str | None = None, method: str = "pre-ln",
          schedules=("none", "linear"), window: int | None = None, threshold: float = 7.0,
          start: float = 0.1, end: float = 0.9) -> FigureResult:
    """Spike score (study.analysis.spike_score) of each depth-study run's loss and grad norm vs n_layers.

    Runs: the depth study (as Figure 1), method `method` with schedule in `schedules`. The range [start, end] is
    a fraction of the run's configured steps. window=None: 1000 values (OLMo 2) for long runs, a tenth of the
    logged values (>= 20) for short ones (analysis.auto_window). Several runs at one depth: the mean score.
    data: panel ('train loss' | 'gradient norm'), series, n_layers, spike_score, run_id.
    """
    runs = depth_group(collection.runs, grid)
    runs = runs[(runs["method"] == method) & runs["schedule"].isin(schedules)]
    if runs.empty:
        raise Skip(f"no completed depth-study runs of method {method!r} with schedules {list(schedules)}")
    rows = []
    for r in runs.itertuples():
        m = collection.metrics_for(r.run_id)
        if m.empty:
            continue
        total = r.steps if isinstance(r.steps, (int, float)) and np.isfinite(r.steps) else None
        w = window or analysis.auto_window(len(m))
        for col, panel in PANELS.items():
            if col not in m:
                continue
            score = analysis.spike_score(m[col], w, threshold, start, end, steps=m["step"], total_steps=total)
            rows.append({"panel": panel, "series": r.label, "n_layers": int(r.n_layers), "spike_score": score,
                         "run_id": r.run_id, "window": w})
    data = pd.DataFrame(rows, columns=["panel", "series", "n_layers", "spike_score", "run_id", "window"])
    data = data.dropna(subset=["spike_score"])
    if data.empty:
        raise Skip("the depth-study runs have no metrics in the scored range")
    import seaborn as sns

    order = order_series(data["series"])
    with style():
        fig, axes = new_figure(1, 2, width=4.5, height=3.4)
        for ax, panel in zip(axes[0], PANELS.values(), strict=True):
            d = data[data["panel"] == panel]
            sns.lineplot(data=d, x="n_layers", y="spike_score", hue="series", hue_order=order, style="series",
                         style_order=order, markers=True, dashes=False, errorbar=None, ax=ax)
            ax.set_title(f"spike score: {panel}")
            ax.set_xlabel("number of layers")
            ax.set_ylabel("spike score (%)")
            ax.set_xticks(sorted(data["n_layers"].unique()))
            ax.legend(title=None, fontsize="small")
        files = save(fig, out_dir, "fig2_spike_scores")
    return FigureResult("fig2", fig, data, files, {"threshold": threshold, "range": (start, end),
                                                   "panels": list(PANELS.values())})
