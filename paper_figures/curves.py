"""Loss curves per grid and the stability view (grad norm, spikes, diverged runs marked)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from paper_figures._common import FigureResult, Skip, downsample, new_figure, save, style
from study import analysis, stats

MAX_LEGEND = 14


def _series_name(run) -> str:
    """'Pre-LN (ProRes) · 130m · 12L': label, scale preset and depth (grids may set the depth apart)."""
    parts = [str(run["label"])]
    if isinstance(run.get("scale"), str):
        parts.append(run["scale"])
    n = run.get("n_layers")
    if isinstance(n, (int, float)) and n == n:
        parts.append(f"{int(n)}L")
    return " · ".join(parts)


def _stack(parts: list) -> tuple[pd.DataFrame, list]:
    """All runs' rows in one frame with a panel (= grid) column, and the sorted grid names."""
    data = pd.concat(parts, ignore_index=True)
    data.insert(0, "panel", data["grid"])
    return data, sorted(data["grid"].unique())


def _grid_axes(grid_names):
    """One panel per grid, at most 3 per row; the unused cells of the last row hidden."""
    ncols = min(3, len(grid_names))
    fig, axes = new_figure(-(-len(grid_names) // ncols), ncols, width=4.6, height=3.4)
    for ax in axes.flat[len(grid_names):]:
        ax.set_visible(False)
    return fig, axes


def _smoothed_loss(collection, run_id, beta: float) -> pd.DataFrame | None:
    """step and EMA-smoothed train loss of one run (None without train metrics)."""
    m = collection.metrics_for(run_id)
    if m.empty or "loss" not in m:
        return None
    return pd.DataFrame({"step": m["step"].to_numpy(), "loss": analysis.ema(m["loss"].to_numpy(dtype=float), beta)})


def _seed_bands(collection, members: dict, beta: float, confidence: float = 0.95) -> pd.DataFrame:
    """Mean and 95% t half-width over seeds of the smoothed loss, per seed group with >= 2 completed runs, at the
    steps every run of the group logged. members: group -> [(run_id, series)] of its completed runs with metrics,
    in drawing order. One group's full-length curves are read at a time (a campaign's runs hold millions of
    rows). Columns: group, series, step, mean, half_width, n."""
    out = []
    for g, runs in members.items():
        if len(runs) < 2:
            continue
        gd = pd.concat([_smoothed_loss(collection, rid, beta).assign(run_id=rid) for rid, _ in runs],
                       ignore_index=True)
        wide = gd.pivot_table(index="step", columns="run_id", values="loss").dropna()
        n = wide.shape[1]
        if n < 2 or wide.empty:
            continue
        half = stats.t_half_width(wide.std(axis=1, ddof=1).to_numpy(), n, confidence)
        out.append(pd.DataFrame({"group": g, "series": runs[0][1], "step": wide.index.to_numpy(),
                                 "mean": wide.mean(axis=1).to_numpy(), "half_width": half, "n": n}))
    cols = ["group", "series", "step", "mean", "half_width", "n"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)


def loss_curves(collection, out_dir, *, beta: float = 0.99, grids=None, max_points: int = 1000) -> FigureResult:
    """Train loss (EMA `beta`) over steps, one panel per grid, one line per run (any state).

    Runs that differ only in train.seed are drawn as one line, the mean over seeds, with a band of the 95% t
    interval of that mean (meta['bands']); runs without seed siblings as their own line.
    data: panel (= grid), grid, series, run_id, state, step, loss (smoothed), downsampled to ~max_points per run.
    """
    runs = collection.runs
    if grids is not None:
        runs = runs[runs["grid"].isin(grids)]
    groups = pd.Series(analysis.seed_group_keys(runs).to_numpy(), index=runs["run_id"].astype(str).to_numpy())
    parts, members = [], {}
    for r in runs.itertuples():
        d = _smoothed_loss(collection, r.run_id, beta)
        if d is None:
            continue
        part = _labelled(downsample(d, max_points, "loss"), r)
        parts.append(part)
        if r.state == "completed":
            members.setdefault(groups[r.run_id], []).append((r.run_id, part["series"].iloc[0]))
    if not parts:
        raise Skip("no run has train metrics")
    data, grid_names = _stack(parts)
    bands = _seed_bands(collection, members, beta)  # bands from the full series: same steps
    every = max(1, int(bands.groupby("group").size().max() // max_points)) if len(bands) else 1
    if every > 1:  # every `every`-th step of each group (groupby.apply would drop the group column, pandas 3)
        bands = bands[bands.groupby("group", sort=False).cumcount().to_numpy() % every == 0].reset_index(drop=True)
    banded = set(data.loc[data["run_id"].map(groups).isin(set(bands["group"])) & (data["state"] == "completed"),
                          "run_id"])
    with style():
        fig, axes = _grid_axes(grid_names)
        # strict=False: the last row may have more axes than grids (_grid_axes hides the spare ones)
        for ax, g in zip(axes.flat, grid_names, strict=False):
            d = data[data["grid"] == g]
            i = 0
            for _, b in bands[bands["group"].isin(set(d["run_id"].map(groups)))].groupby("group", sort=False):
                n = int(b["n"].iloc[0])
                ax.plot(b["step"], b["mean"], linewidth=1.0, color=f"C{i % 10}",
                        label=f"{b['series'].iloc[0]} (mean of {n} seeds)")
                ax.fill_between(b["step"], b["mean"] - b["half_width"], b["mean"] + b["half_width"],
                                color=f"C{i % 10}", alpha=0.25, linewidth=0)
                i += 1
            for _, rd in d[~d["run_id"].isin(banded)].groupby("run_id", sort=False, observed=True):
                ax.plot(rd["step"], rd["loss"], linewidth=0.9, color=f"C{i % 10}",
                        linestyle="-" if rd["state"].iloc[0] == "completed" else "--", label=rd["series"].iloc[0])
                i += 1
            ax.set_title(f"grid: {g}")
            ax.set_xlabel("step")
            ax.set_ylabel(f"train loss (EMA {beta})")
            lines = i
            finite = d["loss"][np.isfinite(d["loss"])]
            if len(finite):
                lo, hi = finite.quantile(0.0), finite.quantile(0.98)
                ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
            if lines <= MAX_LEGEND:
                ax.legend(fontsize="xx-small")
        files = save(fig, out_dir, "loss_curves")
    return FigureResult("loss_curves", fig, data, files, {"beta": beta, "panels": grid_names, "bands": bands})


def stability(collection, out_dir, *, grids=None, window: int | None = None, threshold: float = 7.0,
              max_points: int = 1000) -> FigureResult:
    """Gradient norm over steps (log scale), one panel per grid, one line per run; grad-norm spikes
    (analysis.spike_mask, `threshold` sigma, window as Figure 2) as dots; diverged runs marked with an x at their
    diverged step (status.json diverged_step) at the last finite grad norm up to it. Curves are min/max decimated
    to ~max_points per run, so single-step spikes stay visible.

    data: panel, grid, series, run_id, state, step, grad_norm (downsampled).
    meta['spikes']: run_id, grid, step, grad_norm; meta['diverged']: run_id, grid, step, grad_norm.
    """
    runs = collection.runs
    if grids is not None:
        runs = runs[runs["grid"].isin(grids)]
    parts, spikes, diverged = [], [], []
    for r in runs.itertuples():
        m = collection.metrics_for(r.run_id)
        if m.empty or "grad_norm" not in m:
            continue
        steps = m["step"].to_numpy()
        gn = m["grad_norm"].to_numpy(dtype=float)
        if len(m):
            w = window or analysis.auto_window(len(m))
            mask = analysis.spike_mask(gn, w, threshold)
            for s, g in zip(steps[mask], gn[mask], strict=True):
                spikes.append({"run_id": r.run_id, "grid": str(r.grid), "step": int(s), "grad_norm": float(g)})
        if r.state == "diverged":
            dstep = r.diverged_step if r.diverged_step is not None and not (
                isinstance(r.diverged_step, float) and math.isnan(r.diverged_step)) else steps.max()
            ok = np.isfinite(gn) & (steps <= dstep)
            y = float(gn[ok][-1]) if ok.any() else float("nan")
            diverged.append({"run_id": r.run_id, "grid": str(r.grid), "step": int(dstep), "grad_norm": y})
        parts.append(_labelled(downsample(pd.DataFrame({"step": steps, "grad_norm": gn}), max_points, "grad_norm"), r))
    if not parts:
        raise Skip("no run has grad-norm metrics")
    data, grid_names = _stack(parts)
    spikes = pd.DataFrame(spikes, columns=["run_id", "grid", "step", "grad_norm"])
    diverged = pd.DataFrame(diverged, columns=["run_id", "grid", "step", "grad_norm"])
    with style():
        fig, axes = _grid_axes(grid_names)
        for ax, g in zip(axes.flat, grid_names, strict=False):  # spare axes of the last row stay hidden
            d = data[data["grid"] == g]
            colors = {}
            for i, (rid, rd) in enumerate(d.groupby("run_id", sort=False, observed=True)):
                colors[rid] = f"C{i % 10}"
                ax.plot(rd["step"], rd["grad_norm"], linewidth=0.8, color=colors[rid], label=rd["series"].iloc[0])
            sp = spikes[spikes["grid"] == g]
            if len(sp):
                ax.scatter(sp["step"], sp["grad_norm"], s=14, color="k", zorder=3, label="grad-norm spike")
            dv = diverged[diverged["grid"] == g]
            for row in dv.itertuples():
                ax.scatter([row.step], [row.grad_norm], marker="x", s=70, linewidths=2, zorder=4,
                           color=colors.get(row.run_id, "red"), label="diverged")
            ax.set_yscale("log")
            ax.set_title(f"grid: {g}")
            ax.set_xlabel("step")
            ax.set_ylabel("grad norm (before clipping)")
            if d["run_id"].nunique() <= MAX_LEGEND:
                handles, labels = ax.get_legend_handles_labels()
                uniq = dict(zip(labels, handles, strict=True))
                ax.legend(uniq.values(), uniq.keys(), fontsize="xx-small")
        files = save(fig, out_dir, "stability")
    return FigureResult("stability", fig, data, files, {"spikes": spikes, "diverged": diverged,
                                                        "panels": grid_names, "threshold": threshold})


def _labelled(d: pd.DataFrame, r) -> pd.DataFrame:
    """Prefix a run's plotted rows with the columns every curve panel groups by."""
    d.insert(0, "state", r.state)
    d.insert(0, "run_id", r.run_id)
    d.insert(0, "series", _series_name(r._asdict()))
    d.insert(0, "grid", str(r.grid))
    return d
