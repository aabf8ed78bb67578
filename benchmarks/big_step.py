"""One training step of a big model with activation checkpointing, and what saving its checkpoint costs:
synchronous save time and write bandwidth, the asynchronous save's stall, and step times while it writes.

    python3 benchmarks/big_step.py --device cuda --scale 7b --save-layers 4 --dir /local/scratch
    .venv/bin/python benchmarks/big_step.py --scale tiny --save-layers 2        # CPU rehearsal

The model is built on the device (seeded, the trainer's init), trained with bf16 autocast (CUDA) and AdamW
(fused on CUDA), micro-batch `--micro` of seq_len tokens, each Block recomputed in the backward pass
(parallel.apply_activation_checkpointing): two warm-up steps, then `--steps` timed steps (tokens/s, MFU against
study.cost's peak, peak memory).

A 7b checkpoint is ~81 GB (fp32 weights + AdamW state): writing it whole takes minutes, so the save is measured
on the first `--save-layers` Blocks (each a 7b-sized Block with its AdamW state) through the trainer's own
Checkpointer (single-file layout): one synchronous save (its time gives the write bandwidth), then one
asynchronous save (reusing the host buffers, as every save after the first does) during which training steps
of the WHOLE model go on; their times against the timed steps show what the background write costs training.
The full checkpoint's sync time and async stall are extrapolated linearly in bytes (the copy to host memory and
the write are both bandwidth-bound); the JSON says which numbers are measured and which extrapolated.
Writes benchmarks/results/big_step.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common
import torch
from torch import nn


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--scale", default="tiny")
    p.add_argument("--micro", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--save-layers", type=int, default=2)
    p.add_argument("--dir", default=None, help="where to write the checkpoints (default: a temporary folder)")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    from study.config import resolve
    from study.cost import checkpoint_plan, device_peak_flops
    from study.model import build_model, info
    from study.train import parallel
    from study.train.checkpointer import Checkpointer
    from study.train.distributed import Dist
    from study.train.optim import build_optimizer, build_scheduler

    dev = torch.device(args.device)
    cfg = resolve({"model": {"scale": args.scale}, "train": {"steps": 1000, "activation_checkpointing": True}})
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_model(cfg.model, device=dev)
    parallel.apply_activation_checkpointing(model)
    opt = build_optimizer(model, cfg.optim, device=dev)
    sched = build_scheduler(opt, cfg.optim, cfg.train.steps)
    ids = torch.randint(0, cfg.model.vocab_size, (args.micro, cfg.model.seq_len + 1), device=dev)
    step = common.training_step(model, opt, ids[:, :-1], ids[:, 1:])
    build_s = time.perf_counter() - t0

    def timed() -> float:
        common.sync(args.device)
        t = time.perf_counter()
        step()
        common.sync(args.device)
        return time.perf_counter() - t

    warm = [timed() for _ in range(2)]  # kernels, and AdamW's state allocated at its first step
    times = [timed() for _ in range(args.steps)]
    step_s = statistics.median(times)
    tokens = args.micro * cfg.model.seq_len
    peak = device_peak_flops(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else None
    fpt = info(cfg.model)["flops_per_token"]
    memory = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None

    # The checkpoint of the first Blocks: their modules and AdamW state (the same tensors, not copies).
    part = nn.ModuleList(model.layers[: args.save_layers])
    part_opt = torch.optim.AdamW(part.parameters(), lr=cfg.optim.lr)
    for p_ in part.parameters():
        part_opt.state[p_] = opt.state[p_]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        saver = Checkpointer(Path(tmp), Dist(), sharded=False, keep=1)

        def save(n, wait):
            saver.save(n, model=part, optimizer=part_opt, scheduler=sched, trainer_state={"data": {}},
                       state={"step": n}, wait=wait)

        t = time.perf_counter()
        save(1, True)
        sync_s = time.perf_counter() - t
        part_bytes = sum(f.stat().st_size for f in Path(tmp).rglob("*.pt"))
        save(2, False)
        stall_s = saver.last_stall_s
        during = []
        while saver.busy:
            during.append(timed())
        saver.wait()
    full = checkpoint_plan(cfg)["bytes"]
    scale = full / part_bytes
    numbers = {
        "scale": args.scale, "params": info(cfg.model)["params"], "micro_batch": args.micro,
        "seq_len": cfg.model.seq_len, "activation_checkpointing": True,
        "precision": "bf16 autocast" if dev.type == "cuda" else "fp32", "build_s": build_s,
        "warmup_step_s": warm, "step_all_s": times, "step_median_s": step_s, "tokens_per_s": tokens / step_s,
        "mfu": tokens / step_s * fpt / peak if peak else None, "max_memory_gib": memory,
        "save": {
            "measured_on_layers": args.save_layers, "bytes": part_bytes, "sync_s": sync_s,
            "write_bytes_per_s": part_bytes / sync_s, "async_stall_s": stall_s,
            "steps_during_async_write": len(during), "step_median_s_during_write":
                statistics.median(during) if during else None,
            "full_checkpoint_bytes": full,
            "extrapolated_full_sync_s": sync_s * scale, "extrapolated_full_async_stall_s": stall_s * scale,
            "note": "full-checkpoint times are the measured ones scaled by bytes (full / measured part)",
        },
    }
    print(f"{args.scale}: step {step_s:.3f} s ({tokens / step_s:,.0f} tokens/s"
          + (f", MFU {numbers['mfu']:.1%}" if peak else "") + f"); save of {args.save_layers} blocks "
          f"({part_bytes / 1e9:.2f} GB): sync {sync_s:.2f} s ({part_bytes / sync_s / 1e9:.2f} GB/s), async stall "
          f"{stall_s:.3f} s, {len(during)} steps during the write; full {full / 1e9:.1f} GB extrapolated: sync "
          f"{sync_s * scale:.0f} s, stall {stall_s * scale:.1f} s")
    common.write_result("big_step", args.device, numbers, args.out)


if __name__ == "__main__":
    main()
