"""The token store: a data source tokenized once (`study data prepare`), read by every rank row by row (store_read).

Layout of a store folder (default `<data.cache_dir>/stores/<key>/`, or `data.store_dir`):

    manifest.json            written last: a folder without it is not a store (see "Atomic" below)
    tokenizer/               the tokenizer's files (save_pretrained): compute nodes need nothing else
    train/000123.bin         flat tokens (uint16 when the vocabulary fits, else uint32), every document
                             followed by EOS, in the source's order
    train/000123.idx.npy     int64 [documents + 1]: document i is bin[idx[i]:idx[i+1]] (its EOS last)
    heldout/000123.bin, .idx.npy   the same for the held-out split

Units of work. The source is cut into units whose boundaries do not depend on the number of workers: one unit
per shard of a `datasets` IterableDataset after `reshard()` (a parquet file's row group; a whole file where
datasets cannot split one: C4-en's 1024 train and 8 validation json.gz files), or per `UNIT_DOCS` documents of
the bundled corpus / a `files` source (a `files` unit reads from its first document's byte offset). Unit j writes
shard j of its split(s) batch by batch, so a store built by 1 worker is byte-identical to one built by N and a
worker's memory does not grow with its unit.

Cut (`max_tokens`, `study data prepare --max-tokens N`): the store keeps the shortest run of training units, in
source order, whose training tokens reach N (units are done in waves and the finished prefix is checked between
them); the manifest records `max_tokens` and `complete` (false when the source goes on past the cut). A cut store
is refused where a config needs more (`check_ready`, `StoreStream`, a `prepare` asking for more).

Held-out split: `data.eval_split` when set (C4's validation split, read whole: about 40M LLaMA tokens, the
paper's 10M evaluation tokens are its first 10M); otherwise the documents whose id hashes below
`data.heldout_fraction` (study.data.corpus.is_heldout), written by the same unit to the heldout folder.

Key. The store folder is keyed by what its content depends on and can be computed offline from the config, without
reading the source: the source (kind, paths / hub name / data files, splits, text field, held-out rule; the
bundled corpus by its version, `corpus.DEFAULT_CORPUS`), the tokenizer (name; the vocabulary size for the default
BPE) and `STORE_FORMAT`. Grid cells that differ
only in model, method or optimiser share one store. The manifest also records fingerprints measured while
preparing (the source files' sizes and modification times or the bundled corpus' content; the tokenizer's
vocabulary hash) and every shard's token count, size and sha256.

Atomic, resumable, several writers. Preparation writes into `<store>.partial/`, every shard through a temporary
name and a rename, and records a finished unit in `units/<split>-<j>.json` after its shards; a restarted
preparation re-checks and keeps the finished units and redoes the rest. The manifest is written and the folder
renamed to `<store>` only when every unit is done. A file lock (`<store>.lock`) serialises preparers on one
machine; on shared filesystems without working locks, concurrent preparers write identical files under atomic
renames and the first final rename wins. A training run never uses a partial or damaged store: it refuses a
missing or tampered manifest, a file whose size disagrees with the manifest, a shard whose bytes do not match its
sha256 (checked before its first read, store_check), or a manifest that names another source or tokenizer
(StoreError, exit 2, with the command to run). `prepare` on a finished store checks every file and rewrites the
damaged ones (store_repair).

Modules (this one re-exports their names): store_manifest (key, spec, manifest, StoreError), store_units (units,
tokenizing, shard writing), store_prepare (`prepare`, workers, what a job runs), store_progress (a partial
store's plan, finished units and jobs), store_read (`open_store`, SplitView, the store's tokenizer), store_check
(what proves the bytes; `verify`), store_repair; the tokenizer's saved files: study.data.hf_tokenizer.
Preparation as a job array: study.dispatch.prepare.
"""

from __future__ import annotations

from study.data.hf_tokenizer import save_tokenizer
from study.data.store_manifest import (
    SPLITS,
    STORE_FORMAT,
    StoreError,
    build_manifest,
    prepare_command,
    source_fingerprint,
    spec,
    store_key,
    store_path,
)
from study.data.store_prepare import _prepare_task, prepare
from study.data.store_progress import partial_of, read_cap, read_jobs, read_plan, record_jobs, units_to_do
from study.data.store_read import _OPEN, SplitView, TokenStore, check_ready, open_store, store_tokenizer
from study.data.store_units import ENCODE_CHARS, UNIT_DOCS, Unit, plan_units, process_units, unit_documents, write_shard

# _OPEN (the opened-store memo, cleared by tests and benchmarks) and _prepare_task (job-array tasks pickled under
# this module's name) are kept under their old names.
__all__ = ["ENCODE_CHARS", "SPLITS", "STORE_FORMAT", "UNIT_DOCS", "SplitView", "StoreError", "TokenStore", "Unit",
           "_OPEN", "_prepare_task", "build_manifest", "check_ready", "open_store", "partial_of", "plan_units",
           "prepare", "prepare_command", "process_units", "read_cap", "read_jobs", "read_plan", "record_jobs",
           "save_tokenizer", "source_fingerprint", "spec", "store_key", "store_path", "store_tokenizer",
           "unit_documents", "units_to_do", "write_shard"]
