"""Training-curve series of one run, and of two runs side by side: spikes, smoothing, loss gaps.

Pure functions over numbers and the step tables of study.collect (re-exported by study.analysis):

spike_score(values, ...)      OLMo 2's spike score (percent of values >= 7 sigma from the previous 1000 values' mean)
spike_mask(values, ...)       which values are spikes (the stability view marks them)
auto_window(n)                the spike window for a series of n values
ema(values, beta)             exponential moving average, bias-corrected (see its docstring)
loss_gap(prores, baseline)    ProRes - baseline train loss (EMA 0.99) aligned by step
eval_loss_gap(...)            ProRes - baseline eval loss at the eval steps both runs have
run_loss_gap(col, a, b)       both of the above for two runs of a collection
lr_decay_start(run)           first step of the LR decay phase (study.lr_schedules)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from study import lr_schedules

if TYPE_CHECKING:
    from study.collect import Collection


def as_float_array(values) -> np.ndarray:
    """values as a float numpy array; a pandas Series' missing values (NA) become NaN."""
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
        steps = as_float_array(steps)
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
    x = as_float_array(values)
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
    x = as_float_array(values)
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
    s = values if isinstance(values, pd.Series) else pd.Series(as_float_array(values))
    s = s.astype(float)
    out = s.ewm(alpha=1.0 - beta, adjust=bias_correction, ignore_na=True).mean()
    out[s.isna()] = np.nan
    return out if isinstance(values, pd.Series) else out.to_numpy()


# Loss gap: two runs aligned on step
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
    """First step of the run's LR decay phase (study.lr_schedules: WSD's steps - round(steps · decay_fraction), as
    the trainer decays), or None for a schedule without one. A run without an lr_schedule has the config's default."""
    steps, frac = run.get("steps"), run.get("decay_fraction")
    sched = run.get("lr_schedule")
    sched = lr_schedules.DEFAULT if sched is None else sched
    if sched not in lr_schedules.SCHEDULES or steps is None or frac is None:
        return None
    if isinstance(steps, float) and math.isnan(steps) or isinstance(frac, float) and math.isnan(frac):
        return None
    start = lr_schedules.decay_start(sched, lr_schedules.Horizon(total=int(steps), decay_fraction=float(frac)))
    return None if start is None else float(start)
