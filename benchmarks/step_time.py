"""Training step time (forward + backward + AdamW) of our model vs transformers' LlamaForCausalLM, same config.

    .venv/bin/python benchmarks/step_time.py                      # CPU fp32, 71m width, 2 layers, seq 256, batch 4
    .venv/bin/python benchmarks/step_time.py --device cuda --scale 130m --layers 0 --seq 1024 --batch 8   # GPU bf16

Both models: same hidden size, layers, heads, intermediate size, vocabulary, RMSNorm eps, RoPE theta, untied
head, SDPA attention; same batch, same loss (cross-entropy on fp32 logits), same AdamW. Steps are interleaved
(ours, HF, HF, ours, ...) in one process. Each round gives one paired ratio ours/HF (the two steps ran back to
back, under the same load); the report is the median paired ratio and its spread (interquartile range). When the
spread contains the no-effect value (the interquartile range of the paired ratios contains 1.0), no ratio is
claimed: "no difference resolved". On CPU fp32 both models run the same ATen kernels
(benchmarks/step_kernels.py: 99.5% and 99.7% of the step in operators both call), so no large difference is expected
there; the speed goal that matters is GPU bf16 (and compiled), run by benchmarks/gpu_check.sh.
Writes benchmarks/results/step_time[_cuda].json.
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (sys.path)
import torch


def build(scale: str, layers: int, seq: int, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from study.config import resolve
    from study.model import build_model

    over = {"scale": scale, "seq_len": seq}
    if layers:
        over["n_layers"] = layers
    cfg = resolve({"model": over}).model
    torch.manual_seed(0)
    ours = build_model(cfg).to(device)
    hf_cfg = LlamaConfig(hidden_size=cfg.d_model, intermediate_size=cfg.ffn_hidden, num_hidden_layers=cfg.n_layers,
                         num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads, vocab_size=cfg.vocab_size,
                         rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta, max_position_embeddings=cfg.seq_len,
                         tie_word_embeddings=False, attention_bias=False, mlp_bias=False, use_cache=False)
    hf_cfg._attn_implementation = "sdpa"
    hf = LlamaForCausalLM(hf_cfg).to(device)
    return cfg, ours, hf


def step_fn(model, x, y, hf: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=x.is_cuda)
    forward = (lambda ids: model(input_ids=ids).logits) if hf else model
    return common.training_step(forward, opt, x, y)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scale", default="71m")
    ap.add_argument("--layers", type=int, default=2, help="override n_layers (0: the preset's)")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--reps", type=int, default=24, help="interleaved rounds (one paired ratio each)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    dev = args.device
    cfg, ours, hf = build(args.scale, args.layers, args.seq, dev)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_hf = sum(p.numel() for p in hf.parameters())
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=g).to(dev)
    y = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=g).to(dev)
    bf16 = dev.startswith("cuda")
    res = common.interleaved({"ours": step_fn(ours, x, y, False), "hf": step_fn(hf, x, y, True)},
                             reps=args.reps, warmup=2, device=dev)
    paired = sorted(a / b for a, b in zip(res["ours"]["all_s"], res["hf"]["all_s"], strict=True))
    q = lambda f: paired[min(len(paired) - 1, int(f * len(paired)))]  # noqa: E731
    median, q1, q3 = q(0.5), q(0.25), q(0.75)
    resolved = not (q1 <= 1.0 <= q3)  # the middle half of the paired ratios lies on one side of 1
    ratio = median if resolved else None
    print(f"config: {args.scale} d={cfg.d_model} L={cfg.n_layers} H={cfg.n_heads} ffn={cfg.ffn_hidden} "
          f"V={cfg.vocab_size} seq={args.seq} batch={args.batch} params ours={n_ours:,} hf={n_hf:,}")
    print(f"step ours {res['ours']['median_s']*1e3:.1f} ms  HF {res['hf']['median_s']*1e3:.1f} ms  "
          f"paired ratio ours/HF median {median:.3f}, IQR [{q1:.3f}, {q3:.3f}] over {len(paired)} rounds: "
          + (f"ratio {median:.3f}" if resolved else "no difference resolved (the spread contains 1.0)"))
    common.write_result("step_time" + ("_cuda" if bf16 else ""), dev, {
        "scale": args.scale, "d_model": cfg.d_model, "n_layers": cfg.n_layers, "seq": args.seq, "batch": args.batch,
        "precision": "bf16 autocast" if bf16 else "fp32", "params_ours": n_ours, "params_hf": n_hf,
        "ours_median_s": res["ours"]["median_s"], "hf_median_s": res["hf"]["median_s"],
        "ratio_ours_over_hf": ratio, "paired_ratio_median": median, "paired_ratio_iqr": [q1, q3],
        "resolved": resolved, "reps": args.reps,
        "note": "ratio is null when the interquartile range of paired ratios contains 1.0"}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
