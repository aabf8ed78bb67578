"""SplitView (study.data.store_read): rows, spans and documents read at exact offsets equal the tokens written."""

from __future__ import annotations

import numpy as np
import pytest

from study.data.store_read import SplitView, StoreError
from study.data.store_units import write_shard


@pytest.fixture
def split(tmp_path):
    rng = np.random.default_rng(0)
    docs = [[rng.integers(1, 60000, size=int(rng.integers(1, 40))) for _ in range(n)] for n in (5, 1, 9)]
    shards = [write_shard(tmp_path, f"{j:06d}", d, np.uint16, 0) for j, d in enumerate(docs)]
    flat = np.concatenate([np.append(d, 0) for group in docs for d in group]).astype(np.int64)
    return SplitView(tmp_path, shards, np.uint16), flat, [d for group in docs for d in group]


def test_rows_read_and_documents_equal_the_written_tokens(split):
    view, flat, docs = split
    assert view.tokens == len(flat) and view.documents == len(docs)
    starts = np.arange(0, len(flat) - 7, 3)  # every shard boundary is inside some row
    assert np.array_equal(view.rows(starts, 7), flat[starts[:, None] + np.arange(7)])
    assert np.array_equal(view.read(0, len(flat)), flat) and view.read(5, 3).dtype == np.int64
    for i, doc in enumerate(docs):
        assert view.document(i).tolist() == [*doc.tolist(), 0]
    ends = np.cumsum([len(d) + 1 for d in docs])
    assert [view.document_end(int(p)) for p in (0, ends[0] - 1, ends[0], len(flat) - 1)] == \
        [ends[0], ends[0], ends[1], len(flat)]
    with pytest.raises(IndexError):
        view.read(len(flat) - 2, 3)


def test_a_shard_truncated_after_opening_is_one_clear_error(split, tmp_path):
    view, flat, _ = split
    view.read(0, 2)  # opens the first shard
    (tmp_path / "000000.bin").write_bytes(b"\0\0")
    with pytest.raises(StoreError, match="ends before byte"):
        view.read(0, 4)
