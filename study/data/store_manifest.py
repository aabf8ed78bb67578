"""What a token store is keyed by and what its manifest records (study.data.store describes the whole store).

The key (`spec`) is computable offline from the config; the manifest adds what is measured while preparing: the
source's fingerprint, the tokenizer's, and every shard's record. Reading and preparing both start here.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from study.data import cache, corpus
from study.data.tokens import token_dtype
from study.errors import DataError


class StoreError(DataError):
    """A token store cannot be used as it is (missing, partial, damaged, or prepared for other data): the user
    must prepare it (exit 2, like a bad config)."""

    exit_code = 2


STORE_FORMAT = 1
SPLITS = ("train", "heldout")


def spec(data_cfg, vocab_size: int) -> dict:
    """What the store's content depends on, computable offline from the config (the store's identity), without
    reading the source: training from a store needs the store only. The bundled corpus is named by its
    version (corpus.DEFAULT_CORPUS); its content's fingerprint is in the manifest, checked when preparing."""
    d = data_cfg
    by_hash = d.source != "hf" or not d.eval_split
    out = {"format": STORE_FORMAT, "source": d.source, "text_field": d.text_field,
           "heldout": ({"by_hash": d.heldout_fraction} if by_hash else {"split": d.eval_split}),
           "tokenizer": d.tokenizer}
    if d.source == "hf":
        out.update(hf_path=d.hf_path, hf_name=d.hf_name, hf_data_files=d.hf_data_files, train_split=d.train_split)
    elif d.source == "files":
        out.update(paths=list(d.paths))
    else:
        out.update(corpus=corpus.DEFAULT_CORPUS)
    if d.tokenizer == "default":  # the BPE is trained on the bundled corpus' training documents
        out.update(vocab_size=int(vocab_size), bpe_heldout_fraction=d.heldout_fraction,
                   bpe_corpus=corpus.DEFAULT_CORPUS)
    return out


def tokens_needed(cfg) -> int | None:
    """Training tokens a run (a RunConfig) reads from its store: steps x global_batch packed sequences of
    seq_len tokens, plus one (consecutive sequences share a token: the next one's first input is this one's
    last label). None in `pad` packing: a sequence is a document, whatever its length."""
    if cfg.data.packing != "pack":
        return None
    return cfg.train.steps * cfg.train.global_batch * cfg.model.seq_len + 1


def store_key(data_cfg, vocab_size: int) -> str:
    return cache.stable_hash(spec(data_cfg, vocab_size))


def store_path(data_cfg, vocab_size: int) -> Path:
    """`data.store_dir`, or `<data.cache_dir>/stores/<key>`."""
    if data_cfg.store_dir:
        return Path(os.path.expanduser(data_cfg.store_dir))
    root = Path(os.path.expanduser(data_cfg.cache_dir)) / "stores"
    return root / store_key(data_cfg, vocab_size)


def prepare_command(config_hint: str | None = None) -> str:
    return f"study data prepare {config_hint or 'CONFIG_OR_GRID'}"


def source_fingerprint(data_cfg) -> str:
    """Fingerprint of the source content as far as it can be measured here (files: size and mtime)."""
    d = data_cfg
    if d.source != "hf":  # a finite source: the token cache's fingerprint of its documents
        return corpus.corpus_fingerprint(d)
    stats = []  # a hub or local dataset: its name and, for local data files, their sizes and times
    for files in (d.hf_data_files or {}).values():
        for pattern in [files] if isinstance(files, str) else files:
            for path in _local_matches(pattern):
                st = os.stat(path)
                stats.append([path, st.st_size, st.st_mtime_ns])
    return "hf-" + cache.stable_hash([d.hf_path, d.hf_name, d.hf_data_files, stats])


def _local_matches(pattern: str):
    for m in sorted(glob.glob(os.path.expanduser(str(pattern)), recursive=True)):
        if os.path.isfile(m):
            yield os.path.abspath(m)




def build_manifest(data_cfg, vocab_size, tok, plan, markers, workers, seconds) -> dict:
    """The manifest of a finished store from its units' markers (each unit's shard records, in store order)."""
    splits = {}
    for split in SPLITS:
        shards = [m["shards"][split] for m in markers if split in m["shards"]]
        splits[split] = {"shards": shards, "tokens": sum(s["tokens"] for s in shards),
                         "documents": sum(s["documents"] for s in shards)}
    if splits["train"]["tokens"] == 0:
        raise DataError("the source has no training documents (all empty or held out)")
    return {
        "format": STORE_FORMAT, "key": store_key(data_cfg, vocab_size), "spec": spec(data_cfg, vocab_size),
        "source": {"describe": _describe(data_cfg), "fingerprint": source_fingerprint(data_cfg)},
        "tokenizer": {"name": tok.name, "fingerprint": tok.fingerprint, "vocab_size": tok.vocab_size,
                      "eos_id": tok.eos_id, "pad_id": tok.pad_id},
        "dtype": np.dtype(token_dtype(tok.vocab_size)).name, "units": len(plan), "splits": splits,
        "prepared": {"workers": workers, "seconds": round(seconds, 3)},
    }


def _describe(data_cfg) -> str:
    if data_cfg.source == "hf":
        return corpus.hf_describe(data_cfg, data_cfg.train_split)
    if data_cfg.source == "files":
        return f"files {data_cfg.paths}"
    return "the bundled corpus (KJV + Shakespeare)"
