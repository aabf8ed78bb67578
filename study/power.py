"""Power of the paired t test, and the seeds a comparison needs: what `study plan` computes from a pilot.

No scipy (as study/stats.py): the non-central t comes from one numerical integral, the chi-square from the
regularized incomplete gamma function.

nct_sf(x, df, ncp)                 P(T > x) for T non-central t (df, ncp)
paired_t_power(n, effect, sd, a)   power of the two-sided paired t test at level a with n pairs
seeds_for_power(effect, sd, a)     the fewest pairs (seeds) with at least the wanted power
chi2_cdf(x, df), chi2_quantile     chi-square distribution
sd_upper_bound(sd, df, conf)       one-sided upper confidence bound of a standard deviation estimated with df

Why the integral: T = (Z + ncp) / S with Z standard normal and S = sqrt(V/df), V chi-square(df), independent, so
P(T > x) = E_S[Q(x·S − ncp)] with Q the normal upper tail. S has a closed-form density; Simpson's rule over
4000 intervals spanning its mass (mean 1, sd about 1/sqrt(2·df)) gives about 8 correct digits, which
tests/test_power.py checks against printed power tables and the central t.
"""

from __future__ import annotations

import math

import numpy as np

from study.stats import invert_cdf, t_quantile

_INTERVALS = 4000


def _normal_sf(u):
    return 0.5 * np.vectorize(math.erfc)(np.asarray(u, dtype=float) / math.sqrt(2.0))


def nct_sf(x: float, df: float, ncp: float) -> float:
    """P(T > x) for T with Student's non-central t distribution (df >= 1 degrees of freedom, non-centrality ncp)."""
    if df < 1:
        raise ValueError(f"need df >= 1, got {df}")
    spread = 1.0 / math.sqrt(2.0 * df)
    lo, hi = max(0.0, 1.0 - 14.0 * spread), 1.0 + 14.0 * spread + 1.0 / df
    s = np.linspace(lo, hi, _INTERVALS + 1)
    if df == 1:  # S = |Z|
        f = math.sqrt(2.0 / math.pi) * np.exp(-s * s / 2.0)
    else:  # density of sqrt(V/df): 2·(df/2)^(df/2)/Gamma(df/2) · s^(df-1) · exp(-df·s²/2), 0 at s = 0
        with np.errstate(divide="ignore"):
            f = np.exp(math.log(2.0) + (df / 2.0) * math.log(df / 2.0) - math.lgamma(df / 2.0)
                       + (df - 1.0) * np.log(s) - df * s * s / 2.0)
    g = f * _normal_sf(x * s - ncp)
    w = np.ones_like(s)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return float(min(1.0, max(0.0, (hi - lo) / _INTERVALS / 3.0 * np.dot(w, g))))


def paired_t_power(n: int, effect: float, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test at level alpha with n pairs when the mean difference is `effect` and
    the differences have standard deviation `sd`: P(|T| > t_{1-alpha/2, n-1}), T ~ t(n-1, effect·sqrt(n)/sd)."""
    if n < 2 or not sd > 0:
        raise ValueError(f"need n >= 2 and sd > 0, got n={n}, sd={sd}")
    df, ncp = n - 1, abs(effect) * math.sqrt(n) / sd
    c = t_quantile(1.0 - alpha / 2.0, df)
    return nct_sf(c, df, ncp) + (1.0 - nct_sf(-c, df, ncp))


def seeds_for_power(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8, *, n_min: int = 3,
                    n_max: int = 1000) -> int | None:
    """The fewest pairs n >= n_min whose paired_t_power reaches `power`; None when even n_max does not."""
    if not sd > 0 or not math.isfinite(effect) or effect == 0:
        raise ValueError(f"need sd > 0 and a finite, non-zero effect, got effect={effect}, sd={sd}")
    reach = lambda n: paired_t_power(n, effect, sd, alpha) >= power  # noqa: E731
    if reach(n_min):
        return n_min
    if not reach(n_max):
        return None
    lo, hi = n_min, n_max  # reach(lo) is False, reach(hi) True; power grows with n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reach(mid) else (mid, hi)
    return hi


# ---------------------------------------------------------------------------------------------------
# chi-square, for the upper confidence bound of a pilot's standard deviation
# ---------------------------------------------------------------------------------------------------
def _gamma_p(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x): series below a + 1, continued fraction above."""
    if x <= 0:
        return 0.0
    ln = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        k = a
        while abs(term) > 1e-16 * abs(total):
            k += 1.0
            term *= x / k
            total += term
        return total * math.exp(ln)
    tiny = 1e-300
    b, c, d = x + 1.0 - a, 1.0 / tiny, 1.0 / (x + 1.0 - a)
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = b + an / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return 1.0 - math.exp(ln) * h


def chi2_cdf(x: float, df: float) -> float:
    return _gamma_p(df / 2.0, x / 2.0)


def chi2_quantile(p: float, df: float) -> float:
    """The p-quantile of chi-square(df), by bisection on chi2_cdf."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    return invert_cdf(lambda x: chi2_cdf(x, df), p, hi=max(1.0, df))


def sd_upper_bound(sd: float, df: int, confidence: float = 0.8) -> float:
    """One-sided upper confidence bound of a standard deviation estimated with df degrees of freedom:
    sd · sqrt(df / chi2_{1-confidence, df}) (a pilot's sd planned at its bound: Browne 1995)."""
    return sd * math.sqrt(df / chi2_quantile(1.0 - confidence, df))
