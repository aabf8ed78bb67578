"""A token store that proves its bytes (study.data.store_check, store_repair, `study data verify`): a same-size
byte flip in any shard is refused before training reads it, verify names the shard, prepare rewrites the damaged
files only (the result equals the undamaged store byte for byte), a tampered manifest is refused in one line."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from pathlib import Path

import pytest

from study.cli import main
from study.config import resolve
from study.data import build_tokenizer, heldout_batches, store_check
from study.data import store as store_mod
from study.data.store_stream import StoreStream
from tests.test_store import _doc


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jsonl")
    rng = random.Random(11)
    for j in range(2):
        (folder / f"{j}.jsonl").write_text("".join(json.dumps({"text": _doc(rng)}) + "\n" for _ in range(300)))
    return folder


def _raw(cache_dir, source, store_dir) -> dict:
    return {"model": {"scale": "tiny", "seq_len": 32},
            "train": {"steps": 2, "global_batch": 4, "micro_batch": 4, "progress": False},
            "eval": {"every": 0, "at_end": False},
            "data": {"source": "files", "paths": [str(source / "*.jsonl")], "cache_dir": str(cache_dir),
                     "store": True, "store_dir": str(store_dir)}}


@pytest.fixture(scope="module")
def pristine(cache_dir, source, tmp_path_factory):
    """A prepared store (3 units: train and held-out shards each) kept untouched; tests damage copies of it."""
    path = tmp_path_factory.mktemp("pristine") / "store"
    cfg = resolve(_raw(cache_dir, source, path))
    store_mod.prepare(cfg.data, cfg.model.vocab_size, workers=1, max_tokens=0)
    return path


@pytest.fixture
def store(pristine, cache_dir, source, tmp_path):
    """(config, a fresh copy of the store as prepare left it, its config file): copied with its stamps' file
    times, and stamped where it now lies (a copy has new inodes and ctimes: as `study data verify` would)."""
    path = tmp_path / "store"
    shutil.copytree(pristine, path)
    _next_tick()
    store_check.verify(path, json.loads((path / "manifest.json").read_text()))
    cfg = resolve(_raw(cache_dir, source, path))
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text(json.dumps(_raw(cache_dir, source, path)))
    store_mod._OPEN.clear()
    yield cfg, path, config_file
    store_mod._OPEN.clear()


def _next_tick() -> None:
    """Let the filesystem's clock move on: a stamp written in the same tick as a file's last change does not
    vouch for it (the racily-clean rule), and file times tick at the kernel's timer granularity (ms)."""
    time.sleep(0.05)


def _flip(f: Path, at: int = 3) -> None:
    """One byte changed in place (the size stays), the modification time put back as a careful hand would."""
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[at] ^= 0x40
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def _files(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != store_check.STAMPS}


def _hashes(monkeypatch) -> list:
    """Counts the shards hashed at first use (the cost a stamp spares)."""
    calls = []
    real = store_check._sha256_fd

    def counting(fd, size):
        calls.append(size)
        return real(fd, size)

    monkeypatch.setattr(store_check, "_sha256_fd", counting)
    return calls


@pytest.mark.parametrize("split, shard", [("train", "000000"), ("train", "000002"), ("heldout", "000001")])
def test_a_same_size_byte_flip_in_any_shard_is_refused_before_training_reads_it(store, split, shard):
    cfg, path, _ = store
    _flip(path / split / f"{shard}.bin")
    tok = build_tokenizer(cfg.data, cfg.model.vocab_size)  # opening checks sizes and the manifest: all fine
    with pytest.raises(store_mod.StoreError, match=f"shard {split}/{shard}.bin does not match its sha256") as err:
        stream = StoreStream(cfg.data, tok, seq_len=32)  # every training shard, before the first batch
        heldout_batches(cfg.data, tok, seq_len=32, tokens=10**6, batch_size=4)  # held-out shards at first read
        stream.next_batch(4)
    assert "\n" not in str(err.value) and "study data prepare" in str(err.value)


