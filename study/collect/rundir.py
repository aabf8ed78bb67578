"""One run directory -> one row of the runs table and its step-level tables (docs/ARCHITECTURE.md, "results").

States: the status.json state (study.results.STATES); `partial` when a run directory has no status.json;
`corrupt` when status.json cannot be read. Corrupt files (a truncated JSON line, an unreadable config.yaml, a
missing run.json) are reported as problems and the rest of the run is kept.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from study import config
from study.collect.files import (
    EVAL_SCHEMA,
    METRICS_SCHEMA,
    PROBE_SCHEMA,
    flatten,
    num,
    read_json,
    read_jsonl,
    read_yaml,
    tidy_lm_eval,
)
from study.labels import method_label, series_label
from study.results import STATES

RUN_FILES = ("run.json", "status.json", "config.yaml", "metrics.jsonl")  # any of them marks a run directory
SKIP_DIRS = {"checkpoints", "probes", "__pycache__"}


def find_run_dirs(root: str | os.PathLike) -> list[Path]:
    """Every directory under root holding a run file; does not descend into a run directory or a *.parquet folder."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if any(f in filenames for f in RUN_FILES):
            found.append(Path(dirpath))
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")
                             and not d.endswith(".parquet"))
    return sorted(found)


@dataclass
class RunRead:
    """What one run directory contributed: its runs row, its step tables (Arrow) and its problems."""

    row: dict
    metrics: pa.Table | None = None
    evals: pa.Table | None = None
    probes: pa.Table | None = None
    lm_eval: list = field(default_factory=list)
    probe_files: list = field(default_factory=list)
    problems: list = field(default_factory=list)  # (file, problem)


def _fallback_run_id(cfg: dict | None, rel: str) -> str:
    if cfg is not None:
        try:
            return config.run_id(config.resolve(cfg))
        except Exception:  # noqa: BLE001  - a config this version cannot resolve: fall back to the path
            pass
    return rel


