"""Weight initialisation: cfg.init (std = cfg.init_std) for linears, cfg.embed_std_rule for the embedding.

| init         | every linear (head included)     | o_proj, down_proj of layer l (1-based)  |
|--------------|----------------------------------|-----------------------------------------|
| normal       | N(0, std)                        | same                                    |
| trunc-normal | N(0, std) truncated at ±3·std    | same  (OLMo 2; embedding truncated too) |
| scaled       | N(0, std)                        | N(0, std/sqrt(2L))        (Megatron)    |
| ds-init      | N(0, std)                        | N(0, std/sqrt(2l))        (open_lm)     |
| deepnorm     | head N(0, std); in layers Xavier normal, gain b = (8L)^(-1/4) on v, o, gate, up, down and |
|              | gain 1 on q, k (also with ProRes on: the official code skipped it then, a defect)         |

Embedding: 'fixed' N(0, std) (paper), 'sqrt-d' N(0, std·sqrt(d_model)) (official code).
Norm gains: 1, except the input norms of lns-gain, initialised to 1/sqrt(l) (RMSNorm.init_gain).
Every draw uses the torch default RNG in module order, so a seed fixes the weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from study.config import INITS
from study.errors import unknown_name
from study.model.blocks import Residual
from study.model.norms import RMSNorm

_XAVIER_GAIN_B = ("v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # DeepNorm's beta-scaled linears
_OUTPUT_PROJ = ("o_proj", "down_proj")


def check_init(name: str) -> None:
    if name not in INITS:
        raise unknown_name("init", name, INITS, key="model.init")


def embed_std(cfg) -> float:
    return cfg.init_std * (math.sqrt(cfg.d_model) if cfg.embed_std_rule == "sqrt-d" else 1.0)


def _normal(weight: torch.Tensor, std: float, truncated: bool) -> None:
    if truncated:
        nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
    else:
        nn.init.normal_(weight, mean=0.0, std=std)


def linear_std(cfg, name: str, layer: int) -> float:
    """std of the normal init of linear `name` in 1-based `layer` (all inits but deepnorm)."""
    if name in _OUTPUT_PROJ and cfg.init == "scaled":
        return cfg.init_std / math.sqrt(2 * cfg.n_layers)
    if name in _OUTPUT_PROJ and cfg.init == "ds-init":
        return cfg.init_std / math.sqrt(2 * layer)
    return cfg.init_std


@torch.no_grad()
def init_weights(model: nn.Module, cfg) -> None:
    check_init(cfg.init)
    truncated = cfg.init == "trunc-normal"
    deepnorm_gain = (8.0 * cfg.n_layers) ** -0.25
    _normal(model.embed.weight, embed_std(cfg), truncated)
    for block in model.layers:
        for name, module in block.named_modules():
            if isinstance(module, nn.Linear):
                short = name.rsplit(".", 1)[-1]
                if cfg.init == "deepnorm":
                    nn.init.xavier_normal_(module.weight, gain=deepnorm_gain if short in _XAVIER_GAIN_B else 1.0)
                else:
                    _normal(module.weight, linear_std(cfg, short, block.layer), truncated)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(module.init_gain)
            elif isinstance(module, Residual):
                module.alpha.fill_(1.0)
    model.norm.weight.fill_(1.0)
    _normal(model.head.weight, cfg.init_std, truncated)
