"""Named presets: model scales, the paper's seven methods, and the paper's training recipe.

Pure data and small pure functions: no torch, no config classes, so every other layer may read it.

Scale presets reproduce the official ProRes configs (LLaMA-style, vocabulary 32000, untied head);
their parameter counts are checked against the paper's table in tests/test_presets.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    """A model scale: its architecture (the ModelConfig fields it fills), and what the paper says of it."""

    arch: dict  # d_model, n_layers, n_heads, ffn_hidden, vocab_size, seq_len
    label: str  # as the paper's tables print it ('1.3B'); a CPU preset keeps its name
    official_params: float | None = None  # parameter count of the official config (paper README §2)
    paper_lr: float | None = None  # the learning rate the paper searched for it (Appendix A; recipe: paper)


@dataclass(frozen=True)
class Method:
    """One of the paper's seven methods: the norm placement and init it fixes, and how the paper names it."""

    norm: str  # a config.Norm placement
    init: str  # a config.Init
    label: str  # its label in the paper's tables (paper_figures line runs up with them by it)
    table_column: str | None = None  # its column in Table 6 (paper_figures/reference), if it has one


def _arch(d_model: int, n_layers: int, n_heads: int, ffn_hidden: int, vocab_size: int = 32000,
          seq_len: int = 1024) -> dict:
    return dict(d_model=d_model, n_layers=n_layers, n_heads=n_heads, ffn_hidden=ffn_hidden, vocab_size=vocab_size,
                seq_len=seq_len)


# d_model, n_layers, n_heads, ffn_hidden (paper README §2), vocabulary 32000 and seq_len 1024 unless noted;
# parameter counts of the official configs (README §2); searched learning rates (Appendix A: the 71M width at
# every depth shares one).
SCALES: dict[str, Scale] = {
    "71m": Scale(_arch(512, 12, 8, 1368), "71M", 70.6e6, 2e-3),
    **{f"71m-{n}l": Scale(_arch(512, n, 8, 1368), f"71M-{n}L", p, 2e-3)
       for n, p in ((24, 108e6), (48, 184e6), (72, 260e6), (96, 335e6), (120, 411e6))},
    "130m": Scale(_arch(768, 12, 12, 2048), "130M", 134.1e6, 2e-3),
    "350m": Scale(_arch(1024, 24, 16, 2736), "350M", 368.0e6, 1e-3),
    "1.3b": Scale(_arch(2048, 24, 32, 5632), "1.3B", 1.364e9, 6e-4),
    "3b": Scale(_arch(2560, 32, 32, 6848), "3B", 2.69e9),
    "7b": Scale(_arch(4096, 32, 32, 11008), "7B", 6.74e9, 3e-4),
    # CPU presets: small enough to train for a few hundred steps on 2 cores in minutes.
    # Their vocabulary matches the default byte-level BPE trained on the bundled corpus.
    "tiny": Scale(_arch(64, 4, 4, 172, vocab_size=2048, seq_len=128), "tiny"),
    "tiny-12l": Scale(_arch(64, 12, 4, 172, vocab_size=2048, seq_len=128), "tiny-12l"),
    "small": Scale(_arch(128, 6, 4, 344, vocab_size=4096, seq_len=256), "small"),
}

# The paper's seven methods, in the order of its Table 2.
METHODS: dict[str, Method] = {
    "pre-ln": Method("pre", "normal", "Pre-LN", "pre_ln"),
    "pre-ln-ds-init": Method("pre", "ds-init", "Pre-LN (DS-Init)"),
    "pre-ln-scaled-init": Method("pre", "scaled", "Pre-LN (Scaled Init)"),
    "sandwich-ln": Method("sandwich", "normal", "Sandwich-LN", "sandwich_ln"),
    "lns": Method("lns", "normal", "LayerNorm Scaling"),
    "post-ln": Method("post", "normal", "Post-LN", "post_ln"),
    "deepnorm": Method("deepnorm", "deepnorm", "DeepNorm"),
}

# ---- the paper's training recipe (paper README §3, Appendix A) ------------------------------------
# The methods that needed another learning rate than their scale's (Scale.paper_lr).
PAPER_LR_EXCEPTIONS = {
    ("130m", "post-ln"): 1e-3,
    ("130m", "deepnorm"): 1.5e-3,
    ("350m", "post-ln"): 5e-4,
    ("1.3b", "post-ln"): 3e-4,
    ("1.3b", "deepnorm"): 3e-4,
}
PAPER_LR_WARMUP_STEPS = 2000
# The paper's init: every weight from a truncated N(0, 0.02²), "following OLMo 2". The paper gives no bounds;
# OLMo 2's code (OLMo-core InitMethod.normal) truncates at ±3·std, so we do too. (The official ProRes code draws
# untruncated normals; at ±3·std only 0.27% of draws are cut and the std shrinks by 1.3%.)
TRUNC_NORMAL_BOUND = 3.0
# Weight-decay groups of the official code (torchrun_main.py: no_decay = ["bias", "layernorm.weight",
# "embed_tokens"]): embedding and per-layer norm gains undecayed; the final norm ("model.norm") and the head decayed.
PAPER_DECAY_GROUPS = "official"
# Post-LN and DeepNorm warm the learning rate up over 10% of training instead of 2000 steps.
PAPER_LONG_LR_WARMUP_METHODS = ("post-ln", "deepnorm")
PAPER_LONG_LR_WARMUP_FRACTION = 0.1


def paper_recipe(method: str | None, scale: str | None) -> dict:
    """The paper's recipe for (method, scale), as a partial config: {'model': {'init_truncation': 3.0},
    'optim': {'lr': ..., 'warmup_steps' | 'warmup_fraction': ..., 'decay_groups': 'official'}}.

    Holds only what the paper fixes; scales the paper did not train (CPU presets) get no learning rate.
    """
    optim: dict = {"decay_groups": PAPER_DECAY_GROUPS}
    paper_lr = SCALES[scale].paper_lr if scale in SCALES else None
    if paper_lr is not None:
        optim["lr"] = PAPER_LR_EXCEPTIONS.get((scale, method), paper_lr)
    if method in PAPER_LONG_LR_WARMUP_METHODS:
        optim["warmup_fraction"] = PAPER_LONG_LR_WARMUP_FRACTION
    else:
        optim["warmup_steps"] = PAPER_LR_WARMUP_STEPS
    return {"model": {"init_truncation": TRUNC_NORMAL_BOUND}, "optim": optim}


def cpu_recipe(method: str | None, scale: str | None) -> dict:
    """The paper's recipe shrunk for CPU runs of a few hundred steps: LR warmup in fractions of the run."""
    lr = 1e-3 if method in PAPER_LONG_LR_WARMUP_METHODS else 3e-3
    frac = PAPER_LONG_LR_WARMUP_FRACTION if method in PAPER_LONG_LR_WARMUP_METHODS else 0.05
    return {"optim": {"lr": lr, "warmup_fraction": frac}}


# A recipe: (method, scale) -> a partial config {section: {key: value}} that fills what the config leaves unset
# (study.config.layered). Its warmup keys count as one choice: an explicit warmup_steps or warmup_fraction in the
# config keeps both of the recipe's out.
RECIPES = {"paper": paper_recipe, "cpu": cpu_recipe}
