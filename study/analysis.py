"""Analysis shared by paper_figures, the notebooks in analysis/ and `study figures`.

Pure functions over the tables of study.collect. This module holds the pairing and the tables; the series and
statistics it builds on live in their own modules and are re-exported here, so `from study import analysis`
reaches every name:

study.series    spike_score, spike_mask, auto_window, ema, loss_gap, eval_loss_gap, run_loss_gap, lr_decay_start
study.stats     t_cdf, t_quantile, paired_interval, verdict, format_interval, seed_group_keys, seed_summary,
                paired_by_seed, SEED_COLUMN, VERDICTS
study.notebooks run_notebook, inject_parameters

pair_runs(runs)               ProRes runs paired with their baseline by study.design (differ only in prores.*)
compare_table(ours, paper)    side-by-side table with the difference
final_metrics(col)            one row per run with its final train/eval values
pair_summary(col)             pairs with both final perplexities, their difference and the final loss gap
spike_table(col)              loss and grad-norm spike scores of every run
lm_eval_scores(lm, rule)      one score per (run, task): acc_norm where the task has it, else acc
branch_similarity(files, ...) per-layer cosine similarity of residual-branch outputs to the final probe step
open_results(path)            a Collection from a results root (collects) or a saved collection (loads)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from study import collect as _collect
from study import design
from study.collect import Collection
from study.notebooks import inject_parameters, run_notebook
from study.series import (
    auto_window,
    ema,
    eval_loss_gap,
    loss_gap,
    lr_decay_start,
    run_loss_gap,
    spike_mask,
    spike_score,
)
from study.stats import (
    SEED_COLUMN,
    VERDICTS,
    format_interval,
    paired_by_seed,
    paired_interval,
    seed_group_keys,
    seed_summary,
    t_cdf,
    t_quantile,
    verdict,
)

# The names importers reach through study.analysis (the split moved them, not their address).
__all__ = [
    "SEED_COLUMN", "VERDICTS", "auto_window", "branch_similarity", "compare_table", "ema", "eval_loss_gap",
    "final_metrics", "format_interval", "inject_parameters", "lm_eval_scores", "loss_gap", "lr_decay_start",
    "open_results", "pair_runs", "pair_summary", "paired_by_seed", "paired_interval", "run_loss_gap",
    "run_notebook", "seed_group_keys", "seed_summary", "spike_mask", "spike_score", "spike_table", "t_cdf",
    "t_quantile", "verdict",
]

# ---------------------------------------------------------------------------------------------------
# Pairing
# ---------------------------------------------------------------------------------------------------
_PAIR_COLUMNS = ["prores_run_id", "baseline_run_id", "schedule", "T", "W", "label", "baseline_label", "method",
                 "scale", "n_layers", "grid", "prores_state", "baseline_state", "seed"]


def pair_runs(runs: pd.DataFrame, *, states: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Pairs (ProRes run, baseline) of study.design's ProRes contrast: settings that differ only in prores.*
    (every other semantic config value and grid axis equal), run by run for each seed both have.

    Runs whose config could not be read are never paired; a table without cfg columns is compared on its identity
    columns (method, norm, init, scale, depth, width, LR settings, steps). A setting with two runs for one seed
    gives a pair per run (the claims table reports that as an error). states: keep only runs in these states
    (e.g. ('completed',)). Columns: prores_run_id, baseline_run_id, schedule, T, W, label, baseline_label, method,
    scale, n_layers, grid, prores_state, baseline_state, seed (train.seed, shared by both sides).
    """
    df = runs if states is None else runs[runs["state"].isin(states)]
    if df.empty or "schedule" not in df:
        return pd.DataFrame(columns=_PAIR_COLUMNS)
    d = design.Design(df, states=None)
    row = df.assign(run_id=df["run_id"].astype(str)).drop_duplicates("run_id").set_index("run_id")
    get = lambda rid, c: row.at[rid, c] if c in row else None  # noqa: E731
    base = [s for s in d.settings.values() if d.value(s, "schedule") == "none"]
    out = []
    for s in d.settings.values():
        if d.value(s, "schedule") in (None, "none"):
            continue
        for b in d.partners(s, base, design.PRORES):
            for seed in s.seeds:
                for p, q in ((p, q) for p in s.runs[seed] for q in b.runs.get(seed, ())):
                    out.append({"prores_run_id": p, "baseline_run_id": q, "label": get(p, "label"),
                                "baseline_label": get(q, "label"), "prores_state": get(p, "state"),
                                "baseline_state": get(q, "state"), "seed": np.nan if seed is None else seed,
                                **{c: get(p, c) for c in ("schedule", "T", "W", "method", "scale", "n_layers",
                                                          "grid")}})
    return pd.DataFrame(out, columns=_PAIR_COLUMNS)


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------
def compare_table(ours: pd.DataFrame, reference: pd.DataFrame, *, on: list[str] | tuple[str, ...],
                  value: str = "ppl", ours_value: str | None = None) -> pd.DataFrame:
    """Every reference (paper) row, with our value next to it and the difference ours - paper.

    Columns: *on, paper, ours, diff. Our rows that match no paper row are dropped; paper rows without ours get NaN.
    Non-numeric paper cells (e.g. 'diverged') give diff NaN.
    """
    on = list(on)
    ref = reference[on + [value]].rename(columns={value: "paper"})
    mine = ours[on + [ours_value or value]].rename(columns={ours_value or value: "ours"})
    mine = mine.drop_duplicates(on, keep="first")
    out = ref.merge(mine, on=on, how="left")
    paper_num = pd.to_numeric(out["paper"], errors="coerce")
    ours_num = pd.to_numeric(out["ours"], errors="coerce")
    out["diff"] = ours_num - paper_num
    return out


