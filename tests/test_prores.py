"""study.prores against the closed forms of the paper (Table 5; restated in docs/prores.md), written out
independently here, at the boundary steps of every layer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from study import prores

WARMED = ["linear", "linear-sqrt", "linear-square", "equal", "reverse",
          "stagewise-0", "stagewise-L", "stagewise-sqrt-L", "stagewise-sqrt-l"]
FIXED = ["fix-L", "fix-sqrt-L", "fix-sqrt-l", "none"]


def closed_form(name: str, l: int, t: float, L: int, T: float) -> float:
    """alpha(l, t) for 1-based layer l, scalar arithmetic only (no numpy, no study code)."""
    clip01 = lambda v: max(0.0, min(1.0, v))  # noqa: E731
    if name == "linear":
        return min(t / (T * l), 1.0)
    if name == "linear-sqrt":
        return math.sqrt(min(t / (T * l), 1.0))
    if name == "linear-square":
        return min(t / (T * l), 1.0) ** 2
    if name == "equal":
        return min(t / T, 1.0)
    if name == "reverse":
        return min(t / (T * (L - l + 1)), 1.0)
    if name.startswith("stagewise"):
        m = {"stagewise-0": 0.0, "stagewise-L": 1 / L, "stagewise-sqrt-L": 1 / math.sqrt(L),
             "stagewise-sqrt-l": 1 / math.sqrt(l)}[name]
        return m + (1 - m) * clip01((t - T * (l - 1)) / T)
    return {"fix-L": 1 / L, "fix-sqrt-L": 1 / math.sqrt(L), "fix-sqrt-l": 1 / math.sqrt(l), "none": 1.0}[name]


def expected_W(name: str, L: int, T: float) -> float:
    return T if name == "equal" else T * L


@pytest.mark.parametrize("L", [1, 12, 24])
@pytest.mark.parametrize("name", WARMED)
def test_warmed_schedules_match_closed_form_at_boundaries(name, L):
    T = 100.0
    W = expected_W(name, L, T)
    assert prores.total_warmup(name, L, T) == W
    steps = {0, W, W + 1, 10 * W}
    for l in range(1, L + 1):
        steps |= {T * l - 1, T * l, T * (l - 1), T * (L - l + 1)}
    for t in sorted(steps):
        got = prores.alphas(name, t, L, T)
        assert got.shape == (L,) and got.dtype == np.float64
        want = np.array([closed_form(name, l, t, L, T) for l in range(1, L + 1)])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"{name} L={L} t={t}")
    # every layer starts at its floor and is exactly 1 from W on
    np.testing.assert_array_equal(prores.alphas(name, W, L, T), np.ones(L))
    np.testing.assert_array_equal(prores.alphas(name, 10 * W, L, T), np.ones(L))
    start = prores.alphas(name, 0, L, T)
    if name in ("linear", "linear-sqrt", "linear-square", "equal", "reverse", "stagewise-0"):
        np.testing.assert_array_equal(start, np.zeros(L))
    else:  # stagewise with a floor m: every layer starts at m(l)
        floor = {"stagewise-L": [1 / L] * L, "stagewise-sqrt-L": [1 / math.sqrt(L)] * L,
                 "stagewise-sqrt-l": [1 / math.sqrt(l) for l in range(1, L + 1)]}[name]
        np.testing.assert_allclose(start, floor, rtol=0, atol=1e-15)


@pytest.mark.parametrize("L", [1, 12, 24])
def test_linear_layer_l_reaches_one_exactly_at_T_l(L):
    T = 1000
    for l in range(1, L + 1):
        assert prores.alphas("linear", T * l - 1, L, T)[l - 1] < 1.0
        assert prores.alphas("linear", T * l, L, T)[l - 1] == 1.0
        # deeper layers are still warming at T·l
        assert (prores.alphas("linear", T * l, L, T)[l:] < 1.0).all()


@pytest.mark.parametrize("L", [1, 12, 24])
@pytest.mark.parametrize("name", FIXED)
def test_fixed_schedules_are_constant_for_the_whole_run(name, L):
    want = np.array([closed_form(name, l, 0, L, 1.0) for l in range(1, L + 1)])
    for t in (0, 1, 999, 1000, 12_000, 100_000, 10**7):
        np.testing.assert_allclose(prores.alphas(name, t, L), want, rtol=0, atol=1e-15)
    assert not prores.is_warmed(name)
    assert prores.total_warmup(name, L, 1000) is None and prores.unit_from_total(name, L, 1000) is None


def test_fix_schedules_are_not_one():
    assert prores.alphas("fix-L", 10**6, 12)[0] == pytest.approx(1 / 12)
    assert prores.alphas("fix-sqrt-L", 10**6, 16)[-1] == pytest.approx(0.25)
    assert prores.alphas("fix-sqrt-l", 10**6, 4)[3] == pytest.approx(0.5)


@pytest.mark.parametrize("alias,name", [
    ("sqrt", "linear-sqrt"), ("linear_sqrt", "linear-sqrt"), ("square", "linear-square"),
    ("linear_square", "linear-square"), ("linear_equal", "equal"), ("linear_reverse", "reverse"),
    ("stagewise_0", "stagewise-0"), ("stagewise_L", "stagewise-L"), ("stagewise_sqrt_L", "stagewise-sqrt-L"),
    ("stagewise_sqrt_l", "stagewise-sqrt-l"), ("fix_L", "fix-L"), ("fix_sqrt_L", "fix-sqrt-L"),
    ("fix_sqrt_l", "fix-sqrt-l"),
])
def test_official_aliases(alias, name):
    assert prores.canonical(alias) == name
    T = 50 if prores.is_warmed(name) else None
    for t in (0, 75, 310):
        np.testing.assert_array_equal(prores.alphas(alias, t, 6, T), prores.alphas(name, t, 6, T))


def test_unknown_schedule_is_rejected():
    with pytest.raises(KeyError):
        prores.canonical("lineaer")
    with pytest.raises(ValueError):
        prores.alphas("linear", 10, 4, None)
    with pytest.raises(ValueError):
        prores.alphas("linear", 10, 4, -5)


def test_thirteen_paper_schedules():
    assert set(prores.SCHEDULES) == set(WARMED) | set(FIXED) and len(prores.SCHEDULES) == 13


@pytest.mark.parametrize("name", WARMED)
@pytest.mark.parametrize("L", [1, 12, 24])
def test_total_warmup_and_unit_from_total_invert(name, L):
    for T in (1, 500, 1000, 12_000):
        W = prores.total_warmup(name, L, T)
        assert W == expected_W(name, L, T)  # noqa: SIM300 -- W is the paper's symbol, not a constant
        assert prores.unit_from_total(name, L, W) == pytest.approx(T)


def test_equal_has_W_equal_T():
    assert prores.total_warmup("equal", 24, 12_000) == 12_000
    assert prores.unit_from_total("equal", 24, 12_000) == 12_000
    assert prores.total_warmup("linear", 24, 1000) == 24_000  # paper: W = 24k for 24 layers


def test_table_is_what_the_cli_prints():
    rows = prores.table("linear", [0, 500, 1000], 2, 1000)
    assert rows == [{"step": 0, "alpha": [0.0, 0.0]}, {"step": 500, "alpha": [0.5, 0.25]},
                    {"step": 1000, "alpha": [1.0, 0.5]}]
