"""Store units smaller than a file (study.data.store_units): parquet row groups through datasets' own reshard,
JSON-lines files read from a unit's byte offset, and shards written batch by batch."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pytest

from study.config import resolve
from study.data import build_tokenizer, corpus, store_units
from study.data import store as store_mod
from study.data.store_units import ShardWriter, plan_units, unit_documents, write_shard
from tests.test_store import _doc


def _files_cfg(cache_dir, tmp_path, paths, **data):
    return resolve({"model": {"scale": "tiny", "seq_len": 32},
                    "data": {"source": "files", "paths": paths, "cache_dir": str(cache_dir), "store": True,
                             "store_dir": str(tmp_path / "store"), **data}})


def test_parquet_row_groups_are_units(cache_dir, tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not hasattr(datasets.IterableDataset, "reshard"):
        pytest.skip("datasets < 4 cannot split a parquet file: one unit per file")
    rng = random.Random(3)
    for split, files in (("train", 2), ("validation", 1)):
        for j in range(files):
            pq.write_table(pa.table({"text": [_doc(rng) for _ in range(100)]}),
                           tmp_path / f"{split}-{j}.parquet", row_group_size=25)
    files = {s: [str(tmp_path / f"{s}-*.parquet")] for s in ("train", "validation")}
    cfg = resolve({"model": {"scale": "tiny", "seq_len": 32},
                   "data": {"source": "hf", "hf_path": "parquet", "hf_data_files": files, "eval_split": "validation",
                            "cache_dir": str(cache_dir), "store": True, "store_dir": str(tmp_path / "one")}})
    plan = plan_units(cfg.data)
    assert [u.name for u in plan] == [f"train-{j:06d}" for j in range(8)] + [f"heldout-{j:06d}" for j in range(4)]
    streamed = [d for u in plan if u.splits == ("train",) for d in unit_documents(cfg.data, u)]
    assert streamed == list(corpus.documents(replace(cfg.data, store=False), "train"))
    one = store_mod.prepare(cfg.data, cfg.model.vocab_size, workers=1)
    two = store_mod.prepare(replace(cfg.data, store_dir=str(tmp_path / "two")), cfg.model.vocab_size,
                            workers=2)
    assert _shard_bytes(one) == _shard_bytes(two) and len(_shard_bytes(one)) == 2 * 12


def test_jsonl_units_start_inside_files_and_read_the_same_documents(cache_dir, tmp_path, monkeypatch):
    rng = random.Random(4)
    lines = [json.dumps({"text": _doc(rng)}) if k % 50 else "" for k in range(700)]  # blank lines, empty texts
    (tmp_path / "a.jsonl").write_text("\r\n".join(lines[:400]) + "\r\n")
    (tmp_path / "b.jsonl").write_text("\n".join(lines[400:]))  # no newline at the end
    cfg = _files_cfg(cache_dir, tmp_path, [str(tmp_path / "*.jsonl")])
    plan = plan_units(cfg.data)
    assert any(u.at[0] == 0 and u.at[1] > 0 for u in plan) and any(u.at[0] == 1 for u in plan)
    per_unit = [d for u in plan for d in unit_documents(cfg.data, u)]
    assert per_unit == list(corpus.finite_documents(cfg.data)) and len(per_unit) > 2 * store_units.UNIT_DOCS
    assert sum(u.chars for u in plan) == sum(len(t) for _, t in per_unit)
    # encoding batches cut mid-unit: every unit's shard written in several pieces, the same bytes as at once
    monkeypatch.setattr(store_units, "ENCODE_CHARS", 3000)
    path = store_mod.prepare(cfg.data, cfg.model.vocab_size, workers=1)
    tok = build_tokenizer(cfg.data, cfg.model.vocab_size)
    expected = [np.asarray(tok.encode(t)) for d, t in per_unit if not corpus.is_heldout(d, 0.02) and tok.encode(t)]
    write_shard(tmp_path / "ref", "all", expected, np.uint16, tok.eos_id)
    train = b"".join((path / "train" / f"{j:06d}.bin").read_bytes() for j in range(len(plan)))
    assert train == (tmp_path / "ref" / "all.bin").read_bytes()


def test_shard_writer_batch_by_batch_equals_one_write(tmp_path):
    docs = [np.arange(k % 7 + 1) + 10 * k for k in range(40)]
    writer = ShardWriter(tmp_path / "w", "000000", np.uint32, 1)
    for batch in (docs[:3], [], docs[3:30], docs[30:]):
        writer.add(batch)
    record = writer.close()
    assert record == write_shard(tmp_path / "once", "000000", docs, np.uint32, 1)
    for suffix in (".bin", ".idx.npy"):
        assert (tmp_path / "w" / f"000000{suffix}").read_bytes() == (tmp_path / "once" / f"000000{suffix}").read_bytes()
    assert [p.name for p in (tmp_path / "w").iterdir() if p.name.startswith(".")] == []  # no temporary file left


def _shard_bytes(path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.glob("*/*.*"))
            if p.suffix in (".bin", ".npy")}
