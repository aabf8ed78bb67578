"""The model: a LLaMA-style decoder for every norm placement × init × ProRes schedule.

    from study.model import build_model, info, memory_estimate, init_fingerprint

norms.py      RMSNorm and the placement table (which norms exist around each residual sub-layer)
blocks.py     Residual (owns alpha), attention with RoPE, SwiGLU, Sublayer, Block
transformer.py  Transformer (set_alphas, alphas, probe) and build_model
init.py       the inits of the paper and the official code
info.py       parameter / FLOPs / memory arithmetic and init fingerprints
"""

from study.model.info import info, init_fingerprint, memory_estimate
from study.model.transformer import Transformer, build_model

__all__ = ["Transformer", "build_model", "info", "init_fingerprint", "memory_estimate"]
