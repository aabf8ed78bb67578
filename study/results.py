"""The run directory: the contract between training, evaluation, dispatch and analysis.

<root>/<grid>/<run-name>/ holds config.yaml, run.json, status.json, metrics.jsonl, eval.jsonl, probes.jsonl,
probes/, lm_eval.json and checkpoints/ (docs/ARCHITECTURE.md lists every field). Every write is atomic
(temp file + rename) or an append of one whole JSON line, so a killed process never leaves a half-written file
that a reader would trust.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from study import config as config_mod
from study.fsutil import atomic_write_json, atomic_write_text
from study.timeutil import now


class RunStatus(str, Enum):
    """The state a run's status.json records (str-valued: the JSON holds the same strings as ever).

    study.status explains each; RunDir.write_status is the one writer of status.json.
    """

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


STATES = tuple(s.value for s in RunStatus)
FINAL_STATES = (RunStatus.COMPLETED.value, RunStatus.DIVERGED.value)  # a result: never rerun
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def _label(value) -> str:
    if isinstance(value, float):
        value = f"{value:g}"
    return _UNSAFE.sub("-", str(value)).strip("-") or "x"


def run_name(cfg, axes: dict | None = None) -> str:
    """Readable name + short hash: '<axis labels joined by _>-<run_id[:8]>'.

    Without axes (a single `study train`), the label is method-or-norm, schedule and scale-or-depth.
    cfg.name, when set, replaces the readable part.
    """
    if cfg.name:
        readable = _label(cfg.name)
    elif axes:
        readable = "_".join(_label(v) for v in axes.values())
    else:
        m = cfg.model
        parts = [cfg.method or m.norm, cfg.prores.schedule]
        if cfg.prores.T is not None:
            parts.append(f"T{cfg.prores.T:g}")
        parts.append(m.scale or f"L{m.n_layers}")
        readable = "_".join(_label(p) for p in parts)
    return f"{readable}-{config_mod.run_id(cfg)[:8]}"


def _json_default(obj):
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(value):
    """NaN/inf are not JSON: write them as strings so a reader can tell 'nan' from a missing value."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def check_results_root(root) -> Path:
    """`root` as a Path, refused (exit 2) when it exists but is not a folder: runs go below it."""
    from study.errors import ConfigError

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"the results root {root} is a file, not a folder", key="--out")
    return root


def write_json_atomic(path: Path, data) -> None:
    """`data` as JSON (NaN/inf as strings, numpy/torch scalars as numbers), written atomically (study.fsutil)."""
    atomic_write_json(path, _clean(data), indent=1, default=_json_default)


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a torn last line (process killed mid-append) is skipped, and so is a line that is
    not a JSON object (with a warning naming the file and line)."""
    rows = []
    try:
        with open(path, errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(row, dict):
                    logging.getLogger(__name__).warning("%s line %d is not a JSON object; skipped", path, number)
                    continue
                rows.append(row)
    except FileNotFoundError:
        pass
    return rows


def _step_of(row: dict):
    step = row.get("step", 0)
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else None


def _git(*args) -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(argv: list[str] | None = None) -> dict:
    """Where and with what a run was made: git state, versions, host, command line, SLURM ids."""
    versions = {"python": platform.python_version()}
    for name in ("torch", "numpy", "transformers", "tokenizers", "datasets", "lm_eval", "submitit", "study"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except Exception:  # an optional package that is absent or broken must not stop a run
                continue
        versions[name] = getattr(module, "__version__", "unknown")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "versions": versions,
        "host": socket.gethostname(),
        "argv": list(sys.argv if argv is None else argv),
        # Read for the record only: SLURM's variables describe the job, they never configure the run.
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "started": now(),
    }


@dataclass
class RunDir:
    path: Path
    # Called as listener(file name, row) after each row appended to a JSONL log: the trainer's live dashboards
    # (study/train/trackers.py) hear every row the run directory records, and only those.
    listeners: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self):
        self.path = Path(self.path)

    @classmethod
    def for_config(cls, cfg, root, axes: dict | None = None) -> RunDir:
        return cls(Path(root) / cfg.grid / run_name(cfg, axes))

    # ---- files -------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def exists(self) -> bool:
        return (self.path / "config.yaml").exists()

    def read_config(self):
        return config_mod.load(self.path / "config.yaml")

    def write_config(self, cfg) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.yaml", config_mod.dump_yaml(cfg))

    def read_run(self) -> dict:
        return read_json(self.path / "run.json", {}) or {}

    def write_run(self, data: dict) -> None:
        write_json_atomic(self.path / "run.json", data)

    # ---- status --------------------------------------------------------------------------------------
    def read_status(self) -> dict:
        return read_json(self.path / "status.json", {}) or {}

    def write_status(self, state: RunStatus | str, step: int | None = None, **fields) -> dict:
        """The one writer of status.json: merge `fields` into what it holds, set state, step and the time."""
        try:
            state = RunStatus(state)
        except ValueError:
            raise ValueError(f"unknown state {state!r}") from None
        status = self.read_status()
        status.update(fields)
        status.update(state=state.value, updated=now())
        if step is not None:
            status["step"] = step
        status.setdefault("error", None)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / "status.json", status)
        return status

    def record_job(self, job_id: str, cluster: str, *, submitted: str | None = None) -> dict | None:
        """Record the job that will train this run, keeping a richer state than 'queued' (never a result's).

        Called by `study submit` once the scheduler answered (with `submitted`, the time) and by the job itself
        when it starts, in case it started before submit wrote (then an already recorded job is left alone).
        Returns the new status, or None when nothing was written.
        """
        status = self.read_status()
        state = status.get("state")
        if state in FINAL_STATES:
            return None
        if submitted is None and status.get("job_id") == job_id and status.get("job_cluster") == cluster:
            return None
        queued = state in (None, RunStatus.PENDING, RunStatus.QUEUED)
        extra = {} if submitted is None else {"submitted": submitted}
        return self.write_status(RunStatus.QUEUED if queued else state, job_id=job_id, job_cluster=cluster, **extra)

    @property
    def state(self) -> str | None:
        return self.read_status().get("state")

    # ---- JSONL logs ----------------------------------------------------------------------------------
    def append_jsonl(self, name: str, row: dict) -> None:
        line = json.dumps(_clean(row), default=_json_default)
        with open(self.path / name, "a") as fh:
            fh.write(line + "\n")
            fh.flush()
        for listener in self.listeners:
            listener(name, row)

    def read_jsonl(self, name: str) -> list[dict]:
        return read_jsonl(self.path / name)

    def truncate_jsonl(self, name: str, max_step: int) -> None:
        """Drop rows logged after `max_step`: a resumed run rewrites them from its checkpoint."""
        path = self.path / name
        if not path.exists():
            return
        rows = [r for r in read_jsonl(path) if _step_of(r) is not None and _step_of(r) <= max_step]
        atomic_write_text(path, "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))
