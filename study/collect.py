"""Results store -> tidy pandas tables (the input of study.analysis, paper_figures and the notebooks).

`collect(root)` walks `<root>/<grid>/<run-name>/` run directories (docs/ARCHITECTURE.md, section "results") and
returns a `Collection` of DataFrames:

runs         one row per run directory: run_id, run_name, grid, path, state, step, error, updated, diverged_step,
             method, schedule, prores (bool), label (the paper's series label), scale, n_layers, norm, init, T, W,
             lr, steps, decay_fraction, lr_schedule, params, provenance columns, `axis.<name>` per grid axis,
             `cfg.<dotted key>` per config value (lists/dicts as JSON text), and final values: final_step,
             final_loss, final_grad_norm, final_eval_step, final_eval_loss, final_eval_ppl, eval_dataset,
             n_metrics, n_evals, n_probe_steps, has_lm_eval, n_problems.
metrics      run_id + every metrics.jsonl field (alpha lists dropped unless collect(keep_alpha=True)).
evals        run_id + every eval.jsonl field.
probes       run_id + every probes.jsonl field (one row per probe step and layer).
lm_eval      tidy lm-eval scores: run_id, task, metric, filter, value, stderr (lm_eval.json's 'results').
probe_files  run_id, step, path of probes/step_XXXXXXX.pt (Figure 4 loads them lazily).
problems     path, run_id, file, problem: everything that is missing or unreadable. Never an exception.

States: the status.json state (pending, running, completed, diverged, failed, interrupted); `partial` when a run
directory has no status.json; `corrupt` when status.json cannot be read. Corrupt files (a truncated JSON line, an
unreadable config.yaml, a missing run.json) are reported in `problems` and the rest of the run is kept.

Speed: each .jsonl file is parsed by pyarrow's multithreaded JSON reader (the fast path); a file it rejects is
re-read line by line with json.loads, keeping every line that parses and reporting the others. Tables are
concatenated once in Arrow and converted to pandas once; run_id is categorical in the step-level tables.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pajson
import yaml

from study import presets

try:  # libyaml is ~10x faster than the pure-Python loader: it matters for 1,000 configs
    _YamlLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _YamlLoader = yaml.SafeLoader

TABLES = ("runs", "metrics", "evals", "probes", "lm_eval", "probe_files", "problems")
RUN_FILES = ("run.json", "status.json", "config.yaml", "metrics.jsonl")  # any of them marks a run directory
try:
    from study.results import STATES
except ImportError:  # pragma: no cover - results is a lower layer; the fallback only guards partial checkouts
    STATES = ("pending", "queued", "running", "completed", "diverged", "failed", "interrupted")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf,
              "-infinity": -math.inf}
SKIP_DIRS = {"checkpoints", "probes", "__pycache__"}

# Known field types: pinned so that a file whose first rows happen to hold integers still reads as floats.
_METRICS_SCHEMA = pa.schema([("step", pa.int64()), ("loss", pa.float64()), ("lr", pa.float64()),
                             ("grad_norm", pa.float64()), ("tokens", pa.int64()), ("tokens_per_s", pa.float64()),
                             ("mfu", pa.float64()), ("alpha", pa.list_(pa.float64())), ("time", pa.float64())])
_EVAL_SCHEMA = pa.schema([("step", pa.int64()), ("loss", pa.float64()), ("ppl", pa.float64())])
_PROBE_SCHEMA = pa.schema([("step", pa.int64()), ("layer", pa.int64()), ("act_norm", pa.float64()),
                           ("branch_norm_attn", pa.float64()), ("branch_norm_ffn", pa.float64()),
                           ("alpha", pa.float64())])

# Paper spelling of our scale preset names (tables and figure labels).
SCALE_LABELS = {"71m": "71M", "130m": "130M", "350m": "350M", "1.3b": "1.3B", "3b": "3B", "7b": "7B",
                **{f"71m-{n}l": f"71M-{n}L" for n in (24, 48, 72, 96, 120)}}


# ---------------------------------------------------------------------------------------------------
# Labels shared by figures and tables
# ---------------------------------------------------------------------------------------------------
def method_label(method, norm=None, init=None) -> str:
    """The paper's label of a method ('Pre-LN (DS-Init)'); falls back to the norm/init when method is unset."""
    if isinstance(method, str) and method in presets.METHOD_LABELS:
        return presets.METHOD_LABELS[method]
    if isinstance(norm, str):
        for name, spec in presets.METHODS.items():
            if spec["norm"] == norm and (init is None or spec["init"] == init):
                return presets.METHOD_LABELS[name]
        return f"{norm}-norm" + (f" ({init})" if isinstance(init, str) else "")
    return str(method) if isinstance(method, str) else "unknown"


