"""Runs grouped by their grid's own design: settings, seeds, and the contrasts every table and claim is built on.

A *setting* is what a run is apart from its seed. Two runs are the same setting when they agree on every grid axis
(run.json's axes: the runs table's axis.* columns) and on every semantic config value (cfg.* less
study.config.NON_SEMANTIC) except train.seed. The seed's own axis is not part of a setting: the axis named `seed`
(the grid shorthand) and any axis that changes while the rest of the config does not. Runs whose config could not
be read belong to no setting. A runs table without cfg.* columns is read through its identity columns (method,
scale, n_layers, lr, steps, schedule, T, W, ...).

A *contrast* pairs two settings that differ only in the contrasted config keys, seed by seed:

  PRORES    ProRes vs its baseline        prores.*
  SCHEDULE  linear vs equal at the same W  prores.schedule        (prores.T follows: equal's T is W)
  METHOD    Post-LN vs Pre-LN              method, model.norm, model.init   (the recipe's LR and LR warmup follow)
  DEPTH     deeper vs shallower            model.n_layers, model.scale      (W, T and micro-batch follow the
                                                                             grid's own rule per depth)

Keys that follow from the contrasted ones (the contrast's `derived` keys) may differ too; every other semantic key
must be equal. Axes may differ only where the difference is the contrast's own: an axis that somewhere changes
alone (its other axes equal) without moving a contrasted key is not, so an LR axis under the method contrast
(where the LR may follow the method) keeps its settings apart, and a grid of 2 LRs gives a row per LR, never the
seeds of both pooled. An axis a grid lacks reads as empty.

Two runs for one (setting, seed) are that setting's `error` ('2 runs for seed 1 (ids a, b)'): every table shows
it where the setting is used; no function here picks one of them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from study.config import NON_SEMANTIC
from study.rawconfig import key_under

SEED_KEY = "train.seed"
SEED_COLUMN = "cfg." + SEED_KEY
SEED_AXES = ("seed", SEED_KEY)  # the grid shorthand (docs/grids.md) and the dotted key
# The runs table's identity columns as config keys: the config of a table that has no cfg.* columns.
IDENTITY_KEYS = {"method": "method", "norm": "model.norm", "init": "model.init", "scale": "model.scale",
                 "n_layers": "model.n_layers", "d_model": "model.d_model", "seq_len": "model.seq_len",
                 "lr": "optim.lr", "lr_schedule": "optim.lr_schedule", "warmup_steps": "optim.warmup_steps",
                 "decay_fraction": "optim.decay_fraction", "steps": "train.steps", "global_batch": "train.global_batch",
                 "schedule": "prores.schedule", "T": "prores.T", "W": "prores.W"}


@dataclass(frozen=True)
class Contrast:
    """What two settings may differ in: the contrasted keys (a key covers its sub-keys: 'prores' is prores.*)
    and the keys that follow from them."""

    name: str
    keys: tuple[str, ...]
    derived: tuple[str, ...] = ()


PRORES = Contrast("ProRes vs baseline", ("prores",))
SCHEDULE = Contrast("schedule at the same W", ("prores.schedule",), ("prores.T",))
METHOD = Contrast("method", ("method", "model.norm", "model.init"),
                  ("optim.lr", "optim.warmup_steps", "optim.warmup_fraction"))
DEPTH = Contrast("depth", ("model.n_layers", "model.scale"), ("prores.T", "prores.W", "train.micro_batch"))


def plain(v):
    """One spelling per value for comparisons and keys: NaN, pd.NA and None -> None, numpy scalars -> Python,
    integral floats -> int (a column with gaps turns 48 into 48.0)."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


