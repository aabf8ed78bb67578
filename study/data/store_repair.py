"""Repairing a prepared token store (`study data prepare` on a store with damaged files; study.data.store_check
finds them): the units that wrote the damaged files are tokenized again with the store's own tokenizer into a
private folder beside the store, each rebuilt file is checked against the manifest's record (tokens, documents,
bytes, sha256) and only then renamed over the damaged one. Whole files are left alone, so a repaired store equals
the undamaged one byte for byte; a rebuilt shard that differs from its record means the source (or the store's
tokenizer/ folder) changed since the store was prepared, and the store is refused instead of mixed.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from study.data import corpus
from study.data.store_check import identity, write_stamps
from study.data.store_manifest import StoreError
from study.data.store_units import plan_units, process_units
from study.fsutil import temp_dir_beside

log = logging.getLogger(__name__)


def repair(data_cfg, path: Path, damaged: list[tuple[str, dict, str, str]], encoder) -> list[str]:
    """Rewrite the `damaged` files (store_check.damaged) of the store at `path`, tokenized by `encoder` (the
    store's tokenizer); returns the names rewritten. StoreError if a unit no longer gives its recorded shard."""
    finite = list(corpus.finite_documents(data_cfg)) if data_cfg.source == "default" else None
    writer = {(split, f"{u.index:06d}"): u for u in plan_units(data_cfg, finite) for split in u.splits}
    todo: dict[str, tuple] = {}  # unit name -> (unit, [(split, record, file name)])
    for split, rec, name, _ in damaged:
        unit = writer.get((split, rec["file"]))
        if unit is None:
            raise StoreError(f"token store {path}: no unit of the source writes shard {split}/{name} any more (the "
                             f"source changed since it was prepared); delete the store and prepare it again")
        todo.setdefault(unit.name, (unit, []))[1].append((split, rec, name))
    tmp = temp_dir_beside(path)
    done, stamps = [], {}
    try:
        work = [(u, None if finite is None else finite[u.start:u.stop]) for u, _ in todo.values()]
        markers = {m["unit"]: m for m in process_units(data_cfg, encoder, work, tmp)}
        for unit, files in todo.values():
            for split, rec, name in files:
                new = markers[unit.name]["shards"][split]
                if {k: new.get(k) for k in rec} != rec:
                    raise StoreError(f"token store {path}: shard {split}/{rec['file']} rebuilt from the source differs "
                                     f"from its record in the manifest (the source or the store's tokenizer changed "
                                     f"since it was prepared); delete the store and prepare it again")
                os.replace(tmp / split / name, path / split / name)
                done.append(f"{split}/{name}")
                if name.endswith(".bin"):  # hashed while written, in a folder no one else writes
                    stamps[f"{split}/{name}"] = {"sha256": rec["sha256"],
                                                 "id": identity((path / split / name).stat())}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if stamps:
            write_stamps(path, stamps)
    log.info("token store %s: rewrote %d damaged file(s): %s", path, len(done), ", ".join(done))
    return done
