"""Peak host memory per rank of building a model under FSDP: today's path (full fp32 model on every rank, then
fully_shard) vs the meta-device build (study.train.parallel.build_sharded), 2 gloo processes on CPU, one run.

    .venv/bin/python benchmarks/fsdp_build_memory.py                 # 3b width, 8 of its 32 layers (fits 24 GiB)
    .venv/bin/python benchmarks/fsdp_build_memory.py --layers 0 --stagger   # the full 3b preset in 24 GiB

Each mode runs in fresh processes (ru_maxrss is a high-water mark). Reported per rank: peak RSS, and peak minus
the RSS just before building (torch and the process group loaded). Also checks that both builds give the same
init fingerprint (below 1.5B parameters: the check gathers every parameter).

`--stagger`: the old path's ranks build one after the other (a barrier between turns) instead of together. A
rank's peak RSS is its own process's high-water mark, so this changes when the ranks reach their peaks, not how
high: what it changes is the machine's total (the full 3b preset's old path needs ~11 GB per rank, two at once
~22 GB of a 24 GiB machine). `--check-stagger` measures the old path both ways at the given size to show it.
Writes benchmarks/results/fsdp_build_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile

import common  # noqa: F401  (sys.path)
import torch
import torch.multiprocessing as mp


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _worker(rank, world, init_file, mode, scale, layers, out, stagger):
    import torch.distributed as dist

    from study.config import resolve
    from study.model import build_model, init_fingerprint
    from study.train import parallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    over = {"scale": scale} | ({"n_layers": layers} if layers else {})
    cfg = resolve({"model": over, "train": {"parallelism": "fsdp"}})
    before = _rss_mb()
    torch.manual_seed(0)
    if mode == "old":
        for turn in range(world if stagger else 1):
            if not stagger or turn == rank:
                model = parallel.shard(build_model(cfg.model), cfg.train, torch.device("cpu"), "fp32")
                peak_at_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            if stagger:
                dist.barrier()
    else:
        model = parallel.build_sharded(cfg.model, cfg.train, torch.device("cpu"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if mode == "old":
        assert peak == peak_at_build, "the old path's peak grew while waiting for the other rank"
    params = sum(p.numel() for p in model.parameters())
    fp = init_fingerprint(model) if params < 1.5e9 else None  # gathers every parameter: skip for the big ones
    with open(f"{out}.{rank}", "w") as fh:
        json.dump({"before_mb": before, "peak_mb": peak, "params": params, "fingerprint": fp}, fh)
    dist.destroy_process_group()


def measure(mode: str, scale: str, layers: int, world: int = 2, stagger: bool = False) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank")
        mp.spawn(_worker, args=(world, os.path.join(tmp, "init"), mode, scale, layers, out, stagger), nprocs=world,
                 join=True)
        return [json.load(open(f"{out}.{r}")) for r in range(world)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="3b")
    ap.add_argument("--layers", type=int, default=8, help="override n_layers (0: the preset's)")
    ap.add_argument("--stagger", action="store_true", help="old path: the ranks build one after the other")
    ap.add_argument("--check-stagger", action="store_true", help="also measure the old path the other way")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    res = {"old": measure("old", args.scale, args.layers, stagger=args.stagger),
           "new": measure("new", args.scale, args.layers)}
    extra = {}
    if args.check_stagger:
        other = measure("old", args.scale, args.layers, stagger=not args.stagger)
        peaks = {args.stagger: max(r["peak_mb"] for r in res["old"]),
                 not args.stagger: max(r["peak_mb"] for r in other)}
        extra["old_peak_mb_staggered_vs_together"] = {"staggered": peaks[True], "together": peaks[False],
                                                      "ratio": peaks[True] / peaks[False]}
        print(f"old path peak per rank: staggered {peaks[True]:.0f} MB, together {peaks[False]:.0f} MB")
    peak = {m: max(r["peak_mb"] for r in rows) for m, rows in res.items()}
    growth = {m: max(r["peak_mb"] - r["before_mb"] for r in rows) for m, rows in res.items()}
    fps = {m: rows[0]["fingerprint"] for m, rows in res.items()}
    same = fps["old"] == fps["new"] if fps["old"] is not None else "not checked (1.5B parameters or more)"
    print(f"{args.scale} (layers {args.layers or 'preset'}), 2 gloo ranks: peak RSS per rank old "
          f"{peak['old']:.0f} MB, meta build {peak['new']:.0f} MB, ratio {peak['new'] / peak['old']:.3f} "
          f"(goal <= 0.6); build growth {growth['old']:.0f} -> {growth['new']:.0f} MB; same init: {same}")
    common.write_result("fsdp_build_memory", "cpu", {
        "scale": args.scale, "n_layers": args.layers or "preset", "world": 2, "old_staggered": args.stagger,
        "per_rank": res, **extra,
        "peak_rss_mb": peak, "build_growth_mb": growth, "ratio_peak_new_over_old": peak["new"] / peak["old"],
        "same_init_fingerprint": same, "goal": "<= 0.6"}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
