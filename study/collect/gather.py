"""`collect(root)`: every run directory under a results root, read into one Collection of tidy tables."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from study.collect.cache import merge_reused, previous_collection, reusable_runs, signature
from study.collect.rundir import find_run_dirs, read_run
from study.collect.store import Collection, empty_table
from study.timeutil import now


def collect(root: str | os.PathLike, *, keep_alpha: bool = False, workers: int | None = None,
            reuse: Collection | str | os.PathLike | None = None) -> Collection:
    """Read every run directory under `root` into a Collection. Never raises for a bad run (see `problems`).

    keep_alpha: keep metrics.jsonl's per-step alpha lists (an Arrow list column); off by default, since it
    costs L floats per row and probes.jsonl carries alpha per layer anyway.
    workers: threads reading runs in parallel (pyarrow releases the GIL); default min(4, CPUs).
    reuse: a previous Collection of the same root (or the path of a saved one): runs whose files are unchanged
    (same size and mtime of every file read, see `signature`) are taken from it instead of re-parsed, so
    re-collecting a large root while a grid runs costs only the runs that moved. Run paths are absolute.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"results root {root} does not exist")
    root = root.resolve()
    dirs = find_run_dirs(root)
    sigs = {d: signature(d) for d in dirs}
    prev = previous_collection(reuse, keep_alpha)
    kept = reusable_runs(prev, sigs)
    kept_paths = set(kept["path"]) if len(kept) else set()
    todo = [d for d in dirs if str(d) not in kept_paths]

    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1 and len(todo) > 8:
        with ThreadPoolExecutor(workers) as pool:
            reads = list(pool.map(lambda d: read_run(d, root, keep_alpha), todo))
    else:
        reads = [read_run(d, root, keep_alpha) for d in todo]
    for d, r in zip(todo, reads, strict=True):
        r.row["files_sig"] = sigs[d]

    # unique run ids (the same run copied twice under a root would otherwise merge its rows)
    seen: dict[str, str] = dict(zip(kept["run_id"], kept["path"], strict=True)) if len(kept) else {}
    for r in reads:
        rid = r.row["run_id"]
        if rid in seen:
            new = f"{rid}#{r.row['path']}"
            r.problems.append(("run.json", f"duplicate run_id {rid} (also at {seen[rid]}); renamed to {new}"))
            r.row["run_id"] = new
            r.row["n_problems"] += 1
        seen[r.row["run_id"]] = r.row["path"]
    new_ids = [r.row["run_id"] for r in reads]
    kept_ids = list(kept["run_id"]) if len(kept) else []

    runs = pd.DataFrame([r.row for r in reads])
    if len(kept):
        runs = pd.concat([kept, runs], ignore_index=True) if len(runs) else kept.copy()
        runs = runs.sort_values("path", kind="stable").reset_index(drop=True)
    runs = _order_columns(runs.reindex(columns=list(dict.fromkeys([*RUN_COLUMNS, *runs.columns]))))
    all_ids = list(runs["run_id"])

    problems = pd.DataFrame([{"path": r.row["path"], "run_id": r.row["run_id"], "file": f, "problem": p}
                             for r in reads for f, p in r.problems],
                            columns=["path", "run_id", "file", "problem"])
    lm = pd.DataFrame([{"run_id": rid, **row} for rid, r in zip(new_ids, reads, strict=True) for row in r.lm_eval],
                      columns=["run_id", "task", "metric", "filter", "value", "stderr"])
    pf = pd.DataFrame([{"run_id": rid, **row} for rid, r in zip(new_ids, reads, strict=True) for row in r.probe_files],
                      columns=["run_id", "step", "path", "bytes"])
    tables = {name: _stack([getattr(r, name) for r in reads], new_ids) for name in ("metrics", "evals", "probes")}
    if len(kept):
        problems, lm, pf, tables = merge_reused(prev, kept_ids, all_ids, problems, lm, pf, tables)
    return Collection(runs=runs, problems=problems, lm_eval=lm, probe_files=pf, root=str(root),
                      meta={"collected": now(), "root": str(root), "keep_alpha": keep_alpha,
                            "reused_runs": len(kept_ids), "read_runs": len(new_ids)}, **tables)


# Every runs column that does not come from the config or the axes (present even in an empty collection)
RUN_COLUMNS = ("run_id", "run_name", "grid", "path", "state", "step", "error", "updated", "diverged_step", "job_id",
               "method", "method_label", "schedule", "prores", "label", "scale", "n_layers", "d_model", "norm",
               "init", "T", "W", "lr", "lr_schedule", "warmup_steps", "decay_fraction", "steps", "global_batch",
               "seq_len", "params", "init_fingerprint", "git_commit", "git_dirty", "started", "host",
               "slurm_job_id", "n_metrics", "final_step", "final_loss", "final_grad_norm", "n_evals", "eval_dataset",
               "final_eval_step", "final_eval_loss", "final_eval_ppl", "n_probe_steps", "has_lm_eval",
               "lm_eval_version", "lm_eval_step", "n_problems", "files_sig")
_FIRST = ["run_id", "run_name", "grid", "path", "state", "step", "error", "diverged_step", "method", "schedule",
          "prores", "label", "scale", "n_layers", "norm", "init", "T", "W", "lr", "steps", "params",
          "final_step", "final_loss", "final_eval_ppl", "final_eval_loss", "n_problems"]


def _order_columns(runs: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in _FIRST if c in runs]
    rest = [c for c in runs.columns if c not in first and not c.startswith(("axis.", "cfg."))]
    axes = sorted(c for c in runs.columns if c.startswith("axis."))
    cfg = [c for c in runs.columns if c.startswith("cfg.")]
    return runs[first + rest + axes + cfg]


def _stack(tables: list, run_ids: list[str]) -> pd.DataFrame:
    """Concatenate per-run Arrow tables once; run_id becomes a categorical column in front."""
    parts = []
    for i, t in enumerate(tables):
        if t is not None and len(t):
            parts.append(t.append_column("_run", pa.array(np.full(len(t), i, dtype=np.int32))))
    if not parts:
        return empty_table(["run_id", "step"])
    try:
        table = pa.concat_tables(parts, promote_options="permissive")
        df = table.to_pandas(types_mapper=_types_mapper, self_destruct=True)
        del table
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # columns with clashing types across runs (e.g. text here, numbers there): fall back to pandas
        df = pd.concat([t.to_pandas(types_mapper=_types_mapper) for t in parts], ignore_index=True)
    codes = df.pop("_run").to_numpy()
    df.insert(0, "run_id", pd.Categorical.from_codes(codes, categories=pd.Index(run_ids)))
    return df


def _types_mapper(t: pa.DataType):
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_struct(t):
        return pd.ArrowDtype(t)
    return None
