"""RMSNorm and the per-placement choice of norms around each residual sub-layer.

A placement is resolved ONCE, at construction, into three modules per sub-layer (the unused ones are
nn.Identity) and the constant c of the residual add:

    h   = norm_branch(branch(norm_in(x)))
    out = norm_out(c·x + alpha·h)

| placement | norm_in            | norm_branch | norm_out | c          | paper formula (with ProRes)   |
|-----------|--------------------|-------------|----------|------------|-------------------------------|
| pre       | N                  | -           | -        | 1          | x + a·F(N(x))                 |
| post      | -                  | -           | N        | 1          | N(x + a·F(x))                 |
| sandwich  | N                  | N           | -        | 1          | x + a·N(F(N(x)))              |
| deepnorm  | -                  | -           | N        | (2L)^(1/4) | N(c·x + a·F(x))               |
| lns       | N, then ·1/sqrt(l) | -           | -        | 1          | x + a·F(N(x)/sqrt(l)), fixed  |
| lns-gain  | N, gain 1/sqrt(l)  | -           | -        | 1          | same at init; the gain learns |
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from study.config import NORMS as PLACEMENTS
from study.errors import unknown_name


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x²) + eps) · g, computed in fp32 and returned in the input's dtype.

    `init_gain` is the value the gain g is (re)set to by the model's init (1, or 1/sqrt(l) for lns-gain).
    """

    def __init__(self, dim: int, eps: float = 1e-5, init_gain: float = 1.0):
        super().__init__()
        self.eps, self.init_gain = eps, init_gain
        self.weight = nn.Parameter(torch.full((dim,), float(init_gain)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.to(x.dtype) * self.weight.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, init_gain={self.init_gain:g}"


class ScaledRMSNorm(RMSNorm):
    """LayerNorm Scaling as in the paper: RMSNorm(x) times a FIXED 1/sqrt(l) (a constant, not a parameter)."""

    def __init__(self, dim: int, eps: float, scale: float):
        super().__init__(dim, eps)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:g}"


@dataclass(frozen=True)
class Placement:
    """How one layer's sub-layers are normed: factories for the three norm slots and the constant c."""

    name: str
    norm_in: str | None  # None | 'rms' | 'scaled' | 'gain'
    norm_branch: bool
    norm_out: bool
    c: float

    @property
    def gains(self) -> int:
        """Norms per sub-layer, each with a gain of d_model parameters (study.model.info counts them)."""
        return int(self.norm_in is not None) + int(self.norm_branch) + int(self.norm_out)

    def make(self, dim: int, eps: float, layer: int) -> dict[str, nn.Module]:
        """Fresh norm modules for one sub-layer of (1-based) layer `layer`."""
        inv_sqrt_l = 1.0 / math.sqrt(layer)
        norm_in = {
            None: lambda: nn.Identity(),
            "rms": lambda: RMSNorm(dim, eps),
            "scaled": lambda: ScaledRMSNorm(dim, eps, inv_sqrt_l),
            "gain": lambda: RMSNorm(dim, eps, init_gain=inv_sqrt_l),
        }[self.norm_in]()
        return {
            "norm_in": norm_in,
            "norm_branch": RMSNorm(dim, eps) if self.norm_branch else nn.Identity(),
            "norm_out": RMSNorm(dim, eps) if self.norm_out else nn.Identity(),
        }


def placement(name: str, num_layers: int) -> Placement:
    """Resolve a placement name (config.NORMS) into its Placement; ConfigError naming the choices if unknown."""
    L = num_layers
    table = {
        "pre": Placement("pre", "rms", False, False, 1.0),
        "post": Placement("post", None, False, True, 1.0),
        "sandwich": Placement("sandwich", "rms", True, False, 1.0),
        "deepnorm": Placement("deepnorm", None, False, True, (2.0 * L) ** 0.25),
        "lns": Placement("lns", "scaled", False, False, 1.0),
        "lns-gain": Placement("lns-gain", "gain", False, False, 1.0),
    }
    if name not in table:
        raise unknown_name("norm", name, PLACEMENTS, key="model.norm")
    return table[name]
