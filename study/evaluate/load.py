"""A run's model at one of its checkpoints, ready to evaluate: weights, ProRes alphas, tokenizer, eval mode.

`read_run(run_dir)` is the one reader of a run directory's config for evaluation (study eval and load_for_eval),
so a folder that is not a run directory is one error, CheckpointError, wherever it is found. The checkpoint is
read through study.train.checkpointer.model_state, whatever its layout (single files or sharded DCP shards).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from study.data import build_tokenizer
from study.errors import CheckpointError
from study.model import build_model
from study.results import RunDir
from study.train.checkpoint import find, load_into, read_state
from study.train.checkpointer import model_state

__all__ = ["LoadedRun", "load_for_eval", "read_run"]


@dataclass
class LoadedRun:
    cfg: object
    model: torch.nn.Module
    tokenizer: object
    step: int
    run_dir: Path


def read_run(run_dir) -> tuple[RunDir, object]:
    """(RunDir, its resolved config); CheckpointError if `run_dir` is not a run directory."""
    rd = RunDir(run_dir)
    if not rd.exists():
        raise CheckpointError(f"{rd.path} is not a run directory (no config.yaml)")
    return rd, rd.read_config()


def load_for_eval(run_dir, step: int | str = "latest", device: str | torch.device = "cpu") -> LoadedRun:
    """The model of a run at a checkpoint, with its weights and ProRes alphas, in eval mode."""
    rd, cfg = read_run(run_dir)
    path = find(rd.checkpoints, step)
    model = build_model(cfg.model)
    missing, unexpected = load_into(model, model_state(path), path, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit the run's model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    model.to(device).eval()
    tokenizer = build_tokenizer(cfg.data, vocab_size=cfg.model.vocab_size)
    return LoadedRun(cfg=cfg, model=model, tokenizer=tokenizer, step=int(read_state(path)["step"]),
                     run_dir=rd.path)