def final_metrics(col: Collection) -> pd.DataFrame:
    """One row per run: identity columns and its final train loss, grad norm, eval loss and perplexity."""
    cols = ["run_id", "run_name", "grid", "state", "label", "method", "schedule", "scale", "n_layers", "T", "W",
            "lr", "final_step", "final_loss", "final_grad_norm", "final_eval_step", "final_eval_loss",
            "final_eval_ppl", "eval_dataset", "diverged_step"]
    return col.runs[[c for c in cols if c in col.runs]].copy()


def lm_eval_scores(lm: pd.DataFrame, *, rule: str = "acc_norm", percent: bool = True) -> pd.DataFrame:
    """One score per (run_id, task) from the tidy lm_eval table.

    rule='acc_norm': acc_norm where the task reports it, otherwise acc (the rule of our Table 3);
    rule='acc': acc only. Filter 'none' is preferred when a metric has several filters. percent: x100.
    Columns: run_id, task, metric, value, stderr.
    """
    if lm.empty:
        return pd.DataFrame(columns=["run_id", "task", "metric", "value", "stderr"])
    order = ["acc_norm", "acc"] if rule == "acc_norm" else ["acc"]
    d = lm[lm["metric"].isin(order)].copy()
    d["_rank"] = d["metric"].map({m: i for i, m in enumerate(order)})
    d["_filter"] = (d["filter"] != "none").astype(int)
    d = d.sort_values(["run_id", "task", "_rank", "_filter"]).drop_duplicates(["run_id", "task"], keep="first")
    if percent:
        d["value"] = d["value"] * 100
        d["stderr"] = d["stderr"] * 100
    return d[["run_id", "task", "metric", "value", "stderr"]].reset_index(drop=True)


def pair_summary(col: Collection, *, states: tuple[str, ...] | None = ("completed",),
                 beta: float = 0.99) -> pd.DataFrame:
    """pair_runs with each side's final eval perplexity, their difference and the final train-loss gap (EMA beta).

    Columns: the pair_runs columns, ppl_prores, ppl_baseline, ppl_diff (ProRes - baseline), train_gap_final.
    """
    pairs = pair_runs(col.runs, states=states)
    if pairs.empty:
        return pairs.assign(ppl_prores=[], ppl_baseline=[], ppl_diff=[], train_gap_final=[])
    ppl = col.runs.set_index("run_id")["final_eval_ppl"]
    pairs["ppl_prores"] = ppl.reindex(pairs["prores_run_id"]).to_numpy()
    pairs["ppl_baseline"] = ppl.reindex(pairs["baseline_run_id"]).to_numpy()
    pairs["ppl_diff"] = pairs["ppl_prores"] - pairs["ppl_baseline"]
    gaps = []
    for a, b in zip(pairs["prores_run_id"], pairs["baseline_run_id"], strict=True):  # columns of one table
        g = loss_gap(col.metrics_for(a), col.metrics_for(b), beta=beta) if len(col.metrics) else pd.DataFrame()
        gaps.append(float(g["gap"].iloc[-1]) if len(g) else np.nan)
    pairs["train_gap_final"] = gaps
    return pairs


