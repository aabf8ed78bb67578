"""Figure 3: layer-wise activation norm over training, step × layer heatmaps without / with ProRes (§5.3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from paper_figures._common import FigureResult, Skip, new_figure, pick_pair, save, style

PANELS = ("without ProRes", "with ProRes")


def heatmaps(data: pd.DataFrame, value: str, title: str, cbar: str, *, log=False, vmin=None, vmax=None):
    """Two heatmaps (layer on y, step on x) sharing one colour scale."""
    import seaborn as sns

    fig, axes = new_figure(1, 2, width=4.6, height=3.6)
    lo = vmin if vmin is not None else np.nanmin(data[value])
    hi = vmax if vmax is not None else np.nanmax(data[value])
    for ax, panel in zip(axes[0], PANELS, strict=True):
        grid = data[data["panel"] == panel].pivot(index="layer", columns="step", values=value)
        norm = LogNorm(max(lo, 1e-6), hi) if log else None
        sns.heatmap(grid, ax=ax, cmap="viridis", norm=norm, vmin=None if log else lo, vmax=None if log else hi,
                    cbar_kws={"label": cbar}, xticklabels=max(1, grid.shape[1] // 6),
                    yticklabels=max(1, grid.shape[0] // 8))
        ax.invert_yaxis()
        ax.set_title(f"{panel}: {data[data['panel'] == panel]['series'].iloc[0]}", fontsize="small")
        ax.set_xlabel("step")
        ax.set_ylabel("layer")
    fig.suptitle(title)
    return fig


def fig_3(collection, out_dir, *, pair=None) -> FigureResult:
    """Per-layer output activation norm (probes.jsonl `act_norm`) of a ProRes run and its baseline.

    The pair: completed runs differing only in prores.* that both have probes, preferring Pre-LN with the linear
    schedule and the largest model (the paper shows 1.3B Pre-LN); or `pair` = (prores_run_id, baseline_run_id).
    data: panel, series, run_id, step, layer, act_norm (one row per heatmap cell: probe steps × layers per panel).
    """
    if pair is None:
        p = pick_pair(collection, need=("probes",))
        pair = (p["prores_run_id"], p["baseline_run_id"])
    parts = []
    for panel, rid in zip(PANELS, (pair[1], pair[0]), strict=True):
        pr = collection.probes_for(rid)
        if pr.empty or "act_norm" not in pr:
            raise Skip(f"run {rid} has no act_norm probes")
        d = pr[["step", "layer", "act_norm"]].copy()
        d = d.groupby(["step", "layer"], as_index=False)["act_norm"].mean()
        d.insert(0, "run_id", rid)
        d.insert(0, "series", collection.run(rid)["label"])
        d.insert(0, "panel", panel)
        parts.append(d)
    data = pd.concat(parts, ignore_index=True)
    data["step"] = data["step"].astype(int)
    data["layer"] = data["layer"].astype(int)
    with style():
        fig = heatmaps(data, "act_norm", "Layer-wise activation norm over training", "activation norm", log=True)
        files = save(fig, out_dir, "fig3_activation_norm")
    return FigureResult("fig3", fig, data, files, {"prores_run_id": pair[0], "baseline_run_id": pair[1],
                                                   "panels": list(PANELS)})
