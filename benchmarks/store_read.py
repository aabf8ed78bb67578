"""Token-store read rate per rank (StoreStream.next_batch) with 1, 2 and 4 reader processes, against the token
consumption of one GPU at every paper scale (45% MFU of 989 TFLOP/s, `study info` FLOPs per token); and, with
`--cold`, the bytes read from disk per byte of tokens delivered on a cold page cache, today's reader against the
old one, side by side.

    .venv/bin/python benchmarks/store_read.py            # a synthetic 200M-token store (400 MB) in a temp folder
    nice .venv/bin/python benchmarks/store_read.py --cold --tokens 100000000

The store is written with the real writer (study.data.store.write_shard) from random documents, so reading is
what training does: each of R processes plays rank r of world R (its own sequences: a seeded permutation, one
memmap slice each) and reads batches of 16 x 1024-token sequences for a fixed time, all R at once. Reported:
tokens/s per rank and per-rank work (rows read per batch: must not grow with R). The page cache is warm after the
first pass (as on a node after the first epoch touches the data); the first-pass rate is reported too.
Writes benchmarks/results/store_read.json.

Cold (`--cold`, Linux): before every measurement the shards are dropped from the page cache (fsync, then
posix_fadvise(POSIX_FADV_DONTNEED) on each file) and mincore(2) must then report no page of them resident; this
process then reads `--cold-batches` random batches of one rank and the bytes it read from disk are the increase
of read_bytes in /proc/self/io (the kernel's count of this process's block-device reads; mincore's resident
bytes afterwards are reported as a cross-check). Three readers of the same rows, interleaved over rounds: the
old memmap reader (numpy memmap, one gather per shard), the same with madvise(MADV_RANDOM), and today's
study.data.store_read.SplitView (one os.pread per row, POSIX_FADV_RANDOM). Writes store_read_cold.json.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

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


def make_stream(folder, manifest, *, rank: int, world: int, seq: int, seed: int = 0, view=None):
    """The real StoreStream of one rank on a store opened without a manifest file; `view`: the SplitView class."""
    from study.data.store_read import SplitView
    from study.data.store_stream import StoreStream

    class _Tok:  # StoreStream needs only these of a tokenizer
        pad_id = eos_id = 0
        fingerprint = "synthetic"

    class _Cfg:
        packing = "pack"

    stream = StoreStream.__new__(StoreStream)
    stream.store = SimpleNamespace(capped=False)  # the whole synthetic source, never cut by --max-tokens
    stream.split = (view or SplitView)(Path(folder) / "train", manifest["shards"], np.uint16)
    stream.tok, stream.cfg, stream.packing, stream.seq_len, stream.seed = _Tok(), _Cfg(), "pack", seq, seed
    stream.rank, stream.world_size, stream.sequences = rank, world, 0
    stream.per_epoch = (stream.split.tokens - 1) // seq
    return stream


def _reader(args):
    folder, manifest, rank, world, seconds, batch, seq, start_at = args
    stream = make_stream(folder, manifest, rank=rank, world=world, seq=seq)
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


def memmap_view(advice: int | None):
    """The reader before issue 19 (numpy memmaps, one fancy-index gather per shard), with madvise(`advice`)."""
    from study.data.store_read import SplitView

    class MemmapView(SplitView):
        def _map(self, k: int) -> np.ndarray:
            if k not in self._bins:
                with open(self.folder / f"{self.shards[k]['file']}.bin", "rb") as fh:
                    mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                if advice is not None:
                    mm.madvise(advice)
                self._bins[k] = np.frombuffer(mm, dtype=self.dtype)
            return self._bins[k]

        def _local(self, k, local, n):
            return self._map(k)[local:local + n]

        def rows(self, starts, length):  # verbatim the old gather
            starts = np.asarray(starts, dtype=np.int64)
            out = np.empty((len(starts), length), dtype=np.int64)
            k = np.searchsorted(self.starts, starts, side="right") - 1
            inside = starts + length <= self.starts[np.minimum(k + 1, len(self.shards))]
            offsets = np.arange(length, dtype=np.int64)
            for shard in np.unique(k[inside]):
                sel = np.flatnonzero(inside & (k == shard))
                local = starts[sel] - self.starts[shard]
                out[sel] = self._map(int(shard))[local[:, None] + offsets[None, :]]
            for i in np.flatnonzero(~inside):
                out[i] = self.read(int(starts[i]), length)
            return out

    return MemmapView


def disk_read_bytes() -> int:
    """Bytes this process has read from block devices (/proc/self/io read_bytes)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no read_bytes")


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def resident_bytes(path: Path) -> int:
    """Bytes of `path` in the page cache (mincore(2) over a fresh read-only mapping, which itself reads nothing)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ)
    try:
        view = np.frombuffer(mm, dtype=np.uint8)
        pages = -(-size // mmap.PAGESIZE)
        vec = (ctypes.c_ubyte * pages)()
        if _LIBC.mincore(ctypes.c_void_p(view.ctypes.data), ctypes.c_size_t(size), vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        del view
        return int(np.count_nonzero(np.frombuffer(vec, dtype=np.uint8) & 1)) * mmap.PAGESIZE
    finally:
        mm.close()


def evict(files: list[Path]) -> int:
    """Drop `files` from the page cache; the bytes still resident afterwards (0 when the cache is cold)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return sum(resident_bytes(f) for f in files)


