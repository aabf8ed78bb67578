"""Held-out evaluation split over ranks (study.perplexity) vs one process: the same loss, in less time.

    .venv/bin/python benchmarks/sharded_eval.py                     # CPU: 1 process vs torchrun with 2 gloo ranks
    .venv/bin/python benchmarks/sharded_eval.py --device cuda --ranks 1   # GPU: the path, at world size 1

Each round times one evaluation in this process (one intra-op thread: one rank's share of the machine) and then
one under `torchrun --nproc-per-node R` (each rank one thread, its share of the batches, (NLL sum, token count)
all-reduced over gloo), rounds alternating. Times are the evaluation alone (model built and warmed up first,
ranks aligned by a barrier; a sharded time is the slowest rank's, all-reduce included); process start-up is
not timed. The batches are seeded random tokens of the model's vocabulary (what is measured is the split and
the reduction, not the text). Reports both losses, their relative difference, the token counts and the median
time ratio sharded / single. Writes benchmarks/results/sharded_eval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import common
import torch


def _model_and_batches(args):
    from study.config import resolve
    from study.model import build_model

    cfg = resolve({"model": {"scale": args.scale, "seq_len": args.seq}})
    torch.manual_seed(0)
    model = build_model(cfg.model).to(args.device).eval()
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(args.batches):
        ids = torch.randint(0, cfg.model.vocab_size, (args.batch, args.seq), generator=g)
        batches.append({"input_ids": ids, "labels": torch.roll(ids, -1, dims=1)})
    return model, batches


def _evaluate(args, model, batches, rank: int, world: int) -> tuple[dict, float]:
    from study.perplexity import perplexity

    dtype = "bf16" if args.device.startswith("cuda") else None
    perplexity(model, batches[:1], device=args.device, dtype=dtype)  # warm-up (kernels, allocator)
    if world > 1:
        torch.distributed.barrier()
    common.sync(args.device)
    t0 = time.perf_counter()
    result = perplexity(model, batches, device=args.device, dtype=dtype, rank=rank, world=world)
    common.sync(args.device)
    return result, time.perf_counter() - t0


def worker(args) -> None:
    """One rank under torchrun: gloo (two ranks may share one GPU in a check; nccl would refuse that)."""
    import torch.distributed as dist

    from study.train.distributed import Launch

    launch = Launch.from_env()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=launch.rank, world_size=launch.world)
    try:
        model, batches = _model_and_batches(args)
        result, seconds = _evaluate(args, model, batches, launch.rank, launch.world)
        slowest = torch.tensor([seconds], dtype=torch.float64)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        if launch.rank == 0:
            with open(args.worker_out, "w") as fh:
                json.dump({**result, "seconds": float(slowest)}, fh)
    finally:
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--scale", default="small")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--batches", type=int, default=24)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker_out:
        return worker(args)

    torch.set_num_threads(1)
    model, batches = _model_and_batches(args)
    single, sharded = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            one, seconds = _evaluate(args, model, batches, 0, 1)
            single.append({**one, "seconds": seconds})
            out = os.path.join(tmp, f"round{r}.json")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                   str(args.ranks), os.path.abspath(__file__), "--worker-out", out, "--device", args.device,
                   "--scale", args.scale, "--seq", str(args.seq), "--batch", str(args.batch),
                   "--batches", str(args.batches)]
            subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            with open(out) as fh:
                sharded.append(json.load(fh))
            print(f"round {r}: 1 process {single[-1]['seconds']:.3f} s, {args.ranks} ranks "
                  f"{sharded[-1]['seconds']:.3f} s, loss {single[-1]['loss']:.10f} vs {sharded[-1]['loss']:.10f}")
    t1 = statistics.median(s["seconds"] for s in single)
    tn = statistics.median(s["seconds"] for s in sharded)
    rel = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(single, sharded, strict=True))
    numbers = {"scale": args.scale, "seq": args.seq, "batch": args.batch, "batches": args.batches,
               "ranks": args.ranks, "rounds": args.rounds, "threads_per_process": 1,
               "loss_single": single[0]["loss"], "loss_sharded": sharded[0]["loss"], "max_rel_diff": rel,
               "tokens_single": single[0]["tokens"], "tokens_sharded": sharded[0]["tokens"],
               "single_median_s": t1, "sharded_median_s": tn, "time_ratio": tn / t1,
               "single_all_s": [s["seconds"] for s in single], "sharded_all_s": [s["seconds"] for s in sharded],
               "goal": "rel diff <= 1e-6 and time ratio <= 0.6 (2 ranks)"}
    print(f"loss rel diff {rel:.2e}, time {args.ranks} ranks / 1 process = {tn / t1:.3f} "
          f"(medians {tn:.3f} / {t1:.3f} s)")
    common.write_result("sharded_eval", args.device, numbers, args.out)


if __name__ == "__main__":
    main()
