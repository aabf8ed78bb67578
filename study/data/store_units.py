"""Units of work of a token store and their tokenizing and shard writing (study.data.store describes the store).

The source is cut into units whose boundaries do not depend on the number of workers: a shard of an HF split
after `IterableDataset.reshard()` (a parquet row group; a whole file for formats datasets cannot split, such as
C4's json.gz), or `UNIT_DOCS` documents of a local source (the bundled corpus; a `files` source, where a unit
is found again by the byte offset of its first document, so a large JSON-lines file is read by many workers and
never whole by one). A unit writes shard j of its split(s) as its documents are encoded (`ShardWriter`: memory
per worker is one encoding batch, whatever the unit's size) and then its marker `units/<name>.json`, so a store
built by 1 worker is byte-identical to one built by N, and a restarted preparation keeps the finished units
(`marker_ok`).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study import fsutil
from study.data import corpus
from study.data.store_check import identity
from study.data.tokens import token_dtype
from study.errors import DataError
from study.fsutil import sha256_file

UNIT_DOCS = 256  # documents per unit of the bundled corpus or a `files` source
UNITS_FORMAT = 2  # how units are cut (2: HF row groups, `files` units by byte offset); a partial store of another
#                   format is started again, since its unit markers would name other pieces of the source
ENCODE_CHARS = 8_000_000  # characters per encode_batch call (about 2M tokens: bounds the Encodings held at once)


@dataclass(frozen=True)
class Unit:
    """One piece of the source: documents [start, stop) of a local source, or shard `shard` of `of` of an HF
    split. `splits`: the store splits it writes ('train', 'heldout' or both, by document hash). A `files` unit
    also has `at`, the (file number, byte offset, line) of its first document, and `chars`, its text's length."""

    name: str  # e.g. 'train-000007': the shard file name and the marker name
    index: int
    splits: tuple[str, ...]
    hf_split: str | None = None
    shard: int = 0
    of: int = 1
    start: int = 0
    stop: int = 0
    at: tuple = ()
    chars: int = 0


def _hf_stream(data_cfg, split: str):
    """The split streamed and split as finely as datasets can (`reshard`, datasets >= 4: parquet row groups)."""
    import datasets

    ds = corpus.load_hf(data_cfg, split, streaming=True)
    if not isinstance(ds, datasets.IterableDataset):
        raise DataError(f"{corpus.hf_describe(data_cfg, split)}: expected a streamed dataset, got {type(ds).__name__}")
    return ds.reshard() if hasattr(ds, "reshard") else ds


def plan_units(data_cfg, finite_docs: list | None = None) -> list[Unit]:
    """Every unit of the source, in store order (train units first, then held-out-only units). `finite_docs`:
    the finite source's documents when the caller has them already (parsing the bundled corpus costs as much
    as a tenth of its tokenization)."""
    by_hash = data_cfg.source != "hf" or not data_cfg.eval_split
    both = ("train", "heldout") if by_hash else ("train",)
    if data_cfg.source == "hf":
        n = _hf_stream(data_cfg, data_cfg.train_split).num_shards
        units = [Unit(f"train-{j:06d}", j, both, data_cfg.train_split, j, n) for j in range(n)]
        if not by_hash:
            m = _hf_stream(data_cfg, data_cfg.eval_split).num_shards
            units += [Unit(f"heldout-{j:06d}", j, ("heldout",), data_cfg.eval_split, j, m) for j in range(m)]
        return units
    if data_cfg.source == "files":
        return _plan_files(data_cfg, both)
    n_docs = len(finite_docs) if finite_docs is not None else sum(1 for _ in corpus.finite_documents(data_cfg))
    if n_docs == 0:
        raise DataError("the corpus has no documents (every document is empty)")
    return [Unit(f"train-{j:06d}", j, both, start=a, stop=min(a + UNIT_DOCS, n_docs))
            for j, a in enumerate(range(0, n_docs, UNIT_DOCS))]


def _files_documents(data_cfg, at: tuple = (0, 0, 1)):
    """The non-empty documents of a `files` source from position `at`, with their positions (as
    corpus.finite_documents yields them)."""
    for doc_id, text, where in corpus.located_documents(data_cfg.paths, data_cfg.text_field, at):
        if text.strip():
            yield doc_id, text, where


