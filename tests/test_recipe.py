"""The paper's recipe: truncated-normal init (bounds and std) and the official code's weight-decay groups."""

from __future__ import annotations

import math

import pytest
import torch

from study import config
from study.model import build_model
from study.train.optim import decays, param_groups, param_kind


# std of N(0, 1) truncated at ±k: sqrt(1 - 2k·phi(k) / (2·Phi(k) - 1))
def _trunc_std_factor(k: float) -> float:
    phi = math.exp(-k * k / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(k / math.sqrt(2))
    return math.sqrt(1 - 2 * k * phi / mass)


WIDE = dict(vocab_size=1024, d_model=256, n_layers=4, n_heads=4, ffn_hidden=512, seq_len=32)


pytestmark = pytest.mark.usefixtures("one_thread")


def build(raw: dict):
    cfg = config.resolve(raw)
    torch.manual_seed(0)
    return cfg, build_model(cfg.model)


def test_paper_recipe_sets_truncation_and_decay_groups_and_lets_the_user_change_them():
    cfg = config.resolve({"recipe": "paper", "method": "pre-ln", "model": WIDE})
    assert cfg.model.init_truncation == 3.0 and cfg.optim.decay_groups == "official"
    cfg = config.resolve({"recipe": "paper", "method": "pre-ln", "model": {**WIDE, "init_truncation": 2.0},
                          "optim": {"decay_groups": "matrices"}})
    assert cfg.model.init_truncation == 2.0 and cfg.optim.decay_groups == "matrices"
    cpu = config.resolve({"recipe": "cpu", "method": "pre-ln", "model": WIDE})
    assert cpu.model.init_truncation is None and cpu.optim.decay_groups == "matrices"  # CPU defaults unchanged
    with pytest.raises(config.ConfigError, match="init_truncation"):
        config.resolve({"model": {**WIDE, "init_truncation": 0}})
    with pytest.raises(config.ConfigError, match="decay"):
        config.resolve({"optim": {"decay_groups": "everything"}})


def test_a_method_combines_with_trunc_normal():
    """'trunc-normal' is the normal init truncated at ±3 std, so a method preset (init: normal) accepts it."""
    cfg = config.resolve({"method": "pre-ln", "model": {**WIDE, "init": "trunc-normal"}})
    assert cfg.model.init == "normal" and cfg.model.init_truncation == 3.0


@pytest.mark.parametrize("k", [3.0, 2.0])
def test_truncated_init_bounds_and_std(k):
    cfg, model = build({"recipe": "paper", "method": "pre-ln", "model": {**WIDE, "init_truncation": k}})
    factor = _trunc_std_factor(k)
    for name, p in model.named_parameters():
        if p.dim() != 2:
            continue
        w = p.detach().double()
        assert w.abs().max().item() <= k * 0.02 * (1 + 1e-6), name
        # >= 65k draws per matrix: the sampling error of the std is < 0.6%, the tolerance 3%
        assert w.std().item() == pytest.approx(0.02 * factor, rel=0.03), name
        # draws do reach near the bound (a truncation at a tighter bound would fail this)
        assert w.abs().max().item() >= 0.95 * k * 0.02, name


def test_truncated_init_keeps_each_methods_scaling():
    cfg, model = build({"recipe": "paper", "method": "pre-ln-ds-init", "model": WIDE})
    factor = _trunc_std_factor(3.0)
    for l, layer in enumerate(model.layers, 1):
        std = 0.02 / math.sqrt(2 * l)
        for w in (layer.attn.branch.o_proj.weight, layer.ffn.branch.down_proj.weight):
            assert w.abs().max().item() <= 3 * std * (1 + 1e-6)
            assert w.detach().double().std().item() == pytest.approx(std * factor, rel=0.03)
    cfg, model = build({"recipe": "paper", "method": "deepnorm", "model": WIDE})
    b = (8 * 4) ** -0.25
    v = model.layers[0].attn.branch.v_proj.weight
    xavier = b * math.sqrt(2.0 / (256 + 256))
    assert v.abs().max().item() <= 3 * xavier * (1 + 1e-6)
    assert v.detach().double().std().item() == pytest.approx(xavier * factor, rel=0.03)


def test_untruncated_default_is_unchanged():
    _, model = build({"method": "pre-ln", "model": WIDE})
    w = model.layers[0].ffn.branch.up_proj.weight.detach().double()
    assert w.std().item() == pytest.approx(0.02, rel=0.03)
    assert w.abs().max().item() > 3 * 0.02  # 131k normal draws: some beyond 3 std (P(none) ~ 1e-154)


@pytest.mark.parametrize("name, ndim, kind, official, matrices", [
    ("embed.weight", 2, "embedding", False, True),
    ("head.weight", 2, "head", True, True),
    ("norm.weight", 1, "final_norm", True, False),
    ("layers.0.attn.norm_in.weight", 1, "layer_norm", False, False),
    ("layers.3.ffn.norm_out.weight", 1, "layer_norm", False, False),
    ("layers.2.attn.norm_branch.weight", 1, "layer_norm", False, False),
    ("layers.0.attn.branch.q_proj.weight", 2, "matrix", True, True),
    ("layers.1.ffn.branch.down_proj.weight", 2, "matrix", True, True),
    ("_orig_mod.embed.weight", 2, "embedding", False, True),
    ("_orig_mod.layers.0._checkpoint_wrapped_module.ffn.norm_in.weight", 1, "layer_norm", False, False),
    ("module.norm.weight", 1, "final_norm", True, False),
])
def test_decay_groups_by_parameter_name(name, ndim, kind, official, matrices):
    assert param_kind(name, ndim) == kind
    assert decays(name, ndim, "official") is official
    assert decays(name, ndim, "matrices") is matrices


@pytest.mark.parametrize("norm", ["pre", "post", "sandwich", "lns-gain"])
def test_official_groups_on_a_real_model(norm):
    cfg, model = build({"recipe": "paper", "model": {**WIDE, "norm": norm}})
    groups = {g["name"]: {id(p) for p in g["params"]} for g in param_groups(model, 0.1, cfg.optim.decay_groups)}
    names = dict(model.named_parameters())
    assert id(names["embed.weight"]) in groups["no_decay"]
    assert id(names["norm.weight"]) in groups["decay"] and id(names["head.weight"]) in groups["decay"]
    layer_norms = [n for n in names if n.startswith("layers.") and "norm" in n]
    assert layer_norms and all(id(names[n]) in groups["no_decay"] for n in layer_norms)
    linears = [n for n in names if n.startswith("layers.") and names[n].dim() == 2]
    assert linears and all(id(names[n]) in groups["decay"] for n in linears)
    assert len(groups["decay"]) + len(groups["no_decay"]) == len(names)