def prores_tag(schedule) -> str | None:
    """'ProRes' for the default linear schedule, 'ProRes-equal', 'ProRes-<schedule>'; None without ProRes."""
    if not isinstance(schedule, str) or schedule == "none":
        return None
    return "ProRes" if schedule == "linear" else f"ProRes-{schedule}"


def series_label(method, schedule, norm=None, init=None) -> str:
    """'Pre-LN', 'Pre-LN (ProRes)', 'Pre-LN (ProRes-equal)', 'Pre-LN (DS-Init, ProRes)' as in the paper."""
    base, tag = method_label(method, norm, init), prores_tag(schedule)
    if tag is None:
        return base
    return f"{base[:-1]}, {tag})" if base.endswith(")") else f"{base} ({tag})"


def scale_label(scale) -> str | None:
    if not isinstance(scale, str):
        return None
    return SCALE_LABELS.get(scale, scale)


# ---------------------------------------------------------------------------------------------------
# The collection
# ---------------------------------------------------------------------------------------------------
def _empty(columns) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


@dataclass
class Collection:
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
        if path.exists() and not (path.is_dir() and (path / "runs.parquet").exists()):
            raise FileExistsError(f"{path} exists and is not a saved collection; not overwriting it")
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for name in TABLES:
            _parquet_safe(getattr(self, name)).to_parquet(tmp / f"{name}.parquet", index=False)
        meta = {"root": self.root, "saved": _now(), "tables": {t: len(getattr(self, t)) for t in TABLES},
                **{k: v for k, v in self.meta.items() if k not in ("root", "saved", "tables")}}
        (tmp / "collection.json").write_text(json.dumps(meta, indent=1, default=str))
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
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
        tables[name] = pd.read_parquet(f) if f.exists() else _empty(["run_id"])
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------
# Reading one file
# ---------------------------------------------------------------------------------------------------
_SCALAR_TYPES = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}


def _first_row(path: Path) -> dict | None:
    try:
        with open(path, "rb") as fh:
            line = fh.readline(1 << 20)
        row = json.loads(line)
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) else None


def _fast_schema(path: Path, schema: pa.Schema, drop: tuple[str, ...]) -> tuple[pa.Schema, str]:
    """The explicit schema for pyarrow and its unexpected-field behaviour.

    Known fields are pinned (`drop`ped ones left out); other fields seen in the first row are typed from it and
    then pinned too, so pyarrow can skip the dropped fields ('ignore'), which parses ~30% faster. A first row
    holding a list or object outside the known fields falls back to inference for unknown fields ('infer').
    """
    known = pa.schema([f for f in schema if f.name not in drop])
    first = _first_row(path) or {}
    extra = []
    for k, v in first.items():
        if k in schema.names:
            continue
        if type(v) not in _SCALAR_TYPES:
            return (schema if not drop else known), "infer"
        extra.append(pa.field(k, _SCALAR_TYPES[type(v)]))
    if not drop:
        return pa.schema(list(known) + extra), "infer"
    return pa.schema(list(known) + extra), "ignore"


