"""Atomic files and folders: a reader sees the old content or the new, never half of either.

Every write goes to a temporary name in the same folder (same file system, so the final rename is atomic) and
is renamed onto its place only when complete; a failure removes the temporary copy. The temporary names start
with '.' so that the run-directory walkers (study.collect) never take them for results.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_dir"]


def _beside(path: Path, kind: str) -> Path:
    """A fresh hidden name next to `path` (pid + random: two threads or processes never share one).

    Not tempfile.mkstemp/mkdtemp: those create mode 0600/0700, and results are shared with a group on clusters;
    os.open / mkdir below honour the umask like an ordinary write does.
    """
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write `data` to `path` through a temporary file beside it and an atomic rename; returns the path.

    fsync (default on) flushes the bytes to disk before the rename, so a machine crash cannot leave the new name
    pointing at an empty file; pass False for scratch files where speed matters more.
    """
    path = Path(path)
    tmp = _beside(path, "tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    """atomic_write_bytes for text (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 1,
                      default: Callable[[Any], Any] | None = None, fsync: bool = True) -> Path:
    """`data` as JSON text plus a final newline, written atomically (json.dumps's indent and default)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, default=default) + "\n", fsync=fsync)


def temp_dir_beside(path: str | os.PathLike) -> Path:
    """A fresh empty folder beside `path` (same filesystem: renaming it onto `path` is atomic), mode per umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(path, "tmp")
    tmp.mkdir()
    return tmp


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: Callable[[Path], bool] | bool = False) -> Iterator[Path]:
    """Fill a temporary folder beside `path` inside the block; on success it is renamed onto `path`.

        with atomic_dir(out, replace=True) as tmp:
            (tmp / "a.parquet").write_bytes(...)

    An exception inside the block removes the temporary folder and leaves `path` as it was. When `path` already
    exists it is replaced only if `replace` says so (True, or a predicate called with the existing path);
    otherwise FileExistsError is raised before anything is written. The old folder is moved aside first and
    deleted after the new one is in place, so `path` is missing only between two renames.
    """
    path = Path(path)
    if path.exists() and not (replace(path) if callable(replace) else replace):
        raise FileExistsError(f"{path} exists; not replacing it")
    tmp = temp_dir_beside(path)
    try:
        yield tmp
        if path.exists():
            old = _beside(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """A file's sha256, read in 4 MiB blocks (checkpoints and store shards run to gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
