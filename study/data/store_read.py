"""Reading a prepared token store: checked on opening, then read through numpy memmap (study.data.store describes
the store). Every rank opens it; nothing here writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from study.data.hf_tokenizer import load_tokenizer_dir
from study.data.store_manifest import SPLITS, STORE_FORMAT, StoreError, prepare_command, spec, store_path
from study.errors import DataError
from study.fsutil import sha256_file


class SplitView:
    """One split of a store as a virtual concatenation of its shards (memmaps opened on first use)."""

    def __init__(self, folder: Path, shards: list[dict], dtype):
        self.folder, self.dtype = folder, np.dtype(dtype)
        self.shards = [s for s in shards if s["tokens"] > 0]
        self.starts = np.zeros(len(self.shards) + 1, dtype=np.int64)
        np.cumsum([s["tokens"] for s in self.shards], out=self.starts[1:])
        self.doc_starts = np.zeros(len(self.shards) + 1, dtype=np.int64)
        np.cumsum([s["documents"] for s in self.shards], out=self.doc_starts[1:])
        self._maps: dict[int, np.memmap] = {}
        self._idx: dict[int, np.ndarray] = {}

    @property
    def tokens(self) -> int:
        return int(self.starts[-1])

    @property
    def documents(self) -> int:
        return int(self.doc_starts[-1])

    def _map(self, k: int) -> np.ndarray:
        m = self._maps.get(k)
        if m is None:
            m = np.memmap(self.folder / f"{self.shards[k]['file']}.bin", dtype=self.dtype, mode="r")
            self._maps[k] = m
        return m

    def read(self, start: int, n: int) -> np.ndarray:
        """Tokens [start, start + n) as int64 (may span shards)."""
        if start < 0 or start + n > self.tokens:
            raise IndexError(f"tokens [{start}, {start + n}) outside the split's {self.tokens}")
        k = int(np.searchsorted(self.starts, start, side="right")) - 1
        parts, pos, need = [], start, n
        while need:
            local = pos - int(self.starts[k])
            take = min(need, int(self.starts[k + 1]) - pos)
            parts.append(self._map(k)[local:local + take])
            pos, need, k = pos + take, need - take, k + 1
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(np.int64)

    def _index(self, k: int) -> np.ndarray:
        idx = self._idx.get(k)
        if idx is None:
            idx = np.load(self.folder / f"{self.shards[k]['file']}.idx.npy", mmap_mode="r")
            self._idx[k] = idx
        return idx

    def rows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Tokens [s, s + length) for every s in `starts` as an int64 [n, length] array: one memmap gather per
        shard for the rows inside a shard, `read` for the few that cross a shard boundary."""
        starts = np.asarray(starts, dtype=np.int64)
        out = np.empty((len(starts), length), dtype=np.int64)
        k = np.searchsorted(self.starts, starts, side="right") - 1
        inside = starts + length <= self.starts[np.minimum(k + 1, len(self.shards))]
        offsets = np.arange(length, dtype=np.int64)
        for shard in np.unique(k[inside]):
            sel = np.flatnonzero(inside & (k == shard))
            local = starts[sel] - self.starts[shard]
            out[sel] = self._map(int(shard))[local[:, None] + offsets[None, :]]
        for i in np.flatnonzero(~inside):
            out[i] = self.read(int(starts[i]), length)
        return out

    def document_end(self, pos: int) -> int:
        """End (exclusive, after its EOS) of the document holding token `pos`."""
        k = int(np.searchsorted(self.starts, pos, side="right")) - 1
        idx = self._index(k)
        j = int(np.searchsorted(idx, pos - int(self.starts[k]), side="right"))
        return int(self.starts[k]) + int(idx[j])

    def document(self, i: int) -> np.ndarray:
        """Document i (in store order) with its EOS, as int64."""
        k = int(np.searchsorted(self.doc_starts, i, side="right")) - 1
        idx = self._index(k)
        j = i - int(self.doc_starts[k])
        return self._map(k)[int(idx[j]):int(idx[j + 1])].astype(np.int64)


