"""Peak host memory per rank of building a model under FSDP: today's path (full fp32 model on every rank, then
fully_shard) vs the meta-device build (study.train.parallel.build_sharded), 2 gloo processes on CPU, one run.

    .venv/bin/python benchmarks/fsdp_build_memory.py                 # 3b width, 8 of its 32 layers (fits 24 GiB)
    .venv/bin/python benchmarks/fsdp_build_memory.py --layers 0      # the full 3b preset (needs ~30 GB of RAM)

Each mode runs in fresh processes (ru_maxrss is a high-water mark). Reported per rank: peak RSS, and peak minus
the RSS just before building (torch and the process group loaded). Also checks that both builds give the same
init fingerprint. Writes benchmarks/results/fsdp_build_memory.json.
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


def _worker(rank, world, init_file, mode, scale, layers, out):
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
        model = parallel.shard(build_model(cfg.model), cfg.train, torch.device("cpu"), "fp32")
    else:
        model = parallel.build_sharded(cfg.model, cfg.train, torch.device("cpu"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in model.parameters())
    fp = init_fingerprint(model) if params < 1.5e9 else None  # gathers every parameter: skip for the big ones
    with open(f"{out}.{rank}", "w") as fh:
        json.dump({"before_mb": before, "peak_mb": peak, "params": params, "fingerprint": fp}, fh)
    dist.destroy_process_group()


def measure(mode: str, scale: str, layers: int, world: int = 2) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank")
        mp.spawn(_worker, args=(world, os.path.join(tmp, "init"), mode, scale, layers, out), nprocs=world, join=True)
        return [json.load(open(f"{out}.{r}")) for r in range(world)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="3b")
    ap.add_argument("--layers", type=int, default=8, help="override n_layers (0: the preset's)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    res = {m: measure(m, args.scale, args.layers) for m in ("old", "new")}
    peak = {m: max(r["peak_mb"] for r in rows) for m, rows in res.items()}
    growth = {m: max(r["peak_mb"] - r["before_mb"] for r in rows) for m, rows in res.items()}
    same = res["old"][0]["fingerprint"] == res["new"][0]["fingerprint"]
    print(f"{args.scale} (layers {args.layers or 'preset'}), 2 gloo ranks: peak RSS per rank old "
          f"{peak['old']:.0f} MB, meta build {peak['new']:.0f} MB, ratio {peak['new'] / peak['old']:.3f} "
          f"(goal <= 0.6); build growth {growth['old']:.0f} -> {growth['new']:.0f} MB; same init: {same}")
    common.write_result("fsdp_build_memory", "cpu", {
        "scale": args.scale, "n_layers": args.layers or "preset", "world": 2, "per_rank": res,
        "peak_rss_mb": peak, "build_growth_mb": growth, "ratio_peak_new_over_old": peak["new"] / peak["old"],
        "same_init_fingerprint": same, "goal": "<= 0.6"}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
