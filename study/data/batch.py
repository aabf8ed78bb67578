"""The batch every training stream returns (packed or padded, from the stream or from the token store)."""

from __future__ import annotations

import numpy as np
import torch

IGNORE = -100  # label of positions that predict nothing (padding, the end of a padded document)


def batch_dict(inputs: np.ndarray, labels: np.ndarray) -> dict:
    """Input ids, next-token labels (IGNORE where none) and the count of real labels, as tensors."""
    labels_t = torch.from_numpy(np.ascontiguousarray(labels))
    return {"input_ids": torch.from_numpy(np.ascontiguousarray(inputs)), "labels": labels_t,
            "n_tokens": int((labels_t != IGNORE).sum())}
