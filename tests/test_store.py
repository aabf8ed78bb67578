"""The token store (study.data.store, `study data prepare`) and training from it (StoreStream).

The source is a local dataset in C4's shape made here: parquet shards with a `text` column (and a `url` column),
train and validation splits, read through the same `datasets.load_dataset(..., streaming=True)` code path as the
hub's allenai/c4 (data.hf_path=parquet with data.hf_data_files instead of allenai/c4 + hf_name).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random

import numpy as np
import pytest
import torch

from study.config import resolve
from study.data import build_tokenizer, heldout_batches, store_check, store_units
from study.data import store as store_mod
from study.data.packing import TrainStream, open_stream
from study.data.store_stream import StoreStream, permutation_at
from study.errors import DataError
from tests.conftest import StopAfter

WORDS = ("the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
         "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they", "we", "you",
         "she", "river", "stone", "light", "house", "green", "window", "morning")


def _doc(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 160)))  # some documents are empty


@pytest.fixture(scope="module")
def c4_like(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("c4-like")
    rng = random.Random(0)
    for split, shards, per in (("train", 3, 90), ("validation", 2, 30)):
        for j in range(shards):
            texts = [_doc(rng) for _ in range(per)]
            pq.write_table(pa.table({"text": texts, "url": [f"https://x/{j}/{i}" for i in range(per)]}),
                           root / f"c4-{split}.{j:05d}-of-{shards:05d}.parquet")
    return root


def _raw(cache_dir, c4, **data):
    raw = {"model": {"scale": "tiny", "seq_len": 32},
           "data": {"source": "hf", "hf_path": "parquet", "eval_split": "validation", "cache_dir": str(cache_dir),
                    "hf_data_files": {"train": [str(c4 / "c4-train.*.parquet")],
                                      "validation": [str(c4 / "c4-validation.*.parquet")]},
                    "store": True, **data}}
    return raw


@pytest.fixture(scope="module")
def prepared(cache_dir, c4_like):
    cfg = resolve(_raw(cache_dir, c4_like))
    path = store_mod.prepare(cfg.data, cfg.model.vocab_size, workers=1)
    return cfg, path


def _stream_cfg(cfg):
    return dataclasses.replace(cfg.data, store=False)


def test_store_holds_the_source_documents_in_order(prepared):
    cfg, path = prepared
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["units"] == 5  # 3 train + 2 validation parquet files: one unit each
    assert [s["file"] for s in manifest["splits"]["train"]["shards"]] == ["000000", "000001", "000002"]
    assert manifest["dtype"] == "uint16" and manifest["spec"]["heldout"] == {"split": "validation"}
    tok = build_tokenizer(cfg.data, cfg.model.vocab_size)
    store = store_mod.open_store(cfg.data, cfg.model.vocab_size)
    # The training split is every non-empty training document, tokenized, each followed by EOS, in source order.
    from study.data import corpus

    expected = []
    for _, text in corpus.documents(_stream_cfg(cfg), "train"):
        ids = tok.encode(text)
        if ids:
            expected += ids + [tok.eos_id]
    assert store.train.tokens == len(expected)
    assert store.train.read(0, store.train.tokens).tolist() == expected
    assert store.train.documents == sum(1 for _, t in corpus.documents(_stream_cfg(cfg), "train") if tok.encode(t))


def test_heldout_batches_from_store_equal_the_streamed_ones(prepared):
    cfg, _ = prepared
    tok = build_tokenizer(cfg.data, cfg.model.vocab_size)
    plain = build_tokenizer(_stream_cfg(cfg), cfg.model.vocab_size)
    assert tok.fingerprint == plain.fingerprint
    for tokens in (100, 10**6):  # a prefix, and more than the split holds (last sequence padded)
        a = heldout_batches(cfg.data, tok, seq_len=32, tokens=tokens, batch_size=4)
        b = heldout_batches(_stream_cfg(cfg), plain, seq_len=32, tokens=tokens, batch_size=4)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])


def test_pad_mode_epoch_has_the_same_rows_as_the_stream(prepared):
    """pad: one row per training document; over one epoch the store and the streamed source give the same rows
    (in different orders: the store permutes documents globally, the stream in blocks)."""
    cfg, _ = prepared
    data = dataclasses.replace(cfg.data, packing="pad")
    tok = build_tokenizer(data, cfg.model.vocab_size)
    ours = StoreStream(data, tok, seq_len=32, seed=3)
    theirs = TrainStream(dataclasses.replace(data, store=False), tok, seq_len=32, seed=3)
    n = ours.per_epoch
    a, b = ours.next_batch(n), theirs.next_batch(n)

    def rows(batch):
        return sorted(map(tuple, torch.cat([batch["input_ids"], batch["labels"]], dim=1).tolist()))

    assert rows(a) == rows(b)
    assert a["n_tokens"] == b["n_tokens"]


def test_pack_epoch_covers_every_training_token_once(prepared):
    cfg, _ = prepared
    tok = build_tokenizer(cfg.data, cfg.model.vocab_size)
    s = StoreStream(cfg.data, tok, seq_len=32, seed=1)
    M = s.per_epoch
    batch = s.next_batch(M)
    starts = sorted(int(k) for k in s.global_order(np.arange(M)))
    assert starts == list(range(M))  # a permutation of the epoch's sequences
    flat = s.split.read(0, M * 32 + 1)
    rows = {tuple(r) for r in torch.cat([batch["input_ids"], batch["labels"][:, -1:]], dim=1).tolist()}
    assert rows == {tuple(flat[k * 32:k * 32 + 33].tolist()) for k in range(M)}
    assert s.epoch == 1


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_permutation_is_a_bijection(n):
    for epoch in (0, 1):
        perm = permutation_at(np.arange(n), n, seed=5, epoch=epoch)
        assert sorted(perm.tolist()) == list(range(n))
    if n >= 64:
        assert not np.array_equal(permutation_at(np.arange(n), n, 5, 0), permutation_at(np.arange(n), n, 5, 1))
        assert not np.array_equal(permutation_at(np.arange(n), n, 5, 0), np.arange(n))


@pytest.mark.parametrize("packing", ["pack", "pad"])
def test_ranks_read_disjoint_parts_of_the_world_size_independent_order(prepared, packing):
    cfg, _ = prepared
    data = dataclasses.replace(cfg.data, packing=packing)
    tok = build_tokenizer(data, cfg.model.vocab_size)
    one = StoreStream(data, tok, seq_len=32, seed=7)
    ranks = [StoreStream(data, tok, seq_len=32, seed=7, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):  # crosses an epoch boundary in pad mode (few documents)
        whole = one.next_batch(150)["input_ids"]
        parts = [s.next_batch(75)["input_ids"] for s in ranks]
        assert torch.equal(whole[0::2], parts[0]) and torch.equal(whole[1::2], parts[1])
    assert one.state_dict() == ranks[0].state_dict() == ranks[1].state_dict()


def test_resume_is_exact(prepared):
    cfg, _ = prepared
    tok = build_tokenizer(cfg.data, cfg.model.vocab_size)
    a = open_stream(cfg.data, tok, seq_len=32, seed=2)
    assert isinstance(a, StoreStream)
    for _ in range(5):
        a.next_batch(8)
    state = json.loads(json.dumps(a.state_dict()))  # saved as JSON in checkpoints
    b = StoreStream(cfg.data, tok, seq_len=32, seed=2, rank=1, world_size=2)
    b.load_state_dict(state)
    ref = a.next_batch(8)["input_ids"]
    assert torch.equal(b.next_batch(4)["input_ids"], ref[1::2])
    other_seed = StoreStream(cfg.data, tok, seq_len=32, seed=3)
    with pytest.raises(DataError, match="seed"):
        other_seed.load_state_dict(state)
    with pytest.raises(DataError, match="token-store"):
        a.load_state_dict(TrainStream(_stream_cfg(cfg), tok, seq_len=32, seed=2).state_dict())


def test_one_worker_and_two_workers_build_the_same_store(prepared, tmp_path):
    cfg, path = prepared
    data = dataclasses.replace(cfg.data, store_dir=str(tmp_path / "two"))
    two = store_mod.prepare(data, cfg.model.vocab_size, workers=2)
    a, b = (json.loads((p / "manifest.json").read_text()) for p in (path, two))
    assert a["splits"] == b["splits"] and a["key"] == b["key"]
    for split in ("train", "heldout"):
        for rec in a["splits"][split]["shards"]:
            for suffix in (".bin", ".idx.npy"):
                assert (path / split / (rec["file"] + suffix)).read_bytes() == \
                    (two / split / (rec["file"] + suffix)).read_bytes()
    assert store_mod.prepare(data, cfg.model.vocab_size, workers=2) == two  # finished: reused as is


def test_worker_threads_and_batching_do_not_change_a_local_corpus_store(cache_dir, tmp_path, monkeypatch):
    """A local corpus with a fast tokenizer is tokenized by worker threads, several units per encode_batch call:
    with 3 threads and calls cut every 2,000 characters (mid-unit) the shards equal one worker's, byte for byte."""
    rng = random.Random(1)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": _doc(rng) + " end"}) + "\n" for _ in range(700)))
    stores = []
    for workers, chars in ((1, store_mod.ENCODE_CHARS), (3, 2000)):
        monkeypatch.setattr(store_units, "ENCODE_CHARS", chars)  # read where process_units is: study.data.store_units
        cfg = resolve({"model": {"scale": "tiny", "seq_len": 32},
                       "data": {"source": "files", "paths": [str(docs)], "cache_dir": str(cache_dir), "store": True,
                                "store_dir": str(tmp_path / f"workers-{workers}")}})
        stores.append(store_mod.prepare(cfg.data, cfg.model.vocab_size, workers=workers))
    a, b = (json.loads((p / "manifest.json").read_text()) for p in stores)
    assert a["units"] == 3 and a["splits"]["train"]["documents"] + a["splits"]["heldout"]["documents"] == 700
    assert a["splits"] == b["splits"]
    for split in ("train", "heldout"):
        for rec in a["splits"][split]["shards"]:
            for suffix in (".bin", ".idx.npy"):
                assert (stores[0] / split / (rec["file"] + suffix)).read_bytes() == \
                    (stores[1] / split / (rec["file"] + suffix)).read_bytes()


