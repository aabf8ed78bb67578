"""A ProRes study model as a transformers model: `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`.

`study export` copies this file, unchanged, beside the weights of every export that plain `LlamaForCausalLM`
cannot express: every norm placement but Pre-LN, and any model whose ProRes multipliers alpha are not all 1
(exported mid-warmup). It needs only torch and transformers: it is a copy
of the study package's decoder (study/model/), not an import of it, so the export works where the study
package is not installed. Parameter names are the study's own, so its checkpoints load unchanged.

Each layer l (1-based) of L, for each of its two sub-layers F (attention, then SwiGLU), with the layer's one
alpha (a weight-file buffer, as trained) and the placement's norms N:

    h   = norm_branch(F(norm_in(x)))
    out = norm_out(c·x + alpha·h)

Which slots hold a norm, and c, are config.json's `placement`: the exported model's row of the study's placement
table (study/model/norms.py), written by `study export`, so this file needs no copy of that table:

    norm_in      null (none), "rms" (N), "scaled" (N times a fixed 1/sqrt(l)) or "gain" (N with its own gain)
    norm_branch  true / false: N on the branch output
    norm_out     true / false: N after the residual add
    c            the constant of the residual add (DeepNorm's (2L)^(1/4), else 1)

then a final RMSNorm (every placement) and an untied head. Attention is causal with RoPE (rotate-half); no KV
cache, so generation recomputes the prefix (fine for scoring; slow for long generations).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

NORM_IN = (None, "rms", "scaled", "gain")  # the kinds of norm_in a placement row may name


class ProResConfig(PretrainedConfig):
    model_type = "prores"

    def __init__(self, vocab_size=32000, hidden_size=512, intermediate_size=1368, num_hidden_layers=12,
                 num_attention_heads=8, max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=10000.0,
                 norm=None, placement=None, tie_word_embeddings=False, **kwargs):
        # transformers builds a config without arguments to find a saved config's non-default keys: only the model
        # needs a placement (ProResForCausalLM refuses a config without one)
        if placement is not None and (placement.get("norm_in") not in NORM_IN or not isinstance(
                placement.get("norm_branch"), bool) or not isinstance(placement.get("norm_out"), bool)
                or not isinstance(placement.get("c"), (int, float))):
            raise ValueError(f"placement {placement!r} is not a row of the study's placement table: norm_in one "
                             f"of {NORM_IN}, norm_branch and norm_out booleans, c a number")
        self.vocab_size, self.hidden_size, self.intermediate_size = vocab_size, hidden_size, intermediate_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps, self.rope_theta = rms_norm_eps, rope_theta
        self.norm, self.placement = norm, placement  # norm: the placement's name, for the reader
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * g, in fp32, returned in the input's dtype; times `scale` (LNS) if given."""

    def __init__(self, dim: int, eps: float, scale: float | None = None):
        super().__init__()
        self.eps, self.scale = eps, scale
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        y = y.to(x.dtype) * self.weight.to(x.dtype)
        return y if self.scale is None else y * self.scale


class Residual(nn.Module):
    """c·x + alpha·h; alpha is the layer's ProRes multiplier (fp32, 0-dim), c is DeepNorm's constant (else 1)."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c
        self.register_buffer("alpha", torch.ones((), dtype=torch.float32))

    def forward(self, x, h):
        return torch.addcmul(x if self.c == 1.0 else x * self.c, self.alpha, h)

    def _apply(self, fn, recurse=True):  # model.to(bfloat16) must not cast alpha
        super()._apply(fn, recurse)
        if self.alpha.dtype != torch.float32:
            self.alpha = self.alpha.float()
        return self


def _rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.q_proj, self.k_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.v_proj, self.o_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin, mask):
        B, S, D = x.shape
        split = lambda t: t.view(B, S, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, S, D))


class SwiGLU(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x, *_):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Sublayer(nn.Module):
    def __init__(self, branch: nn.Module, placement: dict, d: int, eps: float, layer: int):
        super().__init__()
        self.branch = branch
        self.norm_in = {None: nn.Identity, "rms": lambda: RMSNorm(d, eps), "gain": lambda: RMSNorm(d, eps),
                        "scaled": lambda: RMSNorm(d, eps, scale=1.0 / math.sqrt(layer))}[placement["norm_in"]]()
        self.norm_branch = RMSNorm(d, eps) if placement["norm_branch"] else nn.Identity()
        self.norm_out = RMSNorm(d, eps) if placement["norm_out"] else nn.Identity()

    def forward(self, x, residual, *args):
        return self.norm_out(residual(x, self.norm_branch(self.branch(self.norm_in(x), *args))))


class Block(nn.Module):
    def __init__(self, config: ProResConfig, layer: int):
        super().__init__()
        d, eps, placement = config.hidden_size, config.rms_norm_eps, config.placement
        self.residual = Residual(float(placement["c"]))
        self.attn = Sublayer(Attention(d, config.num_attention_heads), placement, d, eps, layer)
        self.ffn = Sublayer(SwiGLU(d, config.intermediate_size), placement, d, eps, layer)

    def forward(self, x, cos, sin, mask):
        return self.ffn(self.attn(x, self.residual, cos, sin, mask), self.residual)


class ProResForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = ProResConfig
    base_model_prefix = "prores"
    _no_split_modules = ["Block"]
    _supports_sdpa = True

    def __init__(self, config: ProResConfig):
        if config.placement is None:
            raise ValueError("config.json has no `placement` (the row `study export` writes); export the run again")
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, l) for l in range(1, config.num_hidden_layers + 1))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._rope_cache: dict = {}
        self.post_init()

    def _init_weights(self, module):  # only for weights missing from a checkpoint; exports hold every one
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, Residual):
            module.alpha.fill_(1.0)

    def get_input_embeddings(self):
        return self.embed

    def set_input_embeddings(self, value):
        self.embed = value

    def get_output_embeddings(self):
        return self.head

    def set_output_embeddings(self, value):
        self.head = value

    def _rotary(self, seq_len: int, device):
        """cos, sin [S, head_dim], computed on the CPU in fp32 as the study does, cached per device and length."""
        key = (str(device), seq_len)
        if key not in self._rope_cache:
            hd = self.config.hidden_size // self.config.num_attention_heads
            inv_freq = 1.0 / self.config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
            freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
            emb = torch.cat([freqs, freqs], dim=-1)
            self._rope_cache[key] = (emb.cos().to(device), emb.sin().to(device))
        return self._rope_cache[key]

    def forward(self, input_ids=None, attention_mask=None, labels=None, inputs_embeds=None, return_dict=None,
                **kwargs):
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        S = x.shape[1]
        cos, sin = self._rotary(S, x.device)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):  # padding: causal AND key is real
            causal = torch.ones(S, S, dtype=torch.bool, device=x.device).tril()
            mask = causal[None, None] & attention_mask[:, None, None, :].bool()
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        logits = self.head(self.norm(x))
        loss = None
        if labels is not None:  # next-token loss, as transformers' causal LMs compute it
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids, "attention_mask": attention_mask}  # no cache: the whole prefix each step
