"""Figure 5: loss gap ProRes − baseline over training, with markers at the end of residual warmup and at the
start of the LR decay (§5.5; the paper: 7B, W = 32k, decay from 90k)."""

from __future__ import annotations

import math

import pandas as pd

from paper_figures._common import FigureResult, Skip, new_figure, pick_pair, save, style
from study import analysis

PANELS = ("train loss (EMA 0.99)", "eval loss")


def fig_5(collection, out_dir, *, pair=None, beta: float = 0.99) -> FigureResult:
    """ProRes − baseline train loss (each run's loss EMA-smoothed with `beta`, aligned by step) and eval loss (at the
    eval steps both runs have) for one pair: by default the largest Pre-LN linear pair (the paper's 7B).

    Markers: residual warmup end = the ProRes run's W (run.json / config prores.W); LR decay start =
    the first step of the run's LR decay phase (study.lr_schedules; WSD: steps − round(steps · decay_fraction)).
    data: panel, step, gap, prores, baseline.
    meta['markers']: {'residual_warmup_end': W, 'lr_decay_start': step or None}.
    """
    if pair is None:
        p = pick_pair(collection, need=("metrics",))
        pair = (p["prores_run_id"], p["baseline_run_id"])
    gaps = analysis.run_loss_gap(collection, pair[0], pair[1], beta=beta)
    if gaps["train"].empty:
        raise Skip("the pair has no common logged steps")
    parts = []
    for panel, key in zip(PANELS, ("train", "eval"), strict=True):
        d = gaps[key].copy()
        d.insert(0, "panel", panel)
        parts.append(d)
    data = pd.concat(parts, ignore_index=True)[["panel", "step", "gap", "prores", "baseline"]]
    prores_run = collection.run(pair[0])
    W = prores_run.get("W")
    if W is None or (isinstance(W, float) and math.isnan(W)):
        W = prores_run.get("cfg.prores.W")
    W = float(W) if W is not None and not (isinstance(W, float) and math.isnan(W)) else None
    decay = analysis.lr_decay_start(prores_run)
    markers = {"residual_warmup_end": W, "lr_decay_start": decay}
    with style():
        fig, axes = new_figure(1, 2, width=4.8, height=3.4)
        for ax, panel in zip(axes[0], PANELS, strict=True):
            d = data[data["panel"] == panel]
            if len(d):
                ax.plot(d["step"], d["gap"], color="C0", linewidth=1.2 if len(d) > 50 else 1.6,
                        marker=None if len(d) > 50 else "o", label="ProRes − baseline")
            ax.axhline(0, color="0.4", linewidth=0.8)
            if W is not None:
                ax.axvline(W, color="C2", linestyle="--", label=f"residual warmup ends ({W:g})")
            if decay is not None:
                ax.axvline(decay, color="C3", linestyle=":", label=f"LR decay starts ({decay:g})")
            ax.set_title(panel)
            ax.set_xlabel("step")
            ax.set_ylabel("ProRes − baseline")
            ax.legend(fontsize="small")
        fig.suptitle(f"Loss gap: {prores_run['label']} − baseline ({prores_run.get('scale')})")
        files = save(fig, out_dir, "fig5_loss_gap")
    return FigureResult("fig5", fig, data, files, {"markers": markers, "prores_run_id": pair[0],
                                                   "baseline_run_id": pair[1], "panels": list(PANELS)})
