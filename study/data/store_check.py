"""A token store that proves its bytes: the checks between manifest.json and the files (study.data.store
describes the store; docs/data.md says what each check costs, measured by benchmarks/store_verify.py).

Cheapest first:
- every open (`manifest_problem`, `file_problems`): the manifest's shape and arithmetic (a shard's bytes are its
  tokens times the dtype's size, a split's totals are its shards' sums, every document ends with an EOS so a
  shard has no more documents than tokens), and every shard file present at the size the manifest gives (its
  document index at the size its documents give). One stat per file and a small read per index.
- a shard's first read in a process (`ShardCheck`, used by store_read.SplitView): its sha256 against the
  manifest, unless verified.json vouches for it. A stamp there names the shard's sha256 and the file's identity
  (inode, size, mtime, ctime) when it was last hashed in full; it is trusted while the file still has that
  identity and its ctime is older than the stamp file itself (git's "racily clean" rule: a change in the same
  clock tick as the stamp is hashed again). No program can set ctime back, so a byte written into a shard since
  it was hashed is always caught; a copied or moved store is hashed again at its first use (in every process)
  until `study data verify` stamps it where it lies. The document index is checked on its first read (its
  sha256 where the manifest records one, else its shape).
- `study data verify` (`verify`): every shard and index hashed whatever the stamps, the tokenizer files against
  the manifest; stamps written for the shards that match. `study data prepare` on a damaged store rewrites the
  damaged files only (store_repair).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from study.data.store_manifest import SPLITS, StoreError
from study.fsutil import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

STAMPS = "verified.json"
STAMPS_FORMAT = 1
_FILE = re.compile(r"^\d{6}$")  # a shard's name is its unit's position: nothing that could leave its folder
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DTYPES = ("uint16", "uint32")


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shard_problem(s, itemsize: int, dtype: str) -> str | None:
    if not isinstance(s, dict):
        return f"is {type(s).__name__}, not an object"
    if not isinstance(s.get("file"), str) or not _FILE.match(s["file"]):
        return f"file {s.get('file')!r} is not a six-digit shard name"
    for key in ("tokens", "documents", "bytes"):
        if not _int(s.get(key)):
            return f"{key} {s.get(key)!r} is not a count"
    for key in ("sha256", "idx_sha256"):
        if (key in s or key == "sha256") and not (isinstance(s.get(key), str) and _SHA256.match(s[key])):
            return f"{key} {s.get(key)!r} is not a sha256"
    if s["bytes"] != s["tokens"] * itemsize:
        return f"{s['bytes']} bytes for {s['tokens']} {dtype} tokens (that is {s['tokens'] * itemsize} bytes)"
    if s["documents"] > s["tokens"] or (s["documents"] == 0) != (s["tokens"] == 0):
        return f"{s['documents']} documents in {s['tokens']} tokens (every document ends with its EOS)"
    return None


def manifest_problem(manifest) -> str | None:
    """What is wrong with a manifest's shape or arithmetic (the first thing found), or None."""
    if not isinstance(manifest, dict):
        return f"is a JSON {type(manifest).__name__}, not an object"
    for key, kind in (("key", str), ("spec", dict), ("tokenizer", dict), ("source", dict), ("splits", dict),
                      ("dtype", str)):
        if not isinstance(manifest.get(key), kind):
            return f"'{key}' is {type(manifest.get(key)).__name__}, not {kind.__name__}"
    if manifest["dtype"] not in _DTYPES:
        return f"dtype {manifest['dtype']!r} is not one of {', '.join(_DTYPES)}"
    tok = manifest["tokenizer"]
    for key, ok in (("name", isinstance(tok.get("name"), str)), ("eos_id", _int(tok.get("eos_id"))),
                    ("fingerprint", isinstance(tok.get("fingerprint"), str)), ("pad_id", _int(tok.get("pad_id"))),
                    ("vocab_size", _int(tok.get("vocab_size")))):
        if not ok:
            return f"tokenizer.{key} is {tok.get(key)!r}"
    if not isinstance(manifest["source"].get("fingerprint"), str):
        return f"source.fingerprint is {manifest['source'].get('fingerprint')!r}"
    if manifest.get("max_tokens") is not None and not _int(manifest["max_tokens"]):
        return f"max_tokens is {manifest['max_tokens']!r}"
    itemsize = np.dtype(manifest["dtype"]).itemsize
    for split in SPLITS:
        rec = manifest["splits"].get(split)
        if not isinstance(rec, dict) or not isinstance(rec.get("shards"), list):
            return f"splits.{split} has no list of shards"
        seen = set()
        for i, s in enumerate(rec["shards"]):
            problem = _shard_problem(s, itemsize, manifest["dtype"])
            if problem is None and s["file"] in seen:
                problem = f"file {s['file']} is listed twice"
            if problem:
                return f"splits.{split}.shards[{i}]: {problem}"
            seen.add(s["file"])
        for key in ("tokens", "documents"):
            total = sum(s[key] for s in rec["shards"])
            if rec.get(key) != total:
                return f"splits.{split}.{key} is {rec.get(key)!r}, its shards hold {total}"
    if manifest["splits"]["train"]["tokens"] == 0:
        return "splits.train holds no tokens"
    return None


