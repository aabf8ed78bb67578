"""How the trainer wraps the model for data parallelism: nothing (one process), DDP, or FSDP2; plus per-block
activation checkpointing and torch.compile.

    w = wrap(model, train_cfg, dist, device)
    w.module      what the optimizer sees (the model itself; under FSDP2 its parameters are sharded DTensors)
    w.forward     the training forward (compiled when train_cfg.compile)
    w.no_sync(is_last)   context manager for gradient accumulation: gradients are synchronised only on the
                         last micro-batch (DDP: no_sync(); FSDP2: set_requires_gradient_sync(False/True))
    w.kind        'none' | 'ddp' | 'fsdp'

FSDP2 (`torch.distributed.fsdp.fully_shard`) shards each Block, then the root. It shards parameters only:
the ProRes alpha buffers stay the very same plain fp32 tensors (checked here), so Transformer.set_alphas keeps
updating them in place on every rank. fully_shard changes the module in place, so the trainer's `self.model`
is `w.module` (the same object) and its parameters are the sharded DTensors: an optimizer built BEFORE wrap must
be rebuilt (`needs_new_optimizer`). Gradients are averaged over ranks by the reduce-scatter, like DDP.

Activation checkpointing recomputes each Block's forward in the backward pass (torch.utils.checkpoint,
non-reentrant), applied by replacing the Block instance's forward, so parameter names, state_dict keys and
`model.layers[i].residual` are unchanged; it works with or without FSDP (the FSDP hooks stay outside).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from study.errors import ConfigError


@dataclass
class Wrapped:
    module: nn.Module
    forward: Callable
    kind: str
    ddp: nn.Module | None = None

    @property
    def needs_new_optimizer(self) -> bool:
        """True when wrapping replaced the parameters (FSDP2): build the optimizer from `module` after wrap."""
        return self.kind == "fsdp"

    def no_sync(self, is_last: bool):
        if self.kind == "ddp" and not is_last:
            return self.ddp.no_sync()
        if self.kind == "fsdp":
            self.module.set_requires_gradient_sync(is_last)
        return contextlib.nullcontext()


def _checkpointed_forward(forward, *args, **kwargs):
    from torch.utils.checkpoint import checkpoint
    if not torch.is_grad_enabled():  # eval / probes: nothing to save for backward
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute every block of `model.layers` in the backward pass (idempotent)."""
    for block in model.layers:
        if getattr(block, "_study_checkpointed", False):
            continue
        block.forward = functools.partial(_checkpointed_forward, block.forward)
        block._study_checkpointed = True


def _buffers_by_name(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b for name, b in model.named_buffers()}


def shard(model: nn.Module, train_cfg, device: torch.device, precision: str) -> nn.Module:
    """fully_shard each Block, then the root (in place); returns the model."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if precision == "bf16" and device.type == "cuda":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        mp = MixedPrecisionPolicy()
    before = _buffers_by_name(model)
    for block in model.layers:
        fully_shard(block, mp_policy=mp, reshard_after_forward=True)
    fully_shard(model, mp_policy=mp, reshard_after_forward=True)
    after = _buffers_by_name(model)
    moved = [n for n, b in before.items() if after.get(n) is not b]
    if moved:  # set_alphas writes into the original buffers: they must still be the ones the forward reads
        raise RuntimeError(f"fully_shard replaced buffers {moved[:3]}: ProRes alphas would no longer update")
    return model


def wrap(model: nn.Module, train_cfg, dist, device: torch.device, *, precision: str = "fp32") -> Wrapped:
    """Wrap `model` per train_cfg.parallelism / activation_checkpointing / compile for process group `dist`
    (a study.train.distributed.Dist). One process: no wrapper whatever the parallelism."""
    if train_cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    kind = "none"
    ddp = None
    if dist.active:
        kind = train_cfg.parallelism
        if kind == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [device.index] if device.type == "cuda" else None
            ddp = DDP(model, device_ids=ids, broadcast_buffers=False)
        elif kind == "fsdp":
            if precision == "bf16-pure":
                raise ConfigError("FSDP with precision bf16-pure is not supported: use bf16 (the mixed-precision "
                                  "policy keeps fp32 master weights)", key="train.precision")
            shard(model, train_cfg, device, precision)
        else:
            raise ConfigError(f"unknown parallelism {kind!r}", key="train.parallelism")
    forward = ddp if ddp is not None else model
    if train_cfg.compile:
        forward = torch.compile(forward)
    return Wrapped(module=model, forward=forward, kind=kind, ddp=ddp)


def grad_norm_value(norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_ over DTensor parameters returns a replicated DTensor: the plain local tensor."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
