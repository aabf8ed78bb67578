"""The LLaMA-style decoder: token embedding -> L Blocks -> final RMSNorm -> untied head.

The final RMSNorm is kept for every placement, Post-LN and DeepNorm included: the official (transformers 4.31
LLaMA-based) code keeps `model.norm` whatever NORM_TYPE is, so a Post-LN model normalises the last layer's
output twice. We follow it so that parameter counts and behaviour match the official runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from study.model.blocks import Block, Rotary
from study.model.init import check_init, init_weights
from study.model.norms import RMSNorm, placement


class Transformer(nn.Module):
    def __init__(self, cfg):
        """`cfg` is a study.config.ModelConfig. Weights are left at torch defaults: build_model initialises."""
        super().__init__()
        self.cfg = cfg
        place = placement(cfg.norm, cfg.n_layers)
        self.placement = place.name
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.rotary = Rotary(cfg.d_model // cfg.n_heads, cfg.seq_len, cfg.rope_theta)
        self.layers = nn.ModuleList(
            Block(l, cfg.d_model, cfg.n_heads, cfg.ffn_hidden, cfg.norm_eps, place)
            for l in range(1, cfg.n_layers + 1)
        )
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)  # kept for every placement (see module docstring)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """LongTensor [B, S] -> logits [B, S, V]."""
        x = self.embed(input_ids)
        cos, sin = self.rotary(input_ids.shape[1])
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.head(self.norm(x))

    # ---- ProRes multipliers -------------------------------------------------------------------------
    @torch.no_grad()
    def set_alphas(self, values: Sequence[float] | torch.Tensor) -> None:
        """Write alpha(l) for l = 1..L in place into each layer's fp32 0-dim buffer (no new tensors, so a
        compiled model keeps its graph)."""
        values = values.tolist() if hasattr(values, "tolist") else list(values)
        if len(values) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} alphas, got {len(values)}")
        for layer, value in zip(self.layers, values, strict=True):
            layer.residual.alpha.fill_(float(value))

    def alphas(self) -> torch.Tensor:
        """Current alpha per layer: fp32 [L] on the model's device."""
        return torch.stack([layer.residual.alpha.detach() for layer in self.layers]).float()

    # ---- probes (Figures 3 and 4) -------------------------------------------------------------------
    @torch.no_grad()
    def probe(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-layer statistics on a probe batch, in eval mode without gradients (CPU fp32 tensors).

        act_norm[l]          mean over the N = B·S tokens of ||layer l output||₂
        branch_norm_attn[l]  same for the attention branch output h (the tensor alpha multiplies)
        branch_norm_ffn[l]   same for the FFN branch output
        branch               [L, N, 2d]: attention h ‖ FFN h for every probe token
        """
        was_training = self.training
        self.eval()
        captured: dict[tuple[int, str], torch.Tensor] = {}

        def keep(i: int, which: str):
            def hook(_module, _inputs, output):
                captured[(i, which)] = output.detach().float().reshape(-1, output.shape[-1]).cpu()
            return hook

        handles = []
        for i, layer in enumerate(self.layers):
            handles.append(layer.attn.norm_branch.register_forward_hook(keep(i, "attn")))
            handles.append(layer.ffn.norm_branch.register_forward_hook(keep(i, "ffn")))
        try:
            x = self.embed(input_ids)
            cos, sin = self.rotary(input_ids.shape[1])
            act_norm = []
            for layer in self.layers:  # explicit loop: no head, no change to the hot forward
                x = layer(x, cos, sin)
                act_norm.append(x.float().norm(dim=-1).mean().cpu())
        finally:
            for h in handles:
                h.remove()
            self.train(was_training)
        L = len(self.layers)
        attn = torch.stack([captured[(i, "attn")] for i in range(L)])
        ffn = torch.stack([captured[(i, "ffn")] for i in range(L)])
        return {
            "act_norm": torch.stack(act_norm),
            "branch_norm_attn": attn.norm(dim=-1).mean(dim=1),
            "branch_norm_ffn": ffn.norm(dim=-1).mean(dim=1),
            "branch": torch.cat([attn, ffn], dim=-1),
        }

    def init_weights(self) -> None:
        """(Re)initialise every parameter per self.cfg (see study.model.init) and reset alpha to 1."""
        init_weights(self, self.cfg)


def build_model(cfg, *, device: torch.device | str | None = None) -> Transformer:
    """Transformer for `cfg` (ModelConfig), initialised per cfg.init with the torch default RNG (caller seeds).

    alpha starts at 1 (the plain architecture); the trainer sets alpha(·, 0) before the first forward.
    """
    check_init(cfg.init)
    placement(cfg.norm, cfg.n_layers)  # unknown norm -> ConfigError before allocating anything
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = Transformer(cfg)
    if str(device) != "meta":
        model.init_weights()
    return model

