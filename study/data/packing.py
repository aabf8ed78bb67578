"""The training stream (documents -> fixed-length sequences) and the held-out evaluation batches.

Packing (`data.packing`):
  pack  Documents are concatenated, each followed by EOS, into one token stream that is cut into sequences of
        seq_len + 1 tokens overlapping by one token: sequence k is stream[k·S : k·S + S + 1], input = [:-1],
        labels = [1:]. Every token after the first is a label exactly once; nothing is padded or dropped.
  pad   The official code's mode: one sequence per document, (document + EOS) truncated to seq_len + 1 tokens
        and padded with pad_id; labels are IGNORE (-100) where the next token is padding.

Order: the training documents (held-out ones left out) are shuffled by the seed, reshuffled every epoch
(numpy `default_rng([seed, epoch])`); finite sources loop over epochs. A streamed HF dataset is read in blocks
of `data.shuffle_buffer` documents, each block shuffled by `default_rng([seed, epoch, block])`, with the
shard (file) order shuffled per seed and epoch by `IterableDataset.set_epoch`; its position is the dataset's
`state_dict()` at the start of the current block plus the index in the block, so resuming is exact (the HF
shuffle buffer is not restored by `load_state_dict`, so it is not used). A background thread reads and
tokenizes the next block while the current one is consumed.

Ranks: the stream of global sequences is the same for every world size; rank r of w keeps global sequences r,
r+w, r+2w, ... Each `next_batch(n)` consumes n·w global sequences, so after every call all ranks hold the same
state: a state saved by any rank restores every rank, for any world size with the same global batch.

Batches: {'input_ids': Long[n, S], 'labels': Long[n, S] (IGNORE = -100 where none), 'n_tokens': int (labels != IGNORE)}.
Padded rows (`pad` mode, the held-out batches' last sequence) come from study.data.batch.padded_rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading

import numpy as np

from study.data import cache, corpus
from study.data.batch import batch_dict, check_stream_args, padded_rows
from study.data.tokens import token_dtype, tokenize_documents, tokenized_corpus
from study.errors import DataError

STATE_FORMAT = 1


def _seed(seed: int) -> int:
    return int(seed) % (2**63)


# ---------------------------------------------------------------------------------------------------
# Document cursors: the training documents, one at a time, as token arrays (EOS not included)
# ---------------------------------------------------------------------------------------------------
class _FiniteDocs:
    """Training documents of a cached finite corpus in a seeded order, reshuffled every epoch."""

    def __init__(self, data_cfg, tok, seed: int):
        self.corpus = tokenized_corpus(data_cfg, tok)
        self.key = self.corpus.key
        if data_cfg.source == "hf" and data_cfg.eval_split:
            held = np.zeros(len(self.corpus), dtype=bool)
        else:
            held = corpus.heldout_mask(self.corpus.ids, data_cfg.heldout_fraction)
        self.train = np.flatnonzero(~held)
        if len(self.train) == 0:
            raise DataError(f"no training documents: all {len(self.corpus)} documents are held out "
                            f"(data.heldout_fraction={data_cfg.heldout_fraction})")
        self.seed = _seed(seed)
        self.epoch = self.cursor = 0
        self._order = None

    def order(self, epoch: int) -> np.ndarray:
        """Corpus indices of the training documents in the order of `epoch`."""
        rng = np.random.default_rng([self.seed, epoch])
        return self.train[rng.permutation(len(self.train))]

    def current(self) -> np.ndarray:
        if self._order is None:
            self._order = self.order(self.epoch)
        return self.corpus.doc(int(self._order[self.cursor]))

    def advance(self) -> None:
        self.cursor += 1
        if self.cursor == len(self.train):
            self.epoch, self.cursor, self._order = self.epoch + 1, 0, None

    def state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load(self, state: dict) -> None:
        epoch, cursor = int(state["epoch"]), int(state["cursor"])
        if not 0 <= cursor < len(self.train):
            raise DataError(f"data state: document cursor {cursor} out of range ({len(self.train)} documents)")
        self.epoch, self.cursor, self._order = epoch, cursor, None


def _shard_epoch(seed: int, epoch: int) -> int:
    """The `IterableDataset.set_epoch` value that fixes the shard order for (seed, epoch); never 0."""
    digest = hashlib.sha256(f"{seed}:{epoch}".encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % (2**31 - 2)



class _Prefetch(threading.Thread):
    """Reads and tokenizes the next block in the background (the dataset iterator is used by one thread at a
    time: the main thread waits for this one before touching it again)."""

    def __init__(self, fn):
        super().__init__(daemon=True, name="study-data-prefetch")
        self.fn, self.result, self.error = fn, None, None
        self.start()

    def run(self):
        try:
            self.result = self.fn()
        except BaseException as exc:  # re-raised in the main thread by get()
            self.error = exc

    def get(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self.result


class _HFStreamDocs:
    """Training documents of a streamed HF dataset, shuffled in blocks, with an exact resumable position.

    The next block is read and tokenized by a background thread while the current one is consumed.
    """

    def __init__(self, data_cfg, tok, seed: int, *, prefetch: bool = True):
        self.cfg, self.tok, self.seed, self.prefetch = data_cfg, tok, _seed(seed), prefetch
        self.block_size = max(1, int(data_cfg.shuffle_buffer))
        self.by_hash = not data_cfg.eval_split
        self.dtype = token_dtype(tok.vocab_size)
        self.where = corpus.hf_describe(data_cfg, data_cfg.train_split)
        self.key = "hf-stream-" + cache.stable_hash([
            data_cfg.hf_path, data_cfg.hf_name, data_cfg.hf_data_files, data_cfg.train_split, data_cfg.text_field,
            data_cfg.eval_split is None and data_cfg.heldout_fraction, self.block_size, tok.fingerprint])
        self.epoch = self.block = self.pos = 0
        self.hf_state = None  # the dataset's state_dict() at the start of the current block (None: epoch start)
        self._ds = self._it = self._docs = self._next_state = self._pending = None
        self._open()  # fail early on a missing dataset

    def _open(self) -> None:
        import datasets

        ds = corpus.load_hf(self.cfg, self.cfg.train_split, streaming=True)
        if not isinstance(ds, datasets.IterableDataset):
            raise DataError(f"{self.where}: expected a streamed dataset, got {type(ds).__name__}")
        ds.set_epoch(_shard_epoch(self.seed, self.epoch))
        if self.hf_state is not None:
            ds.load_state_dict(self.hf_state)
        self._ds, self._it = ds, None

    def _read_block(self) -> tuple[list[np.ndarray], int, dict]:
        """(token arrays of the next block's training documents in stream order, raw documents read,
        the dataset state after them)."""
        if self._it is None:
            self._it = iter(self._ds)
        texts, raw = [], 0
        while raw < self.block_size:
            try:
                example = next(self._it)
            except StopIteration:
                break
            except DataError:
                raise
            except Exception as exc:
                raise DataError(f"error while reading {self.where}: {type(exc).__name__}: {exc}; "
                                f"{corpus.hf_hint()}") from None
            raw += 1
            text = corpus.hf_text(example, self.cfg.text_field, f"{self.where}, epoch {self.epoch}")
            if not text.strip():
                continue
            if self.by_hash and corpus.is_heldout(corpus.hf_doc_id(text), self.cfg.heldout_fraction):
                continue
            texts.append(text)
        state = self._ds.state_dict()
        docs = [np.asarray(ids, dtype=self.dtype) for ids in self.tok.encode_batch(texts) if ids] if texts else []
        return docs, raw, state

    def _drop_pending(self) -> None:
        if self._pending is not None:
            # The prefetched block is discarded, so its outcome (a read error included) no longer matters.
            with contextlib.suppress(BaseException):
                self._pending.get()
            self._pending = None

    def _fill(self) -> None:
        empty_epochs = 0
        while True:
            if self._ds is None:
                self._open()
            if self._pending is not None:
                pending, self._pending = self._pending, None
                docs, raw, self._next_state = pending.get()
            else:
                docs, raw, self._next_state = self._read_block()
            if raw == 0:  # end of the epoch
                if self.block == 0:
                    raise DataError(f"{self.where} has no documents")
                empty_epochs += 1
                if empty_epochs > 1:
                    raise DataError(f"{self.where}: no training documents (all are empty or held out)")
                self.epoch, self.block, self.pos, self.hf_state, self._ds = self.epoch + 1, 0, 0, None, None
                continue
            if not docs:  # a block of held-out or empty documents only
                self.block, self.hf_state = self.block + 1, self._next_state
                continue
            if raw == self.block_size and self.prefetch:
                self._pending = _Prefetch(self._read_block)
            perm = np.random.default_rng([self.seed, self.epoch, self.block]).permutation(len(docs))
            self._docs = [docs[i] for i in perm]
            if self.pos >= len(self._docs):
                raise DataError(f"data state: position {self.pos} beyond block {self.block} of {self.where}")
            return

    def current(self) -> np.ndarray:
        if self._docs is None:
            self._fill()
        return self._docs[self.pos]

    def advance(self) -> None:
        if self._docs is None:
            self._fill()
        self.pos += 1
        if self.pos == len(self._docs):
            self.block, self.pos, self.hf_state, self._docs = self.block + 1, 0, self._next_state, None

    def state(self) -> dict:
        return {"epoch": self.epoch, "block": self.block, "pos": self.pos, "hf_state": self.hf_state}

    def load(self, state: dict) -> None:
        self._drop_pending()
        self.epoch, self.block, self.pos = int(state["epoch"]), int(state["block"]), int(state["pos"])
        self.hf_state = state["hf_state"]
        self._ds = self._it = self._docs = self._next_state = None


# ---------------------------------------------------------------------------------------------------
# The training stream
# ---------------------------------------------------------------------------------------------------
class TrainStream:
    """Deterministic, resumable stream of training batches for one rank (see the module docstring)."""

    def __init__(self, data_cfg, tok, *, seq_len: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        check_stream_args(data_cfg, seq_len=seq_len, rank=rank, world_size=world_size)
        self.cfg, self.tok = data_cfg, tok
        self.seq_len, self.seed, self.rank, self.world_size = int(seq_len), int(seed), int(rank), int(world_size)
        self.packing = data_cfg.packing
        self._docs = (_FiniteDocs if corpus.is_finite(data_cfg) else _HFStreamDocs)(data_cfg, tok, seed)
        self._offset = 0  # tokens of the current document (with its EOS) already in emitted sequences
        self._carry = None  # pack: the last token of the previous sequence (the first of the next)
        self.sequences = 0  # global sequences consumed (all ranks)

    @property
    def epoch(self) -> int:
        return self._docs.epoch

    def epoch_documents(self, epoch: int) -> list[str]:
        """Ids of the training documents in their order in `epoch` (finite sources only)."""
        if not isinstance(self._docs, _FiniteDocs):
            raise DataError("document order of a streamed dataset is only known while reading it")
        return [self._docs.corpus.ids[int(i)] for i in self._docs.order(epoch)]

    # -- reading --------------------------------------------------------------------------------------
    def _read(self, n: int) -> np.ndarray:
        """The next `n` tokens of the packed stream (documents each followed by EOS)."""
        out, need, eos = [], n, self.tok.eos_id
        while need:
            doc = self._docs.current()
            size = len(doc) + 1
            end = min(size, self._offset + need)
            out.append(doc[self._offset:min(end, len(doc))])
            if end == size:
                out.append(np.array([eos], dtype=doc.dtype))
            need -= end - self._offset
            self._offset = end
            if end == size:
                self._docs.advance()
                self._offset = 0
        return np.concatenate(out).astype(np.int64, copy=False)

    def _pack(self, total: int) -> np.ndarray:
        S = self.seq_len
        if self._carry is None:
            toks = self._read(total * S + 1)
        else:
            toks = np.concatenate([np.array([self._carry], dtype=np.int64), self._read(total * S)])
        self._carry = int(toks[-1])
        starts = np.arange(self.rank, total, self.world_size, dtype=np.int64) * S
        return toks[starts[:, None] + np.arange(S + 1)[None, :]]

    def _pad(self, total: int) -> tuple[np.ndarray, np.ndarray]:
        S, eos = self.seq_len, self.tok.eos_id
        pieces = []
        for i in range(total):
            doc = self._docs.current()
            if i % self.world_size == self.rank:  # the document and its EOS, cut to S + 1 tokens
                pieces.append(np.concatenate([doc[:S + 1], np.array([eos], dtype=doc.dtype)])[:S + 1])
            self._docs.advance()
        return padded_rows(pieces, S, self.tok.pad_id)

    def next_batch(self, n: int) -> dict:
        """The next `n` sequences of this rank: {'input_ids', 'labels', 'n_tokens'}."""
        if n < 1:
            raise ValueError(f"batch size must be >= 1, got {n}")
        total = n * self.world_size
        if self.packing == "pack":
            rows = self._pack(total)
            inputs, labels = rows[:, :-1], rows[:, 1:]
        else:
            inputs, labels = self._pad(total)
        self.sequences += total
        return batch_dict(inputs, labels)

    def __iter__(self):
        raise TypeError("use next_batch(n)")

    # -- position -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The position in the global stream (identical on every rank after the same calls); plain JSON."""
        return {
            "format": STATE_FORMAT, "source": self.cfg.source, "corpus": self._docs.key, "packing": self.packing,
            "seq_len": self.seq_len, "seed": self.seed, "sequences": self.sequences, "epoch": self._docs.epoch,
            "offset": self._offset, "carry": [] if self._carry is None else [self._carry],
            "docs": self._docs.state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where `state` (from `state_dict`, possibly another rank's) left off."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise DataError(f"data state: unknown format {state.get('format') if isinstance(state, dict) else state!r}")
        for key, mine in (("source", self.cfg.source), ("corpus", self._docs.key), ("packing", self.packing),
                          ("seq_len", self.seq_len), ("seed", self.seed)):
            if state.get(key) != mine:
                raise DataError(f"data state was saved with {key}={state.get(key)!r}, this stream has {mine!r}")
        self._docs.load(state["docs"])
        self._offset = int(state["offset"])
        self._carry = int(state["carry"][0]) if state["carry"] else None
        self.sequences = int(state["sequences"])


# ---------------------------------------------------------------------------------------------------
# Held-out evaluation batches
# ---------------------------------------------------------------------------------------------------
def open_stream(data_cfg, tok, **kwargs):
    """The training stream of `data_cfg`: StoreStream (a prepared token store) when data.store, else TrainStream
    (tokenized on the fly). Same interface and keyword arguments."""
    if getattr(data_cfg, "store", False):
        from study.data.store_stream import StoreStream

        return StoreStream(data_cfg, tok, **kwargs)
    return TrainStream(data_cfg, tok, **kwargs)


def _heldout_stream(data_cfg, tok, tokens: int) -> np.ndarray:
    """The first `tokens` + 1 tokens of the held-out split (documents each followed by EOS), in source order."""
    if getattr(data_cfg, "store", False):
        from study.data.store_read import store_of

        held = store_of(tok).heldout
        if held.tokens == 0:
            return np.zeros(0, dtype=np.int64)
        # whole documents, as below: up to the end of the document holding token `tokens`
        return held.read(0, held.document_end(tokens) if tokens < held.tokens else held.tokens)
    eos, parts, have = tok.eos_id, [], 0
    for doc in _heldout_docs(data_cfg, tok):
        parts += [np.asarray(doc, dtype=np.int64), np.array([eos], dtype=np.int64)]
        have += len(doc) + 1
        if have >= tokens + 1:
            break
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _heldout_docs(data_cfg, tok):
    """Held-out documents as token arrays, in the source's order (deterministic)."""
    if corpus.is_finite(data_cfg):
        if data_cfg.source == "hf" and data_cfg.eval_split:
            tc = tokenized_corpus(data_cfg, tok, split=data_cfg.eval_split)
            idx = range(len(tc))
        else:
            tc = tokenized_corpus(data_cfg, tok)
            idx = np.flatnonzero(corpus.heldout_mask(tc.ids, data_cfg.heldout_fraction))
        for i in idx:
            yield tc.doc(int(i))
        return
    chunk = []
    for doc in corpus.documents(data_cfg, "heldout"):
        chunk.append(doc)
        if len(chunk) == 256:
            _, toks, offsets = tokenize_documents(chunk, tok)
            yield from (toks[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True))
            chunk = []
    if chunk:
        _, toks, offsets = tokenize_documents(chunk, tok)
        yield from (toks[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True))


def heldout_batches(data_cfg, tok, *, seq_len: int, tokens: int, batch_size: int) -> list[dict]:
    """Packed held-out sequences with at least min(tokens, available) label tokens, in batches.

    Always packed (whatever data.packing), in the source's document order, so every run with the same data and
    tokenizer evaluates on the same tokens. The last sequence is padded (labels IGNORE) only when the held-out
    text runs out.
    """
    if seq_len < 1 or tokens < 1 or batch_size < 1:
        raise ValueError("seq_len, tokens and batch_size must be >= 1")
    S = seq_len
    stream = _heldout_stream(data_cfg, tok, tokens)
    if len(stream) < 2:
        raise DataError("no held-out documents: set data.heldout_fraction > 0 (or data.eval_split for an HF "
                        "dataset), or give a corpus with more documents")
    n_labels = min(tokens, len(stream) - 1)
    inputs, labels = padded_rows([stream[k * S:k * S + S + 1] for k in range(math.ceil(n_labels / S))], S,
                                 tok.pad_id)
    return [batch_dict(inputs[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
