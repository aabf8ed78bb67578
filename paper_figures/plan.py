"""`study plan GRID --pilot P`: how many seeds each claim needs in GRID's main stage, from a pilot's differences.

1. Rows: the claims table (paper_figures/claims.py) of the pilot's runs. The pilot is the main grid shortened
   (grids/budget/*-pilot.yaml): same axes and labels, so a pilot row's settings name the main stage's cells.
2. sd: the standard deviation of the row's per-seed differences in the pilot (n - 1 degrees of freedom), and its
   80% upper confidence bound (a 2-seed pilot's sd has one degree of freedom: the bound is 3.9 times it).
3. Effect: the paper's effect at the row's paper scale moved to the pilot's perplexity level: its relative Δ
   (Δ over the paper's perplexity of the arm it is measured against) times the pilot's mean perplexity of that
   arm (effects.Effect.terms). Assumed: effect and noise keep their ratio from the pilot's length to the main's.
4. Seeds: the fewest n >= 3 with 80% power for the two-sided paired t test at alpha / m, m the rows the main
   stage will test. Holm's first step compares the smallest p with alpha / m, so a row planned at alpha / m has
   its power wherever it falls in the order (study/power.py: non-central t).
5. Cost: study.cost's GPU-hours of the main grid's cells of the row's settings, per seed, times n; and the
   pilot's own measured wall time per run (its metrics' time column), projected to the row's n seeds at the main
   stage's length (hours per run × runs × main steps / pilot steps: what a CPU study can go by).

`register` writes the design (study.preregister) into ROOT/<grid>/design.json before the main stage runs, with
the grid to run beside it (design-grid.yaml: GRID with its seed axis set to the registered seeds and its base
inlined), so the seed count comes from the design without editing a grid. The registered seeds are the first
ones whose cells are not pilot runs (`fresh_seeds`): with an internal pilot the confirmation uses new seeds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from paper_figures.claims import claims_data, row_sides
from study import config as C
from study import design, power, preregister
from study.collect.files import flatten
from study.cost import estimate
from study.errors import ConfigError
from study.grid import load_grid

ALPHA, POWER, MIN_SEEDS, MAX_SEEDS = 0.05, 0.8, 3, 1000
DESIGN_GRID = "design-grid.yaml"
STOPPING_RULE = ("fixed n: every registered cell runs to the end (completed or diverged; a diverged run is a "
                 "result and stays in); interrupted or failed runs are resumed or rerun with the same config, "
                 "never replaced by another seed; no seeds are added and no verdict is read before every "
                 "registered run has finished; the analysis is the claims table of the registered rows")
TEST = "two-sided paired t over seeds (train.seed) of per-seed differences, against 0"
CORRECTION = "Holm step-down across the rows of the claims table that have a p-value"


def cells_table(grid) -> pd.DataFrame:
    """A grid's cells as rows of a runs table (run id, axes, cfg.*, identity columns), for study.design."""
    rows = []
    for c in grid.all_cells:
        cfg = c.config
        rows.append({"run_id": c.run_id, "run_name": c.run_name, "grid": c.grid, "state": "planned",
                     "method": cfg.method, "schedule": cfg.prores.schedule, "scale": cfg.model.scale,
                     "n_layers": cfg.model.n_layers, "steps": cfg.train.steps, "W": cfg.prores.W, "T": cfg.prores.T,
                     **{f"axis.{k}": v for k, v in c.axes.items()},
                     **{f"cfg.{k}": v for k, v in flatten(C.to_dict(cfg)).items()}})
    return pd.DataFrame(rows)


def _wall_hours(col) -> dict:
    """run id -> hours between its first and last logged step (the metrics' time column)."""
    m = col.metrics
    if m.empty or "time" not in m:
        return {}
    t = m.dropna(subset=["time"]).groupby(m["run_id"].astype(str))["time"]
    return ((t.max() - t.min()) / 3600.0).to_dict()


def _effect(row) -> float | None:
    terms, base = list(row["terms"]), list(row["base_ppl"])
    if not terms or len(terms) != len(base) or not all(np.isfinite(base)):
        return None
    return float(sum(sign * rel * b for (sign, rel), b in zip(terms, base, strict=True)))


def _seeds(effect, sd, alpha) -> int | None:
    if effect is None or not (sd > 0) or effect == 0:
        return None
    return power.seeds_for_power(effect, sd, alpha, POWER, n_min=MIN_SEEDS, n_max=MAX_SEEDS)


