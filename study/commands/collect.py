"""`study collect ROOT [--out PATH]`: every run directory under ROOT -> tidy tables saved as Parquet.

Prints runs per state and grid, table sizes and every problem found (missing status, truncated lines, unreadable
config.yaml, missing run.json, ...); problems never stop the collection. Writes ROOT/collected.parquet/ (one
Parquet file per table) unless --out says otherwise; `study figures` and study.collect.load read it back.
When the output already holds a collection of this root, runs whose files did not change are taken from it
(--fresh reads everything again).
"""

from __future__ import annotations

import time
from pathlib import Path

from study.errors import StudyError

DEFAULT_NAME = "collected.parquet"


def register(sub) -> None:
    p = sub.add_parser("collect", help="read a results root into tidy tables (Parquet)")
    p.add_argument("root", help="results root: <root>/<grid>/<run-name>/ run directories")
    p.add_argument("--out", default=None, help=f"output folder (default: ROOT/{DEFAULT_NAME})")
    p.add_argument("--keep-alpha", action="store_true", help="keep the per-step alpha lists of metrics.jsonl")
    p.add_argument("--fresh", action="store_true", help="re-read every run (do not reuse the previous output)")
    p.add_argument("--quiet", action="store_true", help="print only the summary line")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.collect import collect

    root = Path(args.root)
    if not root.is_dir():
        raise StudyError(f"results root {root} is not a directory")
    out = Path(args.out) if args.out else root / DEFAULT_NAME
    t0 = time.perf_counter()
    col = collect(root, keep_alpha=args.keep_alpha, reuse=None if args.fresh else out)
    elapsed = time.perf_counter() - t0
    try:
        col.save(out)
    except (FileExistsError, OSError) as exc:
        raise StudyError(f"cannot write {out}: {exc}") from None
    text = col.summary()
    print(text.splitlines()[0] if args.quiet else text)
    reused = col.meta.get("reused_runs", 0)
    print(f"collected in {elapsed:.2f}s" + (f" ({reused} unchanged runs reused from {out})" if reused else "")
          + f"; wrote {out}")
    return 0
