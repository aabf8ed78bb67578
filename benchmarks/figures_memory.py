"""Peak memory of `study figures` on a synthetic paper-main root: a base revision's code against this checkout's,
side by side, each run in a fresh process (its ru_maxrss, a high-water mark, is the peak RSS).

    nice .venv/bin/python benchmarks/figures_memory.py --dir /tmp/figmem     # writes the root once and keeps it

The root (tests/synthetic_runs.write_paper_main_root) has the shape of grids/paper/main.yaml's results: 42 runs
(seven methods without and with ProRes at 130M, 350M and 1.3B), 100,000 metric rows each (one per step, alpha on
every 10th row, as the trainer writes), evals and probes every 1000 steps, lm_eval.json at 1.3B: 837 MB. The base
revision (default: where this branch left main) is exported with `git archive` and put first on PYTHONPATH.

Two cases, each base then this checkout (order alternating over rounds): `study figures ROOT` on the bare root
(the figures collect it first), and the same after `study collect ROOT` (the figures reuse ROOT/collected.parquet).
The made tables (.csv, .md) and figure images (.png) of both are compared byte for byte. Writes
benchmarks/results/figures_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import common

REPO = Path(__file__).resolve().parent.parent
CHILD = """
import json, resource, sys, time
import study
from study.cli import main
t0 = time.perf_counter()
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t0, "study": study.__file__,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_study(tree: Path, *args: str) -> dict:
    """`study ARGS` with the `study` and `paper_figures` packages of `tree` (first on sys.path: PYTHONPATH, and
    the working directory for `-c`), in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, cwd=tree, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"study {' '.join(args)} failed with {tree}:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["study"].startswith(str(tree)):
        raise SystemExit(f"imported {out['study']}, not the tree {tree}")
    return out


def export(rev: str, into: Path) -> Path:
    """The study and paper_figures packages of git revision `rev`, unpacked under `into`."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "study", "paper_figures"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def differing(a: Path, b: Path) -> list[str]:
    """Made files (.csv, .md, .png) whose bytes differ between two output folders, or that only one has."""
    names = {p.name for folder in (a, b) for p in folder.iterdir() if p.suffix in (".csv", ".md", ".png")}
    return sorted(n for n in names if not ((a / n).exists() and (b / n).exists()
                                           and (a / n).read_bytes() == (b / n).read_bytes()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="where the synthetic root lives (written when missing; default: a "
                                                "temp folder, removed after)")
    ap.add_argument("--steps", type=int, default=100_000, help="metric rows per run")
    ap.add_argument("--base", default=None, help="the revision to compare with (default: git merge-base HEAD main)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    base = args.base or subprocess.run(["git", "-C", str(REPO), "merge-base", "HEAD", "main"], check=True,
                                       capture_output=True, text=True).stdout.strip()
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="figures-memory-"))
    root = work / "results"
    try:
        if not (root / "paper-main").is_dir():
            sys.path.insert(0, str(REPO))
            from tests.synthetic_runs import write_paper_main_root

            print(f"writing {write_paper_main_root(root, steps=args.steps)} runs of {args.steps:,} rows to {root}")
        trees = {"base": export(base, work / "base"), "this checkout": REPO}
        (root / "collected.parquet").exists() and shutil.rmtree(root / "collected.parquet")
        results, diffs = {}, {}
        for case in ("bare root", "after study collect"):
            if case == "after study collect":
                run_study(REPO, "collect", str(root))
            for r in range(args.rounds):
                for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                    out = work / "figures" / f"{case}-{name}".replace(" ", "-")
                    shutil.rmtree(out, ignore_errors=True)
                    res = run_study(trees[name], "figures", str(root), "--out", str(out))
                    results.setdefault(case, {}).setdefault(name, []).append(res)
                    print(f"{case:>20} | {name:>13}: peak RSS {res['max_rss_mb']:,.0f} MB, {res['seconds']:.0f} s",
                          flush=True)
            diffs[case] = differing(*(work / "figures" / f"{case}-{n}".replace(" ", "-") for n in trees))
            print(f"{case:>20}: made files that differ between the two: {diffs[case] or 'none'}")
        peaks = {case: {n: max(x["max_rss_mb"] for x in v) for n, v in by.items()} for case, by in results.items()}
        common.write_result("figures_memory", "cpu", {
            "base": base, "steps_per_run": args.steps, "runs": 42, "load_average_1_5_15": os.getloadavg(),
            "peak_rss_mb": peaks, "runs_detail": results, "differing_files": diffs,
            "goal": "peak RSS <= 1.5 GB on the paper-main root, the same tables and figures"}, args.out)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
