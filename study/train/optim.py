"""AdamW with explicit weight-decay groups, and the learning-rate scheduler of study.lr_schedules' table."""

from __future__ import annotations

import torch

from study import lr_schedules

# Name segments that wrappers (torch.compile, FSDP1, activation checkpointing, DDP) insert into parameter names.
_WRAPPER_SEGMENTS = {"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module", "module"}


def param_kind(name: str, ndim: int) -> str:
    """What a parameter of study.model.Transformer is, from its name: embedding, head, final_norm (the norm
    before the head), layer_norm (a norm gain inside a layer), matrix (a linear weight in a layer) or vector."""
    parts = [p for p in name.split(".") if p not in _WRAPPER_SEGMENTS]
    top = parts[0] if parts else ""
    if top in ("embed", "head"):
        return "embedding" if top == "embed" else "head"
    if top == "norm":
        return "final_norm"
    if top == "layers" and any("norm" in p for p in parts[2:-1]):
        return "layer_norm"
    return "matrix" if ndim >= 2 else "vector"


def decays(name: str, ndim: int, rule: str) -> bool:
    """Whether `rule` (config optim.decay_groups) puts weight decay on this parameter.

    matrices: every >= 2-D parameter (linears, embedding, head), never a norm gain.
    official: the official ProRes code's no_decay = ["bias", "layernorm.weight", "embed_tokens"]: everything but
      the embedding and the per-layer norm gains, so the final norm and the head are decayed.
    """
    if rule == "matrices":
        return ndim >= 2
    if rule == "official":
        return param_kind(name, ndim) not in ("embedding", "layer_norm")
    raise ValueError(f"unknown optim.decay_groups {rule!r}")


def param_groups(model: torch.nn.Module, weight_decay: float, rule: str = "matrices") -> list[dict]:
    """AdamW groups 'decay' / 'no_decay' by `rule` (see decays).

    Named groups so a checkpoint's optimizer state shows which parameters were decayed.
    """
    decay, no_decay = [], []
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if p.requires_grad:
            (decay if decays(name, p.ndim, rule) else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def build_optimizer(model: torch.nn.Module, optim_cfg, *, device: torch.device) -> torch.optim.AdamW:
    fused = optim_cfg.fused if optim_cfg.fused is not None else device.type == "cuda"
    return torch.optim.AdamW(
        param_groups(model, optim_cfg.weight_decay, optim_cfg.decay_groups),
        lr=optim_cfg.lr,
        betas=tuple(optim_cfg.betas),
        eps=optim_cfg.eps,
        fused=fused,
    )


def build_scheduler(optimizer, optim_cfg, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The config's LR schedule (a row of study.lr_schedules) as a LambdaLR over the peak `optim.lr`."""
    horizon = lr_schedules.Horizon(total=total_steps, warmup=optim_cfg.warmup_steps,
                                   decay_fraction=optim_cfg.decay_fraction, min_ratio=optim_cfg.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_schedules.factor(optim_cfg.lr_schedule, step, horizon))
