"""Token cache of a finite corpus (default, files, hf without streaming): every document tokenized once.

`<cache_dir>/tokens/<key>/` holds `tokens.npy` (all documents' tokens concatenated, uint16 or uint32, no EOS),
`offsets.npy` (int64, n_docs + 1: document i is tokens[offsets[i]:offsets[i+1]]), `ids.json` (document ids,
training and held-out alike; the split is made from the ids at load time) and `meta.json`. The key hashes the
corpus fingerprint and the tokenizer fingerprint. The folder is built under a file lock in a temporary folder and
renamed into place, so DDP ranks starting together tokenize once and never read a partial cache. Documents that
tokenize to nothing are left out.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study import fsutil
from study.data import cache, corpus
from study.errors import DataError

TOKENS_FORMAT = 1
ENCODE_CHUNK = 1024  # documents per encode_batch call

# Counts corpus tokenizations in this process (tests and benchmarks check cache reuse).
STATS = {"tokenized": 0}
_MEMO: dict[str, TokenizedCorpus] = {}


@dataclass
class TokenizedCorpus:
    key: str
    ids: list[str]
    tokens: np.ndarray  # concatenated document tokens
    offsets: np.ndarray  # int64 [n_docs + 1]

    def __len__(self) -> int:
        return len(self.ids)

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def tokenize_documents(docs, tok) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, concatenated tokens, offsets) of an iterable of (doc_id, text), with `encode_batch` in chunks."""
    dtype = token_dtype(tok.vocab_size)
    ids: list[str] = []
    parts: list[np.ndarray] = []
    lengths: list[int] = []

    def flush(batch):
        for (doc_id, _), enc in zip(batch, tok.encode_batch([t for _, t in batch]), strict=True):
            if enc:
                ids.append(doc_id)
                parts.append(np.asarray(enc, dtype=dtype))
                lengths.append(len(enc))

    batch = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= ENCODE_CHUNK:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    return ids, tokens, offsets


def cache_key(data_cfg, tok, *, split: str | None = None, dataset=None) -> str:
    return cache.stable_hash({
        "format": TOKENS_FORMAT,
        "corpus": corpus.corpus_fingerprint(data_cfg, split=split, dataset=dataset),
        "tokenizer": tok.fingerprint,
    })


def tokenized_corpus(data_cfg, tok, *, split: str | None = None) -> TokenizedCorpus:
    """Every document of the finite source (split: for hf without streaming), from the cache or built now."""
    if not corpus.is_finite(data_cfg):
        raise DataError("a streamed Hugging Face dataset is not tokenized whole; use TrainStream")
    dataset = None
    if data_cfg.source == "hf":
        dataset = corpus.load_hf(data_cfg, split or data_cfg.train_split, streaming=False)
    key = cache_key(data_cfg, tok, split=split, dataset=dataset)
    folder = cache.cache_root(data_cfg, "tokens") / key
    memo_key = str(folder)
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    if not (folder / "meta.json").exists():
        with cache.locked(folder):
            if not (folder / "meta.json").exists():
                _build(folder, corpus.finite_documents(data_cfg, split=split, dataset=dataset), tok, key)
    out = _load(folder, key)
    _MEMO[memo_key] = out
    return out


def _build(folder: Path, docs, tok, key: str) -> None:
    start = time.perf_counter()
    ids, tokens, offsets = tokenize_documents(docs, tok)
    STATS["tokenized"] += 1
    if not ids:
        raise DataError("the corpus has no documents (every document is empty)")
    tmp = fsutil.temp_dir_beside(folder)
    try:
        np.save(tmp / "tokens.npy", tokens)
        np.save(tmp / "offsets.npy", offsets)
        (tmp / "ids.json").write_text(json.dumps(ids))
        meta = {"format": TOKENS_FORMAT, "key": key, "tokenizer": tok.name, "documents": len(ids),
                "tokens": int(len(tokens)), "seconds": round(time.perf_counter() - start, 3)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if folder.exists() and not (folder / "meta.json").exists():  # a stale partial folder: replace it
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "meta.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process (without a shared lock) finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load(folder: Path, key: str) -> TokenizedCorpus:
    try:
        tokens = np.load(folder / "tokens.npy", mmap_mode="r")
        offsets = np.load(folder / "offsets.npy")
        ids = json.loads((folder / "ids.json").read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"token cache {folder} is unreadable ({exc}); delete the folder to rebuild it") from None
    if len(offsets) != len(ids) + 1 or offsets[-1] != len(tokens):
        raise DataError(f"token cache {folder} is inconsistent; delete the folder to rebuild it")
    return TokenizedCorpus(key=key, ids=ids, tokens=tokens, offsets=offsets)
