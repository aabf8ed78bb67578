"""Paired statistics over seeds: the intervals and verdicts of every seeded comparison.

Pure functions over the runs table of study.collect (re-exported by study.analysis):

t_cdf(t, df), t_quantile(p, df)  Student t (no scipy: regularized incomplete beta + bisection)
paired_interval(diffs)        mean difference, 95% paired-t interval, n (the statistic of every seeded comparison)
verdict(stats, expect)        holds / not significant / contradicted / not run, from an interval and the paper's sign
paired_test(diffs)            two-sided paired t: t, p, or why the differences cannot be tested (n < 3, no variance)
holm(pvalues)                 Holm's step-down adjustment of a family of p-values
p_verdict(mean, p, expect)    the claims table's verdict from a (Holm-adjusted) p-value and the paper's sign
format_interval(stats)        '−1.23 ± 0.45 (n=3)'
config_key(values)            one JSON key for a row of config values (NaN, NA and None alike)
seed_group_keys(runs)         a key per run, equal for the runs of one setting (study.design.setting_keys)
seed_summary(runs)            runs equal but for train.seed, grouped: mean ± half-width, n ("ours" in the tables)
paired_by_seed(a, b, value)   two arms joined on seed: a, b, diff
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from study.series import as_float_array

SEED_COLUMN = "cfg.train.seed"
VERDICTS = ("holds", "not significant", "contradicted", "cannot be tested", "not run")
MIN_TESTED = 3  # fewer paired seeds than this: "cannot be tested"


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t with df degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (bisection on t_cdf to 1e-12; t_quantile(0.975, 2) = 4.3027)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    return invert_cdf(lambda x: t_cdf(x, df), p)


def invert_cdf(cdf, p: float, hi: float = 1.0) -> float:
    """The x >= 0 with cdf(x) = p for an increasing cdf: double hi until it passes p, then bisect to 1e-12."""
    lo = 0.0
    while cdf(hi) < p:
        hi *= 2.0
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return 0.5 * (lo + hi)


def t_half_width(sd, n: int, confidence: float = 0.95):
    """Half-width of the two-sided t interval of a mean of n values with standard deviation sd (ddof 1):
    t_{(1+confidence)/2, n-1} · sd / sqrt(n). sd may be an array (one interval per element)."""
    return t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)


def paired_interval(diffs, confidence: float = 0.95) -> dict:
    """Mean of per-seed differences with a two-sided paired-t interval (normality of the differences assumed).

    diffs: one difference per seed (e.g. ProRes - baseline perplexity of the runs sharing that seed); NaNs are
    dropped. Returns n, mean, sd (ddof 1), half_width = t_{(1+confidence)/2, n-1} · sd / sqrt(n), lo, hi and
    method 'paired t'. With n = 1 the interval is NaN (no spread to estimate); with n = 0 everything is NaN.
    Why t and not a bootstrap: with 3-5 seeds a bootstrap has only 10-126 distinct resamples and its interval
    is too narrow; the t interval is exact under normality and honest about how little 3 seeds know.
    """
    x = as_float_array(diffs)
    x = x[np.isfinite(x)]
    n = int(x.size)
    out = {"n": n, "mean": np.nan, "sd": np.nan, "half_width": np.nan, "lo": np.nan, "hi": np.nan,
           "confidence": confidence, "method": "paired t"}
    if n == 0:
        return out
    out["mean"] = float(x.mean())
    if n >= 2:
        sd = float(x.std(ddof=1))
        hw = t_half_width(sd, n, confidence)
        out.update(sd=sd, half_width=hw, lo=out["mean"] - hw, hi=out["mean"] + hw)
    return out


def verdict(stats: dict | None, expect: str = "negative") -> str:
    """The claims table's verdict for a paired interval and the sign the paper predicts ('negative': ours < 0).

    holds: the interval excludes 0 on the paper's side; contradicted: it excludes 0 on the other side;
    not significant: it contains 0, or there is a single seed (no interval); not run: no pair at all.
    """
    if expect not in ("negative", "positive"):
        raise ValueError(f"expect must be 'negative' or 'positive', got {expect!r}")
    if not stats or not stats.get("n"):
        return "not run"
    lo, hi = stats.get("lo"), stats.get("hi")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return "not significant"
    below, above = hi < 0, lo > 0
    if (below and expect == "negative") or (above and expect == "positive"):
        return "holds"
    if below or above:
        return "contradicted"
    return "not significant"


def paired_test(diffs) -> dict:
    """Two-sided paired t test of per-seed differences against 0: n, mean, sd, t, p, and `why` they cannot be
    tested (None when they can): fewer than MIN_TESTED seeds, or no variance (every spike score 0: a t of 0/0).

    NaNs are dropped. p = 2·P(T_{n-1} > |t|) with t = mean / (sd / sqrt(n)).
    """
    x = as_float_array(diffs)
    x = x[np.isfinite(x)]
    n = int(x.size)
    out = {"n": n, "mean": float(x.mean()) if n else np.nan, "sd": float(x.std(ddof=1)) if n > 1 else np.nan,
           "t": np.nan, "p": np.nan, "why": None}
    if n == 0:
        out["why"] = "no pair"
    elif n < MIN_TESTED:
        out["why"] = f"n = {n} < {MIN_TESTED}"
    elif not out["sd"] > 0:
        out["why"] = "no variance"
    else:
        t = out["mean"] / (out["sd"] / math.sqrt(n))
        out.update(t=t, p=min(1.0, 2.0 * t_cdf(-abs(t), n - 1)))  # the lower tail directly: no 1 - (1 - tiny)
    return out


def holm(pvalues) -> list[float]:
    """Holm's step-down adjustment: sort the m p-values, p_(i) becomes max over j <= i of min(1, (m - j + 1) p_(j)).
    NaNs are not in the family and stay NaN. Controls the chance of any false rejection at alpha for any
    dependence between the tests."""
    p = as_float_array(pvalues)
    idx = [i for i in np.argsort(p, kind="stable") if np.isfinite(p[i])]
    m, out, running = len(idx), [np.nan] * len(p), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def p_verdict(mean: float, p: float, expect: str = "negative", alpha: float = 0.05) -> str:
    """holds: p < alpha with the paper's sign; contradicted: p < alpha with the other; not significant otherwise.
    p is the (Holm-adjusted) p-value of a two-sided test; a NaN p reads 'cannot be tested'."""
    if expect not in ("negative", "positive"):
        raise ValueError(f"expect must be 'negative' or 'positive', got {expect!r}")
    if not np.isfinite(p):
        return "cannot be tested"
    if p >= alpha:
        return "not significant"
    return "holds" if (mean < 0) == (expect == "negative") else "contradicted"


def format_interval(stats: dict, digits: int = 2) -> str:
    """'−1.23 ± 0.45 (n=3)'; a single seed gives '−1.23 (n=1)'; no data gives '—'."""
    if not stats or not stats.get("n"):
        return "—"
    mean, hw = stats["mean"], stats.get("half_width")
    text = f"{mean:+.{digits}f}".replace("-", "−")
    if hw is not None and np.isfinite(hw):
        text += f" ± {hw:.{digits}f}"
    return f"{text} (n={stats['n']})"


def seed_group_keys(runs: pd.DataFrame) -> pd.Series:
    """A key per run (indexed like `runs`), equal for the runs of one setting: study.design.setting_keys (the grid's
    axes and the semantic config, less the seed). A run without a readable config is a group of its own."""
    from study.design import setting_keys

    return setting_keys(runs)


def seed_summary(runs: pd.DataFrame, value: str = "final_eval_ppl", *, states=("completed",),
                 confidence: float = 0.95) -> pd.DataFrame:
    """The runs of each setting (study.design: equal but for train.seed) as one row: mean, half_width (t interval
    of the mean over seeds), n, seeds, run_ids, error (two runs for one seed: the setting's error, and no mean),
    and the identity columns of the first run.

    A table shows "ours" as mean ± half_width when n >= 2 (format_interval).
    """
    from study.design import Design

    df = runs if states is None else runs[runs["state"].isin(states)]
    ident = [c for c in ("grid", "label", "method", "schedule", "scale", "n_layers", "T", "W", "lr") if c in df]
    cols = ident + ["mean", "half_width", "n", "seeds", "run_ids", "error"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    key = seed_group_keys(df)
    errors = {k: s.error for k, s in Design(df, states=None).settings.items()}
    rows = []
    for k, g in df.assign(_key=key.to_numpy()).groupby("_key", sort=False):
        error = errors.get(k)
        stats = paired_interval([] if error else pd.to_numeric(g[value], errors="coerce"), confidence)
        seeds = g[SEED_COLUMN].tolist() if SEED_COLUMN in g else [np.nan] * len(g)
        rows.append({**{c: g[c].iloc[0] for c in ident}, "mean": stats["mean"], "half_width": stats["half_width"],
                     "n": stats["n"], "seeds": seeds, "run_ids": g["run_id"].astype(str).tolist(), "error": error})
    return pd.DataFrame(rows, columns=cols)


def paired_by_seed(a: pd.DataFrame, b: pd.DataFrame, value: str, *, seed: str = "seed") -> pd.DataFrame:
    """Rows of a and b joined on `seed` (one row per seed both have): seed, a, b, diff = a - b. A seed that appears
    twice on one side is an error (ValueError naming it), never resolved by keeping one of the rows."""
    for side, name in ((a, "a"), (b, "b")):
        dup = side[seed].dropna()
        dup = sorted(set(dup[dup.duplicated()]))
        if dup:
            raise ValueError(f"paired_by_seed: {name} has more than one row for seed {', '.join(map(str, dup))}")
    left = a[[seed, value]].dropna(subset=[seed]).rename(columns={value: "a"})
    right = b[[seed, value]].dropna(subset=[seed]).rename(columns={value: "b"})
    out = left.merge(right, on=seed).sort_values(seed).reset_index(drop=True)
    out["diff"] = pd.to_numeric(out["a"], errors="coerce") - pd.to_numeric(out["b"], errors="coerce")
    return out
