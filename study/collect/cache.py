"""Re-collecting a root cheaply: runs whose files did not change are taken from the previous collection.

A run's `signature` is the size and mtime of every file collect reads; it is stored in the runs table
(`files_sig`). A new collect of the same root reads only the runs whose signature moved and merges the rest
from the previous Collection (in memory, or a saved one), so a large root can be re-collected while a grid runs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pandas as pd

from study.collect.store import Collection, is_saved_collection, load

SIGNATURE_FILES = ("run.json", "status.json", "config.yaml", "metrics.jsonl", "eval.jsonl", "probes.jsonl",
                   "lm_eval.json")


def signature(run_dir: Path) -> str:
    """Size and mtime of every file collect reads (and the probes/ folder's mtime): unchanged -> reusable."""
    parts = []
    for name in SIGNATURE_FILES:
        try:
            st = os.stat(run_dir / name)
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{name}:-")
    with contextlib.suppress(OSError):  # no probes/ folder
        parts.append(f"probes/:{os.stat(run_dir / 'probes').st_mtime_ns}")
    return ";".join(parts)


def previous_collection(reuse: Collection | str | os.PathLike | None, keep_alpha: bool) -> Collection | None:
    """The collection to reuse runs from, or None: absent, unreadable, without signatures, or collected with
    another keep_alpha (its metrics table would lack or carry the alpha column)."""
    if reuse is None:
        return None
    if not isinstance(reuse, Collection):
        if not is_saved_collection(reuse):
            return None
        try:
            reuse = load(reuse)
        except Exception:  # noqa: BLE001 - an unreadable previous collection only costs a full read
            return None
    if "files_sig" not in reuse.runs or bool(reuse.meta.get("keep_alpha", False)) != keep_alpha:
        return None
    return reuse


def reusable_runs(prev: Collection | None, sigs: dict[Path, str]) -> pd.DataFrame:
    """Rows of prev.runs whose run directory still exists with the same signature (empty without prev)."""
    if prev is None or not len(prev.runs):
        return pd.DataFrame()
    old = prev.runs.reset_index(drop=True)
    match = old["path"].map({str(d): sig for d, sig in sigs.items()}).eq(old["files_sig"])
    return old[match.fillna(False).astype(bool)]


def merge_reused(prev: Collection, kept_ids: list[str], all_ids: list[str], problems: pd.DataFrame,
                 lm_eval: pd.DataFrame, probe_files: pd.DataFrame, step_tables: dict[str, pd.DataFrame]):
    """The reused runs' rows of every other table put in front of the freshly read ones.

    Returns (problems, lm_eval, probe_files, step_tables); step tables get one run_id categorical over all_ids.
    """
    ids = set(kept_ids)
    problems = _concat(_rows_of(prev.problems, ids), problems)
    lm_eval = _concat(_rows_of(prev.lm_eval, ids), lm_eval)
    probe_files = _concat(_rows_of(prev.probe_files, ids), probe_files)
    step_tables = {name: _merge_step_tables(_rows_of(getattr(prev, name), ids), df, all_ids)
                   for name, df in step_tables.items()}
    return problems, lm_eval, probe_files, step_tables


def _rows_of(df: pd.DataFrame, ids: set) -> pd.DataFrame:
    if df.empty or "run_id" not in df:
        return df.iloc[0:0]
    return df[df["run_id"].isin(ids)]


def _concat(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    if a.empty:
        return b
    if b.empty:
        return a.reset_index(drop=True)
    return pd.concat([a, b], ignore_index=True)


def _merge_step_tables(old: pd.DataFrame, new: pd.DataFrame, all_ids: list[str]) -> pd.DataFrame:
    """Reused rows + freshly read rows, run_id re-coded to one categorical over all runs."""
    cats = pd.Index(all_ids)
    parts = []
    for df in (old, new):
        if df.empty or "run_id" not in df:
            continue
        df = df.copy()
        rid = df["run_id"]
        df["run_id"] = (rid.cat.set_categories(cats) if isinstance(rid.dtype, pd.CategoricalDtype)
                        else pd.Categorical(rid.astype(str), categories=cats))
        parts.append(df)
    if not parts:
        return new
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