def read_jsonl(path: str | os.PathLike, schema: pa.Schema | None = None, *,
               drop: tuple[str, ...] = ()) -> tuple[pa.Table | None, list[str]]:
    """A .jsonl file as an Arrow table, and the problems found (bad lines). None when the file is empty.

    Fast path: pyarrow.json (single-threaded: collect() reads several files at once) with `schema` pinning the
    known fields; fields in `drop` are not materialised. If pyarrow rejects the file (a truncated or garbled
    line, a type clash, non-finite numbers written as "nan"/"inf" strings as study.results does), every line is
    parsed with json.loads instead: NaN/Infinity literals and the strings "nan", "inf", "-inf" become floats;
    lines that still fail are skipped and reported.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return None, []
    except OSError as exc:
        return None, [f"cannot read: {exc.strerror or exc}"]
    attempts = []
    if schema is not None:
        fast, behaviour = _fast_schema(path, schema, drop)
        attempts.append(pajson.ParseOptions(explicit_schema=fast, unexpected_field_behavior=behaviour))
    attempts.append(pajson.ParseOptions())
    read_opts = pajson.ReadOptions(use_threads=False, block_size=8 << 20)
    for opts in attempts:
        try:
            table = pajson.read_json(path, parse_options=opts, read_options=read_opts)
            return _finish(table, drop), []
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            continue
        except OSError as exc:
            return None, [f"cannot read: {exc}"]
    table, problems = _read_jsonl_slow(path)
    return (None if table is None else _finish(table, drop)), problems


def _finish(table: pa.Table, drop: tuple[str, ...]) -> pa.Table:
    if drop:
        gone = [c for c in drop if c in table.column_names]
        if gone:
            table = table.drop_columns(gone)
    return _drop_null_columns(table)


def _drop_null_columns(table: pa.Table) -> pa.Table:
    # pyarrow gives a field it never saw a value for the `null` type; keep it (all-null) but as float
    for i, f in enumerate(table.schema):
        if pa.types.is_null(f.type):
            table = table.set_column(i, f.name, pa.nulls(len(table), pa.float64()))
    return table


def _read_jsonl_slow(path: Path) -> tuple[pa.Table | None, list[str]]:
    rows, bad = [], []
    with open(path, "rb") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad.append(i)
                continue
            if isinstance(row, dict):
                for k, v in row.items():
                    if isinstance(v, str) and v.lower() in _NONFINITE:
                        row[k] = _NONFINITE[v.lower()]
                rows.append(row)
            else:
                bad.append(i)
    problems = []
    if bad:
        last = " (the last line: truncated write?)" if bad == [i] else ""
        problems.append(f"{len(bad)} unreadable line{'s' if len(bad) > 1 else ''} skipped "
                        f"(line {', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''}){last}")
    if not rows:
        return None, problems
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a field with mixed types: keep them as text
        df = pd.DataFrame(rows)
        for col in df.columns:
            if df[col].dtype == object:
                df[col] = df[col].map(lambda v: None if v is None else v if isinstance(v, str)
                                      else json.dumps(v, default=str))
        table = pa.Table.from_pandas(df, preserve_index=False)
    return _drop_null_columns(table), problems


def _read_json(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as exc:
        return None, f"not valid JSON ({str(exc).splitlines()[0][:120]})"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    return data, None


def _read_yaml(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = yaml.load(path.read_bytes(), Loader=_YamlLoader)
    except FileNotFoundError:
        return None, "missing"
    except (OSError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        return None, f"not valid YAML{where}"
    if not isinstance(data, dict):
        return None, "not a mapping"
    return data, None


def flatten(data: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and empty dicts become JSON text (one Parquet type per column)."""
    out = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}."))
        elif isinstance(v, (list, tuple, dict)):
            out[key] = json.dumps(v, default=str)
        else:
            out[key] = v
    return out


def _num(v):
    if isinstance(v, bool) or v is None:
        return np.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def tidy_lm_eval(data: dict) -> list[dict]:
    """lm-eval's {'results': {task: {'acc,none': x, 'acc_stderr,none': s, ...}}} -> rows task/metric/filter/value/stderr.

    Group scores under 'groups' (e.g. mmlu) are included when 'results' does not already hold them.
    Non-numeric entries ('alias', 'N/A' stderrs) are skipped or NaN.
    """
    rows = []
    results = data.get("results") or {}
    if not isinstance(results, dict):
        return rows
    groups = data.get("groups") if isinstance(data.get("groups"), dict) else {}
    results = {**{k: v for k, v in groups.items() if k not in results}, **results}
    for task, scores in results.items():
        if not isinstance(scores, dict):
            continue
        parsed = {}
        for key, value in scores.items():
            metric, _, filt = str(key).partition(",")
            parsed[(metric, filt or "none")] = value
        for (metric, filt), value in parsed.items():
            if metric.endswith("_stderr") or metric == "alias":
                continue
            v = _num(value)
            if math.isnan(v) and not (isinstance(value, float)):
                continue
            rows.append({"task": str(task), "metric": metric, "filter": filt, "value": v,
                         "stderr": _num(parsed.get((f"{metric}_stderr", filt)))})
    return rows


# ---------------------------------------------------------------------------------------------------
# One run directory
# ---------------------------------------------------------------------------------------------------
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
class _RunRead:
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
            from study import config as _config  # noqa: PLC0415  (only for runs without run.json)

            return _config.run_id(_config.resolve(cfg))
        except Exception:  # noqa: BLE001  - a config this version cannot resolve: fall back to the path
            pass
    return rel


