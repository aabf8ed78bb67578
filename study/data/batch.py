"""The batch every training stream returns (packed or padded, from the stream or from the token store)."""

from __future__ import annotations

import numpy as np
import torch

from study.config import PACKING
from study.errors import DataError

IGNORE = -100  # label of positions that predict nothing (padding, the end of a padded document)


def batch_dict(inputs: np.ndarray, labels: np.ndarray) -> dict:
    """Input ids, next-token labels (IGNORE where none) and the count of real labels, as tensors."""
    labels_t = torch.from_numpy(np.ascontiguousarray(labels))
    return {"input_ids": torch.from_numpy(np.ascontiguousarray(inputs)), "labels": labels_t,
            "n_tokens": int((labels_t != IGNORE).sum())}


def check_stream_args(data_cfg, *, seq_len: int, rank: int, world_size: int) -> None:
    """What every training stream needs before it reads anything: a sequence length, a rank of the world, and a
    packing mode it knows."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if data_cfg.packing not in PACKING:
        raise DataError(f"unknown data.packing {data_cfg.packing!r}; valid choices: {', '.join(PACKING)}")
