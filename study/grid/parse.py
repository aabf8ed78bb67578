"""Reading a grid file: find it, check every key (naming the file, the key and the valid choices), expand it."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from study import config as C
from study.errors import ConfigError
from study.grid.cells import Axis, AxisValue, Grid, Rule
from study.grid.expand import expand
from study.grid.keys import Matcher, is_config_key, key_choices, norm_key
from study.labels import value_label
from study.rawconfig import deep_merge, find_yaml, read_yaml

TOP_KEYS = ("name", "description", "base", "base_file", "axes", "rules", "exclude", "eval", "lm_eval", "cluster")
RUN_KEYS = tuple(f.name for f in dataclasses.fields(C.RunConfig))  # what a base file (a run config) may hold
LM_EVAL_KEYS = {"tasks": "lm_eval_tasks", "limit": "lm_eval_limit", "batch_size": "lm_eval_batch_size",
                "data_dir": "lm_eval_data_dir"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def find_grid(name: str | Path) -> Path:
    """A grid path as given, else grids/<name>[.yaml] under the working directory or the repository; ConfigError
    if there is none."""
    return find_yaml(name, "grids", what="grid")


def load_grid(path: str | Path) -> Grid:
    """Read, validate and expand a grid file. Raises ConfigError (file, key, choices) on any problem."""
    path = find_grid(path)
    src = str(path)
    try:
        return _load(path, src)
    except ConfigError as exc:
        if "\n" in str(exc):  # the CLI prints errors on one line
            raise ConfigError(" ".join(str(exc).split()), key=None, source=None) from None
        raise


def _load(path: Path, src: str) -> Grid:
    raw = read_yaml(path)
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"unknown top-level key; valid keys: {', '.join(TOP_KEYS)}", key=str(key), source=src)

    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"expected a folder name (letters, digits, '.', '_', '-'), got {name!r}", key="name",
                          source=src)
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"expected a string, got {description!r}", key="description", source=src)

    base = _mapping(raw.get("base"), "base", src)
    inherited: dict = {}  # the base file's config: everything this grid file writes wins over it
    if "base_file" in raw:
        inherited = _read_base_file(path, raw["base_file"], src)
    if "grid" in base or "grid" in inherited:
        raise ConfigError("set the results folder with the grid's top-level `name`, not in the base config",
                          key="base.grid", source=src)

    eval_defaults = _mapping(raw.get("eval"), "eval", src)
    lm_eval = raw.get("lm_eval")
    if lm_eval is not None:
        if isinstance(lm_eval, (list, str)):
            lm_eval = {"tasks": [lm_eval] if isinstance(lm_eval, str) else lm_eval}
        if not isinstance(lm_eval, dict):
            raise ConfigError(f"expected a list of tasks or a mapping, got {lm_eval!r}", key="lm_eval", source=src)
        for k, v in lm_eval.items():
            if k not in LM_EVAL_KEYS:
                raise ConfigError(f"unknown key; valid keys: {', '.join(LM_EVAL_KEYS)}", key=f"lm_eval.{k}",
                                  source=src)
            eval_defaults.setdefault(LM_EVAL_KEYS[k], [v] if k == "tasks" and isinstance(v, str) else v)
    if eval_defaults:  # the grid's `eval` over the base file's, under the grid's own base.eval
        base_eval = base.get("eval") or {}
        if not isinstance(base_eval, dict):
            raise ConfigError(f"expected a mapping, got {base_eval!r}", key="base.eval", source=src)
        base["eval"] = deep_merge(eval_defaults, base_eval)
    base = deep_merge(inherited, base)
    cluster = _mapping(raw.get("cluster"), "cluster", src)

    axes = _parse_axes(raw.get("axes"), src)
    rules = _parse_rules(raw.get("rules"), axes, src)
    excludes = _parse_excludes(raw.get("exclude"), axes, src)
    grid = Grid(path=path, name=name, description=description.strip(), base=base, axes=axes, rules=rules,
                excludes=excludes, cluster=cluster, raw=raw)
    grid.all_cells = expand(grid)
    return grid


def _read_base_file(path: Path, base_file, src: str) -> dict:
    """The run config a grid's `base_file` names (relative to the grid file). It is a run config: one that names
    a base_file of its own (a circle back to the grid, or a chain) or holds a grid's keys is refused, naming
    both files."""
    if not isinstance(base_file, str) or not base_file:
        raise ConfigError(f"expected a path, got {base_file!r}", key="base_file", source=src)
    base_path = path.parent / base_file
    if not base_path.is_file():
        raise ConfigError(f"base file not found: {base_path}", key="base_file", source=src)
    chain, data = [path, base_path], None
    while len(chain) < 16:  # follow base_file from file to file, to name the whole circle if there is one
        if chain[-1].resolve() in {c.resolve() for c in chain[:-1]}:
            raise ConfigError(f"circular base_file: {' -> '.join(map(str, chain))}", key="base_file", source=src)
        here = read_yaml(chain[-1])
        data = here if data is None else data
        nxt = here.get("base_file")
        if not isinstance(nxt, str) or not (chain[-1].parent / nxt).is_file():
            break
        chain.append(chain[-1].parent / nxt)
    if "base_file" in data:
        raise ConfigError(f"{base_path} names a base_file of its own ({data['base_file']}); a base file is a run "
                          f"config and cannot chain to another: merge the two", key="base_file", source=src)
    grid_keys = sorted(set(data) & (set(TOP_KEYS) - set(RUN_KEYS)))
    if grid_keys:
        raise ConfigError(f"{base_path} is a grid file (it has {', '.join(grid_keys)}), not a run config",
                          key="base_file", source=src)
    for key in data:
        if key not in RUN_KEYS:
            raise ConfigError(f"unknown key; valid keys: {', '.join(RUN_KEYS)}", key=str(key), source=str(base_path))
    return data


def _mapping(value, key: str, src: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"expected a mapping, got {value!r}", key=key, source=src)
    return json.loads(json.dumps(value, default=str))


def _parse_axes(spec, src: str) -> list[Axis]:
    if spec is None:
        return []
    if not isinstance(spec, dict):
        raise ConfigError("expected a mapping of axis -> list of values", key="axes", source=src)
    axes = []
    for name, values in spec.items():
        name = str(name)
        key = f"axes.{name}"
        if not isinstance(values, list):
            raise ConfigError(f"expected a list of values, got {values!r}", key=key, source=src)
        if not values:
            raise ConfigError("empty axis: give at least one value", key=key, source=src)
        dotted = norm_key(name)
        is_key = is_config_key(dotted)
        all_mappings = all(isinstance(v, dict) for v in values)
        if not is_key and not all_mappings:
            raise ConfigError(f"unknown axis key; valid keys: {key_choices()}; or any name for an axis whose "
                              f"values are all mappings with a label", key=key, source=src)
        parsed = []
        for i, v in enumerate(values):
            vkey = f"{key}[{i}]"
            if isinstance(v, dict):
                v = dict(v)
                label = v.pop("label", None)
                if label is None:
                    raise ConfigError("a mapping value needs a `label` (its part of the run name)",
                                      key=f"{vkey}.label", source=src)
                if not isinstance(label, (str, int, float)) or isinstance(label, bool) or not str(label).strip():
                    raise ConfigError(f"expected a non-empty string, got {label!r}", key=f"{vkey}.label", source=src)
                if not v:
                    raise ConfigError("the value sets no key", key=vkey, source=src)
                parsed.append(AxisValue(str(label), _config_sets(v, vkey, src, valid="label, ")))
            else:
                # a seed value reads 'seed1' in run names, not a bare '1'
                label = f"seed{value_label(v)}" if dotted == "train.seed" else value_label(v)
                parsed.append(AxisValue(label, {dotted: v}, v))
        seen: dict[str, int] = {}
        for i, av in enumerate(parsed):
            if av.label in seen:
                raise ConfigError(f"duplicate value label {av.label!r} (values {seen[av.label]} and {i})",
                                  key=f"{key}[{i}]", source=src)
            seen[av.label] = i
        axes.append(Axis(name, parsed))
    return axes


def _check_axis_values(axis: Axis, matcher: Matcher, key: str, src: str) -> None:
    for v in matcher.values:
        if not any(av.matches(Matcher([v])) for av in axis.values):
            raise ConfigError(f"unknown value {v!r} for axis '{axis.name}'; valid choices: {', '.join(axis.labels)}",
                              key=key, source=src)


def _parse_conditions(spec, axes: list[Axis], key: str, src: str, *, config_keys: bool) -> dict:
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"expected a non-empty mapping of axis -> value(s), got {spec!r}", key=key, source=src)
    by_name = {a.name: a for a in axes}
    out = {}
    for name, value in spec.items():
        name, ckey = str(name), f"{key}.{name}"
        matcher = Matcher.parse(value, key=ckey, source=src)
        if name in by_name:
            _check_axis_values(by_name[name], matcher, ckey, src)
        elif not (config_keys and is_config_key(norm_key(name))):
            valid = ", ".join(by_name) or "none"
            extra = f"; or {key_choices()}" if config_keys else ""
            raise ConfigError(f"unknown axis; valid axes: {valid}{extra}", key=ckey, source=src)
        out[name] = matcher
    return out


def _config_sets(mapping: dict, key: str, src: str, *, valid: str = "") -> dict:
    """{dotted config key: value} of an axis value or a rule's `set`; shorthand keys (`lr`) normalised, unknown
    keys and a key given twice (shorthand and dotted) refused."""
    sets = {}
    for k, value in mapping.items():
        d = norm_key(str(k))
        if not is_config_key(d):
            raise ConfigError(f"unknown config key; valid keys: {valid}{key_choices()}", key=f"{key}.{k}",
                              source=src)
        if d in sets:
            raise ConfigError("key given twice (shorthand and dotted)", key=f"{key}.{k}", source=src)
        sets[d] = value
    return sets


def _parse_rules(spec, axes: list[Axis], src: str) -> list[Rule]:
    if spec is None:
        return []
    if not isinstance(spec, list):
        raise ConfigError("expected a list of {when: ..., set: ...}", key="rules", source=src)
    rules = []
    for i, rule in enumerate(spec):
        key = f"rules[{i}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"expected a mapping {{when: ..., set: ...}}, got {rule!r}", key=key, source=src)
        for k in rule:
            if k not in ("when", "set"):
                raise ConfigError("unknown key; valid keys: when, set", key=f"{key}.{k}", source=src)
        if "when" not in rule or "set" not in rule:
            raise ConfigError("a rule needs both `when` and `set`", key=key, source=src)
        when = _parse_conditions(rule["when"], axes, f"{key}.when", src, config_keys=True)
        sets = rule["set"]
        if not isinstance(sets, dict) or not sets:
            raise ConfigError(f"expected a non-empty mapping of config key -> value, got {sets!r}",
                              key=f"{key}.set", source=src)
        rules.append(Rule(i, when, _config_sets(sets, f"{key}.set", src)))
    return rules


def _parse_excludes(spec, axes: list[Axis], src: str) -> list[dict]:
    if spec is None:
        return []
    if not isinstance(spec, list):
        raise ConfigError("expected a list of {axis: value(s)} mappings", key="exclude", source=src)
    return [_parse_conditions(e, axes, f"exclude[{i}]", src, config_keys=False) for i, e in enumerate(spec)]

