"""Reading one results file: .jsonl logs as Arrow tables, JSON and YAML documents, lm-eval scores.

Nothing here raises for a bad file: each reader returns what it could read and the problems it found, which
study.collect keeps in its `problems` table.

Speed: each .jsonl file is parsed by pyarrow's JSON reader (the fast path); a file it rejects is re-read line by
line with json.loads, keeping every line that parses and reporting the others.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pajson
import yaml

from study.errors import ConfigError
from study.rawconfig import check_aliases

try:  # libyaml is ~10x faster than the pure-Python loader: it matters for 1,000 configs
    _YamlLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _YamlLoader = yaml.SafeLoader

_NONFINITE = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf,
              "-infinity": -math.inf}

# Known field types: pinned so that a file whose first rows happen to hold integers still reads as floats.
METRICS_SCHEMA = pa.schema([("step", pa.int64()), ("loss", pa.float64()), ("lr", pa.float64()),
                            ("grad_norm", pa.float64()), ("tokens", pa.int64()), ("tokens_per_s", pa.float64()),
                            ("mfu", pa.float64()), ("alpha", pa.list_(pa.float64())), ("time", pa.float64())])
EVAL_SCHEMA = pa.schema([("step", pa.int64()), ("loss", pa.float64()), ("ppl", pa.float64())])
PROBE_SCHEMA = pa.schema([("step", pa.int64()), ("layer", pa.int64()), ("act_norm", pa.float64()),
                          ("branch_norm_attn", pa.float64()), ("branch_norm_ffn", pa.float64()),
                          ("alpha", pa.float64())])

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
    table, problems = _read_jsonl_slow(path, schema)
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


def _fits(row: dict, schema: pa.Schema | None) -> bool:
    """A row whose known fields have the wrong type (a "step" that is text, a loss that is a list) is malformed:
    skipped and reported, so one bad row cannot turn a whole column into text or stop collect and figures."""
    if schema is None:
        return True
    for f in schema:
        value = row.get(f.name)
        if value is None:
            continue
        if pa.types.is_integer(f.type) and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        if pa.types.is_floating(f.type) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return False
    return True


def _read_jsonl_slow(path: Path, schema: pa.Schema | None = None) -> tuple[pa.Table | None, list[str]]:
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
                if _fits(row, schema):
                    rows.append(row)
                else:
                    bad.append(i)
            else:
                bad.append(i)
    problems = []
    if bad:
        last = " (the last line: truncated write?)" if bad == [i] else ""
        problems.append(f"{len(bad)} unreadable or malformed line{'s' if len(bad) > 1 else ''} skipped "
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


def read_json(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as exc:
        return None, f"not valid JSON ({str(exc).splitlines()[0][:120]})"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    return data, None


def read_yaml(path: Path) -> tuple[dict | None, str | None]:
    try:
        raw = path.read_bytes()
        if b"&" in raw:  # an anchor (the configs the trainer writes have none): bounded before it is expanded
            check_aliases(raw, str(path))
        data = yaml.load(raw, Loader=_YamlLoader)
    except FileNotFoundError:
        return None, "missing"
    except ConfigError as exc:
        return None, exc.message
    except RecursionError:
        return None, "nested too deeply"
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


def num(v) -> float:
    """v as a float; NaN for None, booleans and anything that is not a number."""
    if isinstance(v, bool) or v is None:
        return np.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def tidy_lm_eval(data: dict) -> list[dict]:
    """lm-eval's {'results': {task: {'acc,none': x, 'acc_stderr,none': s}}} -> rows task/metric/filter/value/stderr.

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
            v = num(value)
            if math.isnan(v) and not (isinstance(value, float)):
                continue
            rows.append({"task": str(task), "metric": metric, "filter": filt, "value": v,
                         "stderr": num(parsed.get((f"{metric}_stderr", filt)))})
    return rows

