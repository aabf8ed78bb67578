"""Training throughput: tokens/s and MFU (PaLM FLOPs formula of study.model.info, bf16 dense peak by GPU name)
of the 71m, 130m, 350m and 1.3b presets on a GPU (bf16 autocast, torch.compile, fused AdamW, seq 1024).

    .venv/bin/python benchmarks/throughput.py --device cuda [--batch 8] [--steps 20] [--scales 71m,130m]
    .venv/bin/python benchmarks/throughput.py            # CPU: 130m for a few steps at a small batch, and the
                                                         # data pipeline's tokens/s (benchmarks/data_pipeline.py)

Without a GPU it says so, measures the 130m preset's training tokens/s on the CPU (fp32, eager) and compares it
with `data_tokens_per_s` of benchmarks/data_pipeline.py on the same machine (goal: data >= 10x training).
Writes benchmarks/results/throughput[_cuda].json.
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401
import torch


def measure(scale: str, *, device: str, seq: int, batch: int, steps: int, warmup: int, compiled: bool) -> dict:
    from study.config import resolve
    from study.cost import device_peak_flops
    from study.model import build_model, info

    cfg = resolve({"model": {"scale": scale, "seq_len": seq}}).model
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    fwd = torch.compile(model) if compiled else model
    cuda = device.startswith("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=cuda)
    x = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    y = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    step = common.training_step(fwd, opt, x, y)

    for _ in range(warmup):
        step()
    common.sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    common.sync(device)
    sec = time.perf_counter() - t0
    tps = steps * batch * seq / sec
    fpt = info(cfg)["flops_per_token"]
    peak = None
    if cuda:
        name = torch.cuda.get_device_name(0)
        peak = device_peak_flops(name)
    row = {"scale": scale, "seq": seq, "batch": batch, "steps": steps, "tokens_per_s": tps,
           "flops_per_token": fpt, "peak_flops": peak, "mfu": tps * fpt / peak if peak else None,
           "compiled": compiled, "precision": "bf16 autocast" if cuda else "fp32"}
    if cuda:
        row["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    # The step closure holds the model, optimizer and batch: drop it with them so empty_cache can free them.
    del step, model, opt, fwd, x, y
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--scales", default=None)
    ap.add_argument("--seq", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-data", action="store_true", help="CPU: skip the data pipeline comparison")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    dev = args.device
    results: dict = {}
    if dev.startswith("cuda"):
        rows = []
        for scale in (args.scales or "71m,130m,350m,1.3b").split(","):
            row = measure(scale, device=dev, seq=args.seq or 1024, batch=args.batch or 8, steps=args.steps or 20,
                          warmup=3, compiled=not args.no_compile)
            rows.append(row)
            mfu = 'n/a' if row['mfu'] is None else f"{row['mfu']:.1%}"
            print(f"{scale}: {row['tokens_per_s']:,.0f} tokens/s  MFU {mfu}")
        results["gpu"] = rows
        common.write_result("throughput_cuda", dev, results, args.out)
        return 0
    scale = (args.scales or "130m").split(",")[0]
    print(f"no GPU available: measuring the {scale} preset on the CPU (fp32, eager)"
          + ("" if args.no_data else " and the data pipeline"))
    seq, batch = args.seq or 256, args.batch or 2
    row = measure(scale, device="cpu", seq=seq, batch=batch, steps=args.steps or 3,
                  warmup=1, compiled=False)
    results["cpu_train"] = row
    print(f"train {row['scale']} CPU: {row['tokens_per_s']:,.0f} tokens/s (seq {seq}, batch {batch})")
    if not args.no_data:
        from data_pipeline import data_tokens_per_s
        data = data_tokens_per_s(seq_len=1024)
        results["data_tokens_per_s"] = data
        results["data_over_train"] = data / row["tokens_per_s"]
        print(f"data pipeline: {data:,.0f} tokens/s = {data / row['tokens_per_s']:.0f}x the 130m training "
              f"consumption (goal >= 10x)")
    common.write_result("throughput", dev, results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
