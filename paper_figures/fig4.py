"""Figure 4: cosine similarity of each layer's residual-branch output early in training to the final one (§5.4)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures._common import FigureResult, Skip, pick_pair, save, style
from paper_figures.fig3 import PANELS, heatmaps
from study import analysis


def fig_4(collection, out_dir, *, pair=None, early_fraction: float = 0.1) -> FigureResult:
    """Per-layer cosine similarity (analysis.branch_similarity) between the branch outputs at each probe step in
    the first `early_fraction` of training and at the final probe step, heatmaps without / with ProRes.

    Reads probes/step_XXXXXXX.pt through the paths in Collection.probe_files (so the run directories must still
    be where they were collected). data: panel, series, run_id, step, layer, cosine.
    """
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover
        raise Skip("torch is not installed (needed to read probes/*.pt)") from None
    if pair is None:
        p = pick_pair(collection, need=("probe_files",))
        pair = (p["prores_run_id"], p["baseline_run_id"])
    parts = []
    for panel, rid in zip(PANELS, (pair[1], pair[0]), strict=True):
        files = collection.probe_files_for(rid)
        missing = [f for f in files["path"] if not Path(f).exists()]
        if files.empty or missing:
            raise Skip(f"run {rid}: probe files " + ("missing" if files.empty else f"moved or deleted ({missing[0]})"))
        run = collection.run(rid)
        total = run.get("steps")
        d = analysis.branch_similarity(files, early_fraction=early_fraction,
                                       total_steps=total if pd.notna(total) else None)
        if d.empty:
            raise Skip(f"run {rid} has no probe step in the first {early_fraction:.0%} of training besides the final")
        d.insert(0, "run_id", rid)
        d.insert(0, "series", run["label"])
        d.insert(0, "panel", panel)
        parts.append(d)
    data = pd.concat(parts, ignore_index=True)
    with style():
        fig = heatmaps(data, "cosine", "Similarity of residual-branch outputs to the final checkpoint",
                       "cosine similarity", vmin=min(0.0, data["cosine"].min()), vmax=1.0)
        files = save(fig, out_dir, "fig4_branch_similarity")
    return FigureResult("fig4", fig, data, files, {"prores_run_id": pair[0], "baseline_run_id": pair[1],
                                                   "panels": list(PANELS), "early_fraction": early_fraction})
