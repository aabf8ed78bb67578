"""Training batches read from a prepared token store (study.data.store): each rank reads only its sequences.

pack  The store's training split is one token stream (documents each followed by EOS, in source order). Global
      sequence k of an epoch is stream[k·S : k·S + S + 1] (consecutive sequences overlap by one token, as
      TrainStream packs), k in [0, M), M = (tokens - 1) // S. Epoch e visits them in the order of a seeded
      pseudo-random permutation of [0, M) (`permutation_at`: a Feistel network keyed by (seed, e), with cycle
      walking), computed for the requested positions only: O(1) memory, no pass over the data, so a rank's
      work per batch is its own n sequences whatever the number of ranks or the size of C4.
pad   Global sequence k is training document k of the store (truncated to S + 1 tokens, padded), in the same
      permuted order over documents.

Global sequence g (counting from the start of training) is position g % M of epoch g // M. Rank r of w takes
global sequences r, r+w, r+2w, ... of each `next_batch` call, so the sequence a given step trains on is a
function of (store, seed, step) alone, independent of the world size, and the position (`sequences`) is the
same on every rank: a state saved by any rank restores every rank, exactly.
"""

from __future__ import annotations

import numpy as np

from study.data.batch import batch_dict, check_stream_args, padded_rows
from study.data.store_read import store_of
from study.errors import DataError

STATE_FORMAT = 1
_ROUNDS = 6
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _round_keys(seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([int(seed) % (2**63), int(epoch)]).integers(0, 2**63, size=_ROUNDS,
                                                                              dtype=np.uint64)


def _mix(x: np.ndarray, key: np.uint64, mask: np.uint64) -> np.ndarray:
    """splitmix64's finaliser of x ^ key, cut to the half-width (the Feistel round function)."""
    z = x ^ key
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return (z ^ (z >> np.uint64(31))) & mask


def permutation_at(positions: np.ndarray, n: int, seed: int, epoch: int) -> np.ndarray:
    """pi(positions) for the seeded permutation pi of [0, n) of `epoch` (a bijection; vectorised)."""
    if n <= 0:
        raise ValueError("empty permutation")
    x = np.asarray(positions, dtype=np.uint64)
    if n == 1:
        return np.zeros(len(x), dtype=np.int64)
    half = max(1, (int(n - 1).bit_length() + 1) // 2)  # domain 2^(2·half) >= n, < 4n
    mask, shift = np.uint64((1 << half) - 1), np.uint64(half)
    keys = _round_keys(seed, epoch)

    def feistel(v):
        left, right = v >> shift, v & mask
        for k in keys:
            left, right = right, left ^ _mix(right, k, mask)
        return (left << shift) | right

    with np.errstate(over="ignore"):
        y = feistel(x)
        out_of_range = y >= np.uint64(n)
        while out_of_range.any():  # cycle walking: stays a bijection on [0, n)
            y[out_of_range] = feistel(y[out_of_range])
            out_of_range = y >= np.uint64(n)
    return y.astype(np.int64)


class StoreStream:
    """Same interface as study.data.TrainStream (next_batch, state_dict, load_state_dict, epoch, sequences)."""

    def __init__(self, data_cfg, tok, *, seq_len: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        check_stream_args(data_cfg, seq_len=seq_len, rank=rank, world_size=world_size)
        self.cfg, self.tok = data_cfg, tok
        self.store = store_of(tok)
        if self.store.manifest["tokenizer"]["fingerprint"] != tok.fingerprint:
            raise DataError(f"token store {self.store.path} was tokenized with "
                            f"{self.store.manifest['tokenizer']['name']!r}, this run's tokenizer is {tok.name!r}")
        self.split = self.store.train
        self.split.check_all()  # every training shard's bytes proven before the first step reads any
        self.seq_len, self.seed, self.rank, self.world_size = int(seq_len), int(seed), int(rank), int(world_size)
        self.packing = data_cfg.packing
        S = self.seq_len
        self.per_epoch = (self.split.tokens - 1) // S if self.packing == "pack" else self.split.documents
        if self.per_epoch < 1:
            raise DataError(f"token store {self.store.path}: {self.split.tokens} training tokens, fewer than one "
                            f"sequence of {S + 1}")
        self.sequences = 0  # global sequences consumed (all ranks)

    @property
    def epoch(self) -> int:
        return self.sequences // self.per_epoch

    def global_order(self, g: np.ndarray) -> np.ndarray:
        """Store sequence (pack) or document (pad) index of global sequences `g`."""
        g = np.asarray(g, dtype=np.int64)
        out = np.empty(len(g), dtype=np.int64)
        epochs = g // self.per_epoch
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = permutation_at(g[sel] % self.per_epoch, self.per_epoch, self.seed, int(e))
        return out

    def _rows(self, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        S = self.seq_len
        if self.packing == "pack":
            rows = self.split.rows(ks * S, S + 1)
            return rows[:, :-1], rows[:, 1:]
        # each document of the store ends with its EOS
        return padded_rows([self.split.document(int(k))[:S + 1] for k in ks], S, self.tok.pad_id)

    def next_batch(self, n: int) -> dict:
        if n < 1:
            raise ValueError(f"batch size must be >= 1, got {n}")
        total = n * self.world_size
        if self.store.capped and self.sequences + total > self.per_epoch:  # a cut store is never read twice
            raise self.store.too_short(f"{self.sequences + total:,} sequences of {self.seq_len + 1} tokens")
        mine = self.sequences + np.arange(self.rank, total, self.world_size, dtype=np.int64)
        inputs, labels = self._rows(self.global_order(mine))
        self.sequences += total
        return batch_dict(inputs, labels)

    def __iter__(self):
        raise TypeError("use next_batch(n)")

    def state_dict(self) -> dict:
        return {"format": STATE_FORMAT, "source": "store", "corpus": self.store.key, "packing": self.packing,
                "seq_len": self.seq_len, "seed": self.seed, "sequences": self.sequences, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("source") != "store":
            raise DataError("data state was not saved by a token-store stream (data.store changed since the "
                            "checkpoint?)")
        for key, mine in (("corpus", self.store.key), ("packing", self.packing), ("seq_len", self.seq_len),
                          ("seed", self.seed)):
            if state.get(key) != mine:
                raise DataError(f"data state was saved with {key}={state.get(key)!r}, this stream has {mine!r}")
        self.sequences = int(state["sequences"])
