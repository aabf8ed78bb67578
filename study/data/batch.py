"""The batch every training stream returns (packed or padded, from the stream or from the token store), and the one
builder of padded rows (TrainStream's and StoreStream's `pad` mode, the held-out batches' last sequence)."""

from __future__ import annotations

import numpy as np
import torch

from study.config import PACKING
from study.errors import DataError
from study.perplexity import IGNORE_INDEX

IGNORE = IGNORE_INDEX  # label of positions that predict nothing: the cross-entropy's ignore index


def padded_rows(pieces, seq_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels), int64 [len(pieces), seq_len], from pieces of at most seq_len + 1 tokens each: a row's
    inputs are its piece less the last token, its labels the piece less the first (the next tokens), padded
    with pad_id and IGNORE past the piece."""
    inputs = np.full((len(pieces), seq_len), pad_id, dtype=np.int64)
    labels = np.full((len(pieces), seq_len), IGNORE, dtype=np.int64)
    for i, piece in enumerate(pieces):
        if not 0 < len(piece) <= seq_len + 1:
            raise ValueError(f"a padded row holds 1 to seq_len + 1 = {seq_len + 1} tokens, got {len(piece)}")
        inputs[i, :min(len(piece), seq_len)] = piece[:seq_len]
        labels[i, :len(piece) - 1] = piece[1:]
    return inputs, labels


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