def _read_run(path: Path, root: Path, keep_alpha: bool) -> _RunRead:
    rel = path.relative_to(root).as_posix() if path != root else path.name
    out = _RunRead(row={})
    problem = out.problems.append

    info, err = _read_json(path / "run.json")
    if err:
        problem(("run.json", err))
    status, serr = _read_json(path / "status.json")
    cfg, cerr = _read_yaml(path / "config.yaml")
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
        table, probs = read_jsonl(mpath, _METRICS_SCHEMA, drop=() if keep_alpha else ("alpha",))
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
        row.update(final_step=_num(last.get("step")), final_loss=_num(last.get("loss")),
                   final_grad_norm=_num(last.get("grad_norm")))

    # eval.jsonl
    epath = path / "eval.jsonl"
    row.update(n_evals=0, eval_dataset=None, final_eval_step=np.nan, final_eval_loss=np.nan, final_eval_ppl=np.nan)
    if epath.exists():
        table, probs = read_jsonl(epath, _EVAL_SCHEMA)
        out.problems += [("eval.jsonl", p) for p in probs]
        out.evals = table
        if table is not None and len(table):
            row.update(n_evals=len(table), **_final_eval(table))

    # probes
    ppath = path / "probes.jsonl"
    row["n_probe_steps"] = 0
    if ppath.exists():
        table, probs = read_jsonl(ppath, _PROBE_SCHEMA)
        out.problems += [("probes.jsonl", p) for p in probs]
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
        data, lerr = _read_json(lpath)
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
    loss = _num(last.get("loss"))
    ppl = _num(last.get("ppl"))
    if math.isnan(ppl) and not math.isnan(loss):
        ppl = math.exp(loss) if loss < 700 else math.inf
    return {"eval_dataset": primary, "final_eval_step": _num(last["step"]), "final_eval_loss": loss,
            "final_eval_ppl": ppl}


# ---------------------------------------------------------------------------------------------------
# Collect
# ---------------------------------------------------------------------------------------------------
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
    try:
        parts.append(f"probes/:{os.stat(run_dir / 'probes').st_mtime_ns}")
    except OSError:
        pass
    return ";".join(parts)


def _previous(reuse, keep_alpha: bool) -> Collection | None:
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


def collect(root: str | os.PathLike, *, keep_alpha: bool = False, workers: int | None = None,
            reuse: "Collection | str | os.PathLike | None" = None) -> Collection:
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
    prev = _previous(reuse, keep_alpha)
    kept = pd.DataFrame()
    if prev is not None and len(prev.runs):
        old = prev.runs.reset_index(drop=True)
        match = old["path"].map({str(d): sig for d, sig in sigs.items()}).eq(old["files_sig"])
        kept = old[match.fillna(False).astype(bool)]
    kept_paths = set(kept["path"]) if len(kept) else set()
    todo = [d for d in dirs if str(d) not in kept_paths]

    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1 and len(todo) > 8:
        with ThreadPoolExecutor(workers) as pool:
            reads = list(pool.map(lambda d: _read_run(d, root, keep_alpha), todo))
    else:
        reads = [_read_run(d, root, keep_alpha) for d in todo]
    for d, r in zip(todo, reads):
        r.row["files_sig"] = sigs[d]

    # unique run ids (the same run copied twice under a root would otherwise merge its rows)
    seen: dict[str, str] = dict(zip(kept["run_id"], kept["path"])) if len(kept) else {}
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
    lm = pd.DataFrame([{"run_id": rid, **row} for rid, r in zip(new_ids, reads) for row in r.lm_eval],
                      columns=["run_id", "task", "metric", "filter", "value", "stderr"])
    pf = pd.DataFrame([{"run_id": rid, **row} for rid, r in zip(new_ids, reads) for row in r.probe_files],
                      columns=["run_id", "step", "path", "bytes"])
    tables = {name: _stack([getattr(r, name) for r in reads], new_ids) for name in ("metrics", "evals", "probes")}
    if len(kept):
        ids = set(kept_ids)
        problems = _concat(_rows_of(prev.problems, ids), problems)
        lm = _concat(_rows_of(prev.lm_eval, ids), lm)
        pf = _concat(_rows_of(prev.probe_files, ids), pf)
        for name in tables:
            tables[name] = _merge_step_tables(_rows_of(getattr(prev, name), ids), tables[name], all_ids)
    return Collection(runs=runs, problems=problems, lm_eval=lm, probe_files=pf, root=str(root),
                      meta={"collected": _now(), "root": str(root), "keep_alpha": keep_alpha,
                            "reused_runs": len(kept_ids), "read_runs": len(new_ids)}, **tables)


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
        return _empty(["run_id", "step"])
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
