"""Figure 6: every ProRes schedule's alpha(l, t) (T = 1000, L = 12), one panel per schedule (§5.6). No runs needed."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd

from paper_figures._common import FigureResult, new_figure, save, style
from study import prores


def fig_6(collection=None, out_dir=".", *, T: float = 1000, L: int = 12, steps: int | None = None,
          schedules=None, points: int = 301) -> FigureResult:
    """alpha(l, t) from study.prores.alphas for every schedule but 'none', t in [0, steps] (default 1.25·T·L).

    data: panel (= schedule), schedule, layer, step, alpha.
    """
    schedules = list(schedules or [s for s in prores.SCHEDULES if s != "none"])
    steps = steps or int(1.25 * T * L)
    t = np.linspace(0, steps, points)
    rows = []
    for s in schedules:
        a = np.stack([prores.alphas(s, x, L, T) for x in t])  # [points, L]
        for layer in range(L):
            rows.append(pd.DataFrame({"panel": s, "schedule": s, "layer": layer + 1, "step": t, "alpha": a[:, layer]}))
    data = pd.concat(rows, ignore_index=True)
    ncols = 4
    nrows = -(-len(schedules) // ncols)
    cmap = matplotlib.colormaps["viridis"]
    with style():
        fig, axes = new_figure(nrows, ncols, width=3.0, height=2.3, sharex=True, sharey=True)
        for ax in axes.flat[len(schedules):]:
            ax.set_visible(False)
        for ax, s in zip(axes.flat, schedules, strict=False):  # the spare axes above are hidden
            d = data[data["schedule"] == s]
            for layer, g in d.groupby("layer"):
                ax.plot(g["step"], g["alpha"], color=cmap((layer - 1) / max(L - 1, 1)), linewidth=1.0,
                        label=f"l={layer}" if s == schedules[0] else None)
            ax.set_title(s, fontsize="small")
            ax.set_ylim(-0.03, 1.05)
        for ax in axes[-1]:
            ax.set_xlabel("step t")
        for ax in axes[:, 0]:
            ax.set_ylabel("alpha(l, t)")
        fig.legend(loc="outside right center", fontsize="x-small", title="layer")
        fig.suptitle(f"ProRes schedules (T = {T:g}, L = {L})")
        files = save(fig, out_dir, "fig6_schedules")
    return FigureResult("fig6", fig, data, files, {"T": T, "L": L, "schedules": schedules})
