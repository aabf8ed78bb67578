"""Reading a prepared token store: checked on opening, then read row by row at exact offsets (study.data.store
describes the store). Every rank opens it; nothing here writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from study.data.hf_tokenizer import load_tokenizer_dir
from study.data.store_check import ShardCheck, file_problems, manifest_problem, npy_data
from study.data.store_manifest import (
    STORE_FORMAT,
    StoreError,
    prepare_command,
    spec,
    store_path,
    tokens_needed,
)
from study.errors import DataError


def _open_for_random_reads(path: Path):
    """`path` opened for reads at exact offsets (os.pread), the kernel's read-ahead off where the OS allows it.
    Training reads rows of a few KiB in random order; read-ahead would pull in the window around each one
    (benchmarks/store_read.py --cold: 393x the tokens delivered with memmaps, about 3x, the page rounding, here)."""
    fh = open(path, "rb", buffering=0)  # noqa: SIM115 (kept open for the life of the view; closed with it)
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
    return fh


def _pread(fh, nbytes: int, offset: int) -> bytes:
    """Exactly `nbytes` from `offset` (a read may return fewer bytes than asked for)."""
    chunks = []
    while nbytes > 0:
        chunk = os.pread(fh.fileno(), nbytes, offset)
        if not chunk:
            raise StoreError(f"{fh.name} ends before byte {offset + nbytes} (truncated since the store was opened?)")
        chunks.append(chunk)
        nbytes, offset = nbytes - len(chunk), offset + len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class SplitView:
    """One split of a store as a virtual concatenation of its shards. Tokens are read with one os.pread per row
    (no memmap: a page fault per 4 KiB and the read-ahead around it cost more than the row on a cold cache or a
    shared filesystem); files are opened on first use."""

    def __init__(self, folder: Path, shards: list[dict], dtype, check: ShardCheck | None = None):
        self.folder, self.dtype = folder, np.dtype(dtype)
        self.check = check  # each shard's bytes proven before its first read (study.data.store_check)
        self.shards = [s for s in shards if s["tokens"] > 0]
        self.starts = np.zeros(len(self.shards) + 1, dtype=np.int64)
        np.cumsum([s["tokens"] for s in self.shards], out=self.starts[1:])
        self.doc_starts = np.zeros(len(self.shards) + 1, dtype=np.int64)
        np.cumsum([s["documents"] for s in self.shards], out=self.doc_starts[1:])
        self._bins: dict[int, object] = {}
        self._idx: dict[int, tuple] = {}  # shard -> (file, data offset, dtype) of its .idx.npy

    @property
    def tokens(self) -> int:
        return int(self.starts[-1])

    @property
    def documents(self) -> int:
        return int(self.doc_starts[-1])

    def _bin(self, k: int):
        fh = self._bins.get(k)
        if fh is None:
            fh = _open_for_random_reads(self.folder / f"{self.shards[k]['file']}.bin")
            if self.check is not None:
                try:
                    self.check.bin(self.folder.name, self.shards[k], fh)
                except BaseException:
                    fh.close()
                    raise
            self._bins[k] = fh
        return fh

    def check_all(self) -> None:
        """Prove every shard of the split now (the training split, before the first step), not at first read."""
        if self.check is not None:
            for rec in self.shards:
                try:
                    fh = open(self.folder / f"{rec['file']}.bin", "rb")  # noqa: SIM115 (closed just below)
                except OSError as exc:
                    raise self.check.refuse(f"{self.folder.name}/{rec['file']}.bin",
                                             f"cannot be read ({exc.strerror or exc})") from None
                with fh:
                    self.check.bin(self.folder.name, rec, fh)

    def _idx_path(self, k: int) -> Path:
        if self.check is not None:
            self.check.idx(self.folder.name, self.shards[k])
        return self.folder / f"{self.shards[k]['file']}.idx.npy"

    def _local(self, k: int, local: int, n: int) -> np.ndarray:
        """Tokens [local, local + n) of shard k, in the store's dtype."""
        size = self.dtype.itemsize
        return np.frombuffer(_pread(self._bin(k), n * size, local * size), dtype=self.dtype)

    def _raw(self, start: int, n: int) -> np.ndarray:
        if start < 0 or start + n > self.tokens:
            raise IndexError(f"tokens [{start}, {start + n}) outside the split's {self.tokens}")
        k = int(np.searchsorted(self.starts, start, side="right")) - 1
        parts, pos, need = [], start, n
        while need:
            take = min(need, int(self.starts[k + 1]) - pos)
            parts.append(self._local(k, pos - int(self.starts[k]), take))
            pos, need, k = pos + take, need - take, k + 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def read(self, start: int, n: int) -> np.ndarray:
        """Tokens [start, start + n) as int64 (may span shards)."""
        return self._raw(start, n).astype(np.int64)

    def rows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Tokens [s, s + length) for every s in `starts` as an int64 [n, length] array, one read per row."""
        starts = np.asarray(starts, dtype=np.int64)
        out = np.empty((len(starts), length), dtype=np.int64)
        for i, s in enumerate(starts.tolist()):
            out[i] = self._raw(s, length)
        return out

    def _doc_bounds(self, k: int, j: int) -> tuple[int, int]:
        """idx[j], idx[j + 1] of shard k: where its document j starts and ends, read alone."""
        if k not in self._idx:
            path = self._idx_path(k)
            self._idx[k] = (_open_for_random_reads(path), *npy_data(path))
        fh, offset, dtype = self._idx[k]
        a, b = np.frombuffer(_pread(fh, 2 * dtype.itemsize, offset + j * dtype.itemsize), dtype=dtype)
        return int(a), int(b)

    def document_end(self, pos: int) -> int:
        """End (exclusive, after its EOS) of the document holding token `pos` (a binary search of its shard's
        index: once per held-out set, not per training row)."""
        k = int(np.searchsorted(self.starts, pos, side="right")) - 1
        idx = np.load(self._idx_path(k), mmap_mode="r")
        j = int(np.searchsorted(idx, pos - int(self.starts[k]), side="right"))
        return int(self.starts[k]) + int(idx[j])

    def document(self, i: int) -> np.ndarray:
        """Document i (in store order) with its EOS, as int64."""
        k = int(np.searchsorted(self.doc_starts, i, side="right")) - 1
        a, b = self._doc_bounds(k, i - int(self.doc_starts[k]))
        return self._local(k, a, b - a).astype(np.int64)


class TokenStore:
    """An opened, checked store: `.train`, `.heldout` (SplitView), `.manifest`, `.path`."""

    def __init__(self, path: Path, manifest: dict):
        self.path, self.manifest = path, manifest
        self.key = manifest["key"]
        dtype = np.dtype(manifest["dtype"])
        check = ShardCheck(path)
        self.train = SplitView(path / "train", manifest["splits"]["train"]["shards"], dtype, check)
        self.heldout = SplitView(path / "heldout", manifest["splits"]["heldout"]["shards"], dtype, check)

    @property
    def capped(self) -> bool:
        """Cut by `study data prepare --max-tokens` before the source's end (its training split is a prefix)."""
        return self.manifest.get("complete") is False

    def too_short(self, need: str) -> StoreError:
        return _refuse(self.path, f"holds {self.train.tokens:,} training tokens (prepared with --max-tokens "
                                  f"{self.manifest.get('max_tokens'):,}), fewer than {need}; delete it and prepare "
                                  f"it again with a larger --max-tokens (or point data.store_dir elsewhere)")


