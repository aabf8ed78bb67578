"""The decoder block: attention and SwiGLU sub-layers around one shared residual add that owns alpha.

    h   = norm_branch(branch(norm_in(x)))        (Sublayer.forward)
    out = norm_out(x·c + alpha·h)                (Residual: c = 1; ScaledResidual: DeepNorm's c)

Which norms are real and what c is was decided at construction (norms.placement); forward never looks at
the placement name. Both sub-layers of a layer use the SAME Residual instance, so a layer has one alpha.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from study.model.norms import Placement


class Residual(nn.Module):
    """x + alpha·h. alpha is the ProRes multiplier: a persistent fp32 0-dim buffer (in state_dict and
    checkpoints), written in place by Transformer.set_alphas, so torch.compile sees a tensor, not a constant.

    Exactness: with alpha = 1, alpha·h is exact, so the sum is bit-identical to the plain x + h (addcmul
    computes it in one kernel, like the plain add). A 0-dim fp32 tensor does not promote bf16 activations
    (type promotion ignores 0-dim tensors of the same category), so bf16 stays bf16.
    """

    c = 1.0

    def __init__(self):
        super().__init__()
        self.register_buffer("alpha", torch.ones((), dtype=torch.float32), persistent=True)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, self.alpha, h)  # x + alpha·h

    def _apply(self, fn, recurse=True):
        # model.to(torch.bfloat16) would cast every floating buffer: keep alpha an fp32 0-dim tensor.
        super()._apply(fn, recurse)
        if self.alpha.dtype != torch.float32:
            self.alpha = self.alpha.float()
        return self

    def extra_repr(self) -> str:
        return f"c={self.c:g}"


class ScaledResidual(Residual):
    """c·x + alpha·h with a constant c (DeepNorm: c = (2L)^(1/4))."""

    def __init__(self, c: float):
        super().__init__()
        self.c = float(c)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x * self.c, self.alpha, h)  # c·x + alpha·h


def make_residual(c: float) -> Residual:
    """Chosen once at construction: no multiply by c = 1 in the hot path."""
    return Residual() if c == 1.0 else ScaledResidual(c)


class Rotary(nn.Module):
    """RoPE tables (LLaMA's rotate-half convention), non-persistent: rebuilt from the config, never saved."""

    def __init__(self, head_dim: int, max_len: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)  # [S, head_dim]
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        if seq_len > self.cos.shape[0]:
            raise ValueError(f"sequence length {seq_len} exceeds the model's seq_len {self.cos.shape[0]}")
        return self.cos[:seq_len], self.sin[:seq_len]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, S, hd]; rotate each (i, i + hd/2) pair by the position's angle."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, S, D = x.shape
        split = lambda t: t.view(B, S, self.n_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, S, D))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor, *_) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Sublayer(nn.Module):
    """One residual sub-layer: norm_out(residual(x, norm_branch(branch(norm_in(x)))))."""

    def __init__(self, branch: nn.Module, norm_in: nn.Module, norm_branch: nn.Module, norm_out: nn.Module):
        super().__init__()
        self.norm_in, self.branch, self.norm_branch, self.norm_out = norm_in, branch, norm_branch, norm_out

    def forward(self, x: torch.Tensor, residual: Residual, *branch_args) -> torch.Tensor:
        h = self.norm_branch(self.branch(self.norm_in(x), *branch_args))
        return self.norm_out(residual(x, h))


class Block(nn.Module):
    """Layer `layer` (1-based) of the decoder: attention sub-layer, then FFN sub-layer, one alpha for both."""

    def __init__(self, layer: int, d_model: int, n_heads: int, ffn_hidden: int, eps: float, place: Placement):
        super().__init__()
        self.layer = layer
        self.residual = make_residual(place.c)
        self.attn = Sublayer(Attention(d_model, n_heads), **place.make(d_model, eps, layer))
        self.ffn = Sublayer(SwiGLU(d_model, ffn_hidden), **place.make(d_model, eps, layer))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = self.attn(x, self.residual, cos, sin)
        return self.ffn(x, self.residual)
