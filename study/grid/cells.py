"""The objects a grid file becomes: axes and their values, rules, cells (one run each) and the grid."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study import config as C
from study.errors import ConfigError
from study.grid.keys import MISSING, Matcher, is_config_key, key_choices, norm_key
from study.labels import value_label
from study.rawconfig import get_path
from study.results import FINAL_STATES, RunDir


@dataclass
class AxisValue:
    """One value of an axis: its label (its part of the run name) and the config keys it sets."""

    label: str
    sets: dict  # normalised dotted key -> value
    scalar: Any = MISSING  # the plain value, for scalar axis values

    def matches(self, matcher: Matcher) -> bool:
        return matcher(self.label) if self.scalar is MISSING else matcher(self.label, self.scalar)


@dataclass
class Axis:
    """A named axis of the grid: the grid is the product of its axes' values, in axis order."""

    name: str
    values: list[AxisValue]

    @property
    def labels(self) -> list[str]:
        return [v.label for v in self.values]


@dataclass
class Rule:
    """rules[index] of the grid file: where every `when` condition matches a cell, set these keys."""

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
    raw: dict = field(default_factory=dict, repr=False)  # its run config before resolution: base, axes, rules

    def run_dir(self, root) -> Path:
        return RunDir.for_config(self.config, root, self.axes).path

    def status(self, root) -> dict:
        """The run's status.json ({} when it has none yet)."""
        return RunDir(self.run_dir(root)).read_status()

    def is_final(self, root) -> bool:
        return self.status(root).get("state") in FINAL_STATES

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.axes.items()) or self.run_name

    @functools.cached_property
    def config_dict(self) -> dict:
        return C.to_dict(self.config)


@dataclass
class Grid:
    """A checked grid file and every cell it expands to (`all_cells`, in axis order, excludes left out)."""

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
        if key not in self.axis_names and not is_config_key(norm_key(key)):
            raise ConfigError(f"unknown key; valid keys: the axes ({', '.join(self.axis_names) or 'none'}), "
                              f"{key_choices()}", key=key, source=f"{self.source} --where")
        return key, Matcher([v.strip() for v in value.split(",")])

    def _cell_matches(self, cell: Cell, key: str, matcher: Matcher) -> bool:
        axis = self.axis(key)
        if axis is not None:
            value = next(v for v in axis.values if v.label == cell.axes[key])
            if value.matches(matcher):
                return True
        dotted = norm_key(key)
        if is_config_key(dotted):
            actual = get_path(cell.config_dict, dotted, MISSING)
            if actual is not MISSING and matcher(actual):
                return True
        return False

    def _where_values(self, cell: Cell, key: str) -> list[str]:
        out = [cell.axes[key]] if key in cell.axes else []
        actual = get_path(cell.config_dict, norm_key(key), MISSING)
        if actual is not MISSING:
            out.append(value_label(actual))
        return out

