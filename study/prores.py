"""ProRes schedules: alpha(l, t), the residual-branch multiplier of layer l at optimizer step t.

One pure implementation used by training, tests, figures and `study schedule`. Layers are 1-based as in the
paper; T is the warmup unit of the first layer and W the step by which every layer has reached 1
(W = T·L, except `equal` where W = T). Closed forms: paper Table 5, restated in docs/prores.md.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

# paper name -> W as a multiple of T (None: the schedule never warms up)
_W_OVER_T = {
    "linear": "L", "linear-sqrt": "L", "linear-square": "L", "equal": 1, "reverse": "L",
    "stagewise-0": "L", "stagewise-L": "L", "stagewise-sqrt-L": "L", "stagewise-sqrt-l": "L",
    "fix-L": None, "fix-sqrt-L": None, "fix-sqrt-l": None, "none": None,
}
SCHEDULES = tuple(_W_OVER_T)
Schedule = Literal[SCHEDULES]  # the type of a config's prores.schedule: a name of the table above

# Spellings used by the official code (PRORES_SCHEDULE) and its README, accepted as aliases.
ALIASES = {
    "sqrt": "linear-sqrt", "linear_sqrt": "linear-sqrt",
    "square": "linear-square", "linear_square": "linear-square",
    "linear_equal": "equal", "linear_reverse": "reverse",
    "stagewise_0": "stagewise-0", "stagewise_L": "stagewise-L",
    "stagewise_sqrt_L": "stagewise-sqrt-L", "stagewise_sqrt_l": "stagewise-sqrt-l",
    "fix_L": "fix-L", "fix_sqrt_L": "fix-sqrt-L", "fix_sqrt_l": "fix-sqrt-l",
}


def canonical(name: str) -> str:
    """Paper name for `name` (a paper name or an official alias); KeyError if neither."""
    if name in _W_OVER_T:
        return name
    return ALIASES[name]


def is_warmed(schedule: str) -> bool:
    """True for schedules that move from their start value to 1 (they take T / W)."""
    return _W_OVER_T[canonical(schedule)] is not None


def total_warmup(schedule: str, num_layers: int, T: float) -> float | None:
    """W: the first step at which every layer's alpha is 1."""
    mult = _W_OVER_T[canonical(schedule)]
    if mult is None:
        return None
    return T * (num_layers if mult == "L" else mult)


def unit_from_total(schedule: str, num_layers: int, W: float) -> float | None:
    mult = _W_OVER_T[canonical(schedule)]
    if mult is None:
        return None
    return W / (num_layers if mult == "L" else mult)


def alphas(schedule: str, step: int | float, num_layers: int, T: float | None = None) -> np.ndarray:
    """alpha(l, step) for l = 1..num_layers, as float64 array of shape [num_layers]."""
    name = canonical(schedule)
    L = num_layers
    l = np.arange(1, L + 1, dtype=np.float64)
    t = float(step)
    if name == "none":
        return np.ones(L)
    if name == "fix-L":
        return np.full(L, 1.0 / L)
    if name == "fix-sqrt-L":
        return np.full(L, 1.0 / np.sqrt(L))
    if name == "fix-sqrt-l":
        return 1.0 / np.sqrt(l)
    if T is None or T <= 0:
        raise ValueError(f"schedule {name!r} needs T > 0, got {T!r}")
    if name == "linear":
        return np.minimum(t / (T * l), 1.0)
    if name == "linear-sqrt":
        return np.sqrt(np.minimum(t / (T * l), 1.0))
    if name == "linear-square":
        return np.minimum(t / (T * l), 1.0) ** 2
    if name == "equal":
        return np.full(L, min(t / T, 1.0))
    if name == "reverse":
        return np.minimum(t / (T * (L - l + 1)), 1.0)
    ramp = np.clip((t - T * (l - 1)) / T, 0.0, 1.0)  # stagewise: layer l warms during [T(l-1), Tl]
    floor = {
        "stagewise-0": np.zeros(L),
        "stagewise-L": np.full(L, 1.0 / L),
        "stagewise-sqrt-L": np.full(L, 1.0 / np.sqrt(L)),
        "stagewise-sqrt-l": 1.0 / np.sqrt(l),
    }[name]
    return floor + (1.0 - floor) * ramp


def table(schedule: str, steps, num_layers: int, T: float | None = None) -> list[dict]:
    """[{'step': s, 'alpha': [...]}, ...]: what `study schedule --json` prints."""
    return [{"step": int(s), "alpha": alphas(schedule, s, num_layers, T).tolist()} for s in steps]
