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


# The most values a YAML file may hold once its aliases are expanded. A config or grid holds hundreds; aliases
# of aliases can expand a few lines into billions ("billion laughs"), which loading would then build and every
# later copy expand (minutes and gigabytes, no output).
MAX_YAML_VALUES = 100_000


def _check_expansion(root, source: str) -> None:
    """Refuse a composed YAML document whose aliases expand beyond MAX_YAML_VALUES values or refer to themselves
    (counted over the node graph, each node once: as fast as the text is long)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(f"a YAML alias refers to a node that contains it (line {node.start_mark.line + 1}); "
                              f"write the values out", source=source)
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in node.value)
        else:
            total = 1
        open_nodes.discard(key)
        sizes[key] = total
        return total

    if size(root) > MAX_YAML_VALUES:
        raise ConfigError(f"its YAML aliases expand to {size(root):,} values, more than the {MAX_YAML_VALUES:,} a "
                          f"config may hold (anchors of anchors: a \"billion laughs\" file?); write the values out",
                          source=source)


def check_aliases(text: str | bytes, source: str) -> None:
    """`_check_expansion` for YAML text read by another loader (study.collect reads configs with libyaml)."""
    node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if node is not None:
        _check_expansion(node, source)


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
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, str(path))
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", source=str(path)) from None
    except RecursionError:
        raise ConfigError("is nested too deeply to be a config", source=str(path)) from None
    finally:
        loader.dispose()
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