def read_run(path: Path, root: Path, keep_alpha: bool) -> RunRead:
    """Read every file of the run directory `path` (under `root`); never raises, a bad file becomes a problem."""
    rel = path.relative_to(root).as_posix() if path != root else path.name
    out = RunRead(row={})
    problem = out.problems.append

    info, err = read_json(path / "run.json")
    if err:
        problem(("run.json", err))
    status, serr = read_json(path / "status.json")
    cfg, cerr = read_yaml(path / "config.yaml")
    if cerr:
        problem(("config.yaml", cerr))
    info = info or {}
    cfg = cfg or {}

    if serr == "missing":
        state = "partial"
        problem(("status.json", "missing (run never started, or was killed before writing its status)"))
    elif serr:
        state = "corrupt"
        problem(("status.json", serr))
    else:
        state = status.get("state")
        if state not in STATES:
            problem(("status.json", f"unknown state {state!r}"))
            state = "corrupt"
    status = status or {}

    model, pr, optim, train = (cfg.get(k) if isinstance(cfg.get(k), dict) else {}
                               for k in ("model", "prores", "optim", "train"))
    run_id = info.get("run_id") or _fallback_run_id(cfg if not cerr else None, rel)
    method = info.get("method", cfg.get("method"))
    schedule = info.get("schedule", pr.get("schedule"))
    if schedule is None and cfg and not pr:
        schedule = "none"
    norm, init = model.get("norm"), model.get("init")
    prov = info.get("provenance") if isinstance(info.get("provenance"), dict) else {}
    row = {
        "run_id": str(run_id),
        "run_name": info.get("run_name") or path.name,
        "grid": info.get("grid") or cfg.get("grid") or (path.parent.name if path != root else None),
        "path": str(path),
        "state": state,
        "step": status.get("step"),
        "error": status.get("error"),
        "updated": status.get("updated"),
        "diverged_step": status.get("diverged_step"),
        "job_id": status.get("job_id"),
        "method": method,
        "method_label": method_label(method, norm, init),
        "schedule": schedule,
        "prores": None if schedule is None else schedule != "none",
        "label": series_label(method, schedule, norm, init),
        "scale": info.get("scale", model.get("scale")),
        "n_layers": model.get("n_layers"),
        "d_model": model.get("d_model"),
        "norm": norm,
        "init": init,
        "T": info.get("T", pr.get("T")),
        "W": info.get("W", pr.get("W")),
        "lr": optim.get("lr"),
        "lr_schedule": optim.get("lr_schedule"),
        "warmup_steps": optim.get("warmup_steps"),
        "decay_fraction": optim.get("decay_fraction"),
        "steps": train.get("steps"),
        "global_batch": train.get("global_batch"),
        "seq_len": model.get("seq_len"),
        "params": info.get("params"),
        "init_fingerprint": info.get("init_fingerprint"),
        "git_commit": prov.get("git_commit"),
        "git_dirty": prov.get("git_dirty"),
        "started": prov.get("started"),
        "host": prov.get("host"),
        "slurm_job_id": prov.get("slurm_job_id"),
    }
    axes = info.get("axes") if isinstance(info.get("axes"), dict) else {}
    row.update({f"axis.{k}": (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in axes.items()})
    row.update({f"cfg.{k}": v for k, v in flatten(cfg).items()})

    # metrics.jsonl
    mpath = path / "metrics.jsonl"
    if mpath.exists():
        table, probs = read_jsonl(mpath, METRICS_SCHEMA, drop=() if keep_alpha else ("alpha",))
        out.problems += [("metrics.jsonl", p) for p in probs]
        table = _check_steps(table, "metrics.jsonl", out.problems)
        out.metrics = table
    elif state in ("completed", "diverged"):
        problem(("metrics.jsonl", f"missing although the run is {state}"))
    m = out.metrics
    row["n_metrics"] = 0 if m is None else len(m)
    row.update(final_step=np.nan, final_loss=np.nan, final_grad_norm=np.nan)
    if m is not None and len(m):
        last = {c: m.column(c)[-1].as_py() for c in ("step", "loss", "grad_norm") if c in m.column_names}
        row.update(final_step=num(last.get("step")), final_loss=num(last.get("loss")),
                   final_grad_norm=num(last.get("grad_norm")))

    # eval.jsonl
    epath = path / "eval.jsonl"
    row.update(n_evals=0, eval_dataset=None, final_eval_step=np.nan, final_eval_loss=np.nan, final_eval_ppl=np.nan)
    if epath.exists():
        table, probs = read_jsonl(epath, EVAL_SCHEMA)
        out.problems += [("eval.jsonl", p) for p in probs]
        table = _drop_duplicates(table, EVAL_KEY, "eval.jsonl", out.problems)
        out.evals = table
        if table is not None and len(table):
            row.update(n_evals=len(table), **_final_eval(table))

    # probes
    ppath = path / "probes.jsonl"
    row["n_probe_steps"] = 0
    if ppath.exists():
        table, probs = read_jsonl(ppath, PROBE_SCHEMA)
        out.problems += [("probes.jsonl", p) for p in probs]
        table = _drop_duplicates(table, PROBE_KEY, "probes.jsonl", out.problems)
        out.probes = table
        if table is not None and "step" in table.column_names:
            row["n_probe_steps"] = len(set(table.column("step").to_pylist()))
    pdir = path / "probes"
    if pdir.is_dir():
        for f in sorted(pdir.glob("step_*.pt")):
            mt = re.fullmatch(r"step_(\d+)\.pt", f.name)
            if not mt:
                continue
            try:
                size = f.stat().st_size
            except OSError:
                size = 0
            if size == 0:
                problem((f"probes/{f.name}", "empty file"))
                continue
            out.probe_files.append({"step": int(mt.group(1)), "path": str(f), "bytes": size})

    # lm_eval.json
    lpath = path / "lm_eval.json"
    row["has_lm_eval"] = False
    if lpath.exists():
        data, lerr = read_json(lpath)
        if lerr:
            problem(("lm_eval.json", lerr))
        else:
            out.lm_eval = tidy_lm_eval(data)
            row["has_lm_eval"] = bool(out.lm_eval)
            row["lm_eval_version"] = data.get("lm_eval_version")
            row["lm_eval_step"] = data.get("step")
            if not out.lm_eval:
                problem(("lm_eval.json", "no numeric results"))

    row["n_problems"] = len(out.problems)
    out.row = row
    return out


def _check_steps(table: pa.Table | None, name: str, problems: list) -> pa.Table | None:
    """Rows must have increasing steps (a resumed run truncates first); keep the last row per step if not."""
    if table is None or "step" not in table.column_names or len(table) < 2:
        return table
    steps = table.column("step").to_numpy(zero_copy_only=False)
    if np.all(np.diff(steps) > 0):
        return table
    order = pd.Series(steps)
    keep = ~order.duplicated(keep="last").to_numpy()
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(steps[idx], kind="stable")]
    problems.append((name, f"steps not increasing ({len(steps) - len(idx)} repeated); kept the last row per step"))
    return table.take(pa.array(idx))


# What makes a row one measurement: two rows with the same values here are the same measurement written twice
# (a copied file, an evaluation appended again by hand); rows that differ in the tokens evaluated or in who
# measured (source: the trainer or `study eval`) are separate measurements.
EVAL_KEY = ("step", "dataset", "split", "source", "tokens", "seq_len")
PROBE_KEY = ("step", "layer")


def _drop_duplicates(table: pa.Table | None, key: tuple, name: str, problems: list) -> pa.Table | None:
    """The table with one row per `key` (the last written), and a problem saying how many were dropped."""
    cols = [k for k in key if table is not None and k in table.column_names]
    if table is None or len(table) < 2 or "step" not in cols:
        return table
    dup = table.select(cols).to_pandas().duplicated(keep="last").to_numpy()
    if not dup.any():
        return table
    problems.append((name, f"{int(dup.sum())} duplicate rows (same {', '.join(cols)}); kept the last of each"))
    return table.take(pa.array(np.flatnonzero(~dup)))


def _final_eval(table: pa.Table) -> dict:
    """The primary dataset (the one evaluated most often, first seen on ties) at its last step."""
    df = table.select([c for c in ("step", "dataset", "loss", "ppl") if c in table.column_names]).to_pandas()
    if "step" not in df:
        return {}
    if "dataset" in df and df["dataset"].notna().any():
        counts = df["dataset"].value_counts(sort=False)
        primary = counts.idxmax()
        df = df[df["dataset"] == primary]
    else:
        primary = None
    last = df[df["step"] == df["step"].max()].iloc[-1]
    loss = num(last.get("loss"))
    ppl = num(last.get("ppl"))
    if math.isnan(ppl) and not math.isnan(loss):
        ppl = math.exp(loss) if loss < 700 else math.inf
    return {"eval_dataset": primary, "final_eval_step": num(last["step"]), "final_eval_loss": loss,
            "final_eval_ppl": ppl}