@dataclass
class Setting:
    """One setting: its config (semantic, less the seed), its axes (less the seed's), and its runs by seed."""

    key: str
    config: dict
    axes: dict
    runs: dict = field(default_factory=dict)      # seed -> run ids in the wanted states
    left_out: dict = field(default_factory=dict)  # seed -> state, for runs of other states (diverged, failed)
    ids: list = field(default_factory=list)       # every run id, in whatever state

    @property
    def seeds(self) -> list:
        return sorted(self.runs, key=lambda s: (s is None, s))

    @property
    def error(self) -> str | None:
        """'2 runs for seed 1 (ids a, b)' when a seed has more than one run; None otherwise."""
        dup = [(s, ids) for s, ids in sorted(self.runs.items(), key=lambda x: (x[0] is None, x[0])) if len(ids) > 1]
        if not dup:
            return None
        return "; ".join(f"{len(ids)} runs for seed {s} (ids {', '.join(ids)})" for s, ids in dup)

    def run(self, seed) -> str:
        """The one run of `seed` (a setting with an error has none to give)."""
        ids = self.runs[seed]
        if len(ids) != 1:
            raise ValueError(self.error)
        return ids[0]

    @property
    def run_ids(self) -> list[str]:
        return [r for s in self.seeds for r in self.runs[s]]

    @property
    def label(self) -> str:
        return " ".join(str(v) for v in self.axes.values()) or self.key[:40]


def _config_columns(runs: pd.DataFrame) -> dict[str, str]:
    """column -> config key of what makes runs different experiments (the seed left out)."""
    cfg = {c: c[4:] for c in runs.columns if c.startswith("cfg.")}
    if not cfg:
        cfg = {c: k for c, k in IDENTITY_KEYS.items() if c in runs.columns}
    return {c: k for c, k in cfg.items() if not key_under(k, (*NON_SEMANTIC, SEED_KEY))}


def axes_key(axes: dict) -> str:
    """One string per set of axis labels (empty axes left out): how a pilot's setting finds the main stage's."""
    return json.dumps(sorted((k, v) for k, v in axes.items() if v is not None), default=str)


def _key(config: dict, axes: dict) -> str:
    return json.dumps([sorted(config.items()), sorted(axes.items())], default=str)


def _seed_axes(runs: pd.DataFrame, config_key: pd.Series, axis_cols: list[str]) -> dict:
    """grid -> the axes that are the seed's: named seed, or changing while the config less the seed does not."""
    grid = runs["grid"].astype(str) if "grid" in runs else pd.Series("", index=runs.index)
    out = {}
    for g, idx in grid.groupby(grid).groups.items():
        sub = runs.loc[idx, axis_cols].astype(str).assign(_k=config_key.loc[idx])
        varies = [c for c in axis_cols if (sub.groupby("_k")[c].nunique() > 1).any()]
        out[g] = set(varies) | {c for c in axis_cols if c[len("axis."):] in SEED_AXES}
    return out


