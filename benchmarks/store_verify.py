"""What proving a token store's bytes costs (study.data.store_check): the checks of every open, a training
split's first-use check with and without stamps, and `study data verify`, on a synthetic store written by the
real writer.

    .venv/bin/python benchmarks/store_verify.py                       # 100M tokens (200 MB, 5 shards)
    nice .venv/bin/python benchmarks/store_verify.py --tokens 400000000 --rounds 5

Measured, in interleaved rounds (medians):
- open: the manifest's shape and arithmetic plus every file's size (what every open_store does), on this store
  and on one of 1,024 small shards (the per-shard part of the cost: C4-en's train split is 1,024 files);
- first use, stamped: every training shard proven by its stamp (fstat and compare: StoreStream's start after
  `study data prepare` or `study data verify`);
- first use, unstamped: every training shard hashed (a copied store), page cache warm, and cold (every shard
  dropped from the page cache first, as store_read.py --cold does: the disk's speed, not the CPU's);
- verify: `study data verify`'s full pass (shards and indices), 1 and 2 threads, warm;
- for scale: one training batch (16 rows of 1,025 tokens, StoreStream's reads) on the warm store.
From the hash rates, the seconds per GB and what hashing the paper's C4 store would cost one process.
Writes benchmarks/results/store_verify.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import common
import numpy as np
import store_read  # build_store, evict: the same synthetic store and page-cache dropping as store_read.py

from study.data import store_check
from study.data.store_read import SplitView
from study.data.store_units import write_shard


def full_manifest(shards: list[dict]) -> dict:
    """A manifest with store_read.build_store's shards (what store_check reads of a real one)."""
    return {"format": 1, "key": "benchmark", "spec": {}, "dtype": "uint16",
            "tokenizer": {"name": "synthetic", "fingerprint": "synthetic", "eos_id": 0, "pad_id": 0,
                          "vocab_size": 32000},
            "source": {"fingerprint": "synthetic", "describe": "random documents"},
            "splits": {"train": {"shards": shards, "tokens": sum(s["tokens"] for s in shards),
                                 "documents": sum(s["documents"] for s in shards)},
                       "heldout": {"shards": [], "tokens": 0, "documents": 0}}}


def small_shards(folder: Path, n: int) -> dict:
    rng = np.random.default_rng(1)
    shards = [write_shard(folder / "train", f"{j:06d}", [rng.integers(1, 32000, size=499, dtype=np.uint16)
                                                          for _ in range(2)], np.uint16, 0) for j in range(n)]
    return full_manifest(shards)


def opening(path: Path, manifest: dict) -> None:
    assert store_check.manifest_problem(manifest) is None
    assert store_check.file_problems(path, manifest) == []


def first_use(path: Path, manifest: dict) -> None:
    SplitView(path / "train", manifest["splits"]["train"]["shards"], np.uint16, store_check.ShardCheck(path)) \
        .check_all()


def median(times: list[float]) -> float:
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=100_000_000, help="tokens of the synthetic store (2 bytes each)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to build the stores (default: a temporary folder)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="store-verify-", dir=args.dir))
    try:
        big = root / "big"
        manifest = full_manifest(store_read.build_store(big, args.tokens)["shards"])
        (big / "manifest.json").write_text(json.dumps(manifest))
        many = root / "many"
        many_manifest = small_shards(many, 1024)
        nbytes = sum(s["bytes"] for s in manifest["splits"]["train"]["shards"])
        bins = [big / "train" / f"{s['file']}.bin" for s in manifest["splits"]["train"]["shards"]]
        stamps = big / store_check.STAMPS

        def unstamped():
            stamps.unlink(missing_ok=True)
            first_use(big, manifest)

        def cold():
            stamps.unlink(missing_ok=True)
            resident = store_read.evict(bins)
            t0 = time.perf_counter()
            first_use(big, manifest)
            return time.perf_counter() - t0, resident

        view = SplitView(big / "train", manifest["splits"]["train"]["shards"], np.uint16)
        rows = np.random.default_rng(2).integers(0, view.tokens - 1025, size=16)
        times: dict[str, list[float]] = {k: [] for k in ("open", "open_1024_shards", "first_use_stamped",
                                                          "first_use_unstamped_warm", "first_use_unstamped_cold",
                                                          "verify_1_thread", "verify_2_threads", "one_batch")}
        resident_after_evict = []
        for r in range(args.rounds):
            steps = [
                ("open", lambda: opening(big, manifest)),
                ("open_1024_shards", lambda: opening(many, many_manifest)),
                ("verify_1_thread", lambda: store_check.verify(big, manifest, workers=1)),
                ("first_use_stamped", lambda: first_use(big, manifest)),  # stamped by the verify just before
                ("verify_2_threads", lambda: store_check.verify(big, manifest, workers=2)),
                ("first_use_unstamped_warm", unstamped),
                ("one_batch", lambda: view.rows(rows, 1025)),
            ]
            for name, fn in (steps if r % 2 == 0 else steps[::-1]):
                if name == "first_use_stamped":
                    store_check.verify(big, manifest, workers=2)  # whichever order: stamps present
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
            seconds, resident = cold()
            times["first_use_unstamped_cold"].append(seconds)
            resident_after_evict.append(resident)
        med = {k: median(v) for k, v in times.items()}
        rate = {k: nbytes / med[k] for k in ("first_use_unstamped_warm", "first_use_unstamped_cold",
                                              "verify_1_thread", "verify_2_threads")}
        paper = paper_store_bytes()
        numbers = {
            "store": {"tokens": args.tokens, "bytes": nbytes, "shards": len(bins)},
            "rounds": args.rounds, "median_s": med, "all_s": times,
            "resident_bytes_after_evict": resident_after_evict,
            "per_shard_us": {"open": 1e6 * med["open_1024_shards"] / 1024,
                             "first_use_stamped": 1e6 * med["first_use_stamped"] / len(bins)},
            "hash_bytes_per_s": rate,
            "seconds_per_gb": {k: 1e9 / v for k, v in rate.items()},
            "paper_main_store": {**paper, "hash_s_warm_one_process": paper["bytes"] / rate["first_use_unstamped_warm"],
                                 "hash_s_cold_one_process": paper["bytes"] / rate["first_use_unstamped_cold"]},
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({k: numbers[k] for k in ("store", "median_s", "per_shard_us", "seconds_per_gb",
                                              "paper_main_store")}, indent=1))
    common.write_result("store_verify", "cpu", numbers, args.out)
    return 0


def paper_store_bytes() -> dict:
    """The training tokens paper/main's largest cell reads from its C4 store (the store a cut prepares), in
    bytes of uint16 (LLaMA's 32k vocabulary)."""
    from study.data.store_manifest import tokens_needed
    from study.grid import load_grid

    tokens = max(tokens_needed(c.config) or 0 for c in load_grid("paper/main").cells())
    return {"train_tokens": tokens, "bytes": 2 * tokens}


if __name__ == "__main__":
    raise SystemExit(main())
