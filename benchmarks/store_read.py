"""Token-store read rate per rank (StoreStream.next_batch from memmap) with 1, 2 and 4 reader processes, against
the token consumption of one GPU at every paper scale (45% MFU of 989 TFLOP/s, `study info` FLOPs per token).

    .venv/bin/python benchmarks/store_read.py            # a synthetic 200M-token store (400 MB) in a temp folder

The store is written with the real writer (study.data.store.write_shard) from random documents, so reading is
what training does: each of R processes plays rank r of world R (its own sequences: a seeded permutation, one
memmap slice each) and reads batches of 16 x 1024-token sequences for a fixed time, all R at once. Reported:
tokens/s per rank and per-rank work (rows read per batch: must not grow with R). The page cache is warm after the
first pass (as on a node after the first epoch touches the data); the first-pass (cold) rate is reported too.
Writes benchmarks/results/store_read.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (sys.path)
import numpy as np

MFU = 0.45  # the yardstick for a GPU's consumption (study.cost plans grids at 0.40: this is stricter)
SCALES = ("71m", "71m-24l", "71m-48l", "71m-72l", "71m-96l", "71m-120l", "130m", "350m", "1.3b", "3b", "7b")


def gpu_tokens_per_s() -> dict:
    from study.config import resolve
    from study.cost import DEFAULT_PEAK_FLOPS  # H100 bf16 dense, 989 TFLOP/s
    from study.model import info

    out = {}
    for s in SCALES:
        flops = info(resolve({"model": {"scale": s}}).model)["flops_per_token"]
        out[s] = MFU * DEFAULT_PEAK_FLOPS / flops
    return out


def build_store(folder: Path, tokens: int, seed: int = 0) -> dict:
    from study.data.store import STORE_FORMAT, write_shard

    rng = np.random.default_rng(seed)
    shards, per_shard = [], 20_000_000
    for j in range(max(1, tokens // per_shard)):
        docs, have = [], 0
        while have < per_shard:
            n = int(rng.integers(50, 2000))
            docs.append(rng.integers(1, 32000, size=n, dtype=np.uint16))
            have += n + 1
        shards.append(write_shard(folder / "train", f"{j:06d}", docs, np.uint16, 0))
    return {"format": STORE_FORMAT, "dtype": "uint16", "shards": shards}


def _reader(args):
    folder, manifest, rank, world, seconds, batch, seq, start_at = args
    from study.data.store_stream import StoreStream

    class _Tok:  # StoreStream needs only these of a tokenizer
        pad_id = eos_id = 0
        fingerprint = "synthetic"

    class _Cfg:
        packing = "pack"

    stream = StoreStream.__new__(StoreStream)  # the real reader, on a store opened without a manifest file
    from study.data.store import SplitView

    stream.split = SplitView(Path(folder) / "train", manifest["shards"], np.uint16)
    stream.tok, stream.cfg, stream.packing, stream.seq_len, stream.seed = _Tok(), _Cfg(), "pack", seq, 0
    stream.rank, stream.world_size, stream.sequences = rank, world, 0
    stream.per_epoch = (stream.split.tokens - 1) // seq
    while time.time() < start_at:
        time.sleep(0.001)
    tokens, batches, t0, c0 = 0, 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        b = stream.next_batch(batch)
        tokens += b["n_tokens"]
        batches += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"tokens_per_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu, "rows_per_batch": batch,
            "batches": batches}


def run_readers(folder, manifest, world, seconds, batch, seq) -> list[dict]:
    start_at = time.time() + 1.0
    with mp.get_context("spawn").Pool(world) as pool:
        return pool.map(_reader, [(str(folder), manifest, r, world, seconds, batch, seq, start_at)
                                  for r in range(world)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=200_000_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--readers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--dir", default=None, help="where to write the synthetic store (default: a temp folder)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    need = gpu_tokens_per_s()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        manifest = build_store(folder, args.tokens)
        print(f"store: {sum(s['tokens'] for s in manifest['shards']):,} tokens written in "
              f"{time.perf_counter() - t0:.1f} s")
        cold = run_readers(folder, manifest, 1, args.seconds, args.batch, args.seq)[0]["tokens_per_s"]
        rows = {}
        for world in args.readers:
            res = run_readers(folder, manifest, world, args.seconds, args.batch, args.seq)
            per_rank = min(r["tokens_per_s"] for r in res)
            per_cpu = min(r["tokens_per_cpu_s"] for r in res)
            rows[world] = {"per_rank_min_tokens_per_s": per_rank, "per_rank_min_tokens_per_cpu_s": per_cpu,
                           "per_rank": res, "rows_read_per_rank_per_batch": res[0]["rows_per_batch"]}
            print(f"{world} reader(s): slowest rank {per_rank / 1e6:.1f}M tokens/s wall, "
                  f"{per_cpu / 1e6:.1f}M tokens per CPU-second; rows per rank per batch {res[0]['rows_per_batch']}")
    # On a node every rank has its own cores; here R readers share 2 busy cores, so wall rates fall with R for
    # lack of CPU, not more work: the per-rank work is tokens per CPU-second (constant in R if it does not grow).
    worst = min(r["per_rank_min_tokens_per_cpu_s"] for r in rows.values())
    margins = {s: worst / v for s, v in need.items()}
    for s, v in need.items():
        print(f"  {s:>5}: GPU needs {v / 1e6:.2f}M tokens/s; slowest reader per CPU-second / need = "
              f"{margins[s]:.0f}x")
    common.write_result("store_read", "cpu", {
        "store_tokens": args.tokens, "seq": args.seq, "batch_per_rank": args.batch, "cold_1_reader_tokens_per_s": cold,
        "readers": rows, "gpu_tokens_per_s_at_45pct_mfu_989tflops": need,
        "margin_slowest_reader_cpu_rate_over_need": margins,
        "goal": ">= 10x for every scale; rows per rank per batch constant in the number of readers"}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
