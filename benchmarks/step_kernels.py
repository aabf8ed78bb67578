"""Which ATen kernels a training step of our model and of transformers' LlamaForCausalLM spend their time in, CPU
fp32, same config and batch as step_time.py: the answer to "where does our step lose time against HF's?".

    .venv/bin/python benchmarks/step_kernels.py [--scale 71m --layers 2 --seq 256 --batch 4]

One warm-up step each, then one profiled step each (torch.profiler, CPU). Reported per model: self CPU time by
operator; the share of the step spent in operators that both models call; the operators only one model calls, with
their share. Timing of a single step on a shared machine is noisy: read the operator lists and shares, not the
absolute times. Writes benchmarks/results/step_kernels.json.
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (sys.path)
import torch
from step_time import build, step_fn


def profile(step) -> dict[str, dict]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    step()
    with prof(activities=[ProfilerActivity.CPU]) as p:
        step()
    out = {}
    for e in p.key_averages():
        if e.key.startswith("aten::") and e.self_cpu_time_total > 0:
            out[e.key] = {"self_ms": e.self_cpu_time_total / 1e3, "calls": e.count}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="71m")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    cfg, ours, hf = build(args.scale, args.layers, args.seq, "cpu")
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=g)
    y = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=g)
    ops = {"ours": profile(step_fn(ours, x, y, False)), "hf": profile(step_fn(hf, x, y, True))}
    total = {k: sum(o["self_ms"] for o in v.values()) for k, v in ops.items()}
    common_ops = set(ops["ours"]) & set(ops["hf"])
    res = {}
    for k in ("ours", "hf"):
        other = "hf" if k == "ours" else "ours"
        only = {n: o for n, o in ops[k].items() if n not in ops[other]}
        share_common = sum(ops[k][n]["self_ms"] for n in common_ops) / total[k]
        top = sorted(ops[k].items(), key=lambda kv: -kv[1]["self_ms"])[:12]
        res[k] = {"total_self_ms": total[k], "share_in_common_ops": share_common,
                  "top": [{"op": n, **o, "share": o["self_ms"] / total[k]} for n, o in top],
                  "only_here": {n: {**o, "share": o["self_ms"] / total[k]} for n, o in
                                sorted(only.items(), key=lambda kv: -kv[1]["self_ms"])}}
        print(f"{k}: {total[k]:.0f} ms self CPU in aten ops; {share_common:.1%} in ops both models call")
        for row in res[k]["top"][:8]:
            print(f"    {row['op']:<40} {row['share']:6.1%}  {row['calls']:>5} calls")
        only_share = sum(o["share"] for o in res[k]["only_here"].values())
        print(f"  only in {k}: {only_share:.1%} of its time: " +
              ", ".join(f"{n} {o['share']:.1%}" for n, o in list(res[k]["only_here"].items())[:6]))
    common.write_result("step_kernels", "cpu", {
        "scale": args.scale, "n_layers": cfg.n_layers, "seq": args.seq, "batch": args.batch, "models": res}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
