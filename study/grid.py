"""Grid files -> cells: the product of a grid's axes, less its excludes, each cell a fully resolved RunConfig.

A grid file (YAML; docs/grids.md is the reference):

    name: paper-main              # results subfolder <root>/<name>/ (default: the file stem)
    description: ...
    base_file: base/paper.yaml    # optional run-config YAML, relative to this file, merged under `base`
    base: {recipe: paper, train: {steps: 100000}}           # a run config as study.config.resolve takes it
    axes:                         # axis -> values; the grid is their product, in this order
      method: [pre-ln, post-ln]   # shorthands: method, scale (model.scale), schedule (prores.schedule)
      schedule:                   # or a dotted config key; a value may set several keys at once, with a label
        - none
        - {label: linear-T1000, prores.schedule: linear, prores.T: 1000}
    rules:                        # values where axes meet, applied in order after the axes
      - when: {scale: [71m-96l, 71m-120l], schedule: linear}
        set: {prores.T: 500}
    exclude:                      # cells to leave out (values: a value, a list, or {not: value-or-list})
      - {method: post-ln, schedule: {not: none}}
    eval: {every: 1000}           # defaults for the run config's eval section
    lm_eval: [paper]              # or {tasks: [...], limit: N, batch_size: N, data_dir: DIR}
    cluster: {gpus_per_node: 8}   # defaults for `study submit`, kept as a plain dict

Errors are ConfigError (exit 2) naming the grid file, the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study import config as C
from study import presets, prores
from study.errors import ConfigError
from study.results import FINAL_STATES, RunDir, read_json, run_name

__all__ = [
    "Grid", "Cell", "Axis", "AxisValue", "Rule", "load_grid", "find_grid", "run_name", "estimate",
    "SHORTHANDS", "TOP_KEYS", "DEFAULT_MFU", "DEFAULT_PEAK_FLOPS", "PEAK_NOTE",
]

SHORTHANDS = {"method": "method", "scale": "model.scale", "schedule": "prores.schedule"}
TOP_KEYS = ("name", "description", "base", "base_file", "axes", "rules", "exclude", "eval", "lm_eval", "cluster")
LM_EVAL_KEYS = {"tasks": "lm_eval_tasks", "limit": "lm_eval_limit", "batch_size": "lm_eval_batch_size",
                "data_dir": "lm_eval_data_dir"}
DEFAULT_MFU = 0.40
DEFAULT_PEAK_FLOPS = 989e12
PEAK_NOTE = "H100 SXM bf16 dense"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MISSING = object()


# ---------------------------------------------------------------------------------------------------
# Config keys
# ---------------------------------------------------------------------------------------------------
def _walk_keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(tp):
            yield key, "section"
            yield from _walk_keys(tp, key + ".")
        else:
            yield key, "dict" if (tp is dict or typing.get_origin(tp) is dict or _optional_dict(tp)) else "leaf"


def _optional_dict(tp) -> bool:
    return any(a is dict or typing.get_origin(a) is dict for a in typing.get_args(tp))


@functools.lru_cache(maxsize=1)
def _config_keys() -> dict[str, str]:
    """dotted key -> 'section' | 'leaf' | 'dict' for every field of RunConfig."""
    return dict(_walk_keys(C.RunConfig))


def _is_config_key(dotted: str) -> bool:
    """A settable dotted key: a leaf field, or a key inside a dict-valued field (data.hf_data_files.train)."""
    keys = _config_keys()
    if keys.get(dotted) in ("leaf", "dict"):
        return True
    parts = dotted.split(".")
    return any(keys.get(".".join(parts[:i])) == "dict" for i in range(1, len(parts)))


def _norm_key(key: str) -> str:
    return SHORTHANDS.get(key, key)


def _key_choices() -> str:
    return f"{', '.join(SHORTHANDS)} or a dotted config key (e.g. optim.lr, model.n_layers, prores.T)"


def _default_value(dotted: str):
    node: Any = C.RunConfig()
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node):
            return None
        node = getattr(node, part, None)
    return node


# ---------------------------------------------------------------------------------------------------
# Values, labels and matching
# ---------------------------------------------------------------------------------------------------
def _label(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "-".join(_label(v) for v in value)
    return str(value)


def _same(actual, wanted) -> bool:
    """Loose equality for matching: equal values, equal labels, or equal numbers ('1e-3' matches 0.001)."""
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return _label(actual).lower() == _label(wanted).lower()
    if actual == wanted or _label(actual) == _label(wanted):
        return True
    if isinstance(actual, (list, dict)) or isinstance(wanted, (list, dict)):
        return False
    try:
        return float(actual) == float(wanted)
    except (TypeError, ValueError):
        return False


def _values_equal(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str) or (
        not isinstance(a, (list, dict, bool)) and not isinstance(b, (list, dict, bool)) and _same(a, b))


@dataclass
class Matcher:
    """A condition value: one value, a list (any of), or {not: value-or-list}."""

    values: list
    negate: bool = False

    @classmethod
    def parse(cls, spec, *, key: str, source: str) -> "Matcher":
        negate = False
        if isinstance(spec, dict):
            if set(spec) != {"not"}:
                raise ConfigError("expected a value, a list of values or {not: value-or-list}", key=key,
                                  source=source)
            spec, negate = spec["not"], True
        values = list(spec) if isinstance(spec, (list, tuple)) else [spec]
        if not values:
            raise ConfigError("empty list of values", key=key, source=source)
        return cls(values, negate)

    def __call__(self, *candidates) -> bool:
        hit = any(_same(c, v) for c in candidates for v in self.values)
        return hit != self.negate


# ---------------------------------------------------------------------------------------------------
# Grid objects
# ---------------------------------------------------------------------------------------------------
@dataclass
class AxisValue:
    label: str
    sets: dict  # normalised dotted key -> value
    scalar: Any = _MISSING  # the plain value, for scalar axis values

    def matches(self, matcher: Matcher) -> bool:
        return matcher(self.label) if self.scalar is _MISSING else matcher(self.label, self.scalar)


@dataclass
class Axis:
    name: str
    values: list[AxisValue]

    @property
    def labels(self) -> list[str]:
        return [v.label for v in self.values]


@dataclass
class Rule:
    index: int
    when: dict  # axis name or dotted key -> Matcher
    sets: dict  # normalised dotted key -> value


@dataclass
class Cell:
    """One run of a grid: its resolved config, readable name and stable id."""

    run_id: str
    run_name: str
    axes: dict  # axis name -> label, in axis order
    config: C.RunConfig
    grid: str
    index: int = 0

    def run_dir(self, root) -> Path:
        return RunDir.for_config(self.config, root, self.axes).path

    def status(self, root) -> dict:
        """The run's status.json ({} when it has none yet)."""
        return read_json(self.run_dir(root) / "status.json", {}) or {}

    def is_final(self, root) -> bool:
        return self.status(root).get("state") in FINAL_STATES

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.axes.items()) or self.run_name

    @functools.cached_property
    def config_dict(self) -> dict:
        return C.to_dict(self.config)


