"""The decoder: every placement against its formula, ProRes alpha semantics, inits, probes, dtype, compile."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from study import config, prores
from study.errors import ConfigError
from study.model import build_model, init_fingerprint
from study.model.blocks import Residual

NORMS = list(config.NORMS)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(**kw) -> config.ModelConfig:
    base = dict(vocab_size=32, d_model=32, n_layers=3, n_heads=2, ffn_hidden=64, seq_len=32)
    return config.resolve({"model": {**base, **kw}}).model


def make(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model(tiny_cfg(**kw))


# ---- a hand-written reference: the paper's formulas on the model's weights --------------------------------
def rms(x, w, eps):
    y = x.float()
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps)
    return y.to(x.dtype) * w.to(x.dtype)


def rope(x, theta, S):
    hd = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = torch.outer(torch.arange(S, dtype=torch.float32), inv)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    half = hd // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def attn_f(p, x, cfg):
    B, S, D = x.shape
    H = cfg.n_heads
    heads = lambda t: t.view(B, S, H, D // H).transpose(1, 2)  # noqa: E731
    q = rope(heads(F.linear(x, p.q_proj.weight)), cfg.rope_theta, S)
    k = rope(heads(F.linear(x, p.k_proj.weight)), cfg.rope_theta, S)
    v = heads(F.linear(x, p.v_proj.weight))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.linear(y.transpose(1, 2).reshape(B, S, D), p.o_proj.weight)


def ffn_f(p, x, cfg):
    return F.linear(F.silu(F.linear(x, p.gate_proj.weight)) * F.linear(x, p.up_proj.weight), p.down_proj.weight)


def reference(model, ids, alphas=None, trace=None):
    """Logits from the placement's formula (README §1), written without the model's modules."""
    cfg = model.cfg
    L, eps = cfg.n_layers, cfg.norm_eps
    x = F.embedding(ids, model.embed.weight)
    for i, layer in enumerate(model.layers):
        l = i + 1
        a = None if alphas is None else alphas[i]
        for sub, f in ((layer.attn, attn_f), (layer.ffn, ffn_f)):
            N = lambda t, norm: rms(t, norm.weight, eps)  # noqa: E731
            scale = lambda h, a=a: h if a is None else a * h  # noqa: E731
            if cfg.norm == "pre":
                h = f(sub.branch, N(x, sub.norm_in), cfg)
                x = x + scale(h)
            elif cfg.norm == "post":
                h = f(sub.branch, x, cfg)
                x = N(x + scale(h), sub.norm_out)
            elif cfg.norm == "sandwich":
                h = N(f(sub.branch, N(x, sub.norm_in), cfg), sub.norm_branch)
                x = x + scale(h)
            elif cfg.norm == "deepnorm":
                h = f(sub.branch, x, cfg)
                x = N((2 * L) ** 0.25 * x + scale(h), sub.norm_out)
            elif cfg.norm == "lns":
                h = f(sub.branch, N(x, sub.norm_in) / math.sqrt(l), cfg)
                x = x + scale(h)
            elif cfg.norm == "lns-gain":  # the learned gain carries the 1/sqrt(l)
                h = f(sub.branch, N(x, sub.norm_in), cfg)
                x = x + scale(h)
            if trace is not None:
                trace.setdefault(i, []).append(h)
        if trace is not None:
            trace[i].append(x)
    return F.linear(rms(x, model.norm.weight, eps), model.head.weight)


def ids_for(cfg, B=2, S=16, seed=1):
    return torch.randint(0, cfg.vocab_size, (B, S), generator=torch.Generator().manual_seed(seed))


# ---- formulas -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["pre", "post", "sandwich"])
def test_alpha_one_is_bit_identical_to_the_plain_architecture(norm):
    model = make(norm=norm)
    ids = ids_for(model.cfg)
    model.set_alphas(prores.alphas("none", 0, 3))
    with torch.no_grad():
        assert torch.equal(model(ids), reference(model, ids))
        # after a ProRes warmup has ended, alpha = 1 again: still the plain architecture, bit for bit
        model.set_alphas(prores.alphas("linear", 10, 3, 2))
        assert torch.equal(model(ids), reference(model, ids))


@pytest.mark.parametrize("norm", NORMS)
def test_every_placement_matches_its_formula_with_and_without_prores(norm):
    model = make(norm=norm)
    ids = ids_for(model.cfg)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), reference(model, ids), rtol=1e-5, atol=1e-5)
        alphas = [0.3, 0.55, 0.9]  # distinct per layer: each layer's one alpha scales both of its branches
        model.set_alphas(alphas)
        torch.testing.assert_close(model(ids), reference(model, ids, alphas), rtol=1e-5, atol=1e-5)
        # and alpha matters: the plain formula no longer matches
        assert not torch.allclose(model(ids), reference(model, ids), rtol=1e-3, atol=1e-3)


def test_deepnorm_and_lns_constants():
    dn = make(norm="deepnorm")
    assert all(layer.residual.c == pytest.approx((2 * 3) ** 0.25) for layer in dn.layers)
    lns = make(norm="lns")
    for l, layer in enumerate(lns.layers, 1):
        assert layer.attn.norm_in.scale == pytest.approx(1 / math.sqrt(l))
        assert torch.equal(layer.attn.norm_in.weight, torch.ones(32))  # fixed factor, gain stays 1
        assert layer.residual.c == 1.0
    gain = make(norm="lns-gain")
    for l, layer in enumerate(gain.layers, 1):
        for norm in (layer.attn.norm_in, layer.ffn.norm_in):
            torch.testing.assert_close(norm.weight.data, torch.full((32,), 1 / math.sqrt(l)))
    assert torch.equal(gain.norm.weight, torch.ones(32))
    # lns and lns-gain are the same function at init (same seed -> same weights apart from the gains)
    with torch.no_grad():
        ids = ids_for(lns.cfg)
        torch.testing.assert_close(lns(ids), gain(ids), rtol=1e-5, atol=1e-5)


def test_alpha_zero_makes_every_pre_ln_block_the_identity():
    model = make(norm="pre")
    ids = ids_for(model.cfg)
    model.set_alphas([0.0, 0.0, 0.0])
    with torch.no_grad():
        want = model.head(model.norm(model.embed(ids)))
        assert torch.equal(model(ids), want)


def test_alpha_zero_blocks_branch_gradients():
    model = make(norm="pre")
    ids = ids_for(model.cfg)
    model.set_alphas([0.0, 0.5, 0.0])
    F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    for i, layer in enumerate(model.layers):
        g = layer.attn.branch.o_proj.weight.grad
        assert (g.abs().max() == 0) == (i != 1)


# ---- training ---------------------------------------------------------------------------------------------
def learnable_batch(cfg, B=8, S=24, period=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    pattern = torch.randint(0, cfg.vocab_size, (B, period), generator=g)
    return pattern.repeat(1, S // period)


@pytest.mark.parametrize("ramp", [True, False], ids=["prores-linear", "alpha-1"])
@pytest.mark.parametrize("norm", NORMS)
def test_every_placement_trains(norm, ramp):
    model = make(norm=norm)
    L = model.cfg.n_layers
    data = learnable_batch(model.cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0)
    losses = []
    for step in range(30):
        alphas = prores.alphas("linear", step, L, 4) if ramp else prores.alphas("none", step, L)
        model.set_alphas(alphas)
        logits = model(data[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), data[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], losses
    assert model.alphas().tolist() == [1.0] * L  # linear with T=4 has ended by step 29


# ---- ProRes buffers -----------------------------------------------------------------------------------------
def test_set_alphas_writes_in_place_and_alphas_are_checkpointed():
    model = make()
    buffers = [layer.residual.alpha for layer in model.layers]
    ptrs = [b.data_ptr() for b in buffers]
    model.set_alphas([0.25, 0.5, 0.75])
    assert [layer.residual.alpha for layer in model.layers] == buffers  # same tensor objects
    assert [b.data_ptr() for b in buffers] == ptrs
    assert all(b.dim() == 0 and b.dtype == torch.float32 for b in buffers)
    got = model.alphas()
    assert got.dtype == torch.float32 and got.shape == (3,)
    assert got.tolist() == [0.25, 0.5, 0.75]

    state = model.state_dict()
    alpha_keys = sorted(k for k in state if k.endswith("alpha"))
    assert alpha_keys == [f"layers.{i}.residual.alpha" for i in range(3)]  # one alpha per layer
    assert state["layers.2.residual.alpha"].item() == 0.75
    other = make(seed=5)
    assert other.alphas().tolist() == [1.0, 1.0, 1.0]
    other.load_state_dict(state)
    assert other.alphas().tolist() == [0.25, 0.5, 0.75]

    import numpy as np
    model.set_alphas(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    model.set_alphas(np.array([0.1, 0.2, 0.3]))
    torch.testing.assert_close(model.alphas(), torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError):
        model.set_alphas([1.0, 1.0])


# ---- inits ------------------------------------------------------------------------------------------------
def wide(init: str, **kw):
    torch.manual_seed(0)
    return build_model(tiny_cfg(vocab_size=512, d_model=256, n_layers=4, n_heads=4, ffn_hidden=512,
                                init=init, **kw))


def std(w):
    return w.detach().float().std().item()


@pytest.mark.parametrize("init", ["scaled", "ds-init", "normal"])
def test_output_projection_std_per_layer(init):
    model = wide(init)
    L = 4
    for l, layer in enumerate(model.layers, 1):
        want = {"scaled": 0.02 / math.sqrt(2 * L), "ds-init": 0.02 / math.sqrt(2 * l), "normal": 0.02}[init]
        for w in (layer.attn.branch.o_proj.weight, layer.ffn.branch.down_proj.weight):
            assert std(w) == pytest.approx(want, rel=0.03)
            assert abs(w.mean().item()) < 0.1 * want
        for w in (layer.attn.branch.q_proj.weight, layer.ffn.branch.up_proj.weight):
            assert std(w) == pytest.approx(0.02, rel=0.03)
    assert std(model.head.weight) == pytest.approx(0.02, rel=0.03)
    assert std(model.embed.weight) == pytest.approx(0.02, rel=0.03)


def test_deepnorm_xavier_gains():
    model = wide("deepnorm", norm="deepnorm")
    b = (8 * 4) ** -0.25
    d, f = 256, 512
    xavier = lambda fan_in, fan_out, gain: gain * math.sqrt(2.0 / (fan_in + fan_out))  # noqa: E731
    for layer in model.layers:
        a, m = layer.attn.branch, layer.ffn.branch
        assert std(a.q_proj.weight) == pytest.approx(xavier(d, d, 1.0), rel=0.03)
        assert std(a.k_proj.weight) == pytest.approx(xavier(d, d, 1.0), rel=0.03)
        assert std(a.v_proj.weight) == pytest.approx(xavier(d, d, b), rel=0.03)
        assert std(a.o_proj.weight) == pytest.approx(xavier(d, d, b), rel=0.03)
        assert std(m.gate_proj.weight) == pytest.approx(xavier(d, f, b), rel=0.03)
        assert std(m.up_proj.weight) == pytest.approx(xavier(d, f, b), rel=0.03)
        assert std(m.down_proj.weight) == pytest.approx(xavier(f, d, b), rel=0.03)
    assert std(model.head.weight) == pytest.approx(0.02, rel=0.03)


def test_trunc_normal_and_embedding_rule():
    model = wide("trunc-normal", embed_std_rule="sqrt-d")
    for name, p in model.named_parameters():
        if p.dim() == 2 and name != "embed.weight":
            assert p.abs().max().item() <= 3 * 0.02 + 1e-7, name
            assert std(p) == pytest.approx(0.02 * 0.98658, rel=0.03), name  # std of N truncated at ±3σ
    e = 0.02 * math.sqrt(256)
    assert std(model.embed.weight) == pytest.approx(e * 0.98658, rel=0.03)
    assert model.embed.weight.abs().max().item() <= 3 * e + 1e-6
    assert std(wide("normal", embed_std_rule="sqrt-d").embed.weight) == pytest.approx(e, rel=0.03)


def test_norm_gains_start_at_one_and_fingerprint_follows_the_seed():
    model = make(norm="sandwich")
    for name, p in model.named_parameters():
        if p.dim() == 1:
            assert torch.equal(p, torch.ones_like(p)), name
    assert init_fingerprint(make(seed=0)) == init_fingerprint(make(seed=0))
    assert init_fingerprint(make(seed=0)) != init_fingerprint(make(seed=1))
    assert init_fingerprint(make(seed=0)) != init_fingerprint(make(seed=0, init="scaled"))
    fp = init_fingerprint(make())
    assert len(fp) == 16 and int(fp, 16) >= 0


def test_unknown_norm_or_init_is_a_config_error():
    good = tiny_cfg()
    for field, bad in (("norm", "peri"), ("init", "xavier")):
        cfg = config.ModelConfig(**{**config.to_dict(good), field: bad})
        with pytest.raises(ConfigError, match="valid choices") as err:
            build_model(cfg)
        assert bad in str(err.value)


# ---- probes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["pre", "sandwich", "post"])
def test_probe_shapes_and_values(norm):
    model = make(norm=norm)
    model.set_alphas([0.2, 0.6, 1.0])
    ids = ids_for(model.cfg, B=2, S=10)
    model.train()
    out = model.probe(ids)
    assert model.training  # mode restored
    L, N, d = 3, 20, 32
    assert out["act_norm"].shape == (L,) and out["branch_norm_attn"].shape == (L,)
    assert out["branch_norm_ffn"].shape == (L,) and out["branch"].shape == (L, N, 2 * d)
    assert all(not t.requires_grad and t.dtype == torch.float32 for t in out.values())
    trace = {}
    with torch.no_grad():
        reference(model, ids, [0.2, 0.6, 1.0], trace)
    for i in range(L):
        h_attn, h_ffn, x_out = (t.reshape(N, d) for t in trace[i])
        torch.testing.assert_close(out["branch"][i], torch.cat([h_attn, h_ffn], -1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out["act_norm"][i], x_out.norm(dim=-1).mean(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out["branch_norm_attn"][i], h_attn.norm(dim=-1).mean(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out["branch_norm_ffn"][i], h_ffn.norm(dim=-1).mean(), rtol=1e-5, atol=1e-6)
    # hooks are gone: a normal forward is unaffected and no handles remain
    assert all(not m._forward_hooks for m in model.modules())


# ---- dtypes -----------------------------------------------------------------------------------------------
def test_fp32_alpha_does_not_promote_bf16():
    res = Residual()
    res.alpha.fill_(0.5)
    x = torch.randn(2, 4, 8, dtype=torch.bfloat16)
    h = torch.randn(2, 4, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = res(x, h)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, x + 0.5 * h)

    model = make(norm="deepnorm").to(torch.bfloat16)  # pure bf16 (official code's mode)
    assert all(layer.residual.alpha.dtype == torch.float32 and layer.residual.alpha.dim() == 0
               for layer in model.layers)
    assert model.embed.weight.dtype == torch.bfloat16
    seen = []
    hooks = [layer.register_forward_hook(lambda m, i, o: seen.append(o.dtype)) for layer in model.layers]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model.set_alphas([0.3, 0.3, 0.3])
        logits = model(ids_for(model.cfg))
    for hk in hooks:
        hk.remove()
    assert seen == [torch.bfloat16] * 3 and logits.dtype == torch.bfloat16


def test_autocast_branches_are_bf16():
    model = make(norm="pre")  # fp32 master weights
    seen = {}
    model.layers[0].attn.norm_branch.register_forward_hook(lambda m, i, o: seen.update(h=o.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids_for(model.cfg))
    assert seen["h"] == torch.bfloat16


# ---- torch.compile ------------------------------------------------------------------------------------------
def test_compile_does_not_recompile_when_alpha_changes():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    model = make(norm="pre")
    ids = ids_for(model.cfg, B=2, S=12)
    counter = CompileCounterWithBackend("aot_eager")  # goes through AOTAutograd, where buffers are lifted
    compiled = torch.compile(model, backend=counter)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: weights fixed, so eager vs compiled compares alpha
    for step in range(5):
        alphas = prores.alphas("linear", step, 3, 1.5)
        model.set_alphas(alphas)
        out = compiled(ids)
        out.float().square().mean().backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            torch.testing.assert_close(out.detach(), reference(model, ids, alphas.tolist()), rtol=1e-5, atol=1e-5)
    assert counter.frame_count == 1
    torch._dynamo.reset()


@pytest.mark.slow  # the real default backend: inductor compiles C++ kernels (tens of seconds on 2 cores)
def test_inductor_does_not_recompile_when_alpha_changes():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = make(norm="pre")
    ids = ids_for(model.cfg, B=2, S=12)
    compiled = torch.compile(model)
    for step in range(5):
        alphas = prores.alphas("linear", step, 3, 1.5)
        model.set_alphas(alphas)
        out = compiled(ids)
        out.sum().backward()
        with torch.no_grad():
            torch.testing.assert_close(out.detach(), reference(model, ids, alphas.tolist()), rtol=1e-4, atol=1e-4)
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()
