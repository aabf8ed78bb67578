"""Analysis shared by paper_figures, the notebooks in analysis/ and `study figures`.

Pure functions over the tables of study.collect:

spike_score(values, ...)      OLMo 2's spike score (percent of values >= 7 sigma from the previous 1000 values' mean)
spike_mask(values, ...)       which values are spikes (the stability view marks them)
ema(values, beta)             exponential moving average, bias-corrected (see its docstring)
loss_gap(prores, baseline)    ProRes - baseline train loss (EMA 0.99) aligned by step
eval_loss_gap(...)            ProRes - baseline eval loss at the eval steps both runs have
run_loss_gap(col, a, b)       both of the above for two runs of a collection
pair_runs(runs)               ProRes runs paired with the baseline that differs from them only in prores.*
compare_table(ours, paper)    side-by-side table with the difference
final_metrics(col)            one row per run with its final train/eval values
pair_summary(col)             pairs with both final perplexities, their difference and the final loss gap
spike_table(col)              loss and grad-norm spike scores of every run
lm_eval_scores(lm, rule)      one score per (run, task): acc_norm where the task has it, else acc
branch_similarity(files, ...) per-layer cosine similarity of residual-branch outputs to the final probe step
lr_decay_start(run)           first step of the WSD decay, steps * (1 - decay_fraction)
open_results(path)            a Collection from a results root (collects) or a saved collection (loads)
run_notebook(path, params)    execute a notebook headlessly with parameters injected (papermill-style)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from study import collect as _collect
from study.collect import Collection

# ---------------------------------------------------------------------------------------------------
# Series
# ---------------------------------------------------------------------------------------------------


def _as_float_array(values) -> np.ndarray:
    if isinstance(values, pd.Series):
        values = values.to_numpy(dtype=float, na_value=np.nan)
    return np.asarray(values, dtype=float)


def _in_range_mask(n: int, start: float, end: float, steps=None, total_steps=None) -> np.ndarray:
    """Values whose fraction of training lies in [start, end].

    Without `steps` the fraction is the position i / (n - 1) in the series; with `steps` it is
    step / total_steps (total_steps defaults to the largest step), so a partial run is judged by the steps it
    reached, not stretched to its full length.
    """
    if steps is None:
        frac = np.arange(n) / max(n - 1, 1)
    else:
        steps = _as_float_array(steps)
        total = float(total_steps) if total_steps else float(np.nanmax(steps)) if n else 1.0
        frac = steps / total
    return (frac >= start) & (frac <= end)


def spike_mask(values, window: int = 1000, threshold: float = 7.0, *, min_periods: int | None = None) -> np.ndarray:
    """True where a value is >= `threshold` standard deviations away from the mean of the previous `window` values.

    Mean and standard deviation (ddof 1) are taken over the previous `window` finite values, excluding the value
    itself. At the start of a series fewer than `window` values are available: at least `min_periods` are needed
    (default min(window, 10)); before that nothing is a spike. A value equal to the mean is never a spike (a flat
    history has sigma 0: any departure from it is a spike, staying on it is not). Non-finite values (a diverged
    tail) are never spikes and do not enter the windows.
    """
    x = _as_float_array(values)
    n = x.size
    if min_periods is None:
        min_periods = min(window, 10)
    min_periods = max(min_periods, 2)
    finite = np.isfinite(x)
    out = np.zeros(n, dtype=bool)
    if finite.sum() < min_periods + 1:
        return out
    xf = pd.Series(x[finite])
    roll = xf.rolling(window, min_periods=min_periods)
    mean = roll.mean().shift(1).to_numpy()
    std = roll.std(ddof=1).shift(1).to_numpy()
    dev = np.abs(xf.to_numpy() - mean)
    with np.errstate(invalid="ignore"):
        spikes = (dev >= threshold * std) & (dev > 0) & np.isfinite(mean)
    out[np.flatnonzero(finite)] = spikes
    return out


def spike_score(values, window: int = 1000, threshold: float = 7.0, start: float = 0.1, end: float = 0.9, *,
                steps=None, total_steps=None, min_periods: int | None = None) -> float:
    """OLMo 2's spike score, in percent: spikes (see spike_mask) among the finite values in [start, end] of training.

    The rolling statistics use the whole series (so the first values in range have a full window of history),
    the count and the denominator only the finite values inside the range. NaN when no value is in range.
    Example: a flat series of n values with 3 single-value spikes inside the range scores 3 / n_in_range * 100.
    """
    x = _as_float_array(values)
    mask = spike_mask(x, window, threshold, min_periods=min_periods)
    rng = _in_range_mask(x.size, start, end, steps, total_steps) & np.isfinite(x)
    n_in = int(rng.sum())
    if n_in == 0:
        return float("nan")
    return 100.0 * float((mask & rng).sum()) / n_in


def auto_window(n: int, window: int = 1000) -> int:
    """The spike window for a series of n values: `window` (OLMo 2: 1000) for long runs, n // 10 (>= 20) for short."""
    return int(min(window, max(20, n // 10)))


def ema(values, beta: float = 0.99, *, bias_correction: bool = True):
    """Exponential moving average of a series (the paper's "train loss EMA 0.99").

    bias_correction=True (default): m_t = beta * m_{t-1} + (1 - beta) * x_t with m_0 = 0, divided by
    1 - beta^t (Adam-style debiasing, what TensorBoard / W&B smoothing shows): the first values are not pulled
    towards 0, and a constant series stays constant. Equals pandas ewm(alpha=1-beta, adjust=True).mean().
    bias_correction=False: the recursion started from the first value (m_1 = x_1), i.e. pandas adjust=False;
    never a zero start, which would draw a loss curve rising from 0.
    NaN values are skipped (they neither update the average nor reset it) and stay NaN in the output.
    Returns the same kind of object it was given (a Series keeps its index, anything else gives a numpy array).
    """
    s = values if isinstance(values, pd.Series) else pd.Series(_as_float_array(values))
    s = s.astype(float)
    out = s.ewm(alpha=1.0 - beta, adjust=bias_correction, ignore_na=True).mean()
    out[s.isna()] = np.nan
    return out if isinstance(values, pd.Series) else out.to_numpy()


# ---------------------------------------------------------------------------------------------------
# Loss gap
# ---------------------------------------------------------------------------------------------------
def _by_step(df: pd.DataFrame, column: str) -> pd.Series:
    d = df[["step", column]].dropna(subset=["step"])
    d = d.drop_duplicates("step", keep="last").sort_values("step")
    return pd.Series(d[column].to_numpy(dtype=float, na_value=np.nan), index=d["step"].to_numpy(dtype=np.int64))


def loss_gap(prores: pd.DataFrame, baseline: pd.DataFrame, *, beta: float | None = 0.99,
             column: str = "loss") -> pd.DataFrame:
    """ProRes - baseline training loss at the steps both runs logged; negative means ProRes is ahead.

    Each run's loss is smoothed with ema(beta) over its own logged steps first (beta=None: raw loss), then the
    two are aligned on step. Returns columns step, prores, baseline, gap.
    """
    a, b = _by_step(prores, column), _by_step(baseline, column)
    if beta is not None:
        a, b = ema(a, beta), ema(b, beta)
    joined = pd.concat({"prores": a, "baseline": b}, axis=1, join="inner")
    joined["gap"] = joined["prores"] - joined["baseline"]
    return joined.rename_axis("step").reset_index()


def eval_loss_gap(prores: pd.DataFrame, baseline: pd.DataFrame, *, dataset: str | None = None) -> pd.DataFrame:
    """ProRes - baseline eval loss at the eval steps both runs have (one dataset: `dataset`, or the most frequent)."""
    def pick(df):
        if "dataset" in df and df["dataset"].notna().any():
            ds = dataset if dataset is not None else df["dataset"].value_counts().idxmax()
            df = df[df["dataset"] == ds]
        return df
    return loss_gap(pick(prores), pick(baseline), beta=None)


def run_loss_gap(col: Collection, prores_run: str, baseline_run: str, *, beta: float = 0.99,
                 dataset: str | None = None) -> dict[str, pd.DataFrame]:
    """{'train': loss_gap of the metrics (EMA beta), 'eval': eval_loss_gap} for two runs of a collection."""
    return {"train": loss_gap(col.metrics_for(prores_run), col.metrics_for(baseline_run), beta=beta),
            "eval": eval_loss_gap(col.evals_for(prores_run), col.evals_for(baseline_run), dataset=dataset)}


def lr_decay_start(run) -> float | None:
    """First step of the WSD learning-rate decay: steps * (1 - decay_fraction); None for other LR schedules."""
    steps, frac = run.get("steps"), run.get("decay_fraction")
    sched = run.get("lr_schedule")
    if sched not in (None, "wsd") or steps is None or frac is None:
        return None
    if isinstance(steps, float) and math.isnan(steps) or isinstance(frac, float) and math.isnan(frac):
        return None
    return float(steps) * (1.0 - float(frac))


# ---------------------------------------------------------------------------------------------------
# Pairing
# ---------------------------------------------------------------------------------------------------
def _excluded(col: str) -> bool:
    from study.config import NON_SEMANTIC

    key = col[len("cfg."):]
    if key.startswith("prores."):
        return True
    return any(key == k or key.startswith(k + ".") for k in NON_SEMANTIC)


_FALLBACK_KEYS = ("method", "norm", "init", "scale", "n_layers", "d_model", "lr", "lr_schedule", "warmup_steps",
                  "decay_fraction", "steps", "global_batch", "seq_len")


def _key(values) -> str:
    return json.dumps([None if (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is None
                       else (v.item() if hasattr(v, "item") else v) for v in values], default=str)


def pair_runs(runs: pd.DataFrame, *, states: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Pairs (ProRes run, baseline) whose configs are equal except for prores.* (and bookkeeping keys).

    The comparison uses every `cfg.*` column except `cfg.prores.*` and study.config.NON_SEMANTIC (grid, name,
    log/probe/checkpoint cadence, eval settings). Runs whose config could not be read are never paired. Tables
    without cfg columns are compared on method, norm, init, scale, depth, width, LR settings and steps.
    A ProRes run matching several baselines (the same config in two grids) gives one pair per baseline.
    states: keep only runs in these states (e.g. ('completed',)).
    Columns: prores_run_id, baseline_run_id, schedule, T, W, label, baseline_label, method, scale, n_layers,
    grid, prores_state, baseline_state.
    """
    df = runs
    if states is not None:
        df = df[df["state"].isin(states)]
    cfg_cols = [c for c in df.columns if c.startswith("cfg.") and not _excluded(c)]
    if cfg_cols:
        df = df[df[cfg_cols].notna().any(axis=1)]
        keys = cfg_cols
    else:
        keys = [c for c in _FALLBACK_KEYS if c in df.columns]
    df = df[df["schedule"].notna()] if "schedule" in df else df.iloc[0:0]
    cols = ["prores_run_id", "baseline_run_id", "schedule", "T", "W", "label", "baseline_label", "method", "scale",
            "n_layers", "grid", "prores_state", "baseline_state"]
    if df.empty or not keys:
        return pd.DataFrame(columns=cols)
    key = df[keys].apply(lambda r: _key(r.tolist()), axis=1) if len(df) else pd.Series(dtype=str)
    df = df.assign(_key=key.to_numpy())
    base = df[df["schedule"] == "none"]
    on = df[df["schedule"] != "none"]
    merged = on.merge(base, on="_key", suffixes=("", "_b"))
    out = pd.DataFrame({
        "prores_run_id": merged["run_id"].astype(str), "baseline_run_id": merged["run_id_b"].astype(str),
        "schedule": merged["schedule"], "T": merged.get("T"), "W": merged.get("W"),
        "label": merged.get("label"), "baseline_label": merged.get("label_b"), "method": merged.get("method"),
        "scale": merged.get("scale"), "n_layers": merged.get("n_layers"), "grid": merged.get("grid"),
        "prores_state": merged["state"], "baseline_state": merged["state_b"]}, columns=cols)
    return out.reset_index(drop=True)


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


def pair_summary(col: Collection, *, states: tuple[str, ...] | None = ("completed",), beta: float = 0.99) -> pd.DataFrame:
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
    for a, b in zip(pairs["prores_run_id"], pairs["baseline_run_id"]):
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
    for step, path in zip(files["step"], files["path"]):
        if step > early_fraction * total or step == final_step:
            continue
        branch = torch.load(path, weights_only=True)["branch"].float()
        cos = torch.nn.functional.cosine_similarity(branch, final, dim=-1).mean(dim=-1)  # [L]
        rows += [{"step": int(step), "layer": i + 1, "cosine": float(c)} for i, c in enumerate(cos.tolist())]
    return pd.DataFrame(rows, columns=["step", "layer", "cosine"])


# ---------------------------------------------------------------------------------------------------
# Entry points for notebooks
# ---------------------------------------------------------------------------------------------------
def open_results(path: str | os.PathLike) -> Collection:
    """A saved collection (a folder holding runs.parquet) is loaded; anything else is collected as a results root,
    reusing the unchanged runs of ROOT/collected.parquet when `study collect` left one there."""
    if _collect.is_saved_collection(path):
        return _collect.load(path)
    return _collect.collect(path, reuse=Path(path) / "collected.parquet")


def inject_parameters(nb, params: dict):
    """Papermill-style: a cell tagged 'injected-parameters' assigning `params` goes right after the cell tagged
    'parameters' (or first, if none is tagged); a previous injected cell is replaced."""
    import nbformat

    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    if not params:
        return nb
    source = "# Parameters injected by study.analysis.run_notebook\n" + "".join(
        f"{k} = {v!r}\n" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    idx = next((i + 1 for i, c in enumerate(nb.cells)
                if "parameters" in c.get("metadata", {}).get("tags", [])), 0)
    nb.cells.insert(idx, cell)
    return nb


def run_notebook(path: str | os.PathLike, params: dict | None = None, out_path: str | os.PathLike | None = None,
                 *, timeout: int = 600, kernel_name: str | None = None, cwd: str | os.PathLike | None = None):
    """Execute a notebook headlessly (nbclient) with `params` injected after its 'parameters' cell.

    Writes the executed notebook to out_path when given and returns it. A failing cell raises
    nbclient.exceptions.CellExecutionError naming the cell and the error.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    inject_parameters(nb, dict(params or {}))
    kernel = kernel_name or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel,
                            resources={"metadata": {"path": str(cwd or Path(path).resolve().parent)}})
    try:
        client.execute()
    finally:
        if out_path is not None:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, str(out_path))
    return nb