def test_default_bpe_record_is_its_saved_copy(cache_dir, tmp_path):
    """Preparing with the default BPE records the tokenizer it just built instead of reloading the saved copy:
    the copy, loaded as training loads it, must have the very record the manifest holds."""
    from study.data.hf_tokenizer import load_tokenizer_dir

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": _doc(random.Random(k)) + " end"}) + "\n" for k in range(60)))
    cfg = resolve({"model": {"scale": "tiny", "seq_len": 32},
                   "data": {"source": "files", "paths": [str(docs)], "cache_dir": str(cache_dir), "store": True,
                            "store_dir": str(tmp_path / "s")}})
    path = store_mod.prepare(cfg.data, cfg.model.vocab_size)
    record = json.loads((path / "manifest.json").read_text())["tokenizer"]
    copy = load_tokenizer_dir(path / "tokenizer")
    assert record == {"name": copy.name, "fingerprint": copy.fingerprint, "vocab_size": copy.vocab_size,
                      "eos_id": copy.eos_id, "pad_id": copy.pad_id}
    assert build_tokenizer(cfg.data, cfg.model.vocab_size).fingerprint == copy.fingerprint  # the store's check
    umask = os.umask(0)
    os.umask(umask)
    assert (path / "tokenizer").stat().st_mode & 0o777 == 0o777 & ~umask  # group-shareable, not mkdtemp's 0700


