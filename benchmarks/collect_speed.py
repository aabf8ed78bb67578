"""How fast `study collect` reads a large results root.

Writes a synthetic root of N runs with R metric rows each (default 1,000 × 10,000 = 10M rows, written as
study.train does: one JSON line per step, alpha on every 10th row) into a temporary folder, then times
study.collect.collect() on it (cold: every file parsed), Collection.save to Parquet, load, and a second collect
that reuses the saved collection (what `study collect ROOT` does when nothing changed); prints the times and
rows/s, and writes benchmarks/results/collect_speed.json with the machine, versions, date, command and numbers.

    python benchmarks/collect_speed.py                 # 1,000 runs × 10,000 rows
    python benchmarks/collect_speed.py --runs 50 --rows 2000 --no-save-json   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/synthetic_runs.py writes the runs
sys.path.insert(0, str(HERE))

from common import cpu_name as _cpu  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=None, help="collect() reader threads (default: its own)")
    ap.add_argument("--repeat", type=int, default=2, help="timed collections (the best is reported)")
    ap.add_argument("--dir", default=None, help="where to write the root (default: a temp folder, removed after)")
    ap.add_argument("--no-save-json", action="store_true", help="do not write benchmarks/results/collect_speed.json")
    args = ap.parse_args(argv)

    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from study.collect import collect, load
    from tests.synthetic_runs import write_bulk_root

    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="collect-speed-"))
    root = base / "results"
    try:
        t0 = time.perf_counter()
        info = write_bulk_root(root, args.runs, args.rows)
        t_gen = time.perf_counter() - t0
        print(f"wrote {info['runs']} runs × {info['rows_per_run']} rows = {info['metric_rows']:,} metric rows "
              f"({info['metrics_bytes'] / 1e9:.2f} GB of metrics.jsonl) in {t_gen:.1f}s")

        times, cpus, col = [], [], None
        for i in range(args.repeat):
            del col
            t0, c0 = time.perf_counter(), time.process_time()
            col = collect(root, workers=args.workers)
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)  # all threads of this process
            print(f"collect #{i + 1}: {times[-1]:.2f}s wall, {cpus[-1]:.2f}s CPU "
                  f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        best = min(times)
        rows = len(col.metrics)
        assert rows == info["metric_rows"], (rows, info["metric_rows"])
        assert len(col.runs) == args.runs and col.problems.empty
        t0 = time.perf_counter()
        saved = col.save(base / "collected.parquet")
        t_save = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in saved.iterdir())
        del col
        t0 = time.perf_counter()
        load(saved)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = collect(root, workers=args.workers, reuse=saved)   # what `study collect` does the second time
        t_warm = time.perf_counter() - t0
        assert warm.meta["reused_runs"] == args.runs and len(warm.metrics) == rows
        print(f"collect: {best:.2f}s for {rows:,} metric rows of {args.runs} runs = {rows / best:,.0f} rows/s "
              f"({info['metrics_bytes'] / 1e6 / best:,.0f} MB/s of JSON lines); "
              f"save to Parquet: {t_save:.2f}s ({size / 1e6:.0f} MB); load: {t_load:.2f}s; "
              f"re-collect of the unchanged root reusing the saved collection: {t_warm:.2f}s")
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)

    result = {
        "benchmark": "collect_speed",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join([os.path.relpath(__file__, HERE.parent), *(argv or sys.argv[1:])]),
        "device": {"cpu": _cpu(), "cores": os.cpu_count(), "platform": platform.platform(),
                   "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                   "note": "wall time depends on other load on the machine; collect_cpu_s is the CPU time of "
                           "all reader threads"},
        "versions": {"python": platform.python_version(), "pandas": pd.__version__, "pyarrow": pa.__version__,
                     "numpy": np.__version__},
        "numbers": {"runs": args.runs, "rows_per_run": args.rows, "metric_rows": rows,
                    "metrics_jsonl_bytes": info["metrics_bytes"], "generate_s": round(t_gen, 2),
                    "collect_s": [round(t, 3) for t in times], "collect_best_s": round(best, 3),
                    "collect_cpu_s": [round(c, 3) for c in cpus],
                    "rows_per_s": round(rows / best), "mb_per_s": round(info["metrics_bytes"] / 1e6 / best, 1),
                    "save_parquet_s": round(t_save, 3), "parquet_bytes": size, "load_parquet_s": round(t_load, 3),
                    "recollect_unchanged_with_reuse_s": round(t_warm, 3)},
    }
    if not args.no_save_json:
        out = HERE / "results" / "collect_speed.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