@dataclass
class Grid:
    path: Path
    name: str
    description: str
    base: dict  # the merged base run config (base_file < base, eval/lm_eval defaults filled in)
    axes: list[Axis]
    rules: list[Rule]
    excludes: list[dict]  # axis name -> Matcher
    cluster: dict
    raw: dict = field(repr=False)
    all_cells: list[Cell] = field(default_factory=list, repr=False)

    @property
    def source(self) -> str:
        return str(self.path)

    @property
    def axis_names(self) -> list[str]:
        return [a.name for a in self.axes]

    def axis(self, name: str) -> Axis | None:
        return next((a for a in self.axes if a.name == name), None)

    def cells(self, where: list[str] | tuple[str, ...] = ()) -> list[Cell]:
        """The cells matching every 'key=value' clause (value may list alternatives: 'method=pre-ln,post-ln').

        key is an axis name (matched against the axis label or value) or a config key (shorthand or dotted,
        matched against the resolved config). A clause that matches no cell of the grid is an error listing the
        values that occur.
        """
        cells = list(self.all_cells)
        for clause in where:
            key, matcher = self._parse_where(clause)
            hits = [c for c in self.all_cells if self._cell_matches(c, key, matcher)]
            if not hits:
                seen = sorted({v for c in self.all_cells for v in self._where_values(c, key)})
                raise ConfigError(f"no cell matches {clause!r}; values in this grid: {', '.join(seen)}",
                                  key=key, source=f"{self.source} --where")
            ids = {c.run_id for c in hits}
            cells = [c for c in cells if c.run_id in ids]
        return cells

    def select(self, where=(), only=()) -> list[Cell]:
        """cells(where), further limited to `only` (run ids, unique run-id prefixes or run names)."""
        cells = self.cells(where)
        if not only:
            return cells
        chosen: list[Cell] = []
        for token in only:
            hits = [c for c in self.all_cells
                    if token in (c.run_id, c.run_name) or (len(token) >= 4 and c.run_id.startswith(token))]
            if not hits:
                raise ConfigError(f"no cell has run id or name {token!r} (see `study grid show {self.source}`)",
                                  key="--only", source=self.source)
            chosen += [c for c in hits if c not in chosen]
        ids = {c.run_id for c in chosen}
        return [c for c in cells if c.run_id in ids]

    # -- where clauses ---------------------------------------------------------------------------
    def _parse_where(self, clause: str) -> tuple[str, Matcher]:
        if "=" not in clause:
            raise ConfigError(f"expected KEY=VALUE, got {clause!r}", source=f"{self.source} --where")
        key, value = (s.strip() for s in clause.split("=", 1))
        if key not in self.axis_names and not _is_config_key(_norm_key(key)):
            raise ConfigError(f"unknown key; valid keys: the axes ({', '.join(self.axis_names) or 'none'}), "
                              f"{_key_choices()}", key=key, source=f"{self.source} --where")
        return key, Matcher([v.strip() for v in value.split(",")])

    def _cell_matches(self, cell: Cell, key: str, matcher: Matcher) -> bool:
        axis = self.axis(key)
        if axis is not None:
            value = next(v for v in axis.values if v.label == cell.axes[key])
            if value.matches(matcher):
                return True
        dotted = _norm_key(key)
        if _is_config_key(dotted):
            actual = C.get_path(cell.config_dict, dotted, _MISSING)
            if actual is not _MISSING and matcher(actual):
                return True
        return False

    def _where_values(self, cell: Cell, key: str) -> list[str]:
        out = [cell.axes[key]] if key in cell.axes else []
        actual = C.get_path(cell.config_dict, _norm_key(key), _MISSING)
        if actual is not _MISSING:
            out.append(_label(actual))
        return out


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------
def find_grid(name: str | Path) -> Path:
    """A grid path as given, else grids/<name>[.yaml] under the working directory or the repository."""
    path = Path(name)
    if path.exists():
        return path
    candidates = []
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        for rel in (Path(name), Path("grids") / name):
            candidates += [root / rel, root / rel.with_name(rel.name + ".yaml")]
    return next((c for c in candidates if c.is_file()), path)


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
    raw = C.read_yaml(path)
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
    if "base_file" in raw:
        base_file = raw["base_file"]
        if not isinstance(base_file, str) or not base_file:
            raise ConfigError(f"expected a path, got {base_file!r}", key="base_file", source=src)
        base_path = (path.parent / base_file)
        if not base_path.is_file():
            raise ConfigError(f"base file not found: {base_path}", key="base_file", source=src)
        base = C.deep_merge(C.read_yaml(base_path), base)
    if "grid" in base:
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
    if eval_defaults:
        base_eval = base.get("eval") or {}
        if not isinstance(base_eval, dict):
            raise ConfigError(f"expected a mapping, got {base_eval!r}", key="base.eval", source=src)
        base["eval"] = C.deep_merge(eval_defaults, base_eval)
    cluster = _mapping(raw.get("cluster"), "cluster", src)

    axes = _parse_axes(raw.get("axes"), src)
    rules = _parse_rules(raw.get("rules"), axes, src)
    excludes = _parse_excludes(raw.get("exclude"), axes, src)
    grid = Grid(path=path, name=name, description=description.strip(), base=base, axes=axes, rules=rules,
                excludes=excludes, cluster=cluster, raw=raw)
    grid.all_cells = _expand(grid)
    return grid


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
        dotted = _norm_key(name)
        is_key = _is_config_key(dotted)
        all_mappings = all(isinstance(v, dict) for v in values)
        if not is_key and not all_mappings:
            raise ConfigError(f"unknown axis key; valid keys: {_key_choices()}; or any name for an axis whose "
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
                sets = {}
                for k, val in v.items():
                    d = _norm_key(str(k))
                    if not _is_config_key(d):
                        raise ConfigError(f"unknown config key; valid keys: label, {_key_choices()}",
                                          key=f"{vkey}.{k}", source=src)
                    if d in sets:
                        raise ConfigError("key given twice (shorthand and dotted)", key=f"{vkey}.{k}", source=src)
                    sets[d] = val
                parsed.append(AxisValue(str(label), sets))
            else:
                parsed.append(AxisValue(_label(v), {dotted: v}, v))
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
        elif not (config_keys and _is_config_key(_norm_key(name))):
            valid = ", ".join(by_name) or "none"
            extra = f"; or {_key_choices()}" if config_keys else ""
            raise ConfigError(f"unknown axis; valid axes: {valid}{extra}", key=ckey, source=src)
        out[name] = matcher
    return out


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
        norm = {}
        for k, v in sets.items():
            d = _norm_key(str(k))
            if not _is_config_key(d):
                raise ConfigError(f"unknown config key; valid keys: {_key_choices()}", key=f"{key}.set.{k}",
                                  source=src)
            norm[d] = v
        rules.append(Rule(i, when, norm))
    return rules


def _parse_excludes(spec, axes: list[Axis], src: str) -> list[dict]:
    if spec is None:
        return []
    if not isinstance(spec, list):
        raise ConfigError("expected a list of {axis: value(s)} mappings", key="exclude", source=src)
    return [_parse_conditions(e, axes, f"exclude[{i}]", src, config_keys=False) for i, e in enumerate(spec)]


# ---------------------------------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------------------------------
def _view(raw: dict, dotted: str):
    """The value a config key will have, as far as known before resolution: set explicitly, else from the
    method / scale preset or the recipe, else the default. Derived values (prores.W from T) are not computed."""
    value = C.get_path(raw, dotted, _MISSING)
    if value is not _MISSING:
        if dotted == "prores.schedule" and isinstance(value, str) and value in prores.ALIASES:
            return prores.canonical(value)
        return value
    method, scale = raw.get("method"), C.get_path(raw, "model.scale")
    if dotted.startswith("model."):
        fname = dotted[len("model."):]
        if method in presets.METHODS and fname in presets.METHODS[method]:
            return presets.METHODS[method][fname]
        if scale in presets.SCALES and fname in presets.SCALES[scale]:
            return presets.SCALES[scale][fname]
    if dotted.startswith("optim.") and raw.get("recipe") in presets.RECIPES:
        recipe = presets.RECIPES[raw["recipe"]](method, scale)
        if dotted[len("optim."):] in recipe:
            return recipe[dotted[len("optim."):]]
    return _default_value(dotted)


def _describe(labels: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "the only cell"


def _expand(grid: Grid) -> list[Cell]:
    src = grid.source
    axes = grid.axes
    cells: list[Cell] = []
    by_id: dict[str, Cell] = {}
    combos = itertools.product(*(a.values for a in axes)) if axes else [()]
    for combo in combos:
        chosen = {a.name: v for a, v in zip(axes, combo)}
        labels = {a.name: v.label for a, v in zip(axes, combo)}
        if any(all(chosen[name].matches(m) for name, m in excl.items()) for excl in grid.excludes):
            continue
        raw = json.loads(json.dumps(grid.base))
        raw["grid"] = grid.name
        origin: dict[str, tuple] = {}
        for axis, value in zip(axes, combo):
            for k, v in value.sets.items():
                if k in origin:
                    raise ConfigError(f"axes '{origin[k][1]}' and '{axis.name}' both set key '{k}' in cell "
                                      f"({_describe(labels)})", key=f"axes.{axis.name}", source=src)
                C.set_path(raw, k, v, source=src)
                origin[k] = ("axis", axis.name, value.label)
        for rule in grid.rules:
            applies = all(
                chosen[name].matches(m) if name in chosen else m(_view(raw, _norm_key(name)))
                for name, m in rule.when.items()
            )
            if not applies:
                continue
            for k, v in rule.sets.items():
                rkey = f"rules[{rule.index}].set.{k}"
                prev = origin.get(k)
                if prev and prev[0] == "axis":
                    raise ConfigError(f"contradictory rule: it sets '{k}', which axis '{prev[1]}' (value "
                                      f"'{prev[2]}') already sets in cell ({_describe(labels)})", key=rkey, source=src)
                if prev and prev[0] == "rule" and not _values_equal(prev[2], v):
                    raise ConfigError(f"conflicting rules: rules[{prev[1]}] sets '{k}' to {prev[2]!r} and "
                                      f"rules[{rule.index}] to {v!r} in cell ({_describe(labels)})", key=rkey,
                                      source=src)
                C.set_path(raw, k, v, source=src)
                origin[k] = ("rule", rule.index, v)
        try:
            cfg = C.resolve(raw)
        except ConfigError as exc:
            raise _cell_error(exc, origin, labels, grid.base, src) from None
        cell = Cell(run_id=C.run_id(cfg), run_name=run_name(cfg, labels or None), axes=labels, config=cfg,
                    grid=grid.name, index=len(cells))
        other = by_id.get(cell.run_id)
        if other is not None:
            raise ConfigError(f"duplicate cells: ({other.describe()}) and ({cell.describe()}) resolve to the same "
                              f"config (run id {cell.run_id})", key="axes", source=src)
        by_id[cell.run_id] = cell
        cells.append(cell)
    names = {}
    for cell in cells:
        if cell.run_name in names:
            raise ConfigError(f"duplicate run name {cell.run_name!r} for cells ({names[cell.run_name].describe()}) "
                              f"and ({cell.describe()})", key="axes", source=src)
        names[cell.run_name] = cell
    return cells


def _cell_error(exc: ConfigError, origin: dict, labels: dict, base: dict, src: str) -> ConfigError:
    body = str(exc)
    prefix = f"key '{exc.key}': " if exc.key else ""
    if exc.source is None and prefix and body.startswith(prefix):
        body = body[len(prefix):]
    where = origin.get(exc.key) if exc.key else None
    if where and where[0] == "axis":
        context = f"axis '{where[1]}' value '{where[2]}'"
    elif where and where[0] == "rule":
        context = f"rules[{where[1]}] in cell ({_describe(labels)})"
    elif exc.key and C.get_path(base, exc.key, _MISSING) is not _MISSING:
        context = "base"
    else:
        context = f"cell ({_describe(labels)})"
    return ConfigError(f"{context}: {body}", key=exc.key, source=src)


# ---------------------------------------------------------------------------------------------------
# Cost estimate
# ---------------------------------------------------------------------------------------------------
_INFO_CACHE: dict[str, dict] = {}


def _model_info(model_cfg) -> dict | None:
    try:
        from study.model import info
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("study.model"):
            return None
        raise
    key = json.dumps(dataclasses.asdict(model_cfg), sort_keys=True)
    if key not in _INFO_CACHE:
        _INFO_CACHE[key] = info(model_cfg)
    return _INFO_CACHE[key]


def estimate(cell, *, mfu: float = DEFAULT_MFU, peak_flops: float = DEFAULT_PEAK_FLOPS, world_size: int = 1,
             gpu_mem_bytes: float | None = None) -> dict:
    """{'params', 'tokens', 'gpu_hours', 'flops_per_token', 'mfu', 'peak_flops', 'memory_per_gpu', 'fits'}.

    tokens = steps · global_batch · seq_len; gpu_hours = tokens · flops_per_token / (mfu · peak_flops) / 3600,
    with flops_per_token the training FLOPs of study.model.info (6N + attention). memory_per_gpu is
    study.model.memory_estimate for the cell's micro-batch, parallelism and precision over `world_size` GPUs;
    fits compares it with gpu_mem_bytes (None when not given). Model-derived values are None while study.model is
    not importable.
    """
    cfg = cell.config if isinstance(cell, Cell) else cell
    if not mfu > 0 or not peak_flops > 0:
        raise ConfigError(f"MFU and peak FLOP/s must be > 0, got {mfu} and {peak_flops}", key="--mfu")
    tokens = cfg.train.steps * cfg.train.global_batch * cfg.model.seq_len
    info = _model_info(cfg.model)
    params = fpt = hours = memory = fits = None
    if info is not None:
        from study.model import memory_estimate
        params, fpt = info["params"], info["flops_per_token"]
        hours = tokens * fpt / (mfu * peak_flops) / 3600.0
        memory = memory_estimate(cfg.model, micro_batch=cfg.train.micro_batch, world_size=max(1, world_size),
                                 parallelism=cfg.train.parallelism, precision=cfg.train.precision,
                                 activation_checkpointing=cfg.train.activation_checkpointing)["total_bytes"]
        fits = None if gpu_mem_bytes is None else memory <= gpu_mem_bytes
    return {"params": params, "tokens": tokens, "gpu_hours": hours, "flops_per_token": fpt, "mfu": mfu,
            "peak_flops": peak_flops, "memory_per_gpu": memory, "fits": fits}
