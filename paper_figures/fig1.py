"""Figure 1: depth scaling. Eval perplexity vs number of layers, one line per method (paper README §5.1)."""

from __future__ import annotations

import pandas as pd

from paper_figures._common import FigureResult, Skip, depth_group, new_figure, order_series, save, style


def fig_1(collection, out_dir, *, grid: str | None = None) -> FigureResult:
    """Final eval perplexity of the completed runs of the depth study vs n_layers, one line per series label.

    The depth study is the (grid, width) group with the most distinct depths (see _common.depth_group), or
    `grid`. Where a series has several runs at one depth (an LR sweep), the lowest perplexity is plotted, as the
    paper reports each method at its best searched LR. Diverged runs have no perplexity and are left out.
    data: series, n_layers, ppl, run_id.
    """
    runs = depth_group(collection.runs, grid)
    df = runs.dropna(subset=["final_eval_ppl"])
    df = df[df["final_eval_ppl"] < float("inf")]
    if df.empty:
        raise Skip("the depth-study runs have no eval perplexity")
    best = df.sort_values("final_eval_ppl").drop_duplicates(["label", "n_layers"], keep="first")
    data = pd.DataFrame({"series": best["label"].astype(str), "n_layers": best["n_layers"].astype(int),
                         "ppl": best["final_eval_ppl"].astype(float), "run_id": best["run_id"].astype(str)})
    data = data.sort_values(["series", "n_layers"]).reset_index(drop=True)
    order = order_series(data["series"])
    import seaborn as sns

    with style():
        fig, axes = new_figure(width=5.5, height=3.8)
        ax = axes[0, 0]
        sns.lineplot(data=data, x="n_layers", y="ppl", hue="series", hue_order=order, style="series",
                     style_order=order, markers=True, dashes=False, errorbar=None, ax=ax)
        ax.set_xlabel("number of layers")
        ax.set_ylabel("eval perplexity")
        ax.set_xticks(sorted(data["n_layers"].unique()))
        ax.set_title(f"Depth scaling ({runs['grid'].iloc[0]})")
        ax.legend(title=None, fontsize="small", loc="best")
        files = save(fig, out_dir, "fig1_depth_scaling")
    return FigureResult("fig1", fig, data, files, {"grid": runs["grid"].iloc[0], "series": order})
