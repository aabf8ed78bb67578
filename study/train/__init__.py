"""Training: `train_run(cfg, root)` turns a resolved config into a finished (or resumable) run directory."""

from study.train.loop import RunResult, StopFlag, train_run

__all__ = ["train_run", "RunResult", "StopFlag"]
