"""A run's model at one of its checkpoints, ready to evaluate: weights, ProRes alphas, tokenizer, eval mode.

Here rather than in study.train.checkpoint because it reads both checkpoint layouts (study.train.checkpoint's
single files and study.train.sharded's DCP folders); the trainer never needs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from study.data import build_tokenizer
from study.errors import CheckpointError
from study.model import build_model
from study.results import RunDir
from study.train import sharded
from study.train.checkpoint import find

__all__ = ["LoadedRun", "load_for_eval"]


@dataclass
class LoadedRun:
    cfg: object
    model: torch.nn.Module
    tokenizer: object
    step: int
    run_dir: Path


def load_for_eval(run_dir, step: int | str = "latest", device: str | torch.device = "cpu") -> LoadedRun:
    """The model of a run at a checkpoint, with its weights and ProRes alphas, in eval mode."""
    rd = RunDir(run_dir)
    if not rd.exists():
        raise CheckpointError(f"{rd.path} is not a run directory (no config.yaml)")
    cfg = rd.read_config()
    path = find(rd.checkpoints, step)
    # FSDP runs write sharded (torch.distributed.checkpoint) model state
    model_state = (sharded.load_full_model_state(path) if sharded.is_sharded(path)
                   else torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    state = json.loads((path / "state.json").read_text())
    model = build_model(cfg.model)
    missing, unexpected = model.load_state_dict(model_state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit the run's model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    model.to(device).eval()
    tokenizer = build_tokenizer(cfg.data, vocab_size=cfg.model.vocab_size)
    return LoadedRun(cfg=cfg, model=model, tokenizer=tokenizer, step=int(state["step"]), run_dir=rd.path)
