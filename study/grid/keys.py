"""Config keys and value matching for grid files: which dotted keys a grid may set, and when a value matches.

Axis names, rule conditions, excludes and `--where` clauses all name a config key (dotted, or a shorthand) and
match values loosely: '1e-3' matches 0.001, 'true' matches True, a label matches the value it stands for.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import dataclass
from typing import Any

from study import config as C
from study.errors import ConfigError
from study.labels import value_label

SHORTHANDS = {"method": "method", "scale": "model.scale", "schedule": "prores.schedule", "seed": "train.seed"}
MISSING = object()  # "no such key" (None is a value a key may hold)


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


def is_config_key(dotted: str) -> bool:
    """A settable dotted key: a leaf field, or a key inside a dict-valued field (data.hf_data_files.train)."""
    keys = _config_keys()
    if keys.get(dotted) in ("leaf", "dict"):
        return True
    parts = dotted.split(".")
    return any(keys.get(".".join(parts[:i])) == "dict" for i in range(1, len(parts)))


def norm_key(key: str) -> str:
    return SHORTHANDS.get(key, key)


def key_choices() -> str:
    return f"{', '.join(SHORTHANDS)} or a dotted config key (e.g. optim.lr, model.n_layers, prores.T)"


def default_value(dotted: str):
    node: Any = C.RunConfig()
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node):
            return None
        node = getattr(node, part, None)
    return node


def same(actual, wanted) -> bool:
    """Loose equality for matching: equal values, equal labels, or equal numbers ('1e-3' matches 0.001)."""
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return value_label(actual).lower() == value_label(wanted).lower()
    if actual == wanted or value_label(actual) == value_label(wanted):
        return True
    if isinstance(actual, (list, dict)) or isinstance(wanted, (list, dict)):
        return False
    try:
        return float(actual) == float(wanted)
    except (TypeError, ValueError):
        return False


def values_equal(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str) or (
        not isinstance(a, (list, dict, bool)) and not isinstance(b, (list, dict, bool)) and same(a, b))


@dataclass
class Matcher:
    """A condition value: one value, a list (any of), or {not: value-or-list}."""

    values: list
    negate: bool = False

    @classmethod
    def parse(cls, spec, *, key: str, source: str) -> Matcher:
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
        hit = any(same(c, v) for c in candidates for v in self.values)
        return hit != self.negate