def test_study_train_on_a_flipped_shard_is_one_line_exit_2_and_trains_nothing(store, tmp_path, capsys):
    _, path, config_file = store
    _flip(path / "train" / "000001.bin", at=100)
    assert main(["train", str(config_file), "--out", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train/000001.bin does not match its sha256" in err and "Traceback" not in err
    assert not list((tmp_path / "res").rglob("metrics.jsonl"))


def test_stamped_shards_are_not_hashed_again_until_a_byte_changes(store, monkeypatch):
    cfg, path, _ = store
    hashed = _hashes(monkeypatch)
    tok = build_tokenizer(cfg.data, cfg.model.vocab_size)
    StoreStream(cfg.data, tok, seq_len=32).next_batch(4)
    assert hashed == []  # every shard vouched for by its stamp: a stat each
    store_mod._OPEN.clear()
    _flip(path / "train" / "000002.bin")
    with pytest.raises(store_mod.StoreError, match="000002.bin does not match"):
        StoreStream(cfg.data, build_tokenizer(cfg.data, cfg.model.vocab_size), seq_len=32)
    assert len(hashed) == 1  # the changed file only (its ctime moved, whatever its mtime says)


def test_a_copied_store_is_hashed_at_first_use_until_verify_stamps_it(store, tmp_path, monkeypatch, capsys):
    cfg, path, _ = store
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)  # new inodes and ctimes: the stamps do not vouch for these files
    _next_tick()
    data = dataclasses.replace(cfg.data, store_dir=str(copy))
    hashed = _hashes(monkeypatch)
    StoreStream(data, build_tokenizer(data, cfg.model.vocab_size), seq_len=32)
    n_train = len([s for s in store_mod.open_store(data, cfg.model.vocab_size).manifest["splits"]["train"]["shards"]
                   if s["tokens"]])
    assert len(hashed) == n_train
    assert main(["data", "verify", str(copy)]) == 0
    assert capsys.readouterr().out.startswith(f"{copy}: OK, 6 shards")
    hashed.clear()
    store_mod._OPEN.clear()
    StoreStream(data, build_tokenizer(data, cfg.model.vocab_size), seq_len=32)
    assert hashed == []


def test_a_stamp_no_older_than_the_file_is_not_trusted(store, monkeypatch):
    """git's racily-clean rule: a write in the same clock tick as the stamp leaves the file's times unchanged,
    so a file whose ctime is not older than the stamp file is hashed."""
    cfg, path, _ = store
    stamps = path / store_check.STAMPS
    newest = max((path / "train" / f).stat().st_ctime_ns for f in ("000000.bin", "000001.bin", "000002.bin"))
    os.utime(stamps, ns=(newest, newest))
    hashed = _hashes(monkeypatch)
    StoreStream(cfg.data, build_tokenizer(cfg.data, cfg.model.vocab_size), seq_len=32)
    assert len(hashed) >= 1


def test_verify_names_every_damaged_shard_one_line_each_exit_2(store, capsys):
    _, path, config_file = store
    assert main(["data", "verify", str(config_file)]) == 0
    assert "OK, 6 shards" in capsys.readouterr().out
    _flip(path / "train" / "000001.bin")
    _flip(path / "heldout" / "000001.bin", at=0)
    (path / "train" / "000000.idx.npy").unlink()
    assert main(["data", "verify", str(config_file)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 3, err
    assert all(line.startswith(f"study: error: token store {path}: shard ") for line in lines)
    assert sum("train/000001.bin: does not match its sha256" in line for line in lines) == 1
    assert sum("heldout/000001.bin: does not match its sha256" in line for line in lines) == 1
    assert sum("train/000000.idx.npy: is missing" in line for line in lines) == 1
    assert all(f"study data prepare {config_file}" in line for line in lines)
    assert main(["data", "verify", str(path), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["store"] == str(path) and len(report["problems"]) == 3


def test_prepare_rewrites_only_the_damaged_files_and_equals_the_undamaged_store(store, pristine, capsys):
    cfg, path, config_file = store
    _flip(path / "train" / "000001.bin", at=7)
    (path / "heldout" / "000000.bin").write_bytes(b"\0\0")  # truncated
    (path / "train" / "000002.idx.npy").unlink()
    untouched = path / "train" / "000000.bin"
    before = untouched.stat()
    assert main(["data", "prepare", str(config_file), "--workers", "1"]) == 0
    assert _files(path) == _files(pristine)  # byte for byte, the manifest and tokenizer too
    after = untouched.stat()
    assert (after.st_ino, after.st_ctime_ns) == (before.st_ino, before.st_ctime_ns)  # a whole file is never rewritten
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no repair folder left behind
    assert main(["data", "verify", str(path)]) == 0
    assert main(["data", "prepare", str(config_file), "--workers", "1"]) == 0  # nothing to do any more
    assert _files(path) == _files(pristine)


def test_a_rebuilt_shard_that_differs_from_its_record_is_refused(cache_dir, source, tmp_path, capsys):
    """The source changed since the store was prepared: repairing would mix two sources, so it is refused."""
    own = tmp_path / "source"
    shutil.copytree(source, own)
    raw = _raw(cache_dir, own, tmp_path / "store")
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text(json.dumps(raw))
    assert main(["data", "prepare", str(config_file), "--workers", "1", "--max-tokens", "0"]) == 0
    (own / "0.jsonl").write_text((own / "0.jsonl").read_text().replace("river", "lake"))
    _flip(tmp_path / "store" / "train" / "000000.bin")
    capsys.readouterr()
    assert main(["data", "prepare", str(config_file), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "rebuilt from the source differs from its record" in err and err.count("study: error:") == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no repair folder left behind


def _tamper(manifest: dict, how: str) -> object:
    shard = manifest["splits"]["train"]["shards"][0]
    if how == "bytes":
        shard["bytes"] += 2  # counts disagree with sizes
    elif how == "tokens":
        shard["tokens"] += 1
    elif how == "total":
        manifest["splits"]["train"]["tokens"] += 5
    elif how == "documents":
        shard["documents"] = shard["tokens"] + 1
    elif how == "file":
        shard["file"] = "../../../etc/passwd"
    elif how == "sha":
        shard["sha256"] = 17
    elif how == "shards":
        manifest["splits"]["heldout"]["shards"] = {"000000": shard}
    elif how == "list":
        return [manifest]
    elif how == "dtype":
        manifest["dtype"] = "float64"
    elif how == "tokenizer":
        manifest["tokenizer"] = "default"
    return manifest


@pytest.mark.parametrize("how, says", [
    ("bytes", "bytes for"), ("tokens", "bytes for"), ("total", "splits.train.tokens is"),
    ("documents", "every document ends with its EOS"), ("file", "is not a six-digit shard name"),
    ("sha", "is not a sha256"), ("shards", "has no list of shards"), ("list", "is a JSON list, not an object"),
    ("dtype", "dtype 'float64'"), ("tokenizer", "'tokenizer' is str"),
])
def test_a_tampered_manifest_is_refused_in_one_line(store, how, says, capsys):
    cfg, path, config_file = store
    manifest = _tamper(json.loads((path / "manifest.json").read_text()), how)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(store_mod.StoreError, match=says) as err:
        store_mod.open_store(cfg.data, cfg.model.vocab_size)
    assert "\n" not in str(err.value)
    assert main(["train", str(config_file), "--out", str(path.parent / "res")]) == 2
    assert says in capsys.readouterr().err
    for command in ("verify", "prepare"):
        assert main(["data", command, str(config_file)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err and "Traceback" not in err
