"""Shared fixtures: a session-wide data cache (the default BPE is trained once) and tiny CPU run configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Two cores: one intra-op thread per test process keeps parallel subprocess tests from thrashing.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One tokenizer/token cache for the whole session (the default BPE trains once)."""
    return tmp_path_factory.mktemp("study-cache")


def tiny_raw(cache_dir, **overrides) -> dict:
    """A raw config dict for a run that trains in seconds on CPU."""
    raw = {
        "model": {"scale": "tiny"},
        "train": {"steps": 20, "micro_batch": 4, "global_batch": 8, "log_every": 5, "ckpt_every": 10,
                  "progress": False},
        "eval": {"every": 10, "tokens": 4096, "batch_size": 8},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "data": {"cache_dir": str(cache_dir)},
    }
    from study.config import set_path
    for key, value in overrides.items():
        set_path(raw, key.replace("__", "."), value)
    return raw


@pytest.fixture
def tiny_cfg(cache_dir):
    from study.config import resolve

    def make(**overrides):
        return resolve(tiny_raw(cache_dir, **overrides))

    return make
