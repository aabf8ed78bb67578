"""Learning-rate schedules: the multiplier of the peak LR at each optimizer step, one row per schedule.

Pure (no torch), like study/prores.py, so the config reads its choices off this table (`Name`, the type of
`optim.lr_schedule`) and the trainer (study/train/optim.py) and Figure 5's decay marker (study.series) read the
same rows: a new schedule is a new row here and nothing else.

Every schedule starts with the same linear warmup over `warmup` steps, reaching the peak at the end of the last
warmup step (the first step is not wasted at 0). A row says what follows:

    wsd       constant, then linear decay to 0 over the last `decay_fraction` of training (the paper's)
    cosine    cosine from 1 to `min_ratio` at the last step
    constant  1
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Horizon:
    """What a schedule depends on besides the step: train.steps and the config's optim.* values."""

    total: int  # optimizer steps of the run
    warmup: int = 0  # optim.warmup_steps
    decay_fraction: float = 0.1  # optim.decay_fraction
    min_ratio: float = 0.0  # optim.min_lr_ratio


def _never(h: Horizon) -> int | None:
    return None


@dataclass(frozen=True)
class Schedule:
    """One LR schedule: its factor after warmup, and the first step of its decay phase (Figure 5's marker)."""

    after_warmup: Callable[[int, Horizon], float]  # (completed steps, horizon) -> factor, for steps >= warmup
    decay_start: Callable[[Horizon], int | None] = _never


def _wsd_start(h: Horizon) -> int:
    return h.total - round(h.decay_fraction * h.total)


def _wsd(step: int, h: Horizon) -> float:
    start = _wsd_start(h)
    decay_steps = h.total - start
    if decay_steps <= 0 or step < start:
        return 1.0
    return max(0.0, (h.total - step) / decay_steps)


def _cosine(step: int, h: Horizon) -> float:
    progress = min(1.0, (step - h.warmup) / max(1, h.total - h.warmup))
    return h.min_ratio + (1 - h.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


SCHEDULES: dict[str, Schedule] = {
    "wsd": Schedule(_wsd, _wsd_start),
    "cosine": Schedule(_cosine),
    "constant": Schedule(lambda step, h: 1.0),
}
NAMES = tuple(SCHEDULES)
Name = Literal[NAMES]  # the type of a config's optim.lr_schedule: a name of the table above
DEFAULT = "wsd"


def factor(name: str, step: int, h: Horizon) -> float:
    """Multiplier of the peak LR for the optimizer step that follows `step` completed steps (0-based)."""
    if h.warmup > 0 and step < h.warmup:
        return (step + 1) / h.warmup
    return SCHEDULES[name].after_warmup(step, h)


def decay_start(name: str, h: Horizon) -> int | None:
    """First step of the schedule's decay phase, or None when it has none to mark."""
    return SCHEDULES[name].decay_start(h)