def _plan_files(data_cfg, splits) -> list[Unit]:
    """Units of UNIT_DOCS documents of a `files` source, each with the position of its first document: one
    streaming pass over the files (nothing is kept but the positions)."""
    starts, chars = [], []
    n = 0
    for _, text, where in _files_documents(data_cfg):
        if n % UNIT_DOCS == 0:
            starts.append(where)
            chars.append(0)
        chars[-1] += len(text)
        n += 1
    if n == 0:
        raise DataError("the corpus has no documents (every document is empty)")
    return [Unit(f"train-{j:06d}", j, splits, start=j * UNIT_DOCS, stop=min((j + 1) * UNIT_DOCS, n), at=at,
                 chars=c) for j, (at, c) in enumerate(zip(starts, chars, strict=True))]


def unit_documents(data_cfg, unit: Unit):
    """(doc_id, text) of an HF unit (its shard of the split) or a `files` unit (read from its first document's
    position), empty documents skipped (as the streaming path does). The bundled corpus' documents are parsed
    once by the caller and handed to process_units."""
    if unit.at:
        docs = ((doc_id, text) for doc_id, text, _ in _files_documents(data_cfg, unit.at))
        yield from itertools.islice(docs, unit.stop - unit.start)
        return
    ds = _hf_stream(data_cfg, unit.hf_split)
    if unit.of > 1:
        ds = ds.shard(num_shards=unit.of, index=unit.shard, contiguous=True)
    yield from corpus.hf_documents(data_cfg, unit.hf_split, dataset=ds)


class ShardWriter:
    """Shard `name` of a split, written as its documents arrive: tokens (each document followed by EOS) appended
    to a temporary file and hashed on the way, the document index kept (8 bytes per document); `close()` renames
    `name`.bin and `name`.idx.npy into place and returns the shard's record. What it holds is the batch being
    added, whatever the shard's final size."""

    def __init__(self, folder: Path, name: str, dtype, eos: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.name, self.dtype, self.eos = folder, name, np.dtype(dtype), eos
        self._tmp = folder / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        self._fh = open(self._tmp, "wb")  # noqa: SIM115 (open until close(): the shard grows batch by batch)
        self._sha = hashlib.sha256()
        self._ends = [0]

    def add(self, docs: list) -> None:
        """Append documents (token id lists or arrays), one concatenation and one masked assignment: EOS in
        every document's last slot."""
        if not len(docs):
            return
        lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))
        ends = np.cumsum(lengths)
        flat = np.full(int(ends[-1]), self.eos, dtype=self.dtype)
        body = np.ones(len(flat), dtype=bool)
        body[ends - 1] = False
        flat[body] = np.concatenate([np.asarray(d, dtype=self.dtype) for d in docs])
        self._fh.write(memoryview(flat))
        self._sha.update(memoryview(flat))
        self._ends.extend((ends + self._ends[-1]).tolist())

    def close(self) -> dict:
        """Rename the shard and its index into place; their record. `identity` is then the .bin's file identity
        as it was hashed (study.data.store_check: the stamp that spares a reader hashing it again)."""
        self._fh.close()
        bin_path, idx_path = self.folder / f"{self.name}.bin", self.folder / f"{self.name}.idx.npy"
        os.replace(self._tmp, bin_path)
        self.identity = identity(bin_path.stat())  # after the rename, which changes the file's ctime
        index = io.BytesIO()
        np.save(index, np.asarray(self._ends, dtype=np.int64))
        with open(self._tmp, "wb") as fh:
            fh.write(index.getbuffer())
        os.replace(self._tmp, idx_path)
        tokens = self._ends[-1]
        return {"file": self.name, "tokens": int(tokens), "documents": len(self._ends) - 1,
                "bytes": int(tokens * self.dtype.itemsize), "sha256": self._sha.hexdigest(),
                "idx_sha256": hashlib.sha256(index.getbuffer()).hexdigest()}


def write_shard(folder: Path, name: str, docs: list, dtype, eos: int) -> dict:
    """Write `name`.bin (documents each followed by EOS) and `name`.idx.npy atomically; their record."""
    writer = ShardWriter(folder, name, dtype, eos)
    writer.add(docs)
    return writer.close()