_OPEN: dict[str, TokenStore] = {}


def _refuse(path: Path, why: str) -> StoreError:
    return StoreError(f"token store {path}: {why}")


def read_manifest(path: Path, data_cfg=None, vocab_size: int | None = None) -> dict:
    """The manifest of the store at `path`, checked: present, JSON of the right shape and arithmetic
    (study.data.store_check), this version's format and, given a config, prepared for its data. StoreError (one
    line) otherwise. The shard files are not looked at."""
    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        partial = Path(f"{path}.partial")
        state = "is only partly prepared" if partial.exists() else "is not prepared"
        raise _refuse(path, f"{state}; prepare it once (on a machine that can read the source) with "
                            f"`{prepare_command()}` for this config (data.store=true)")
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError) as exc:
        raise _refuse(path, f"unreadable manifest ({exc}); delete the folder and prepare it again") from None
    if isinstance(manifest, dict) and manifest.get("format") != STORE_FORMAT:
        raise _refuse(path, f"format {manifest.get('format')!r}, this version reads {STORE_FORMAT}; prepare it again")
    problem = manifest_problem(manifest)
    if problem:
        raise _refuse(path, f"manifest.json is damaged ({problem}); delete the store and prepare it again")
    if data_cfg is not None:
        mine = spec(data_cfg, vocab_size)
        theirs = manifest["spec"]
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            key = diff[0]
            raise _refuse(path, f"prepared for other data: {key}={theirs.get(key)!r} in the store, "
                                f"{mine.get(key)!r} in this config (differs in: {', '.join(diff)}); point "
                                f"data.store_dir elsewhere or prepare this config's store")
    return manifest


