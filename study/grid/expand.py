"""Grid -> cells: the product of the axes less the excludes, rules applied, each cell resolved and named."""

from __future__ import annotations

import itertools
import json

from study import config as C
from study.errors import ConfigError
from study.grid.cells import Cell, Grid
from study.grid.keys import MISSING, default_value, norm_key, values_equal
from study.rawconfig import get_path, set_path
from study.results import run_name


def _view(layered: dict, dotted: str):
    """The value a config key has before validation: from `config.layered` (the config, its method, scale and
    recipe, as `resolve` fills them), else the default. Derived values (prores.W from T) are not computed."""
    value = get_path(layered, dotted, MISSING)
    return default_value(dotted) if value is MISSING else value


def _describe(labels: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "the only cell"


def expand(grid: Grid) -> list[Cell]:
    src = grid.source
    axes = grid.axes
    cells: list[Cell] = []
    by_id: dict[str, Cell] = {}
    combos = itertools.product(*(a.values for a in axes)) if axes else [()]
    for combo in combos:
        chosen = {a.name: v for a, v in zip(axes, combo, strict=True)}
        labels = {a.name: v.label for a, v in zip(axes, combo, strict=True)}
        if any(all(chosen[name].matches(m) for name, m in excl.items()) for excl in grid.excludes):
            continue
        raw = json.loads(json.dumps(grid.base))
        raw["grid"] = grid.name
        origin: dict[str, tuple] = {}
        for axis, value in zip(axes, combo, strict=True):
            for k, v in value.sets.items():
                if k in origin:
                    raise ConfigError(f"axes '{origin[k][1]}' and '{axis.name}' both set key '{k}' in cell "
                                      f"({_describe(labels)})", key=f"axes.{axis.name}", source=src)
                set_path(raw, k, v, source=src)
                origin[k] = ("axis", axis.name, value.label)
        for rule in grid.rules:
            try:
                layered = C.layered(raw) if set(rule.when) - set(chosen) else {}
            except ConfigError as exc:
                raise _cell_error(exc, origin, labels, grid.base, raw, src) from None
            applies = all(
                chosen[name].matches(m) if name in chosen else m(_view(layered, norm_key(name)))
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
                if prev and prev[0] == "rule" and not values_equal(prev[2], v):
                    raise ConfigError(f"conflicting rules: rules[{prev[1]}] sets '{k}' to {prev[2]!r} and "
                                      f"rules[{rule.index}] to {v!r} in cell ({_describe(labels)})", key=rkey,
                                      source=src)
                set_path(raw, k, v, source=src)
                origin[k] = ("rule", rule.index, v)
        try:
            cfg = C.resolve(raw)
        except ConfigError as exc:
            raise _cell_error(exc, origin, labels, grid.base, raw, src) from None
        cell = Cell(run_id=C.run_id(cfg), run_name=run_name(cfg, labels or None), axes=labels, config=cfg,
                    grid=grid.name, index=len(cells), raw=raw)
        other = by_id.get(cell.run_id)
        if other is not None:
            raise ConfigError(f"duplicate cells: ({other.describe()}) and ({cell.describe()}) resolve to the same "
                              f"config (run id {cell.run_id})", key="axes", source=src)
        by_id[cell.run_id] = cell
        cells.append(cell)
    if not cells:  # the product of the axes is never empty: the excludes removed it all
        total = 1
        for a in axes:
            total *= len(a.values)
        raise ConfigError(f"the excludes remove every one of the grid's {total} cells: nothing would run; "
                          f"loosen them", key="exclude", source=src)
    names = {}
    for cell in cells:
        if cell.run_name in names:
            raise ConfigError(f"duplicate run name {cell.run_name!r} for cells ({names[cell.run_name].describe()}) "
                              f"and ({cell.describe()})", key="axes", source=src)
        names[cell.run_name] = cell
    return cells


def _first_breaking(base: dict, raw: dict, origin: dict) -> tuple | None:
    """The origin of the first axis value or rule (in the order they were applied) whose setting makes a base
    that resolves on its own fail: what a cross-field error (a d_model the base's n_heads does not divide) is
    to be blamed on. None when the base alone fails."""
    trial = json.loads(json.dumps(base))
    trial["grid"] = raw.get("grid")
    try:
        C.resolve(trial)
    except ConfigError:
        return None
    for k, where in origin.items():
        set_path(trial, k, get_path(raw, k))
        try:
            C.resolve(trial)
        except ConfigError:
            return where
    return None


def _cell_error(exc: ConfigError, origin: dict, labels: dict, base: dict, raw: dict, src: str) -> ConfigError:
    body = str(exc)
    prefix = f"key '{exc.key}': " if exc.key else ""
    if exc.source is None and prefix and body.startswith(prefix):
        body = body[len(prefix):]
    where = origin.get(exc.key) if exc.key else None
    if where is None and origin:
        where = _first_breaking(base, raw, origin)
    if where and where[0] == "axis":
        context = f"axis '{where[1]}' value '{where[2]}'"
    elif where and where[0] == "rule":
        context = f"rules[{where[1]}] in cell ({_describe(labels)})"
    elif exc.key and get_path(base, exc.key, MISSING) is not MISSING:
        context = "base"
    else:
        context = f"cell ({_describe(labels)})"
    return ConfigError(f"{context}: {body}", key=exc.key, source=src)

