"""The collection: the tables of one results root, and their Parquet store (one file per table).

A saved collection is a folder holding <table>.parquet for each name in TABLES plus collection.json (root, time
saved, table sizes, collect's settings); `study figures` and the notebooks read it back with `load`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from study.fsutil import atomic_dir
from study.timeutil import now

TABLES = ("runs", "metrics", "evals", "probes", "lm_eval", "probe_files", "problems")


def empty_table(columns) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


@dataclass
class Collection:
    """The tables of one results root (study.collect describes each), where they came from, and how."""

    runs: pd.DataFrame
    metrics: pd.DataFrame
    evals: pd.DataFrame
    probes: pd.DataFrame
    lm_eval: pd.DataFrame
    probe_files: pd.DataFrame
    problems: pd.DataFrame
    root: str | None = None
    meta: dict = field(default_factory=dict)

    # -- access -----------------------------------------------------------------------------------
    def run(self, run_id: str) -> pd.Series:
        rows = self.runs[self.runs["run_id"] == run_id]
        if rows.empty:
            raise KeyError(f"no run {run_id!r}")
        return rows.iloc[0]

    def _rows(self, table: str, run_id: str) -> pd.DataFrame:
        df = getattr(self, table)
        if df.empty or "run_id" not in df:
            return df.iloc[0:0]
        return df[df["run_id"] == run_id].reset_index(drop=True)

    def runs_with(self, table: str) -> set[str]:
        """The run ids that have rows in `table`, read from the run_id column's codes (no copy of a table that
        may hold millions of rows)."""
        df = getattr(self, table)
        if df.empty or "run_id" not in df:
            return set()
        ids = df["run_id"]
        if isinstance(ids.dtype, pd.CategoricalDtype):
            present = np.unique(ids.cat.codes.to_numpy())
            return {str(ids.cat.categories[c]) for c in present if c >= 0}
        return set(ids.astype(str).unique())

    def metrics_for(self, run_id: str) -> pd.DataFrame:
        return self._rows("metrics", run_id)

    def evals_for(self, run_id: str) -> pd.DataFrame:
        return self._rows("evals", run_id)

    def probes_for(self, run_id: str) -> pd.DataFrame:
        return self._rows("probes", run_id)

    def lm_eval_for(self, run_id: str) -> pd.DataFrame:
        return self._rows("lm_eval", run_id)

    def probe_files_for(self, run_id: str) -> pd.DataFrame:
        return self._rows("probe_files", run_id)

    def summary(self) -> str:
        """Runs per state and per grid, table sizes, and the problems (what `study collect` prints)."""
        lines = [f"{len(self.runs)} runs" + (f" under {self.root}" if self.root else "")]
        if len(self.runs):
            states = self.runs["state"].value_counts()
            lines.append("  states: " + ", ".join(f"{k} {v}" for k, v in states.items()))
            grids = self.runs["grid"].astype(str).value_counts()
            lines.append("  grids:  " + ", ".join(f"{k} {v}" for k, v in grids.items()))
        lines.append("  rows:   " + ", ".join(f"{t} {len(getattr(self, t))}" for t in TABLES[1:-1]))
        n = len(self.problems)
        lines.append(f"{n} problem{'s' if n != 1 else ''}")
        for row in self.problems.head(50).itertuples():
            lines.append(f"  {row.path}: {row.file}: {row.problem}")
        if n > 50:
            lines.append(f"  ... and {n - 50} more (Collection.problems)")
        return "\n".join(lines)

    # -- Parquet ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write a folder `path` holding one Parquet file per table plus collection.json; returns the folder.

        The folder is written next to its final place and renamed in, so a reader never sees half of it. An
        existing folder is replaced only if it is a saved collection (holds runs.parquet).
        """
        path = Path(path)
        if path.exists() and not is_saved_collection(path):
            raise FileExistsError(f"{path} exists and is not a saved collection; not overwriting it")
        with atomic_dir(path, replace=True) as tmp:
            for name in TABLES:
                _parquet_safe(getattr(self, name)).to_parquet(tmp / f"{name}.parquet", index=False)
            meta = {"root": self.root, "saved": now(), "tables": {t: len(getattr(self, t)) for t in TABLES},
                    **{k: v for k, v in self.meta.items() if k not in ("root", "saved", "tables")}}
            (tmp / "collection.json").write_text(json.dumps(meta, indent=1, default=str))
        return path


def is_saved_collection(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "runs.parquet").exists()


def load(path: str | os.PathLike) -> Collection:
    """Read a collection written by Collection.save (missing tables come back empty)."""
    path = Path(path)
    if not is_saved_collection(path):
        raise FileNotFoundError(f"{path} is not a saved collection (no runs.parquet inside)")
    tables = {}
    for name in TABLES:
        f = path / f"{name}.parquet"
        tables[name] = pd.read_parquet(f) if f.exists() else empty_table(["run_id"])
    meta = {}
    if (path / "collection.json").exists():
        try:
            meta = json.loads((path / "collection.json").read_text())
        except (OSError, ValueError):
            meta = {}
    return Collection(**tables, root=meta.get("root"), meta=meta)


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding mixed Python types become text (JSON for lists/dicts) so Arrow can store them."""
    out = None
    for col in df.columns:
        s = df[col]
        if s.dtype != object:
            continue
        kinds = {type(v) for v in s if v is not None and not (isinstance(v, float) and math.isnan(v))}
        numeric = kinds <= {int, float, bool} and not ({bool} < kinds)
        if len(kinds) <= 1 and not (kinds & {list, dict, tuple}) or numeric:
            continue
        if out is None:
            out = df.copy()
        out[col] = s.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v))
                         else v if isinstance(v, str) else json.dumps(v, default=str))
    return df if out is None else out