def test_partial_store_is_refused_then_resumed(prepared, tmp_path):
    cfg, _ = prepared
    data = dataclasses.replace(cfg.data, store_dir=str(tmp_path / "s"))
    store_mod.prepare(data, cfg.model.vocab_size, units=[0, 3], finalize=False)
    with pytest.raises(DataError, match="only partly prepared"):
        store_mod.open_store(data, cfg.model.vocab_size)
    partial = tmp_path / "s.partial"
    assert sorted(p.name for p in (partial / "units").iterdir()) == ["heldout-000000.json", "train-000000.json"]
    (partial / "train" / "000000.bin").write_bytes(b"\0\0")  # a damaged finished unit is redone
    path = store_mod.prepare(data, cfg.model.vocab_size)
    assert not partial.exists()
    ref = store_mod.open_store(cfg.data, cfg.model.vocab_size)
    got = store_mod.open_store(data, cfg.model.vocab_size)
    assert store_check.verify(path, got.manifest)[0] == []  # every file hashed: the redone unit matches
    assert got.train.read(0, got.train.tokens).tolist() == ref.train.read(0, ref.train.tokens).tolist()
    assert path == tmp_path / "s"


def _write_cfg(tmp_path, raw) -> str:
    import yaml

    f = tmp_path / "cfg.yaml"
    f.write_text(yaml.safe_dump(raw))
    return str(f)


