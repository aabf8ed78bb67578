"""Training: `train_run(cfg, root)` turns a resolved config into a finished (or resumable) run directory."""

from study.train.loop import RunResult, train_run
from study.train.signals import StopFlag

__all__ = ["train_run", "RunResult", "StopFlag"]
