"""One coercer for typed options: run configs (study.config) and cluster options (study.clusters.options).

`coerce(value, tp, key=..., source=...)` checks a value read from YAML or a command line against a type
annotation and returns it in that type, or raises one ConfigError naming the key and the file. YAML is loose
about numbers ('1e-3' reads as a string under YAML 1.1, `30` as an int where a float is meant), so the number
conversions that lose nothing are made here, once; everything else is refused rather than guessed. A `Literal`
of names is a choice: a value outside it gets the same "unknown <field> ...; valid choices: ..." error as any name.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any

from study.errors import ConfigError, unknown_name

__all__ = ["coerce", "type_name"]


def type_name(tp: Any) -> str:
    """'int', 'float', 'list[str]', ...: how a type is named in an error message (a Literal of names: 'str')."""
    if typing.get_origin(tp) is typing.Literal:
        return type_name(type(typing.get_args(tp)[0]))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str, source: str | None, *, number_as_str: bool = False,
           scalar_as_list: bool = False) -> Any:
    """`value` checked against annotation `tp` (resolved, e.g. via typing.get_type_hints).

    Accepted conversions: int -> float, a whole float -> int, a numeric string -> float (YAML 1.1), a tuple ->
    list. A bool is never a number. `number_as_str` also takes a number where a string is meant (a cluster
    partition or account spelt `1234`); `scalar_as_list` takes one string where a list is meant (one setup line).
    """
    def again(v: Any, t: Any, k: str) -> Any:
        return coerce(v, t, k, source, number_as_str=number_as_str, scalar_as_list=scalar_as_list)

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            if typing.get_origin(arg) is typing.Literal and isinstance(value, type(typing.get_args(arg)[0])):
                return again(value, arg, key)  # a name of the right type: an unknown one gets the name's message
            try:
                return again(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"expected {' or '.join(type_name(a) for a in args)}, got {value!r}", key=key,
                          source=source)
    if origin is typing.Literal:
        # A named choice (study.config's Norm, Init, ...): its values' type first ('expected str, got 7'), then the
        # name, with the message every unknown name gets (the field's name, the sorted valid choices).
        choices = typing.get_args(tp)
        value = again(value, type(choices[0]), key)
        if value not in choices:
            raise unknown_name(key.rpartition(".")[2].replace("_", " "), value, choices, key=key, source=source)
        return value
    if tp is list or origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if scalar_as_list and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {value!r}", key=key, source=source)
        return [again(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", key=key, source=source)
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"expected a finite number, got {value!r}", key=key, source=source)
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '1e-3' as a string
            try:
                return again(float(value), float, key)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if number_as_str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif tp is Any:
        return value
    raise ConfigError(f"expected {type_name(tp)}, got {value!r}", key=key, source=source)
