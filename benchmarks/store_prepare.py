"""Token-store preparation throughput (`study data prepare`) with 1 and 2 workers vs today's token-cache build,
on the bundled corpus (2.3M tokens with the 32k default BPE), side by side in interleaved rounds.

    nice .venv/bin/python benchmarks/store_prepare.py [--vocab 32000] [--rounds 4]

Rounds alternate the order (cache, 1 worker, 2 workers; then reversed) and each build starts from an empty
folder (the BPE is trained once beforehand; every build starts from its file, the cache build by building the
run's tokenizer from it as a training run does, the store by saving a copy of it; the cache build's tokenizer CPU
time is reported apart as cache_build_tokenizer_cpu_s). Per build two things are measured side by side:
wall seconds, and CPU seconds (getrusage of this process and its reaped worker processes: every thread's work).
On a machine that other jobs load, wall time says how much CPU the scheduler lent, not how fast the code is;
CPU seconds per token do not depend on that. Scaling with workers is shown by the work per token of each
worker (the units' CPU seconds / tokens; it must not grow with workers) and by the wall time expected on idle
cores (serial seconds + units' CPU seconds / workers), next to the measured wall time and the load average.
`--workers N` means N tokenizing threads: 1 worker tokenizes single-threaded, 2 workers are two threads of the
preparing process (the bundled corpus and a fast tokenizer; streamed sources use processes); the cache build uses
the tokenizers library's own thread pool (all cores). Writes
benchmarks/results/store_prepare.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import common


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--cache-dir", default=None, help="tokenizer cache (default: a temp folder; trains the BPE)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from study.config import resolve
    from study.data import build_tokenizer, store, tokens

    tmp = Path(tempfile.mkdtemp(prefix="store-prepare-"))
    cache_dir = args.cache_dir or str(tmp / "cache")
    cfg = resolve({"model": {"vocab_size": args.vocab}, "data": {"cache_dir": cache_dir, "store": True}})
    build_tokenizer(dataclasses.replace(cfg.data, store=False), vocab_size=args.vocab)  # trains the BPE once

    def cache_build(k):
        # What a training run does today before its first step: build its tokenizer (from the trained BPE file,
        # as `study data prepare` does) and tokenize the corpus into the token cache.
        tokens._MEMO.clear()
        data = dataclasses.replace(cfg.data, store=False, cache_dir=str(tmp / f"c{k}"))
        shutil.copytree(Path(cache_dir) / "tokenizers", Path(data.cache_dir) / "tokenizers")
        c0 = common.cpu_seconds(children=True)
        run_tok = build_tokenizer(data, vocab_size=args.vocab)
        tokenizer_cpu.append(common.cpu_seconds(children=True) - c0)
        tc = tokens.tokenized_corpus(data, run_tok)
        return int(tc.offsets[-1])

    def store_build(workers, k):
        data = dataclasses.replace(cfg.data, store_dir=str(tmp / f"s{workers}-{k}"))
        path = store.prepare(data, args.vocab, workers=workers)
        m = store.open_store(data, args.vocab).manifest
        prepared[workers].append(m["prepared"])
        store._OPEN.clear()
        shutil.rmtree(path)
        return m["splits"]["train"]["tokens"] + m["splits"]["heldout"]["tokens"]

    modes = {"cache_build": cache_build, "store_1_worker": lambda k: store_build(1, k),
             "store_2_workers": lambda k: store_build(2, k)}
    wall = {m: [] for m in modes}
    cpu = {m: [] for m in modes}
    prepared = {1: [], 2: []}
    counted, loads, tokenizer_cpu = {}, [], []
    try:
        for r in range(args.rounds):
            for name in (list(modes) if r % 2 == 0 else list(modes)[::-1]):
                loads.append(os.getloadavg()[0])
                c0, t0 = common.cpu_seconds(children=True), time.perf_counter()
                counted[name] = modes[name](r)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(common.cpu_seconds(children=True) - c0)
                print(f"round {r}: {name} {wall[name][-1]:.1f} s wall, {cpu[name][-1]:.1f} CPU-s "
                      f"(load {loads[-1]:.1f})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    res = {}
    for name in modes:
        n = counted[name]
        res[name] = {"tokens": n, "wall_median_s": med(wall[name]), "wall_all_s": wall[name],
                     "cpu_median_s": med(cpu[name]), "cpu_all_s": cpu[name],
                     "tokens_per_cpu_s": n / med(cpu[name]), "tokens_per_wall_s": n / med(wall[name])}
        print(f"{name:>16}: wall {med(wall[name]):5.1f} s ({', '.join(f'{t:.1f}' for t in wall[name])}), "
              f"CPU {med(cpu[name]):5.1f} s ({', '.join(f'{t:.1f}' for t in cpu[name])}), "
              f"{n / med(cpu[name]) / 1e6:.2f}M tokens per CPU-s")
    # Work per token of each worker: the units' CPU seconds (measured inside the worker, per unit) / tokens.
    per_worker = {}
    for w, runs in prepared.items():
        units_cpu = med([p["units_cpu_s"] for p in runs])
        serial = med([p["seconds"] - p["units_s"] for p in runs])  # planning, tokenizer copy, manifest
        per_worker[w] = {"units_cpu_s": units_cpu, "units_cpu_s_per_worker": units_cpu / w,
                         "cpu_us_per_token": units_cpu / counted[f"store_{w}_worker" + ("s" if w > 1 else "")] * 1e6,
                         "serial_s": serial, "units_wall_s": med([p["units_s"] for p in runs])}
    tok_total = counted["store_1_worker"]
    work = per_worker[1]["units_cpu_s"]
    serial = per_worker[1]["serial_s"]
    expected = {n: serial + work / n for n in (1, 2, 8, 16, 64)}
    growth = per_worker[2]["cpu_us_per_token"] / per_worker[1]["cpu_us_per_token"]
    wall_speedup = res["store_1_worker"]["wall_median_s"] / res["store_2_workers"]["wall_median_s"]
    cpu_vs_cache = res["store_2_workers"]["cpu_median_s"] / res["cache_build"]["cpu_median_s"]
    wall_vs_cache = res["store_2_workers"]["wall_median_s"] / res["cache_build"]["wall_median_s"]
    print(f"units: {per_worker[1]['cpu_us_per_token']:.2f} CPU-us per token with 1 worker, "
          f"{per_worker[2]['cpu_us_per_token']:.2f} with 2 (x{growth:.2f} per token; ideal 1.00); "
          f"serial part {serial:.1f} s")
    print("expected wall on idle cores: " + ", ".join(f"{n} workers {t:.1f} s" for n, t in expected.items())
          + f" (ideal 1->2 speedup {expected[1] / expected[2]:.2f}x)")
    print(f"measured wall 1->2 workers: {wall_speedup:.2f}x under load average {med(loads):.1f} on "
          f"{os.cpu_count()} cores")
    print(f"store (2 workers) / cache build: CPU {cpu_vs_cache:.2f}, wall {wall_vs_cache:.2f}")
    common.write_result("store_prepare", "cpu", {
        "corpus": "default (bundled)", "vocab_size": args.vocab, "rounds": args.rounds, "tokens": tok_total,
        "modes": res, "cache_build_tokenizer_cpu_s": med(tokenizer_cpu), "workers": per_worker, "prepared": prepared,
        "work_per_token_2_over_1_worker": growth, "expected_wall_s_on_idle_cores": expected,
        "expected_speedup_2_over_1_on_idle_cores": expected[1] / expected[2],
        "measured_wall_speedup_2_over_1": wall_speedup, "load_average_median": med(loads),
        "load_averages": loads, "cpus": os.cpu_count(),
        "store_2_workers_over_cache_build": {"cpu": cpu_vs_cache, "wall": wall_vs_cache},
        "goal": "work per token per worker does not grow with workers (throughput grows with workers on idle "
                "cores); store build at most as slow as the cache build"}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