def cold_reads(folder: Path, manifest: dict, *, rounds: int, batches: int, batch: int, seq: int) -> dict:
    """Each reader reads the same `batches` batches of rank 0 from a cold cache, interleaved over `rounds`."""
    readers = {"memmap (old)": memmap_view(None), "memmap + MADV_RANDOM": memmap_view(mmap.MADV_RANDOM),
               "pread + POSIX_FADV_RANDOM (SplitView)": None}
    files = [folder / "train" / f"{s['file']}.bin" for s in manifest["shards"]]
    out = {name: [] for name in readers}
    for r in range(rounds):
        items = list(readers.items())
        for name, view in (items if r % 2 == 0 else items[::-1]):
            left = evict(files)
            stream = make_stream(folder, manifest, rank=0, world=1, seq=seq, seed=r, view=view)
            before, t0, delivered = disk_read_bytes(), time.perf_counter(), 0
            for _ in range(batches):
                delivered += stream.next_batch(batch)["input_ids"].numel()
            seconds, disk = time.perf_counter() - t0, disk_read_bytes() - before
            token_bytes = delivered * np.dtype(np.uint16).itemsize  # the tokens as stored
            out[name].append({"resident_before_bytes": left, "disk_read_bytes": disk,
                              "token_bytes_delivered": token_bytes, "disk_bytes_per_token_byte": disk / token_bytes,
                              "resident_after_bytes": sum(resident_bytes(f) for f in files), "seconds": seconds})
            del stream
    for f in files:  # warm: every shard in the page cache, then the same readers timed interleaved
        f.read_bytes()
    streams = {name: make_stream(folder, manifest, rank=0, world=1, seq=seq, view=view)
               for name, view in readers.items()}
    warm = common.interleaved({name: (lambda st=st: [st.next_batch(batch) for _ in range(batches)])
                               for name, st in streams.items()}, reps=2 * rounds + 1)
    return {name: {"median_disk_bytes_per_token_byte": float(np.median([x["disk_bytes_per_token_byte"] for x in v])),
                   "median_seconds": float(np.median([x["seconds"] for x in v])),
                   "warm_tokens_per_s": batches * batch * seq / warm[name]["median_s"], "rounds": v}
            for name, v in out.items()}


def main_cold(args) -> int:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        manifest = build_store(folder, args.tokens)
        res = cold_reads(folder, manifest, rounds=args.rounds, batches=args.cold_batches, batch=args.batch,
                         seq=args.seq)
    for name, r in res.items():
        print(f"{name:>38}: {r['median_disk_bytes_per_token_byte']:.2f} bytes from disk per byte of tokens, "
              f"{r['median_seconds'] * 1000:.0f} ms for {args.cold_batches} batches; warm "
              f"{r['warm_tokens_per_s'] / 1e6:.1f}M tokens/s")
    rounds = [x for r in res.values() for x in r["rounds"]]
    if any(x["resident_before_bytes"] for x in rounds) or not any(x["disk_read_bytes"] for x in rounds):
        print("the page cache could not be emptied or /proc/self/io counts no reads here (tmpfs?): not measured")
        return 1
    common.write_result("store_read_cold", "cpu", {
        "store_tokens": args.tokens, "seq": args.seq, "batch": args.batch, "batches": args.cold_batches,
        "rounds": args.rounds, "load_average_1_5_15": os.getloadavg(), "readers": res,
        "goal": "<= 4 bytes from disk per byte of tokens delivered (SplitView)"}, args.out)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=200_000_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--readers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--dir", default=None, help="where to write the synthetic store (default: a temp folder)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--cold", action="store_true", help="bytes from disk per token byte on a cold cache (Linux)")
    ap.add_argument("--cold-batches", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="--cold: interleaved rounds per reader")
    args = ap.parse_args(argv)
    if args.cold:
        return main_cold(args)
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
        "load_average_1_5_15": os.getloadavg(),
        "readers": rows, "gpu_tokens_per_s_at_45pct_mfu_989tflops": need,
        "margin_slowest_reader_cpu_rate_over_need": margins,
        "goal": ">= 10x for every scale; rows per rank per batch constant in the number of readers"}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
