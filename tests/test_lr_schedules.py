"""study.lr_schedules: the LR schedules' table, read by the config, the trainer's scheduler and Figure 5's marker."""

from __future__ import annotations

import typing

import pytest
import torch

from study import config, lr_schedules, series
from study.errors import ConfigError
from study.lr_schedules import Horizon, factor
from study.train.optim import build_scheduler


def test_warmup_is_linear_and_reaches_the_peak_on_its_last_step():
    h = Horizon(total=100, warmup=4)
    for name in lr_schedules.NAMES:
        assert [factor(name, s, h) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_wsd_is_constant_then_decays_linearly_to_zero_over_the_last_fraction():
    h = Horizon(total=100, warmup=10, decay_fraction=0.1)
    assert all(factor("wsd", s, h) == 1.0 for s in range(10, 91))
    assert [factor("wsd", s, h) for s in (91, 95, 99, 100)] == pytest.approx([0.9, 0.5, 0.1, 0.0])
    assert lr_schedules.decay_start("wsd", h) == 90
    assert factor("wsd", 99, Horizon(total=100, decay_fraction=0.0)) == 1.0  # no decay phase


def test_cosine_runs_from_the_peak_to_its_floor():
    h = Horizon(total=110, warmup=10, min_ratio=0.1)
    assert factor("cosine", 10, h) == pytest.approx(1.0)
    assert factor("cosine", 60, h) == pytest.approx(0.55)
    assert factor("cosine", 110, h) == pytest.approx(0.1)
    assert lr_schedules.decay_start("cosine", h) is None
    assert factor("constant", 109, h) == 1.0


def test_the_configs_choices_are_the_tables_rows():
    assert typing.get_args(config.LRSchedule) == tuple(lr_schedules.SCHEDULES)
    assert config.OptimConfig().lr_schedule == lr_schedules.DEFAULT in lr_schedules.SCHEDULES
    with pytest.raises(ConfigError, match="valid choices: " + ", ".join(sorted(lr_schedules.NAMES))):
        config.resolve({"optim": {"lr_schedule": "linear"}})


def test_the_trainers_scheduler_follows_the_table_and_figure5_marks_where_its_decay_starts():
    cfg = config.resolve({"model": {"scale": "tiny"}, "train": {"steps": 25},
                          "optim": {"lr": 2e-3, "warmup_steps": 3, "decay_fraction": 0.3}})
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=cfg.optim.lr)
    sched = build_scheduler(opt, cfg.optim, cfg.train.steps)
    lrs = []
    for _ in range(cfg.train.steps):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    h = Horizon(total=25, warmup=3, decay_fraction=0.3)
    assert lrs == pytest.approx([2e-3 * factor("wsd", s, h) for s in range(25)])
    # round(0.3 * 25) = 8 decay steps: the marker is the last step at the peak, the LR falls right after it
    start = series.lr_decay_start({"steps": 25, "decay_fraction": 0.3, "lr_schedule": "wsd"})
    assert start == 17 and lrs[17] == pytest.approx(2e-3) and lrs[18] < 2e-3
    assert series.lr_decay_start({"steps": 25, "decay_fraction": 0.3, "lr_schedule": None}) == start  # default
    assert series.lr_decay_start({"steps": 25, "decay_fraction": 0.3, "lr_schedule": "cosine"}) is None
