"""Weight initialisation: cfg.init (std = cfg.init_std) for linears, cfg.embed_std_rule for the embedding.

| init         | every linear (head included)     | o_proj, down_proj of layer l (1-based)  |
|--------------|----------------------------------|-----------------------------------------|
| normal       | N(0, std)                        | same                                    |
| trunc-normal | = normal with init_truncation 3 (config resolution rewrites it so)                       |
| scaled       | N(0, std)                        | N(0, std/sqrt(2L))        (Megatron)    |
| ds-init      | N(0, std)                        | N(0, std/sqrt(2l))        (open_lm)     |
| deepnorm     | head N(0, std); in layers Xavier normal, gain b = (8L)^(-1/4) on v, o, gate, up, down and |
|              | gain 1 on q, k (also with ProRes on: the official code skipped it then, a defect)         |

Embedding: 'fixed' N(0, std) (paper), 'sqrt-d' N(0, std·sqrt(d_model)) (official code).
Truncation: with cfg.init_truncation = k every draw above (embedding, linears, head, the scaled and ds-init output
projections, DeepNorm's Xavier draws) is truncated at ±k·(its own std): a method keeps its scaling and only the
distribution's tails change. The paper draws from a truncated normal "following OLMo 2"; OLMo 2 (OLMo-core
InitMethod.normal) cuts at ±3·std, which `recipe: paper` sets. torch's trunc_normal_ keeps the std parameter of
the untruncated normal, so the realised std is 0.98658·std at k = 3 (0.8796 at k = 2), as in OLMo-core.
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


def truncation(cfg) -> float | None:
    """Truncation bound in multiples of std (None: untruncated); the legacy init name 'trunc-normal' means 3."""
    if cfg.init_truncation is not None:
        return cfg.init_truncation
    return 3.0 if cfg.init == "trunc-normal" else None


def _normal(weight: torch.Tensor, std: float, k: float | None) -> None:
    if k is not None:
        nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-k * std, b=k * std)
    else:
        nn.init.normal_(weight, mean=0.0, std=std)


def _xavier(weight: torch.Tensor, gain: float, k: float | None) -> None:
    """Xavier normal (std = gain·sqrt(2 / (fan_in + fan_out))), truncated at ±k·std when k is given."""
    fan_out, fan_in = weight.shape
    _normal(weight, gain * math.sqrt(2.0 / (fan_in + fan_out)), k)


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
    k = truncation(cfg)
    deepnorm_gain = (8.0 * cfg.n_layers) ** -0.25
    _normal(model.embed.weight, embed_std(cfg), k)
    for block in model.layers:
        for name, module in block.named_modules():
            if isinstance(module, nn.Linear):
                short = name.rsplit(".", 1)[-1]
                if cfg.init == "deepnorm":
                    _xavier(module.weight, deepnorm_gain if short in _XAVIER_GAIN_B else 1.0, k)
                else:
                    _normal(module.weight, linear_std(cfg, short, block.layer), k)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(module.init_gain)
            elif isinstance(module, Residual):
                module.alpha.fill_(1.0)
    model.norm.weight.fill_(1.0)
    _normal(model.head.weight, cfg.init_std, k)