def process_units(data_cfg, tok, work: list, partial: Path) -> list[dict]:
    """Tokenize units and write their shard(s) and markers; returns the markers. `work`: (unit, its documents, or
    None to read them from the source) in order.

    Documents of consecutive units are encoded together, up to ENCODE_CHARS characters per encode_batch call: the
    tokenizers library spends less CPU per token on fewer, larger calls (bundled corpus, one thread: 2.8 CPU-s in
    4096-document calls, 3.6 in 256-document calls). Each call's tokens go to their shards at once; a unit is
    finished (its shards renamed into place, its marker written) when its last documents are written. Its
    marker's cpu_s is this thread's CPU time since the previous marker (units encoded together share a call)."""
    dtype = token_dtype(tok.vocab_size)
    texts: list[str] = []
    dests: list[list] = []  # the pending list (a unit's split) each queued document's tokens go to
    writing: list[tuple[Unit, dict]] = []  # units with open shards: split -> (writer, pending tokens)
    ready = 0  # how many of `writing` (from the front) have all their documents queued
    markers: list[dict] = []
    state = {"chars": 0, "clock": time.thread_time()}  # this thread's CPU: workers may be threads

    def flush(ready: int) -> None:
        if texts:
            for dest, ids in zip(dests, tok.encode_batch(texts), strict=True):
                if ids:  # a document that tokenizes to nothing is left out, as in the streaming path
                    dest.append(np.asarray(ids, dtype=dtype))
        texts.clear()
        dests.clear()
        state["chars"] = 0
        for _, out in writing:
            for writer, pending in out.values():
                writer.add(pending)
                pending.clear()
        for unit, out in writing[:ready]:
            marker = {"unit": unit.name, "shards": {s: w.close() for s, (w, _) in out.items()}, "cpu_s": 0.0}
            marker["ids"] = {s: w.identity for s, (w, _) in out.items()}
            now = time.thread_time()
            marker["cpu_s"], state["clock"] = now - state["clock"], now  # reading, tokenizing, writing
            (partial / "units").mkdir(parents=True, exist_ok=True)
            fsutil.atomic_write_text(partial / "units" / f"{unit.name}.json", json.dumps(marker))
            markers.append(marker)
        del writing[:ready]

    for unit, docs in work:
        out = {s: (ShardWriter(partial / s, f"{unit.index:06d}", dtype, tok.eos_id), []) for s in unit.splits}
        writing.append((unit, out))
        by_hash = len(unit.splits) == 2
        for doc_id, text in (docs if docs is not None else unit_documents(data_cfg, unit)):
            heldout = by_hash and corpus.is_heldout(doc_id, data_cfg.heldout_fraction)
            texts.append(text)
            dests.append(out["heldout" if heldout else unit.splits[0]][1])
            state["chars"] += len(text)
            if state["chars"] >= ENCODE_CHARS:
                flush(ready)
                ready = 0
        ready = len(writing)
    flush(ready)
    return markers


def worker_jobs(todo: list[Unit], finite: list | None, workers: int) -> list[list]:
    """The pool's jobs: an HF unit alone (its worker reads its shard); units of a local source in runs of
    consecutive units (carrying their documents when `finite` has them, else read from the source), about
    min(ENCODE_CHARS, all / workers) characters each, so that every worker gets work and encodes in large calls."""
    if finite is None and not any(u.at for u in todo):
        return [[(u, None)] for u in todo]
    work = [(u, finite[u.start:u.stop] if finite is not None else None) for u in todo]
    sizes = [sum(len(t) for _, t in docs) if docs is not None else u.chars for u, docs in work]
    target = max(1, min(ENCODE_CHARS, -(-sum(sizes) // max(1, workers))))
    jobs: dict[int, list] = {}
    start = 0
    for item, size in zip(work, sizes, strict=True):  # a unit joins the job its middle character falls in
        jobs.setdefault(int((start + size / 2) // target), []).append(item)
        start += size
    return list(jobs.values())


def units_in_store(plan: list[Unit], markers: list, max_tokens: int) -> list[int]:
    """Positions in `plan` of the units a store holds: all of them without a cap (`max_tokens` 0); with one,
    every held-out-only unit and the training units in source order up to the first whose finished prefix holds
    `max_tokens` training tokens, or up to the first unfinished one (the cut is not known before it is done)."""
    if not max_tokens:
        return list(range(len(plan)))
    kept, total = [], 0
    for k, (unit, marker) in enumerate(zip(plan, markers, strict=True)):
        if "train" not in unit.splits:
            kept.append(k)
        elif total < max_tokens:
            kept.append(k)
            total = max_tokens if marker is None else total + marker["shards"]["train"]["tokens"]
    return kept


def marker_ok(partial: Path, unit: Unit, *, hashes: bool = True) -> dict | None:
    """The finished marker of `unit` if it and its shard files are intact (size, and sha256 when `hashes`), else
    None."""
    path = partial / "units" / f"{unit.name}.json"
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for split, rec in marker.get("shards", {}).items():
        f = partial / split / f"{rec['file']}.bin"
        if not f.is_file() or f.stat().st_size != rec["bytes"] or (hashes and sha256_file(f) != rec["sha256"]):
            return None
        idx = partial / split / f"{rec['file']}.idx.npy"
        if not idx.is_file() or (hashes and rec.get("idx_sha256") and sha256_file(idx) != rec["idx_sha256"]):
            return None
    return marker


