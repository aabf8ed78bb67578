"""Named presets: model scales, the paper's seven methods, and the paper's training recipe.

Pure data and small pure functions: no torch, no config classes, so every other layer may read it.

Scale presets reproduce the official ProRes configs (LLaMA-style, vocabulary 32000, untied head);
their parameter counts are checked against the paper's table in tests/test_presets.py.
"""

from __future__ import annotations

# d_model, n_layers, n_heads, ffn_hidden (paper README §2). vocab 32000 and seq_len 1024 unless noted.
_PAPER = dict(vocab_size=32000, seq_len=1024)
SCALES: dict[str, dict] = {
    "71m": dict(d_model=512, n_layers=12, n_heads=8, ffn_hidden=1368, **_PAPER),
    **{
        f"71m-{n}l": dict(d_model=512, n_layers=n, n_heads=8, ffn_hidden=1368, **_PAPER)
        for n in (24, 48, 72, 96, 120)
    },
    "130m": dict(d_model=768, n_layers=12, n_heads=12, ffn_hidden=2048, **_PAPER),
    "350m": dict(d_model=1024, n_layers=24, n_heads=16, ffn_hidden=2736, **_PAPER),
    "1.3b": dict(d_model=2048, n_layers=24, n_heads=32, ffn_hidden=5632, **_PAPER),
    "3b": dict(d_model=2560, n_layers=32, n_heads=32, ffn_hidden=6848, **_PAPER),
    "7b": dict(d_model=4096, n_layers=32, n_heads=32, ffn_hidden=11008, **_PAPER),
    # CPU presets: small enough to train for a few hundred steps on 2 cores in minutes.
    # Their vocabulary matches the default byte-level BPE trained on the bundled corpus.
    "tiny": dict(d_model=64, n_layers=4, n_heads=4, ffn_hidden=172, vocab_size=2048, seq_len=128),
    "tiny-12l": dict(d_model=64, n_layers=12, n_heads=4, ffn_hidden=172, vocab_size=2048, seq_len=128),
    "small": dict(d_model=128, n_layers=6, n_heads=4, ffn_hidden=344, vocab_size=4096, seq_len=256),
}

# Parameter counts of the official configs (paper README §2), for tests and `study info`.
OFFICIAL_PARAMS: dict[str, float] = {
    "71m": 70.6e6, "71m-24l": 108e6, "71m-48l": 184e6, "71m-72l": 260e6, "71m-96l": 335e6,
    "71m-120l": 411e6, "130m": 134.1e6, "350m": 368.0e6, "1.3b": 1.364e9, "3b": 2.69e9, "7b": 6.74e9,
}

# The paper's seven methods: each fixes the norm placement and the init of the model.
METHODS: dict[str, dict] = {
    "pre-ln": dict(norm="pre", init="normal"),
    "pre-ln-ds-init": dict(norm="pre", init="ds-init"),
    "pre-ln-scaled-init": dict(norm="pre", init="scaled"),
    "sandwich-ln": dict(norm="sandwich", init="normal"),
    "lns": dict(norm="lns", init="normal"),
    "post-ln": dict(norm="post", init="normal"),
    "deepnorm": dict(norm="deepnorm", init="deepnorm"),
}
# The label each method carries in the paper's tables (paper_figures use it to line runs up with them).
METHOD_LABELS: dict[str, str] = {
    "pre-ln": "Pre-LN",
    "pre-ln-ds-init": "Pre-LN (DS-Init)",
    "pre-ln-scaled-init": "Pre-LN (Scaled Init)",
    "sandwich-ln": "Sandwich-LN",
    "lns": "LayerNorm Scaling",
    "post-ln": "Post-LN",
    "deepnorm": "DeepNorm",
}

# ---- the paper's training recipe (paper README §3, Appendix A) ------------------------------------
# Searched learning rate per scale, and the methods that needed a different one.
PAPER_LR = {"130m": 2e-3, "350m": 1e-3, "1.3b": 6e-4, "7b": 3e-4, "71m-depth": 2e-3}
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


def _scale_family(scale: str | None) -> str | None:
    if scale and scale.startswith("71m"):
        return "71m-depth"
    return scale


def paper_recipe(method: str | None, scale: str | None) -> dict:
    """The paper's recipe for (method, scale), as a partial config: {'model': {'init_truncation': 3.0},
    'optim': {'lr': ..., 'warmup_steps' | 'warmup_fraction': ..., 'decay_groups': 'official'}}.

    Holds only what the paper fixes; scales the paper did not train (CPU presets) get no learning rate.
    """
    optim: dict = {"decay_groups": PAPER_DECAY_GROUPS}
    family = _scale_family(scale)
    if family in PAPER_LR:
        optim["lr"] = PAPER_LR_EXCEPTIONS.get((family, method), PAPER_LR[family])
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
