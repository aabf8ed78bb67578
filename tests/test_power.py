"""study.power against printed power tables, the central t, and simulation: the numbers `study plan` stands on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from study import power
from study.stats import t_cdf


# Cohen (1988) / G*Power / R's pwr.t.test, one-sample (= paired) two-sided t at alpha 0.05:
#   n = 10, d = 1.0: power 0.8031;  n = 20, d = 0.5: 0.5645;  d = 0.5, power 0.8 -> n = 33.37, so 34 pairs;
#   d = 0.8, power 0.8 -> n = 14.30, so 15 pairs.
@pytest.mark.parametrize("n, d, want", [(10, 1.0, 0.8031), (20, 0.5, 0.5645)])
def test_power_matches_the_printed_tables(n, d, want):
    assert power.paired_t_power(n, effect=d * 2.0, sd=2.0) == pytest.approx(want, abs=5e-5)
    assert power.paired_t_power(n, effect=-d * 2.0, sd=2.0) == pytest.approx(want, abs=5e-5)  # two-sided


@pytest.mark.parametrize("d, want", [(0.5, 34), (0.8, 15)])
def test_seeds_for_power_matches_the_printed_tables(d, want):
    assert power.seeds_for_power(d, 1.0, 0.05, 0.8, n_min=2) == want
    assert power.paired_t_power(want - 1, d, 1.0) < 0.8 <= power.paired_t_power(want, d, 1.0)


@pytest.mark.parametrize("df", [1, 2, 5, 30])
@pytest.mark.parametrize("x", [-2.0, 0.0, 0.7, 3.0])
def test_zero_non_centrality_is_the_central_t(df, x):
    assert power.nct_sf(x, df, 0.0) == pytest.approx(1.0 - t_cdf(x, df), abs=1e-8)


def test_non_central_t_agrees_with_simulation():
    rng = np.random.default_rng(7)
    df, ncp, x = 4, 1.5, 2.0
    z, v = rng.normal(size=400_000), rng.chisquare(df, size=400_000)
    sim = float(np.mean((z + ncp) / np.sqrt(v / df) > x))
    assert power.nct_sf(x, df, ncp) == pytest.approx(sim, abs=0.003)  # binomial sd at 400k draws: 0.0008


def test_power_at_zero_effect_is_alpha_and_grows_with_n():
    assert power.paired_t_power(6, 0.0, 1.0, alpha=0.05) == pytest.approx(0.05, abs=1e-7)
    powers = [power.paired_t_power(n, 0.5, 1.0, alpha=0.01) for n in (3, 6, 12, 24)]
    assert powers == sorted(powers) and powers[0] < 0.05 < powers[-1]


def test_seeds_for_power_respects_bounds_and_refuses_nonsense():
    assert power.seeds_for_power(10.0, 1.0) == 3                  # n_min: a paired t needs 3 seeds here
    assert power.seeds_for_power(0.01, 1.0, n_max=100) is None    # more than n_max
    with pytest.raises(ValueError):
        power.seeds_for_power(0.5, 0.0)
    with pytest.raises(ValueError):
        power.seeds_for_power(0.0, 1.0)


@pytest.mark.parametrize("p, df, want", [(0.2, 1, 0.064185), (0.2, 2, 0.446287), (0.05, 10, 3.940299),
                                         (0.95, 1, 3.841459), (0.975, 30, 46.979242)])
def test_chi2_quantile_matches_the_tables(p, df, want):
    assert power.chi2_quantile(p, df) == pytest.approx(want, rel=1e-5)
    assert power.chi2_cdf(want, df) == pytest.approx(p, abs=1e-6)


def test_sd_upper_bound_of_a_two_seed_pilot():
    """One degree of freedom: the 80% upper bound is sd / sqrt(chi2_{0.2,1}) = 3.95 sd; it shrinks with df."""
    assert power.sd_upper_bound(1.0, 1) == pytest.approx(1 / math.sqrt(0.064185), rel=1e-5)
    assert power.sd_upper_bound(1.0, 1) > power.sd_upper_bound(1.0, 5) > power.sd_upper_bound(1.0, 50) > 1.0

