"""Scale presets: parameter counts equal the official configs' (paper README §2), and the arithmetic of
study.model.info equals an instantiated model's count."""

from __future__ import annotations

import pytest
import torch

from study import config, presets
from study.model import build_model, info

# The counts as the paper prints them; the tolerance is half a unit of the last printed digit.
PRINTED = {
    "71m": "70.6M", "71m-24l": "108M", "71m-48l": "184M", "71m-72l": "260M", "71m-96l": "335M",
    "71m-120l": "411M", "130m": "134.1M", "350m": "368.0M", "1.3b": "1.364B", "3b": "2.69B", "7b": "6.74B",
}


def _parse(printed: str) -> tuple[float, float]:
    """'70.6M' -> (70.6e6, 0.05e6): value and half a unit in the last printed place."""
    unit = {"M": 1e6, "B": 1e9}[printed[-1]]
    digits = printed[:-1]
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    return float(digits) * unit, 0.5 * 10.0 ** -decimals * unit


def model_cfg(scale: str, **kw) -> config.ModelConfig:
    return config.resolve({"model": {"scale": scale, **kw}}).model


def test_every_paper_scale_has_an_official_count():
    official = {name: s.official_params for name, s in presets.SCALES.items() if s.official_params is not None}
    assert set(PRINTED) == set(official)
    assert set(PRINTED) <= set(presets.SCALES)
    for scale, printed in PRINTED.items():
        value, _ = _parse(printed)
        assert official[scale] == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("scale", list(PRINTED))
def test_params_equal_the_official_count_to_printed_precision(scale):
    official, half_unit = _parse(PRINTED[scale])
    params = info(model_cfg(scale))["params"]
    assert abs(params - official) <= half_unit, f"{scale}: {params} vs {PRINTED[scale]}"
    if official < 1e9 and "." in PRINTED[scale]:  # the 0.1M-precision ones: within 0.1M
        assert abs(params - official) <= 0.1e6


def test_known_exact_counts():
    # 71M: 2·32000·512 + 12·(4·512² + 3·512·1368 + 2·512) + 512
    assert info(model_cfg("71m"))["params"] == 70_578_688
    assert info(model_cfg("130m"))["params"] == 134_105_856
    assert info(model_cfg("7b"))["params"] == 6_738_415_616


@pytest.mark.parametrize("norm", config.NORMS)
@pytest.mark.parametrize("scale", ["tiny", "small"])
def test_info_matches_instantiated_model(scale, norm):
    cfg = model_cfg(scale, norm=norm)
    model = build_model(cfg)
    counted = sum(p.numel() for p in model.parameters())
    got = info(cfg)
    assert got["params"] == counted
    V, d = cfg.vocab_size, cfg.d_model
    assert got["non_embedding_params"] == counted - model.embed.weight.numel() - model.head.weight.numel()
    assert got["non_embedding_params"] == counted - 2 * V * d
    if norm != "sandwich":  # sandwich adds the two branch norms, 2·d per layer
        assert got["params"] == info(model_cfg(scale))["params"]
    else:
        assert got["params"] == info(model_cfg(scale))["params"] + 2 * d * cfg.n_layers


def test_flops_formula_is_palm():
    cfg = model_cfg("130m")
    got = info(cfg)
    N = got["params"] - cfg.vocab_size * cfg.d_model  # without the input embedding
    assert got["flops_per_token"] == 6 * N + 12 * cfg.n_layers * cfg.d_model * cfg.seq_len
    assert "PaLM" in got["flops_formula"] and "6*N + 12*L*d*S" in got["flops_formula"]
    assert (got["layers"], got["d_model"], got["seq_len"]) == (12, 768, 1024)


def test_methods_fix_norm_and_init():
    assert len(presets.METHODS) == 7
    for method, fixed in presets.METHODS.items():
        cfg = config.resolve({"method": method, "model": {"scale": "tiny"}}).model
        assert (cfg.norm, cfg.init) == (fixed.norm, fixed.init)
        torch.manual_seed(0)
        build_model(cfg)  # every method builds
