"""Configs as plain nested dicts, before they are typed (study.config types them): strict YAML reading, dotted
paths (`optim.lr`), `--set KEY=VALUE` overrides and merging. Shared by run configs, grids and cluster profiles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from study.errors import ConfigError


def parse_override(text: str, *, source: str = "--set") -> tuple[str, Any]:
    """'optim.lr=1e-3' -> ('optim.lr', 0.001); the value is read as YAML so types come out natural."""
    if "=" not in text:
        raise ConfigError(f"expected KEY=VALUE, got {text!r}", source=source)
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_path(data: dict, dotted: str, value, *, source: str | None = None) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"'{part}' is not a section", key=dotted, source=source)
        node = child
    node[parts[-1]] = value


def get_path(data: dict, dotted: str, default=None):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from `path` (safe loader; empty files, duplicate keys and non-text files refused)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError("file not found", source=str(path))
    if path.is_dir():
        raise ConfigError("is a folder, not a YAML file", source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("is not a text file (not UTF-8); expected a YAML file", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror or exc}", source=str(path)) from None
    if "\x00" in text:
        raise ConfigError("is a binary file, not YAML", source=str(path))
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", source=str(path)) from None
    if data is None:
        raise ConfigError("is empty; expected a YAML mapping (omit the file to use the defaults)", source=str(path))
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", source=str(path))
    return data


def find_yaml(name: str | Path, folder: str, *, what: str) -> Path:
    """A YAML file by path, else by name under `folder` ('grids', 'grids/profiles') of the working directory or of
    the repository, '.yaml' optional. A ConfigError saying where it looked when there is none (grids and cluster
    profiles are found by this one function, so they behave alike on a miss)."""
    path = Path(name)
    if path.exists():
        return path  # (a folder given by path is refused by read_yaml, with that reason)
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):  # the repository: study/rawconfig.py
        for rel in (path, Path(folder) / path):
            for cand in (root / rel, root / rel.with_name(rel.name + ".yaml")):
                if cand.is_file():
                    return cand
    raise ConfigError(f"{what} file not found (looked as given and under {folder}/)", source=str(name))


def key_under(dotted: str, keys) -> bool:
    """True if `dotted` is one of `keys` or lies below one of them ('eval.tokens' is under 'eval')."""
    return any(dotted == k or dotted.startswith(k + ".") for k in keys)
