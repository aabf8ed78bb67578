"""Held-out perplexity: exp(token-weighted mean cross-entropy).

One implementation, used by the trainer's periodic evaluation and by `study eval`, so that the two report the
same number for the same checkpoint and the same held-out sequences.

loss = sum of per-token cross-entropy over every label != -100, divided by the number of such labels
(the official code divided by n+1, a defect we do not copy), accumulated in float64.

Sharded (`rank`, `world` of an initialised process group): rank r scores batches r, r+w, r+2w, ... of the same
list every rank holds, and the (NLL sum, token count) pair is all-reduced, so every rank returns the value one
process computes over all batches (each batch is the same forward as there; only the float64 sum's order
differs). With `lockstep` (a sharded FSDP model, whose forward all ranks must run together) every rank runs
ceil(n / w) forwards: a rank whose share is shorter runs its first batch again with weight 0.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

_DTYPES = {
    None: None, "fp32": None, "float32": None,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


def resolve_dtype(dtype) -> torch.dtype | None:
    """The autocast dtype for a name or a torch dtype; None means plain fp32 (no autocast)."""
    if isinstance(dtype, torch.dtype):
        return None if dtype == torch.float32 else dtype
    try:
        return _DTYPES[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"unknown eval dtype {dtype!r}; valid: fp32, bf16, fp16") from None


def dtype_name(dtype) -> str:
    """'fp32', 'bf16' or 'fp16': how the dtype is recorded in eval results."""
    resolved = resolve_dtype(dtype)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[resolved]


def autocast(device, dtype) -> contextlib.AbstractContextManager:
    """torch.autocast for a low-precision eval dtype, a no-op context for fp32."""
    resolved = resolve_dtype(dtype)
    if resolved is None:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=resolved)


@torch.no_grad()
def perplexity(model: torch.nn.Module, batches: Sequence[dict], *, device="cpu", dtype=None, rank: int = 0,
               world: int = 1, lockstep: bool = False) -> dict:
    """{'loss': token-weighted mean CE (float), 'ppl': exp(loss), 'tokens': number of scored tokens}.

    `batches` are dicts with 'input_ids' and 'labels' (Long [B, S], labels -100 where ignored), as made by
    study.data.heldout_batches. The model is put in eval mode for the computation and its previous mode is
    restored afterwards (the trainer calls this mid-training). `dtype`: None/'fp32' (default) or 'bf16' to run
    the forward pass under autocast; the cross-entropy is always computed in fp32 and summed in float64.
    `rank`/`world`/`lockstep`: score this rank's share and all-reduce (see the module docstring).
    """
    batches = list(batches)
    mine = batches[rank::world]
    rounds = -(-len(batches) // world) if lockstep else len(mine)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for i in range(rounds):
            batch = mine[i] if i < len(mine) else batches[0]  # past its share: a forward with weight 0
            input_ids = batch["input_ids"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            with autocast(device, dtype):
                logits = model(input_ids)
            if i >= len(mine):
                continue
            nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                                  ignore_index=IGNORE_INDEX, reduction="none")
            mask = labels.reshape(-1) != IGNORE_INDEX
            total += nll[mask].double().sum()
            count += mask.sum()
    finally:
        model.train(was_training)
    if world > 1:
        import torch.distributed as dist

        both = torch.stack([total, count])
        dist.all_reduce(both, op=dist.ReduceOp.SUM)
        total, count = both[0], both[1]
    n = int(count.item())
    if n == 0:
        raise ValueError("perplexity: the batches hold no scored tokens (every label is -100)")
    loss = float(total.item() / n)
    return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else float("inf"), "tokens": n}


def dataset_label(data_cfg) -> tuple[str, str]:
    """(dataset, split) recorded in eval.jsonl for the held-out text of a data config.

    dataset: the source ('default', 'files') or 'hf_path[/hf_name]'; split: data.eval_split, or
    'heldout-<fraction>' for the hash-selected held-out documents. Same names as the trainer's rows.
    """
    if data_cfg.source == "hf":
        dataset = str(data_cfg.hf_path) + (f"/{data_cfg.hf_name}" if data_cfg.hf_name else "")
    else:
        dataset = str(data_cfg.source)
    split = data_cfg.eval_split or f"heldout-{data_cfg.heldout_fraction:g}"
    return dataset, split


def eval_row(model, batches, *, step: int, data_cfg, seq_len: int, source: str, device="cpu",
             dtype=None, rank: int = 0, world: int = 1, lockstep: bool = False) -> dict:
    """One eval.jsonl row: {"step","dataset","split","loss","ppl","tokens","seq_len","source"}.

    The trainer (source "train") and `study eval` (source "eval") both build their rows here; every rank of a
    sharded evaluation gets the same row.
    """
    result = perplexity(model, batches, device=device, dtype=dtype, rank=rank, world=world, lockstep=lockstep)
    dataset, split = dataset_label(data_cfg)
    return {"step": int(step), "dataset": dataset, "split": split, "loss": result["loss"],
            "ppl": result["ppl"], "tokens": result["tokens"], "seq_len": int(seq_len), "source": source}
