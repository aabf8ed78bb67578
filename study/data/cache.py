"""On-disk cache helpers: the cache folder, an inter-process lock, atomic writes, stable hashes.

Several processes (DDP ranks) may start at once and want the same cached file. Whoever takes the lock first
builds it; the others wait on the lock and then find it built. Every write goes to a temporary name in the same
folder and is renamed into place, so a reader never sees a half-written file, even without the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: atomic renames alone keep the cache consistent
    fcntl = None


def cache_root(data_cfg, *parts: str) -> Path:
    """`data_cfg.cache_dir` (with ~ expanded) / parts, created."""
    path = Path(os.path.expanduser(data_cfg.cache_dir)).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def stable_hash(obj, n: int = 16) -> str:
    """sha256 of the canonical JSON of `obj`, first `n` hex characters."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


@contextlib.contextmanager
def locked(path: Path):
    """Hold an exclusive lock on `path`.lock for the duration of the block (no-op where flock is missing)."""
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


