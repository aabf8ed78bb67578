"""Model size, FLOPs and memory arithmetic from a ModelConfig (nothing is allocated), and init fingerprints.

Parameter count of the LLaMA-style decoder (no biases, untied head):
    embedding V·d + head V·d + final norm d
    + L·(4·d² attention q,k,v,o  +  3·d·f SwiGLU gate,up,down  +  2·g·d RMSNorm gains)
g = norms per sub-layer, read off the placement table (study/model/norms.py): 1 for most placements, 2 for
Sandwich-LN (its branch norms).
"""

from __future__ import annotations

import hashlib

import torch

from study.config import PARALLELISMS, PRECISIONS
from study.errors import unknown_name
from study.model.norms import placement

FLOPS_FORMULA = ("PaLM (Chowdhery et al. 2022, App. B): 6*N + 12*L*d*S per token, "
                 "N = parameters excluding the input embedding table, S = seq_len")


def info(cfg) -> dict:
    """{'params', 'non_embedding_params', 'layers', 'd_model', 'flops_per_token', 'seq_len', 'flops_formula'}."""
    V, d, L, f, S = cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.ffn_hidden, cfg.seq_len
    per_layer = 4 * d * d + 3 * d * f + 2 * placement(cfg.norm, L).gains * d  # two sub-layers
    params = 2 * V * d + L * per_layer + d
    n_flops = params - V * d  # PaLM counts the head matmul but not the embedding lookup
    return {
        "params": params,
        "non_embedding_params": params - 2 * V * d,
        "layers": L,
        "d_model": d,
        "flops_per_token": 6 * n_flops + 12 * L * d * S,
        "seq_len": S,
        "flops_formula": FLOPS_FORMULA,
    }


# Bytes per parameter for (weights, grads, AdamW state) by precision.
#  bf16 autocast ('bf16', and 'auto' = the GPU default): fp32 weights are the master copy (4), fp32 grads (4),
#                 two fp32 moments (8): 16 B/param, the same total as bf16 weights + fp32 master + moments.
#  fp32:          4 + 4 + 8.      bf16-pure (official code): bf16 weights, grads and moments: 2 + 2 + 4.
_PARAM_BYTES = {"auto": (4, 4, 8), "bf16": (4, 4, 8), "fp32": (4, 4, 8), "bf16-pure": (2, 2, 4)}
# (activation element bytes, residual-stream element bytes) by precision; the residual stream stays fp32 under
# autocast because the embedding output is fp32.
_ACT_BYTES = {"auto": (2, 4), "bf16": (2, 4), "fp32": (4, 4), "bf16-pure": (2, 2)}
KORTHIKANTI = 34  # bytes per token per d_model per layer, bf16, no attention scores stored


def memory_estimate(cfg, *, micro_batch: int = 1, world_size: int = 1, parallelism: str = "ddp",
                    precision: str = "bf16", activation_checkpointing: bool = False) -> dict:
    """Training memory per device in bytes: {'params_bytes', 'grads_bytes', 'optimizer_bytes',
    'activations_bytes', 'total_bytes'}.

    - Weights, grads and AdamW moments: see _PARAM_BYTES; 'fsdp' (full sharding) divides them by world_size,
      'ddp' replicates them (DDP's gradient buckets and FSDP's gathered layer are not counted).
    - Activations of one micro-batch of B sequences of S tokens, after Korthikanti et al. 2022 ("Reducing
      Activation Recomputation in Large Transformer Models", eq. 1): S·B·d·(34 + 5·a·S/d) bytes per layer
      in 16-bit. SDPA runs flash / memory-efficient attention, which never stores the a·S² score matrices,
      so the 5·a·S/d term is dropped: 34·S·B·d per layer (×2 in fp32). With activation checkpointing each
      layer keeps only its input (the residual stream, S·B·d elements) and one layer is recomputed at a time:
      L·S·B·d·(residual bytes) + 34·S·B·d. The head adds the logits, S·B·V in the activation dtype, plus an
      fp32 copy for the cross-entropy.
    """
    if parallelism not in PARALLELISMS:
        raise unknown_name("parallelism", parallelism, PARALLELISMS, key="train.parallelism")
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, PRECISIONS, key="train.precision")
    n = info(cfg)["params"]
    shard = world_size if parallelism == "fsdp" else 1
    w_b, g_b, o_b = _PARAM_BYTES[precision]
    params_bytes, grads_bytes, optimizer_bytes = (-(-n * b // shard) for b in (w_b, g_b, o_b))

    act_b, resid_b = _ACT_BYTES[precision]
    tokens, d, L = micro_batch * cfg.seq_len, cfg.d_model, cfg.n_layers
    layer_bytes = KORTHIKANTI * tokens * d * act_b // 2
    if activation_checkpointing:  # noqa: SIM108 -- two formulas side by side read better than a long ternary
        blocks = L * tokens * d * resid_b + layer_bytes
    else:
        blocks = L * layer_bytes
    head = tokens * cfg.vocab_size * (act_b + 4)
    activations_bytes = blocks + head
    return {
        "params_bytes": params_bytes,
        "grads_bytes": grads_bytes,
        "optimizer_bytes": optimizer_bytes,
        "activations_bytes": activations_bytes,
        "total_bytes": params_bytes + grads_bytes + optimizer_bytes + activations_bytes,
    }


def init_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter (name, dtype, shape, raw bytes), in sorted name order; first 16 hex chars."""
    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda item: item[0]):
        t = p.detach()
        if hasattr(t, "full_tensor"):  # FSDP2 DTensor shard -> the full parameter
            t = t.full_tensor()
        t = t.cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
