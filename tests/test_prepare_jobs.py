"""A token store's preparation as jobs (study.dispatch.prepare) where no scheduler runs: the debug backend runs the
same job array and finalize step in this process. Its logs go beside the store, never into it; a rerun does only
the units left; `study data info` reports a partial store; a task ends at once on SIGTERM, keeping its finished
units; a request no node can hold is refused naming the flag. The same on a real cluster: tests/test_slurm.py."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from study import lease
from study.cli import main
from study.clusters.fit import check_fit, gres_gpus, parse_sinfo
from study.config import load
from study.data import store as store_mod
from study.data.store_units import marker_ok
from study.dispatch import resolve_options
from study.errors import ConfigError
from tests.test_store import _doc

REPO = Path(__file__).resolve().parents[1]


def _source(folder: Path, files: int, docs: int = 400) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(5)
    for j in range(files):
        (folder / f"{j}.jsonl").write_text("".join(json.dumps({"text": _doc(rng)}) + "\n" for _ in range(docs)))
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return _source(tmp_path_factory.mktemp("jsonl"), 3)  # 1,200 documents: 5 units


def _config(tmp_path: Path, cache_dir, source: Path, store_dir: Path, name: str = "cfg.yaml") -> str:
    raw = {"model": {"scale": "tiny", "seq_len": 32}, "train": {"steps": 10, "global_batch": 8, "micro_batch": 8},
           "data": {"source": "files", "paths": [str(source / "*.jsonl")], "cache_dir": str(cache_dir),
                    "store": True, "store_dir": str(store_dir)}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _files(store: Path) -> dict[str, bytes]:
    return {f"{split}/{f.name}": f.read_bytes() for split in ("train", "heldout") for f in (store / split).iterdir()}


@pytest.fixture(scope="module")
def local_store(tmp_path_factory, cache_dir, source):
    """The store as a local `study data prepare` builds it: what every job-built store must equal byte for byte."""
    tmp = tmp_path_factory.mktemp("local")
    assert main(["data", "prepare", _config(tmp, cache_dir, source, tmp / "store"), "--workers", "1",
                 "--max-tokens", "0"]) == 0
    return tmp / "store"


def test_jobs_keep_their_logs_beside_the_store_and_the_manifest_describes_them(tmp_path, cache_dir, source,
                                                                              local_store, capsys, caplog):
    store = tmp_path / "store"
    config = _config(tmp_path, cache_dir, source, store)
    caplog.set_level("INFO", logger="study.data.store_prepare")
    assert main(["data", "prepare", config, "--cluster", "debug", "--tasks", "2", "--workers", "1",
                 "--max-tokens", "0"]) == 0
    assert f"{store}: prepared by 2 debug tasks (5 units)" in capsys.readouterr().out
    said = [r.getMessage() for r in caplog.records]
    assert f"token store {store}: 3 of 5 units to do (this task's share: 3) on 1 worker" in said
    assert f"token store {store}: finalizing (5 units planned)" in said
    assert sorted(p.name for p in store.iterdir()) == ["heldout", "manifest.json", "spec.json", "tokenizer", "train",
                                                      "verified.json"]  # the stamps of the hashed shards
    assert (tmp_path / "store.submitit").is_dir()  # the jobs' logs: beside the store, never inside it
    prepared = json.loads((store / "manifest.json").read_text())["prepared"]
    assert prepared["cluster"] == "debug" and prepared["tasks"] == 2 and prepared["workers"] == 1
    assert len(prepared["jobs"]) == 2 and prepared["submissions"] == 1  # the debug backend finalizes here
    assert prepared["units_cpu_s"] > 0 and prepared["seconds"] > 0
    assert _files(store) == _files(local_store)


def test_a_rerun_does_only_the_units_left_and_info_reports_the_partial_store(tmp_path, cache_dir, source,
                                                                           local_store, capsys):
    store = tmp_path / "store"
    config = _config(tmp_path, cache_dir, source, store)
    cfg = load(config)
    # Tasks that finished units 0, 2 and 4; the task that had 1 and 3 was lost.
    store_mod.prepare(cfg.data, cfg.model.vocab_size, units=[], finalize=False, max_tokens=0)
    store_mod.prepare(cfg.data, cfg.model.vocab_size, units=[0, 2, 4], finalize=False)
    done = {f: os.stat(store_mod.partial_of(store) / f).st_mtime_ns for f in ("train/000000.bin", "train/000004.bin")}
    capsys.readouterr()
    assert main(["data", "info", config]) == 0
    assert capsys.readouterr().out.strip() == f"{store}: partly prepared: 3 of 5 units done, 2 to do"
    assert main(["data", "info", config, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert not info["prepared"] and info["units"] == 5 and info["units_to_do"] == 2 and info["stranded"] is None

    assert main(["data", "prepare", config, "--cluster", "debug", "--tasks", "4", "--workers", "1",
                 "--max-tokens", "0"]) == 0
    assert f"{store}: prepared by 2 debug tasks (2 of 5 units)" in capsys.readouterr().out
    assert _files(store) == _files(local_store)
    assert done == {f: os.stat(store / f).st_mtime_ns for f in done}  # finished units are not done again
    assert main(["data", "info", config]) == 0 and "held-out tokens" in capsys.readouterr().out


def test_a_preparation_task_ends_at_once_on_sigterm_keeping_its_finished_units(tmp_path, cache_dir):
    """submitit's jobs ignore SIGTERM (its handler logs and returns); a preparation task replaces that handler and
    dies of the signal at once, its finished units kept (each complete before its marker)."""
    big = _source(tmp_path / "big", 150)  # 60,000 documents: seconds of tokenizing on one worker
    config = _config(tmp_path, cache_dir, big, tmp_path / "store")
    cfg = load(config)
    store_mod.prepare(cfg.data, cfg.model.vocab_size, units=[], finalize=False, max_tokens=0)  # plan, tokenizer
    partial = store_mod.partial_of(tmp_path / "store")
    n = len(store_mod.read_plan(partial))
    (partial / "plan.json").unlink()  # written again by the task, once its handler is installed
    task = ("import json, signal, sys\n"
            "signal.signal(signal.SIGTERM, lambda *a: None)  # as submitit's job does\n"
            "from study.data import store\n"
            f"print(store._prepare_task(json.loads(sys.argv[1]), {cfg.model.vocab_size}, list(range({n})), 1))\n")
    import dataclasses

    proc = subprocess.Popen([sys.executable, "-c", task, json.dumps(dataclasses.asdict(cfg.data))], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (partial / "plan.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, (out, err)
    assert "stopped by SIGTERM: the units finished so far are kept" in err
    plan = store_mod.read_plan(partial)
    left = set(store_mod.units_to_do(partial, plan, 0))
    assert left  # it stopped before its end; the units it finished are whole (the next run keeps them)
    assert all(marker_ok(partial, u) is not None for k, u in enumerate(plan) if k not in left)


SINFO = """node1|cpu*|2|3800|(null)
node2|cpu*|8|64000|(null)
gpu1|gpu|64|512000|gpu:a100:4(S:0-1),gpu:v100:2
gpu2|gpu|64|512000|gpu:8
"""


def test_sinfo_nodes_are_read_as_sinfo_prints_them():
    nodes = parse_sinfo(SINFO)
    assert [(n.name, n.partition, n.default, n.cpus, n.mem_mb, n.gpus) for n in nodes] == [
        ("node1", "cpu", True, 2, 3800, 0), ("node2", "cpu", True, 8, 64000, 0),
        ("gpu1", "gpu", False, 64, 512000, 6), ("gpu2", "gpu", False, 64, 512000, 8)]
    assert gres_gpus("(null)") == 0 and gres_gpus("gpu:2,mps:100") == 2


def test_a_request_no_node_can_hold_is_refused_naming_the_flag():
    nodes = parse_sinfo(SINFO)

    def refusal(cli, grid=None):
        with pytest.raises(ConfigError) as exc:
            check_fit(resolve_options(cli, None, grid), nodes)
        assert "\n" not in str(exc.value)
        return str(exc.value)

    check_fit(resolve_options({"cpus_per_task": 8, "mem_gb": 60}), nodes)  # node2 holds it
    assert refusal({"cpus_per_task": 16}) == ("key '--cpus-per-task': 16 CPUs per task, but no node of partition "
                                              "'cpu' has more than 8 CPUs: the job would wait forever; give "
                                              "--cpus-per-task 8 or less")
    assert "(the grid's cluster section)" in refusal({}, {"cpus_per_task": 9})
    assert "4 CPUs per task (the default) x 4 tasks per node" in refusal({"tasks_per_node": 4})
    assert "key '--mem-gb'" in refusal({"mem_gb": 100}) and "--mem-gb 62 or less" in refusal({"mem_gb": 100})
    assert "key '--gpus-per-node'" in refusal({"partition": "gpu", "gpus_per_node": 16})
    check_fit(resolve_options({"partition": "gpu", "gpus_per_node": 8}), nodes)
    assert "has 1 that can hold" in refusal({"partition": "gpu", "gpus_per_node": 8, "nodes": 2})
    assert "key '--partition'" in refusal({"partition": "big"}) and "sinfo lists: cpu, gpu" in refusal(
        {"partition": "big"})
    check_fit(resolve_options({"cpus_per_task": 99}), [])  # nothing listed: nothing to check against


def test_the_lease_names_an_array_task_as_squeue_does(tmp_path, monkeypatch):
    """Task 3 of array 777 runs as SLURM job 781: `study status` shows its owner as 777_3, the id status.json,
    squeue and sacct use."""
    monkeypatch.setenv("SLURM_JOB_ID", "781")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "777")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    held = lease.Lease(tmp_path).acquire()
    try:
        assert lease.read(tmp_path)["slurm_job_id"] == "777_3"
        assert "SLURM job 777_3" in lease.describe(lease.read(tmp_path))
    finally:
        held.release()