class Design:
    """The settings of a runs table. states: the run states a setting's `runs` hold (others go to `left_out`);
    None keeps every state."""

    def __init__(self, runs: pd.DataFrame, states: tuple[str, ...] | None = ("completed",)):
        self.runs = runs
        cols = _config_columns(runs)
        axis_cols = [c for c in runs.columns if c.startswith("axis.")]
        readable = runs[list(cols)].notna().any(axis=1) if cols else pd.Series(False, index=runs.index)
        configs = {i: {k: plain(runs.at[i, c]) for c, k in cols.items()} for i in runs.index[readable]}
        config_key = pd.Series({i: json.dumps(sorted(configs[i].items()), default=str) for i in configs},
                               dtype=object)
        seed_axes = _seed_axes(runs.loc[config_key.index], config_key, axis_cols) if len(config_key) else {}
        seeds = runs[SEED_COLUMN] if SEED_COLUMN in runs else pd.Series(None, index=runs.index)
        self.settings: dict[str, Setting] = {}
        self.key = pd.Series(None, index=runs.index, dtype=object)  # run (index of `runs`) -> setting key
        for i, config in configs.items():
            grid = str(runs.at[i, "grid"]) if "grid" in runs else ""
            axes = {c[len("axis."):]: plain(runs.at[i, c]) for c in axis_cols
                    if c not in seed_axes.get(grid, ()) and plain(runs.at[i, c]) is not None}
            key = _key(config, axes)
            self.key[i] = key
            s = self.settings.setdefault(key, Setting(key, config, axes))
            seed, state = plain(seeds[i]), runs.at[i, "state"] if "state" in runs else None
            s.ids.append(str(runs.at[i, "run_id"]))
            if states is None or state in states:
                s.runs.setdefault(seed, []).append(str(runs.at[i, "run_id"]))
            else:
                s.left_out[seed] = state
        self._by_axes: dict[str, list[Setting]] = {}
        for s in self.settings.values():
            self._by_axes.setdefault(axes_key(s.axes), []).append(s)

    def value(self, setting: Setting, column: str):
        """A runs-table column of the setting's first run (method_label, params, ...: equal across its runs)."""
        rid = setting.ids[0] if setting.ids else None
        if rid is None or column not in self.runs:
            return None
        return plain(self.runs[column][self.runs["run_id"].astype(str) == rid].iloc[0])

    def setting_of(self, run_id: str) -> Setting | None:
        hit = self.key[self.runs["run_id"].astype(str) == str(run_id)].dropna()
        return self.settings[hit.iloc[0]] if len(hit) else None

    def where(self, **values) -> list[Setting]:
        """Settings (with runs) whose config has these values: where(**{'prores.schedule': 'none'})."""
        return [s for s in self.settings.values() if s.runs
                and all(s.config.get(k) == plain(v) for k, v in values.items())]

    # -- contrasts ----------------------------------------------------------------------------------
    @staticmethod
    def _moved(a: Setting, b: Setting) -> set[str]:
        return {k for k in a.config.keys() | b.config.keys() if a.config.get(k) != b.config.get(k)}

    def _alone_elsewhere(self, axis: str, va, vb, contrast: Contrast) -> bool:
        """Whether some pair of settings differs in `axis` alone (va -> vb, every other axis equal) without moving a
        contrasted key: then that axis is a difference of its own, not the contrast's."""
        for s in self.settings.values():
            if s.axes.get(axis) != va:
                continue
            other = {**s.axes, axis: vb}
            for t in self._by_axes.get(axes_key(other), []):
                if not any(key_under(k, contrast.keys) for k in self._moved(s, t)):
                    return True
        return False

    def differ_only_in(self, a: Setting, b: Setting, contrast: Contrast) -> bool:
        """True when a and b are the two sides of `contrast` (module docstring)."""
        moved = self._moved(a, b)
        if not moved or not any(key_under(k, contrast.keys) for k in moved):
            return False
        if not all(key_under(k, contrast.keys + contrast.derived) for k in moved):
            return False
        axes = [x for x in a.axes.keys() | b.axes.keys() if a.axes.get(x) != b.axes.get(x)]
        return not any(self._alone_elsewhere(x, a.axes.get(x), b.axes.get(x), contrast) for x in axes)

    def partners(self, a: Setting, candidates: list[Setting], contrast: Contrast) -> list[Setting]:
        """The candidates that are a's other side under `contrast`."""
        return [b for b in candidates if b is not a and self.differ_only_in(a, b, contrast)]


def by_seed(a: dict, b: dict) -> pd.DataFrame:
    """Two sides' per-seed values (seed -> value) joined on the seeds both have: seed, a, b, diff = a - b."""
    seeds = sorted(set(a) & set(b), key=lambda s: (s is None, s))
    out = pd.DataFrame({"seed": seeds, "a": [a[s] for s in seeds], "b": [b[s] for s in seeds]})
    out["diff"] = pd.to_numeric(out["a"], errors="coerce") - pd.to_numeric(out["b"], errors="coerce")
    return out


def setting_keys(runs: pd.DataFrame) -> pd.Series:
    """A key per run (indexed like `runs`), equal for runs of one setting; a run without a readable config gets its
    run id (a setting of its own)."""
    if runs.empty:
        return pd.Series(dtype=str)
    key = Design(runs, states=None).key
    return key.where(key.notna(), runs["run_id"].astype(str))