def plan(grid_path, pilot_col, *, scales: dict | None = None, alpha: float = ALPHA) -> dict:
    """The plan (module docstring) as a JSON-ready dict: grid, pilot, family, one entry per planned row."""
    grid = load_grid(grid_path)
    pilot = _without_grid(pilot_col, grid.name)
    d = claims_data(pilot, scales=scales)
    planned = d[(d["n"] > 0) & (d["key"] != "")]
    main, cost, wall = _by_axes(grid), {}, _wall_hours(pilot)
    found = []  # per planned row: its main-stage settings, and the sides the main grid lacks
    for _, r in planned.iterrows():
        sides = [main.get(design.axes_key(a)) for a in row_sides(r["key"])]
        found.append((sides, [" ".join(map(str, a.values())) for a, s in zip(row_sides(r["key"]), sides, strict=True)
                              if s is None]))
    # The family: the rows the main stage will test (not the pilot's rows whose cells the main grid lacks).
    m = sum(1 for (_, r), (_, missing) in zip(planned.iterrows(), found, strict=True)
            if not missing and not r["verdict"].startswith("error"))
    rows = []
    for (_, r), (sides, missing) in zip(planned.iterrows(), found, strict=True):
        per_seed = None
        if not missing:
            for s in sides:
                cell = s.run_ids[0]
                cost.setdefault(cell, estimate(next(c for c in grid.all_cells if c.run_id == cell))["gpu_hours"])
            per_seed = sum(cost[s.run_ids[0]] for s in sides)
        n, sd = int(r["n"]), float(r["sd"])
        ub = power.sd_upper_bound(sd, n - 1) if n >= 2 and sd > 0 else np.nan
        eff = _effect(r)
        seeds, seeds_ub = _seeds(eff, sd, alpha / max(m, 1)), _seeds(eff, ub, alpha / max(m, 1))
        ids = r["run_ids"].split(",")
        hours = [wall[x] for x in ids if x in wall]
        pilot_steps = pd.to_numeric(pilot.runs[pilot.runs["run_id"].astype(str).isin(ids)]["steps"]).mean()
        main_steps = np.mean([s.config["train.steps"] for s in sides]) if not missing else np.nan
        measured = (seeds * len(sides) * float(np.mean(hours)) * main_steps / pilot_steps
                    if hours and seeds is not None and not missing else None)
        rows.append({
            "claim_id": r["claim_id"], "scope": r["scope"], "scale": r["scale"], "key": r["key"],
            "expects": r["expects"], "paper_scale": r["paper_scale"],
            "error": r["verdict"] if r["verdict"].startswith("error") else None, "n_pilot": n, "sd": sd,
            "df": n - 1, "sd_upper_80": ub, "pilot_mean": float(r["mean"]), "base_ppl": list(r["base_ppl"]),
            "terms": [list(t) for t in r["terms"]], "effect": eff, "seeds": seeds, "seeds_upper_80": seeds_ub,
            "gpu_hours_per_seed": per_seed, "gpu_hours": None if seeds is None or per_seed is None
            else seeds * per_seed, "pilot_hours_per_run": float(np.mean(hours)) if hours else None,
            "measured_hours": measured,
            "main_cells_missing": missing})
    return {"grid": grid.name, "grid_file": str(grid_path), "alpha": alpha, "power": POWER, "family_size": m,
            "row_alpha": alpha / max(m, 1), "min_seeds": MIN_SEEDS, "max_seeds": MAX_SEEDS,
            "pilot": {"root": str(pilot_col.root), "internal": grid.name in set(pilot.runs.get("grid", [])),
                      "grids": sorted(set(pilot.runs.get("grid", pd.Series(dtype=str))
                                                                        .astype(str))),
                      "runs": int(len(pilot.runs)), "run_ids": sorted(pilot.runs["run_id"].astype(str)),
                      "seeds": sorted({s for x in planned["seeds"] for s in x}, key=str)},
            "rows": rows}


def _without_grid(col, name: str):
    """The collection less the runs of grid `name` (a results root may hold the main stage beside the pilot); all
    of it when it holds nothing else (the grid's own earlier runs as the pilot, e.g. the CPU replication)."""
    if col.runs.empty or "grid" not in col.runs:
        return col
    keep = col.runs["grid"].astype(str) != name
    if keep.all() or not keep.any():
        return col
    ids = set(col.runs.loc[keep, "run_id"].astype(str))
    tables = {t: getattr(col, t) for t in ("metrics", "evals", "probes", "lm_eval", "probe_files")}
    tables = {t: (df[df["run_id"].astype(str).isin(ids)] if len(df) and "run_id" in df else df)
              for t, df in tables.items()}
    return dataclasses.replace(col, runs=col.runs[keep], **tables)


def _by_axes(grid) -> dict:
    """axes key -> setting of a grid's cells (all states: nothing has run)."""
    return {design.axes_key(s.axes): s for s in design.Design(cells_table(grid), states=None).settings.values()}


# ---------------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------------
def registered_seeds(p: dict, seeds: int | None, max_seeds: int) -> int:
    """The main stage's seed count: `seeds` if given, else the most any row needs (at most max_seeds)."""
    if seeds is not None:
        if seeds < MIN_SEEDS:
            raise ConfigError(f"a paired t test needs at least {MIN_SEEDS} seeds, got {seeds}", key="--seeds")
        return seeds
    needed = [r["seeds"] for r in p["rows"] if r["seeds"] is not None]
    if not needed:
        raise ConfigError("no row has both a pilot sd and a paper effect to plan from: give --seeds N", key="--seeds")
    return max(MIN_SEEDS, min(max(needed), max_seeds))


