"""study.stats' paired t test and Holm's correction: by hand, and the family-wise error rate they promise."""

from __future__ import annotations

import numpy as np
import pytest

from study import stats


def test_holm_by_hand():
    # p = 0.01, 0.04, 0.03, 0.005 (m = 4): sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06,
    # 0.04 -> running max 0.02, 0.03, 0.06, 0.06; back in the given order:
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaNs are not in the family (m = 2 here) and stay NaN; adjusted p never exceeds 1
    out = stats.holm([np.nan, 0.6, 0.02])
    assert np.isnan(out[0]) and out[1:] == pytest.approx([0.6, 0.04])
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0]) and stats.holm([]) == []  # 2 x 0.8 capped at 1


def test_paired_test_by_hand():
    t = stats.paired_test([-1.0, -2.0, -1.5])       # mean -1.5, sd 0.5: t = -1.5 / (0.5 / sqrt 3) = -5.196
    assert t["t"] == pytest.approx(-5.196152, rel=1e-6)
    assert t["p"] == pytest.approx(0.035098, abs=1e-5)  # two-sided, 2 df (R: 2 * pt(-5.196, 2))
    assert t["why"] is None and t["n"] == 3


@pytest.mark.parametrize("diffs, why", [([], "no pair"), ([1.0], "n = 1 < 3"), ([1.0, 2.0], "n = 2 < 3"),
                                        ([0.0, 0.0, 0.0], "no variance"), ([0.5, 0.5, 0.5, np.nan], "no variance")])
def test_what_cannot_be_tested(diffs, why):
    t = stats.paired_test(diffs)
    assert t["why"] == why and np.isnan(t["p"])


@pytest.mark.parametrize("mean, p, expect, want", [(-1.0, 0.01, "negative", "holds"),
                                                   (1.0, 0.01, "negative", "contradicted"),
                                                   (1.0, 0.01, "positive", "holds"),
                                                   (-1.0, 0.2, "negative", "not significant"),
                                                   (-1.0, np.nan, "negative", "cannot be tested")])
def test_p_verdict(mean, p, expect, want):
    assert stats.p_verdict(mean, p, expect) == want


def test_holm_keeps_the_family_wise_error_rate():
    """14 rows with no real effect, 3 seeds each, 2000 times: uncorrected, about 1 - 0.95**14 = 51% of tables have a
    false 'holds' or 'contradicted'; with Holm at most 5%."""
    rng = np.random.default_rng(3)
    any_raw = any_holm = 0
    for _ in range(2000):
        p = [stats.paired_test(rng.normal(0, 1, 3))["p"] for _ in range(14)]
        any_raw += min(p) < 0.05
        any_holm += min(stats.holm(p)) < 0.05
    assert 0.45 <= any_raw / 2000 <= 0.57 and any_holm / 2000 <= 0.06