def shards(manifest) -> list[tuple[str, dict]]:
    """(split, shard record) of every shard, in store order."""
    return [(split, rec) for split in SPLITS for rec in manifest["splits"][split]["shards"]]


def npy_data(path: Path) -> tuple[int, np.dtype]:
    """Byte offset and dtype of the data of a 1-d .npy file."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(fh)
        return fh.tell(), np.dtype(dtype)


def _idx_size_problem(path: Path, rec: dict) -> str | None:
    if not path.is_file():
        return "is missing"
    try:
        offset, dtype = npy_data(path)
    except (OSError, ValueError) as exc:
        return f"is not a readable .npy file ({type(exc).__name__})"
    want = offset + dtype.itemsize * (rec["documents"] + 1)
    if dtype != np.int64 or path.stat().st_size != want:
        return f"has {path.stat().st_size} bytes, {rec['documents']} documents need {want} (truncated or modified)"
    return None


def file_problems(path: Path, manifest: dict, *, first_only: bool = True) -> list[tuple[str, dict, str, str]]:
    """(split, shard record, file name, problem) for every shard or index file missing or of the wrong size (the
    first one only with `first_only`: what opening a store needs to refuse it)."""
    out = []
    for split, rec in shards(manifest):
        f, idx = path / split / f"{rec['file']}.bin", path / split / f"{rec['file']}.idx.npy"
        if not f.is_file():
            out.append((split, rec, f.name, "is missing"))
        elif f.stat().st_size != rec["bytes"]:
            out.append((split, rec, f.name, f"has {f.stat().st_size} bytes, the manifest says {rec['bytes']} "
                                            f"(truncated or modified)"))
        problem = _idx_size_problem(idx, rec)
        if problem:
            out.append((split, rec, idx.name, problem))
        if out and first_only:
            break
    return out


def idx_problem(path: Path, rec: dict) -> str | None:
    """What is wrong with a shard's document index beyond its size: its sha256 where the manifest records one,
    else its shape (starts at 0, ends at the shard's tokens, every document at least its EOS long)."""
    if rec.get("idx_sha256"):
        return None if sha256_file(path) == rec["idx_sha256"] else "does not match its sha256 in the manifest"
    idx = np.load(path, mmap_mode="r")
    if len(idx) != rec["documents"] + 1 or int(idx[0]) != 0 or int(idx[-1]) != rec["tokens"] or \
            (len(idx) > 1 and not bool(np.all(np.diff(idx) >= 1))):
        return "is not an index of this shard's documents"
    return None


# ---------------------------------------------------------------------------------------------------
# Stamps: a shard hashed in full stays trusted while its file is unchanged
# ---------------------------------------------------------------------------------------------------
def identity(st: os.stat_result) -> list[int]:
    """What changes when a file's bytes do: inode (a replaced file), size, mtime and ctime (any write; ctime
    cannot be set by a program). Not st_dev: a shared filesystem's device number differs between clients."""
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def read_stamps(path: Path) -> tuple[dict, int]:
    """(stamps {"train/000003.bin": {"sha256", "id"}}, the stamp file's mtime in ns); ({}, 0) when there are
    none or they cannot be read (then every shard is hashed at its first use)."""
    try:
        f = path / STAMPS
        mtime = f.stat().st_mtime_ns
        data = json.loads(f.read_text())
    except (OSError, ValueError):
        return {}, 0
    if not isinstance(data, dict) or data.get("format") != STAMPS_FORMAT or not isinstance(data.get("files"), dict):
        return {}, 0
    return data["files"], mtime


def write_stamps(path: Path, stamps: dict) -> bool:
    """Record `stamps` (merged over the store's current ones) in verified.json; False where the store cannot be
    written (a read-only copy: its shards are then hashed at first use)."""
    old, _ = read_stamps(path)
    try:
        atomic_write_json(path / STAMPS, {"format": STAMPS_FORMAT, "files": {**old, **stamps}}, indent=None)
    except OSError as exc:
        log.debug("cannot record stamps in %s: %s", path, exc)
        return False
    return True


def stamp(f: Path, sha256: str, before: os.stat_result) -> dict | None:
    """The stamp of file `f`, hashed to `sha256` while it had stat `before`; None if it changed meanwhile."""
    try:
        after = f.stat()
    except OSError:
        return None
    return {"sha256": sha256, "id": identity(before)} if identity(after) == identity(before) else None


def _sha256_fd(fd: int, size: int) -> str:
    """sha256 of the first `size` bytes of open file `fd`: the very file the reads will come from."""
    h, offset = hashlib.sha256(), 0
    while offset < size:
        block = os.pread(fd, min(1 << 22, size - offset), offset)
        if not block:
            break
        h.update(block)
        offset += len(block)
    return h.hexdigest()


class ShardCheck:
    """Each shard of an opened store checked once per process, before its first token is read."""

    def __init__(self, path: Path):
        self.path = path
        self.stamps, self.stamped_ns = read_stamps(path)
        self.done: dict[str, list | bool] = {}  # file -> the identity it was proven at (.bin), or True (index)

    def refuse(self, name: str, why: str) -> StoreError:
        return StoreError(f"token store {self.path}: shard {name} {why} (damaged since it was prepared); `study "
                          f"data prepare` with this config repairs the damaged shards, `study data verify "
                          f"{self.path}` checks them all")

    def trusted(self, name: str, rec: dict, st: os.stat_result) -> bool:
        entry = self.stamps.get(name)
        return (isinstance(entry, dict) and entry.get("sha256") == rec["sha256"] and entry.get("id") == identity(st)
                and st.st_ctime_ns < self.stamped_ns)

    def bin(self, split: str, rec: dict, fh) -> None:
        """Check shard `rec`'s .bin, open as `fh` (what its reads will come from)."""
        name = f"{split}/{rec['file']}.bin"
        st = os.fstat(fh.fileno())
        if self.done.get(name) == identity(st):  # proven in this process, unchanged since
            return
        if st.st_size != rec["bytes"]:
            raise self.refuse(name, f"has {st.st_size} bytes, the manifest says {rec['bytes']}")
        if not self.trusted(name, rec, st) and _sha256_fd(fh.fileno(), st.st_size) != rec["sha256"]:
            raise self.refuse(name, "does not match its sha256 in the manifest")
        self.done[name] = identity(st)

    def idx(self, split: str, rec: dict) -> None:
        name = f"{split}/{rec['file']}.idx.npy"
        if name not in self.done:
            problem = idx_problem(self.path / name, rec)
            if problem:
                raise self.refuse(name, problem)
            self.done[name] = True


def damaged(path: Path, manifest: dict, *, workers: int = 1) -> list[tuple[str, dict, str, str]]:
    """(split, shard record, file name, problem) of every damaged file: missing, of the wrong size, or not
    matching its sha256 (a .bin a stamp vouches for is not hashed again). The shards hashed and found whole are
    stamped, so that the next reader need not hash them."""
    out = file_problems(path, manifest, first_only=False)
    bad = {(split, name) for split, _, name, _ in out}
    check = ShardCheck(path)

    def one(item):
        split, rec = item
        found, stamps = [], {}
        name, idx = f"{rec['file']}.bin", f"{rec['file']}.idx.npy"
        if (split, name) not in bad:
            f = path / split / name
            with open(f, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not check.trusted(f"{split}/{name}", rec, st):
                    digest = _sha256_fd(fh.fileno(), st.st_size)
                    if digest != rec["sha256"]:
                        found.append((split, rec, name, "does not match its sha256 in the manifest"))
                    elif (entry := stamp(f, digest, st)) is not None:
                        stamps[f"{split}/{name}"] = entry
        if (split, idx) not in bad and (problem := idx_problem(path / split / idx, rec)):
            found.append((split, rec, idx, problem))
        return found, stamps

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(one, shards(manifest)))
    new = {k: v for _, found in results for k, v in found.items()}
    if new:
        write_stamps(path, new)
    return out + [d for found, _ in results for d in found]


# ---------------------------------------------------------------------------------------------------
# `study data verify`
# ---------------------------------------------------------------------------------------------------
def _hash_one(path: Path, split: str, rec: dict) -> tuple[list[str], dict]:
    """(problems, stamps) of one shard: its .bin and .idx.npy hashed in full."""
    problems, stamps = [], {}
    name = f"{split}/{rec['file']}.bin"
    f = path / name
    try:
        before = f.stat()
        digest = sha256_file(f)
    except OSError as exc:
        return [f"shard {name}: cannot be read ({exc.strerror or exc})"], {}
    if before.st_size != rec["bytes"]:
        problems.append(f"shard {name}: has {before.st_size} bytes, the manifest says {rec['bytes']}")
    elif digest != rec["sha256"]:
        problems.append(f"shard {name}: does not match its sha256 in the manifest (damaged)")
    else:
        entry = stamp(f, digest, before)
        if entry:
            stamps[name] = entry
    idx = path / split / f"{rec['file']}.idx.npy"
    try:
        problem = _idx_size_problem(idx, rec) or idx_problem(idx, rec)
    except (OSError, ValueError) as exc:
        problem = f"cannot be read ({type(exc).__name__}: {exc})"
    if problem:
        problems.append(f"shard {split}/{idx.name}: {problem}")
    return problems, stamps


def verify(path: Path, manifest: dict, *, workers: int = 1, stamps: bool = True) -> tuple[list[str], dict]:
    """Hash every shard and index of a store whose manifest passed `manifest_problem`: (problems, totals
    {"shards", "bytes", "seconds"}). Stamps the shards that match (`stamps`)."""
    start = time.perf_counter()
    todo = shards(manifest)
    with ThreadPoolExecutor(max(1, workers)) as pool:  # hashlib releases the GIL on large blocks
        results = list(pool.map(lambda item: _hash_one(path, *item), todo))
    problems = [p for found, _ in results for p in found]
    new = {k: v for _, found in results for k, v in found.items()}
    if stamps and new:
        write_stamps(path, new)
    return problems, {"shards": len(todo), "bytes": sum(rec["bytes"] for _, rec in todo),
                      "seconds": time.perf_counter() - start}