def design_grid(grid_path, seeds: list[int], out: Path) -> Path:
    """Write `out`: the grid file with its seed axis set to `seeds` and its base (base_file, eval defaults)
    inlined, so it runs from anywhere; checked by loading it."""
    grid = load_grid(grid_path)
    raw = dict(grid.raw)
    axes = dict(raw.get("axes") or {})
    axis = next((a for a in axes if a in design.SEED_AXES), "seed")
    axes[axis] = list(seeds)
    doc = {"name": grid.name, "description": f"The registered main stage of {grid_path} (see design.json beside "
                                             f"this file): {grid.description}",
           "base": grid.base, "axes": axes, **{k: raw[k] for k in ("rules", "exclude", "cluster") if k in raw}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    load_grid(out)
    return out


def fresh_seeds(p: dict, n: int, staged: Path) -> list[int]:
    """The first n seeds (0, 1, ...) none of whose main-stage cells is a pilot run. A main stage with the pilot's
    config (an internal pilot, e.g. the CPU replication's own runs) would otherwise register the pilot's seeds:
    the same runs again, not new evidence. Seeds are tried up to n + the pilot's seed count."""
    pilot = set(p["pilot"].get("run_ids", []))
    tried = list(range(n + len(p["pilot"]["seeds"]) + 1))
    by_seed: dict[int, list[str]] = {}
    for c in load_grid(design_grid(p["grid_file"], tried, staged)).all_cells:
        by_seed.setdefault(int(c.config.train.seed), []).append(c.run_id)
    return [s for s in tried if not pilot & set(by_seed.get(s, []))][:n]


def register(p: dict, root, *, seeds: int | None = None, max_seeds: int = 10, replace: bool = False) -> dict:
    """Register plan `p` as the design of its grid's main stage in ROOT/<grid>/ (module docstring). Returns
    {'design': Registered, 'written': bool, 'grid_file': path of design-grid.yaml, 'seeds': n}. Refused
    (DesignExists) when another design is registered, or when main-stage runs exist already, unless replace.
    The seeds are the first n whose cells are not pilot runs (fresh_seeds)."""
    n = registered_seeds(p, seeds, max_seeds)
    folder = Path(root) / p["grid"]
    staged = folder / ".design-grid.tmp.yaml"
    try:
        chosen = fresh_seeds(p, n, staged)
        design_grid(p["grid_file"], chosen, staged)
        grid = load_grid(staged)
        content = _content(p, grid, chosen, hashlib.sha256(staged.read_bytes()).hexdigest(), before=[])
        existing = folder / preregister.FILE
        if existing.exists() and preregister.read(existing).hash == preregister.content_hash(content):
            return {"design": preregister.read(existing), "written": False, "grid_file": folder / DESIGN_GRID,
                    "seeds": n, "seed_values": chosen}
        before = [c.run_id for c in grid.all_cells if Path(c.run_dir(root)).exists()]
        if before and not replace:
            raise preregister.DesignExists(
                f"{folder} already holds {len(before)} runs of the main stage: a design registered now would not "
                "precede them (--replace-design registers it anyway and records them)")
        content["runs_before_registration"] = before
        reg, written = preregister.write(folder, p["grid"], content, replace=replace)
        staged.replace(folder / DESIGN_GRID)
        return {"design": reg, "written": written, "grid_file": folder / DESIGN_GRID, "seeds": n,
                "seed_values": chosen}
    finally:
        staged.unlink(missing_ok=True)


def _content(p: dict, grid, seeds: list[int], grid_sha: str, before: list) -> dict:
    """The registered design's content: the plan's rows with the main-stage cells of each, for these seeds."""
    n = len(seeds)
    main = _by_axes(grid)
    rows = []
    for r in p["rows"]:
        if r["error"] or r["main_cells_missing"]:
            continue
        sides = [main[design.axes_key(a)] for a in row_sides(r["key"])]
        pw = None
        if r["effect"] is not None and r["sd"] > 0:
            pw = power.paired_t_power(n, r["effect"], r["sd"], p["row_alpha"])
        rows.append({**{k: r[k] for k in ("claim_id", "scope", "key", "expects", "paper_scale", "effect", "sd",
                                          "df", "n_pilot", "seeds", "seeds_upper_80")},
                     "power_at_registered_seeds": pw,
                     "cells": {str(seed): sorted(x for s in sides for x in s.runs.get(seed, [])) for seed in seeds}})
    return {"grid_file": p["grid_file"], "seeds": list(seeds), "test": TEST, "correction": CORRECTION,
            "alpha": p["alpha"], "power": p["power"], "family_size": p["family_size"], "row_alpha": p["row_alpha"],
            "stopping_rule": STOPPING_RULE, "rows": rows,
            "cells": [{"run_id": c.run_id, "run_name": c.run_name, "seed": c.config.train.seed}
                      for c in grid.all_cells],
            "design_grid_sha256": grid_sha, "runs_before_registration": before, "pilot": p["pilot"]}


def fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)