def test_truncated_shard_and_foreign_tokenizer_are_refused(prepared, tmp_path, capsys):
    import shutil

    from study.cli import main

    cfg, path = prepared
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    raw = {"model": {"scale": "tiny", "seq_len": 32}, "data": dataclasses.asdict(cfg.data) | {"store_dir": str(copy)}}
    raw["train"] = {"steps": 2, "global_batch": 2, "micro_batch": 2, "progress": False}
    raw["eval"] = {"every": 0, "at_end": False}
    config_file = _write_cfg(tmp_path, raw)

    shard = copy / "train" / "000001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    store_mod._OPEN.clear()
    assert main(["train", config_file, "--out", str(tmp_path / "res")]) == 2
    assert "truncated" in capsys.readouterr().err

    shutil.rmtree(copy)
    shutil.copytree(path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["tokenizer"]["fingerprint"] = "0123456789abcdef"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    store_mod._OPEN.clear()
    assert main(["train", config_file, "--out", str(tmp_path / "res")]) == 2
    assert "tokenizer" in capsys.readouterr().err

    # A config whose tokenizer differs from the one the store was prepared with (another vocabulary size of the
    # default BPE) is refused by the manifest's spec, before anything is read.
    store_mod._OPEN.clear()
    shutil.rmtree(copy)
    shutil.copytree(path, copy)
    assert main(["train", config_file, "--out", str(tmp_path / "res"), "--set", "model.vocab_size=1024"]) == 2
    err = capsys.readouterr().err
    assert "prepared for other data" in err and "vocab_size" in err


def test_missing_store_names_the_prepare_command(cache_dir, c4_like, tmp_path):
    cfg = resolve(_raw(cache_dir, c4_like, store_dir=str(tmp_path / "none")))
    with pytest.raises(DataError, match="study data prepare"):
        build_tokenizer(cfg.data, cfg.model.vocab_size)


def test_offline_training_from_the_store(prepared, tmp_path, monkeypatch):
    """A compute node without network: HF_HUB_OFFLINE=1 and the parquet files gone; store + its tokenizer only."""
    import shutil

    import datasets

    from study.train import train_run

    cfg, path = prepared
    node_store = tmp_path / "node-store"
    shutil.copytree(path, node_store)
    data = dataclasses.asdict(cfg.data) | {"store_dir": str(node_store), "cache_dir": str(tmp_path / "empty-cache")}
    run_cfg = resolve({"model": {"scale": "tiny", "seq_len": 32}, "data": data,
                       "train": {"steps": 4, "global_batch": 4, "micro_batch": 2, "progress": False, "log_every": 1},
                       "eval": {"every": 2, "tokens": 256, "batch_size": 4}})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_source(*args, **kwargs):
        raise AssertionError("the source dataset was read on the compute node")

    monkeypatch.setattr(datasets, "load_dataset", no_source)
    store_mod._OPEN.clear()
    result = train_run(run_cfg, tmp_path / "res")
    assert result.state == "completed" and result.step == 4
    evals = [json.loads(l) for l in (result.run_dir / "eval.jsonl").read_text().splitlines()]
    assert evals and all(np.isfinite(e["loss"]) for e in evals if "loss" in e)
    assert not (tmp_path / "empty-cache" / "tokenizers").exists()  # no BPE was trained on the node


def test_paper_grids_use_the_store(tmp_path):
    from study.commands.data import data_configs
    from study.grid import load_grid

    for name in ("main", "depth", "schedules", "7b", "climbmix"):
        grid = load_grid(f"paper/{name}")
        assert all(c.config.data.store for c in grid.cells()), name
    stores = data_configs("paper/main", [])
    assert len(stores) == 1  # 42 cells, one C4 store (same data and tokenizer)
    problems = store_mod.check_ready(load_grid("paper/main").cells())
    assert len(problems) <= 1 and all("study data prepare" in msg for _, msg in problems)


def test_cli_prepare_is_idempotent_and_info_reports(prepared, tmp_path, capsys):
    from study.cli import main

    cfg, path = prepared
    config_file = _write_cfg(tmp_path, {"model": {"scale": "tiny", "seq_len": 32},
                                        "data": dataclasses.asdict(cfg.data)})
    before = (path / "manifest.json").read_text()
    assert main(["data", "prepare", config_file, "--workers", "0"]) == 2  # not "all CPUs" in disguise
    assert "--workers must be >= 1, got 0" in capsys.readouterr().err
    assert main(["data", "prepare", config_file, "--workers", "1"]) == 0
    assert (path / "manifest.json").read_text() == before  # a finished store is reused as is
    capsys.readouterr()
    assert main(["data", "info", config_file, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["prepared"] and info["store"] == str(path) and info["heldout_tokens"] > 0


def test_training_from_the_store_resumes_bit_identically(prepared, tmp_path):
    import shutil

    from study.train import train_run

    cfg, path = prepared
    raw = {"model": {"scale": "tiny", "seq_len": 32}, "data": dataclasses.asdict(cfg.data),
           "train": {"steps": 6, "global_batch": 4, "micro_batch": 2, "progress": False, "log_every": 1,
                     "ckpt_every": 3},
           "optim": {"lr": 3e-3, "warmup_steps": 2}, "eval": {"every": 3, "tokens": 256, "batch_size": 4}}
    run_cfg = resolve(raw)
    straight = train_run(run_cfg, tmp_path / "a", handle_signals=False)
    first = train_run(run_cfg, tmp_path / "b", stop=StopAfter(4), handle_signals=False)
    assert first.state == "interrupted" and 0 < first.step < 6
    # The resume reads a copy of the store elsewhere (a node-local copy): data.store_dir may change on resume.
    shutil.copytree(path, tmp_path / "copy")
    moved = resolve(raw | {"data": raw["data"] | {"store_dir": str(tmp_path / "copy")}})
    resumed = train_run(moved, tmp_path / "b", handle_signals=False)
    assert resumed.run_dir == first.run_dir
    assert straight.state == resumed.state == "completed"

    def losses(result):
        rows = [json.loads(l) for l in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if "loss" in r]

    assert losses(resumed) == losses(straight) and len(losses(straight)) == 6
    def evals(result):
        rows = [json.loads(l) for l in (result.run_dir / "eval.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if "loss" in r]

    assert evals(resumed) == evals(straight) and len(evals(straight)) >= 2


def test_prepare_as_a_job_array_builds_the_same_store(prepared, tmp_path, capsys):
    """`--cluster debug` runs the same job array and finalize step as SLURM, in this process."""
    from study.cli import main

    cfg, path = prepared
    data = dataclasses.asdict(cfg.data) | {"store_dir": str(tmp_path / "array")}
    config_file = _write_cfg(tmp_path, {"model": {"scale": "tiny", "seq_len": 32}, "data": data})
    assert main(["data", "prepare", config_file, "--cluster", "debug", "--tasks", "2", "--workers", "1",
                 "--logs", str(tmp_path / "logs")]) == 0
    assert "prepared by 2 debug tasks" in capsys.readouterr().out
    a, b = (json.loads((p / "manifest.json").read_text()) for p in (path, tmp_path / "array"))
    assert a["splits"] == b["splits"]