def spike_table(col: Collection, *, window: int | None = None, threshold: float = 7.0, start: float = 0.1,
                end: float = 0.9) -> pd.DataFrame:
    """Spike scores (percent) of every run's train loss and grad norm, with its state and diverged step.

    window=None: auto_window(number of logged values) (1000 for long runs). The range [start, end] is a fraction
    of the run's configured steps. Columns: run_id, run_name, grid, label, scale, n_layers, state, diverged_step,
    loss_spike_score, grad_norm_spike_score, window.
    """
    rows = []
    for r in col.runs.itertuples():
        m = col.metrics_for(r.run_id)
        if m.empty:
            continue
        w = window or auto_window(len(m))
        total = r.steps if isinstance(r.steps, (int, float)) and np.isfinite(r.steps) else None
        score = {c: spike_score(m[c], w, threshold, start, end, steps=m["step"], total_steps=total)
                 if c in m else np.nan for c in ("loss", "grad_norm")}
        rows.append({"run_id": r.run_id, "run_name": r.run_name, "grid": r.grid, "label": r.label,
                     "scale": r.scale, "n_layers": r.n_layers, "state": r.state, "diverged_step": r.diverged_step,
                     "loss_spike_score": score["loss"], "grad_norm_spike_score": score["grad_norm"], "window": w})
    return pd.DataFrame(rows, columns=["run_id", "run_name", "grid", "label", "scale", "n_layers", "state",
                                       "diverged_step", "loss_spike_score", "grad_norm_spike_score", "window"])


# ---------------------------------------------------------------------------------------------------
# Probes (Figure 4)
# ---------------------------------------------------------------------------------------------------
def branch_similarity(probe_files: pd.DataFrame, *, early_fraction: float = 0.1,
                      total_steps: float | None = None) -> pd.DataFrame:
    """Cosine similarity of each layer's residual-branch output at each early probe step to the final probe step.

    probe_files: rows (step, path) of one run (Collection.probe_files_for). Each file holds
    {'step', 'branch': half tensor [L, N, 2d]} (attention ‖ FFN branch outputs on the fixed probe tokens). The
    similarity of layer l is the mean over the N probe tokens of cos(branch_t[l, n], branch_final[l, n]).
    Early steps: step <= early_fraction * total_steps (default total: the final probe step).
    Columns: step, layer (1-based), cosine.
    """
    import torch

    files = probe_files.sort_values("step")
    if files.empty:
        return pd.DataFrame(columns=["step", "layer", "cosine"])
    final_step = int(files["step"].max())
    total = float(total_steps) if total_steps else float(final_step)
    final = torch.load(files[files["step"] == final_step]["path"].iloc[-1], weights_only=True)["branch"].float()
    rows = []
    for step, path in zip(files["step"], files["path"], strict=True):  # columns of one table
        if step > early_fraction * total or step == final_step:
            continue
        branch = torch.load(path, weights_only=True)["branch"].float()
        cos = torch.nn.functional.cosine_similarity(branch, final, dim=-1).mean(dim=-1)  # [L]
        rows += [{"step": int(step), "layer": i + 1, "cosine": float(c)} for i, c in enumerate(cos.tolist())]
    return pd.DataFrame(rows, columns=["step", "layer", "cosine"])


# ---------------------------------------------------------------------------------------------------
# Entry point for notebooks
# ---------------------------------------------------------------------------------------------------
def open_results(path: str | os.PathLike) -> Collection:
    """A saved collection (a folder holding runs.parquet) is loaded; anything else is collected as a results root,
    reusing the unchanged runs of ROOT/collected.parquet when `study collect` left one there."""
    if _collect.is_saved_collection(path):
        return _collect.load(path)
    return _collect.collect(path, reuse=Path(path) / "collected.parquet")
