"""Units of work of a token store and their tokenizing and shard writing (study.data.store describes the store).

The source is cut into units whose boundaries do not depend on the number of workers (an HF file shard, or
`UNIT_DOCS` documents of a finite source); a unit writes shard j of its split(s) and then its marker
`units/<name>.json`, so a store built by 1 worker is byte-identical to one built by N, and a restarted
preparation keeps the finished units (`marker_ok`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study import fsutil
from study.data import corpus
from study.data.tokens import token_dtype
from study.errors import DataError
from study.fsutil import sha256_file

UNIT_DOCS = 256  # documents per unit of the bundled corpus or a `files` source
ENCODE_CHARS = 8_000_000  # characters per encode_batch call (about 2M tokens: bounds the Encodings held at once)


@dataclass(frozen=True)
class Unit:
    """One piece of the source: documents [start, stop) of a finite source, or file shard `shard` of `of`
    of an HF split. `splits`: the store splits it writes ('train', 'heldout' or both, by document hash)."""

    name: str  # e.g. 'train-000007': the shard file name and the marker name
    index: int
    splits: tuple[str, ...]
    hf_split: str | None = None
    shard: int = 0
    of: int = 1
    start: int = 0
    stop: int = 0


def _hf_stream(data_cfg, split: str):
    import datasets

    ds = corpus.load_hf(data_cfg, split, streaming=True)
    if not isinstance(ds, datasets.IterableDataset):
        raise DataError(f"{corpus.hf_describe(data_cfg, split)}: expected a streamed dataset, got {type(ds).__name__}")
    return ds


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
    n_docs = len(finite_docs) if finite_docs is not None else sum(1 for _ in corpus.finite_documents(data_cfg))
    if n_docs == 0:
        raise DataError("the corpus has no documents (every document is empty)")
    return [Unit(f"train-{j:06d}", j, both, start=a, stop=min(a + UNIT_DOCS, n_docs))
            for j, a in enumerate(range(0, n_docs, UNIT_DOCS))]


def unit_documents(data_cfg, unit: Unit):
    """(doc_id, text) of an HF unit (its file shard of the split), empty documents skipped (as the streaming path
    does). A finite source's documents are parsed once by the caller and handed to process_units."""
    ds = _hf_stream(data_cfg, unit.hf_split)
    if unit.of > 1:
        ds = ds.shard(num_shards=unit.of, index=unit.shard, contiguous=True)
    yield from corpus.hf_documents(data_cfg, unit.hf_split, dataset=ds)


def write_shard(folder: Path, name: str, docs: list, dtype, eos: int) -> dict:
    """Write `name`.bin (documents each followed by EOS) and `name`.idx.npy atomically; their record.
    `docs`: token id lists or arrays. The shard is assembled with one concatenation and one masked assignment
    (EOS in every document's last slot), written in one call, and hashed from memory (the bytes `tofile` writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))
    idx = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=idx[1:])
    flat = np.full(int(idx[-1]), eos, dtype=dtype)
    if len(docs):
        body = np.ones(len(flat), dtype=bool)
        body[idx[1:] - 1] = False  # every document's last slot is its EOS
        flat[body] = np.concatenate([np.asarray(d, dtype=dtype) for d in docs])
    bin_path, idx_path = folder / f"{name}.bin", folder / f"{name}.idx.npy"
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    flat.tofile(tmp)
    os.replace(tmp, bin_path)
    with open(tmp, "wb") as fh:
        np.save(fh, idx)
    os.replace(tmp, idx_path)
    return {"file": name, "tokens": int(idx[-1]), "documents": len(docs), "bytes": int(flat.nbytes),
            "sha256": hashlib.sha256(memoryview(flat)).hexdigest()}


def process_units(data_cfg, tok, work: list, partial: Path) -> list[dict]:
    """Tokenize units and write their shard(s) and markers; returns the markers. `work`: (unit, its documents, or
    None to read them from the source) in order.

    Documents of consecutive units are encoded together, up to ENCODE_CHARS characters per encode_batch call: the
    tokenizers library spends less CPU per token on fewer, larger calls (bundled corpus, one thread: 2.8 CPU-s in
    4096-document calls, 3.6 in 256-document calls). A unit is written as soon as its documents are encoded; its
    marker's cpu_s is this thread's CPU time since the previous marker (units encoded together share a call)."""
    dtype = token_dtype(tok.vocab_size)
    texts: list[str] = []
    dests: list[list] = []  # the list (a unit's split) each queued document's tokens go to
    ready: list[tuple[Unit, dict]] = []  # units whose documents are all queued
    markers: list[dict] = []
    state = {"chars": 0, "clock": time.thread_time()}  # this thread's CPU: workers may be threads

    def flush():
        if texts:
            for dest, ids in zip(dests, tok.encode_batch(texts), strict=True):
                if ids:  # a document that tokenizes to nothing is left out, as in the streaming path
                    dest.append(np.asarray(ids, dtype=dtype))
        texts.clear()
        dests.clear()
        state["chars"] = 0
        for unit, out in ready:
            marker = {"unit": unit.name, "shards": {}, "cpu_s": 0.0}
            for split, docs in out.items():
                marker["shards"][split] = write_shard(partial / split, f"{unit.index:06d}", docs, dtype, tok.eos_id)
            now = time.thread_time()
            marker["cpu_s"], state["clock"] = now - state["clock"], now  # reading, tokenizing, writing
            (partial / "units").mkdir(parents=True, exist_ok=True)
            fsutil.atomic_write_text(partial / "units" / f"{unit.name}.json", json.dumps(marker))
            markers.append(marker)
        ready.clear()

    for unit, docs in work:
        out = {s: [] for s in unit.splits}
        by_hash = len(unit.splits) == 2
        for doc_id, text in (docs if docs is not None else unit_documents(data_cfg, unit)):
            heldout = by_hash and corpus.is_heldout(doc_id, data_cfg.heldout_fraction)
            texts.append(text)
            dests.append(out["heldout" if heldout else unit.splits[0]])
            state["chars"] += len(text)
            if state["chars"] >= ENCODE_CHARS:
                flush()
        ready.append((unit, out))
    flush()
    return markers


def worker_jobs(todo: list[Unit], finite: list | None, workers: int) -> list[list]:
    """The pool's jobs: an HF unit alone (its worker reads its file shard); units of a finite source in runs of
    consecutive units carrying their documents, about min(ENCODE_CHARS, all / workers)
    characters each, so that every worker gets work and encodes in large calls."""
    if finite is None:
        return [[(u, None)] for u in todo]
    work = [(u, finite[u.start:u.stop]) for u in todo]
    sizes = [sum(len(t) for _, t in docs) for _, docs in work]
    target = max(1, min(ENCODE_CHARS, -(-sum(sizes) // max(1, workers))))
    jobs: dict[int, list] = {}
    start = 0
    for item, size in zip(work, sizes, strict=True):  # a unit joins the job its middle character falls in
        jobs.setdefault(int((start + size / 2) // target), []).append(item)
        start += size
    return list(jobs.values())


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
        if not (partial / split / f"{rec['file']}.idx.npy").is_file():
            return None
    return marker