def open_store(data_cfg, vocab_size: int) -> TokenStore:
    """The prepared store of this config, checked (manifest, spec, every file's size); StoreError if unusable.
    Each shard's bytes are checked at its first read (store_check.ShardCheck)."""
    path = store_path(data_cfg, vocab_size)
    memo = str(path)
    if memo in _OPEN:
        return _OPEN[memo]
    manifest = read_manifest(path, data_cfg, vocab_size)
    for split, _, name, problem in file_problems(path, manifest):
        raise _refuse(path, f"shard {split}/{name} {problem}; `{prepare_command()}` for this config repairs it")
    store = TokenStore(path, manifest)
    _OPEN[memo] = store
    return store


def forget(path: Path) -> None:
    """Drop this process' opened view of the store at `path` (its files are about to be replaced)."""
    store = _OPEN.pop(str(path), None)
    for view in (store.train, store.heldout) if store is not None else ():
        for fh in [*view._bins.values(), *(f for f, *_ in view._idx.values())]:
            fh.close()
        view._bins.clear()
        view._idx.clear()


def store_tokenizer(data_cfg, vocab_size: int):
    """The tokenizer saved in the store, checked against the manifest (name and vocabulary fingerprint)."""
    store = open_store(data_cfg, vocab_size)
    tok, problem = saved_tokenizer(store.path, store.manifest)
    if problem:
        raise _refuse(store.path, f"{problem}; delete the store and prepare it again")
    tok.store = store  # the stream and the held-out batches read this store
    return tok


def saved_tokenizer(path: Path, manifest: dict):
    """(the tokenizer saved in the store at `path`, what is wrong with it or None): it must load and match the
    manifest's record (vocabulary fingerprint and EOS)."""
    try:
        tok = load_tokenizer_dir(path / "tokenizer")
    except DataError as exc:
        return None, f"its tokenizer cannot be loaded ({exc})"
    want = manifest["tokenizer"]
    if tok.fingerprint != want["fingerprint"] or tok.eos_id != want["eos_id"]:
        return tok, (f"its tokenizer files do not match the manifest (fingerprint {tok.fingerprint}, manifest "
                     f"{want['fingerprint']})")
    return tok, None


def store_of(tok) -> TokenStore:
    """The token store a tokenizer from `store_tokenizer` reads (the store is keyed by the model's vocabulary
    size, which the tokenizer's own length need not equal: only its loader knows the store)."""
    store = getattr(tok, "store", None)
    if store is None:
        raise DataError(f"tokenizer {tok.name!r} does not come from a token store: build it with data.store on "
                        f"(study.data.build_tokenizer), which loads the store's own copy")
    return store


def check_ready(cells_or_cfgs) -> list[tuple[Path, str]]:
    """(store path, problem) for every distinct store a list of RunConfigs (or grid cells) needs that is not
    usable: not prepared, damaged, or cut (--max-tokens) below the training tokens of the cell that needs most."""
    needs: dict[Path, tuple] = {}
    for cfg in cells_or_cfgs:
        cfg = getattr(cfg, "config", cfg)
        if cfg.data.store:
            path = store_path(cfg.data, cfg.model.vocab_size)
            _, most = needs.get(path, (cfg, 0))
            needs[path] = (cfg, max(most, tokens_needed(cfg) or 0))
    problems = []
    for path, (cfg, need) in needs.items():
        try:
            store = open_store(cfg.data, cfg.model.vocab_size)
            if store.capped and store.train.tokens < need:
                raise store.too_short(f"the {need:,} its runs train on")
        except DataError as exc:
            problems.append((path, str(exc)))
    return problems
