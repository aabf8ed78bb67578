"""`--max-tokens` (study.data.store_prepare): the store stops at the shortest run of training units, in source
order, that holds N training tokens, the same on any number of workers; a cut store too small for a config is
refused in one line (preparing, submitting, and when a run would read it twice)."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from study.cli import main
from study.config import resolve
from study.data import store as store_mod
from study.data.store_stream import StoreStream
from study.errors import DataError
from tests.test_store import _doc


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jsonl")
    rng = random.Random(5)
    for j in range(3):
        (folder / f"{j}.jsonl").write_text("".join(json.dumps({"text": _doc(rng)}) + "\n" for _ in range(400)))
    return folder


def _cfg(cache_dir, source, store_dir, steps=10):
    return resolve({"model": {"scale": "tiny", "seq_len": 32},
                    "train": {"steps": steps, "global_batch": 8, "micro_batch": 8},
                    "data": {"source": "files", "paths": [str(source / "*.jsonl")], "cache_dir": str(cache_dir),
                             "store": True, "store_dir": str(store_dir)}})


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_max_tokens_keeps_the_shortest_prefix_on_any_number_of_workers(cache_dir, source, tmp_path):
    whole = _manifest(store_mod.prepare(_cfg(cache_dir, source, tmp_path / "all").data, 2048, max_tokens=0))
    assert whole["complete"] and whole["max_tokens"] is None and whole["units"] == 5
    per_unit = [s["tokens"] for s in whole["splits"]["train"]["shards"]]
    n = sum(per_unit[:2]) + 1  # one token more than two units: three are needed
    stores = [store_mod.prepare(_cfg(cache_dir, source, tmp_path / f"w{w}").data, 2048, workers=w, max_tokens=n)
              for w in (1, 2)]
    a, b = map(_manifest, stores)
    assert a["splits"] == b["splits"] and a["units"] == 3 and not a["complete"] and a["max_tokens"] == n
    assert a["splits"]["train"]["tokens"] == sum(per_unit[:3]) and a["splits"]["train"]["shards"] == \
        whole["splits"]["train"]["shards"][:3]
    assert sorted(p.name for p in (stores[1] / "train").iterdir()) == \
        [f"{j:06d}{s}" for j in range(3) for s in (".bin", ".idx.npy")]  # nothing past the cut is left


def test_a_cut_store_too_small_is_refused_in_one_line(cache_dir, source, tmp_path, capsys):
    store_dir = tmp_path / "cut"
    small = _cfg(cache_dir, source, store_dir, steps=10)  # needs 10 x 8 x 32 + 1 = 2,561 tokens
    config = tmp_path / "small.yaml"
    config.write_text(json.dumps({"model": {"scale": "tiny", "seq_len": 32},
                                  "train": {"steps": 10, "global_batch": 8, "micro_batch": 8},
                                  "data": {**{k: getattr(small.data, k) for k in ("source", "paths", "cache_dir",
                                                                                  "store_dir")}, "store": True}}))
    assert main(["data", "prepare", str(config), "--workers", "1"]) == 0  # default: what the config trains on
    m = _manifest(store_dir)
    assert m["max_tokens"] == 2561 and m["splits"]["train"]["tokens"] >= 2561 and not m["complete"]
    big = _cfg(cache_dir, source, store_dir, steps=10_000)
    problems = store_mod.check_ready([big])
    assert len(problems) == 1 and "--max-tokens" in problems[0][1] and "\n" not in problems[0][1]
    with pytest.raises(DataError, match="asked for; delete it"):
        store_mod.prepare(big.data, 2048, max_tokens=10_000 * 8 * 32 + 1)
    store_mod._OPEN.clear()
    tok = store_mod.store_tokenizer(big.data, 2048)
    stream = StoreStream(big.data, tok, seq_len=32)
    for _ in range(stream.per_epoch // 8):
        stream.next_batch(8)
    with pytest.raises(DataError, match="fewer than"):  # the next batch would start a second epoch
        stream.next_batch(8)
    capsys.readouterr()
    assert main(["data", "prepare", str(config), "--max-tokens", "-1"]) == 2
    assert "--max-tokens must be >= 0" in capsys.readouterr().err


def test_job_array_tasks_and_finalize_use_the_recorded_cap(cache_dir, source, tmp_path):
    ref = _manifest(store_mod.prepare(_cfg(cache_dir, source, tmp_path / "ref").data, 2048, max_tokens=3000))
    data = replace(_cfg(cache_dir, source, tmp_path / "array").data)
    store_mod.prepare(data, 2048, units=[], finalize=False, max_tokens=3000)  # as submit_prepare starts
    for share in ([0, 2, 4], [1, 3]):
        store_mod.prepare(data, 2048, units=share, finalize=False)
    got = _manifest(store_mod.prepare(data, 2048, units=[]))
    assert got["splits"] == ref["splits"] and got["max_tokens"] == 3000