class TokenStore:
    """An opened, checked store: `.train`, `.heldout` (SplitView), `.manifest`, `.path`."""

    def __init__(self, path: Path, manifest: dict):
        self.path, self.manifest = path, manifest
        self.key = manifest["key"]
        dtype = np.dtype(manifest["dtype"])
        self.train = SplitView(path / "train", manifest["splits"]["train"]["shards"], dtype)
        self.heldout = SplitView(path / "heldout", manifest["splits"]["heldout"]["shards"], dtype)


_OPEN: dict[str, TokenStore] = {}


def _refuse(path: Path, why: str) -> StoreError:
    return StoreError(f"token store {path}: {why}")


def open_store(data_cfg, vocab_size: int, *, verify_hashes: bool = False) -> TokenStore:
    """The prepared store of this config, checked (manifest, spec, shard sizes); DataError if unusable."""
    path = store_path(data_cfg, vocab_size)
    memo = str(path)
    if memo in _OPEN and not verify_hashes:
        return _OPEN[memo]
    manifest_file = path / "manifest.json"
    if not manifest_file.exists():
        partial = Path(f"{path}.partial")
        state = "is only partly prepared" if partial.exists() else "is not prepared"
        raise _refuse(path, f"{state}; prepare it once (on a machine that can read the source) with "
                            f"`{prepare_command()}` for this config (data.store=true)")
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError) as exc:
        raise _refuse(path, f"unreadable manifest ({exc}); delete the folder and prepare it again") from None
    if manifest.get("format") != STORE_FORMAT:
        raise _refuse(path, f"format {manifest.get('format')!r}, this version reads {STORE_FORMAT}; prepare it again")
    mine = spec(data_cfg, vocab_size)
    theirs = manifest.get("spec", {})
    if theirs != mine:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        key = diff[0]
        raise _refuse(path, f"prepared for other data: {key}={theirs.get(key)!r} in the store, "
                            f"{mine.get(key)!r} in this config (differs in: {', '.join(diff)}); point "
                            f"data.store_dir elsewhere or prepare this config's store")
    for split in SPLITS:
        for rec in manifest["splits"][split]["shards"]:
            f = path / split / f"{rec['file']}.bin"
            if not f.is_file():
                raise _refuse(path, f"shard {split}/{f.name} is missing; delete the store and prepare it again")
            if f.stat().st_size != rec["bytes"]:
                raise _refuse(path, f"shard {split}/{f.name} has {f.stat().st_size} bytes, the manifest says "
                                    f"{rec['bytes']} (truncated or modified); delete the store and prepare it again")
            if verify_hashes and sha256_file(f) != rec["sha256"]:
                raise _refuse(path, f"shard {split}/{f.name} does not match its sha256; prepare it again")
    store = TokenStore(path, manifest)
    _OPEN[memo] = store
    return store


def store_tokenizer(data_cfg, vocab_size: int):
    """The tokenizer saved in the store, checked against the manifest (name and vocabulary fingerprint)."""
    store = open_store(data_cfg, vocab_size)
    tok = load_tokenizer_dir(store.path / "tokenizer")
    want = store.manifest["tokenizer"]
    if tok.fingerprint != want["fingerprint"] or tok.eos_id != want["eos_id"]:
        raise _refuse(store.path, f"its tokenizer files do not match the manifest (fingerprint {tok.fingerprint}, "
                                  f"manifest {want['fingerprint']}); prepare it again")
    tok.store = store  # the stream and the held-out batches read this store
    return tok


def store_of(tok) -> TokenStore:
    """The token store a tokenizer from `store_tokenizer` reads (the store is keyed by the model's vocabulary
    size, which the tokenizer's own length need not equal: only its loader knows the store)."""
    store = getattr(tok, "store", None)
    if store is None:
        raise DataError(f"tokenizer {tok.name!r} does not come from a token store: build it with data.store on "
                        f"(study.data.build_tokenizer), which loads the store's own copy")
    return store


def check_ready(cells_or_cfgs) -> list[tuple[Path, str]]:
    """(store path, problem) for every distinct store a list of RunConfigs needs that is not usable."""
    problems, seen = [], set()
    for cfg in cells_or_cfgs:
        cfg = getattr(cfg, "config", cfg)
        if not cfg.data.store:
            continue
        path = store_path(cfg.data, cfg.model.vocab_size)
        if path in seen:
            continue
        seen.add(path)
        try:
            open_store(cfg.data, cfg.model.vocab_size)
        except DataError as exc:
            problems.append((path, str(exc)))
    return problems

