"""The registered design of a grid's main stage: written before the runs, read by every claims table after them.

`study plan GRID --pilot P --register` writes ROOT/<grid>/design.json:

  {"format": 1, "grid": name, "hash": sha256 of `content`, "registered": UTC time, "content": {
     "grid_file", "seeds", "test", "correction", "alpha", "power", "family_size", "stopping_rule",
     "rows": [{"claim_id", "scope", "key", "expects", "cells": {seed: [run ids]}, ...}],
     "cells": [{"run_id", "run_name", "seed"}], "pilot": {...}}}

The hash covers the content only, so registering the same design twice is a no-op and any edit of the content
shows (`altered`). A different design for a grid that has one is refused unless the caller says replace.
`study figures` prints each design's hash, and the claims table's `registered` column says of every row whether
it was computed from exactly the registered runs: yes, incomplete (fewer seeds so far), no (why), or — (no design
for its grid).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from study.errors import StudyError
from study.fsutil import atomic_write_json
from study.timeutil import now

FILE = "design.json"
FORMAT = 1


class DesignExists(StudyError):
    """A different design is already registered for this grid, or its main stage has runs already (exit 2)."""

    exit_code = 2


def content_hash(content: dict) -> str:
    """sha256 of the canonical JSON of a design's content (sorted keys, no spaces)."""
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Registered:
    """A design.json as read back: its grid, hash, cells (run id -> seed), rows (key -> row) and whether its content
    still matches its hash."""

    path: Path
    grid: str
    hash: str
    registered: str
    cells: dict
    rows: dict
    altered: bool

    @property
    def short(self) -> str:
        return self.hash[:12]


def read(path: str | Path) -> Registered:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        content = doc["content"]
        cells = {str(c["run_id"]): c.get("seed") for c in content["cells"]}
        rows = {r["key"]: r for r in content["rows"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StudyError(f"{path}: not a registered design ({exc})") from None
    return Registered(path, str(doc.get("grid")), str(doc.get("hash")), str(doc.get("registered")), cells, rows,
                      altered=content_hash(content) != doc.get("hash"))


def write(folder: str | Path, grid: str, content: dict, *, replace: bool = False) -> tuple[Registered, bool]:
    """Register `content` as the design of `grid` in folder/design.json; (the design, whether it was written).

    The same content again writes nothing. Different content for a grid that has a design raises DesignExists
    unless replace=True, in which case the new document records the hash it replaced.
    """
    path = Path(folder) / FILE
    digest = content_hash(content)
    old = read(path) if path.exists() else None
    if old is not None and old.hash == digest and not old.altered:
        return old, False
    if old is not None and not replace:
        raise DesignExists(f"{path} already registers design {old.short} for grid {old.grid}; this plan is design "
                           f"{digest[:12]}. Keep the registered one, or replace it with --replace-design "
                           "(the new file records the hash it replaced)")
    doc = {"format": FORMAT, "grid": grid, "hash": digest, "registered": now(), "content": content}
    if old is not None:
        doc["replaces"] = old.hash
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, doc, indent=1)
    return read(path), True


def find(run_paths, root=None) -> dict[str, Registered]:
    """grid -> its registered design, for every design.json beside the given run directories (ROOT/<grid>/), and in
    `root` and its grid folders (a design registered before any of its runs)."""
    folders = {Path(p).parent for p in run_paths if isinstance(p, str) and p}
    if root is not None and Path(root).is_dir():
        folders |= {Path(root)} | {f for f in Path(root).iterdir() if f.is_dir()}
    out = {}
    for folder in sorted(folders):
        if (folder / FILE).is_file():
            try:
                d = read(folder / FILE)
            except StudyError:
                continue  # an unreadable file registers nothing
            out[d.grid] = d
    return out


def status(key: str, run_seeds: dict, grids, designs: dict[str, Registered]) -> str:
    """The `registered` column of one claims row: key = the row's key, run_seeds = run id -> seed of the runs its
    differences used, grids = the grids of those runs."""
    mine = [designs[g] for g in sorted(set(grids)) if g in designs]
    if not mine:
        return "—"
    if any(d.altered for d in mine):
        return "no (design.json edited after registration)"
    cells = {r: s for d in mine for r, s in d.cells.items()}
    outside = {r: s for r, s in run_seeds.items() if r not in cells}
    if outside:
        seeds = set(cells.values())
        added = sorted({str(s) for s in outside.values() if s not in seeds})
        changed = sorted(r for r, s in outside.items() if s in seeds)
        why = ([f"seed{'s' if len(added) > 1 else ''} {', '.join(added)} not registered"] if added else []) + \
              ([f"runs {', '.join(changed)} are not registered cells"] if changed else [])
        return f"no ({'; '.join(why)})"
    row = next((d.rows[key] for d in mine if key in d.rows), None)
    if row is None:
        return "no (row not in the design)"
    want = len(row.get("cells") or {})
    have = len(set(run_seeds.values()))
    return "yes" if have >= want else f"incomplete ({have} of {want} registered seeds)"
