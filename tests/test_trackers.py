"""Live dashboards (train.trackers): TensorBoard's and W&B's own files, read back with their own readers, hold the
rows of metrics.jsonl, eval.jsonl and probes.jsonl; a resume continues the same tracker runs; a broken tracker
never stops training.

TensorBoard is read with the event accumulator its own server uses (with TensorBoard's purge of what a killed
session wrote past the step a resumed one starts at). wandb 0.31 ships no Python reader of its offline `.wandb`
transaction log, so `_wandb_records` reads its framing (LevelDB log format: 32 KiB blocks of crc/length/type-framed
chunks after a 7-byte ':W&B' header) and parses each record with wandb's own protobuf `Record`.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from study.config import resolve, run_id, to_dict
from study.results import RunDir
from tests.conftest import tiny_raw

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")

STEPS = 20
METRICS = ("loss", "lr", "grad_norm", "tokens", "tokens_per_s")


@pytest.fixture(autouse=True)
def _wandb_left_to_us(monkeypatch, tmp_path):
    """No W&B setting of the machine's (mode, project, config files) reaches these tests, and each test's W&B
    settings are read afresh (W&B reads them once per process session: wandb.teardown ends it)."""
    import os

    import wandb
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    wandb.teardown()
    yield
    wandb.teardown()


def _cfg(cache_dir, trackers, **extra):
    return resolve(tiny_raw(cache_dir, **{"train.steps": STEPS, "train.log_every": 5, "train.ckpt_every": 10,
                                          "train.keep_checkpoints": 3, "train.probe_every": 10,
                                          "prores.schedule": "linear", "prores.T": 5,
                                          "train.trackers": trackers, **extra}))


def _train(cfg, out):
    from study.train import train_run
    return train_run(cfg, out, handle_signals=False)


def _tb_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} as TensorBoard's own server reads the folder (its plugin event accumulator, which
    applies the purge a resumed session asks for); every tag must be one its scalars dashboard shows."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    acc = pea.EventAccumulator(str(folder), size_guidance=pea.STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        assert acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars", tag
        out[tag] = [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)]
    return out


def _wandb_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, chunk, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is zero padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def _wandb_sessions(run_dir: Path) -> list[dict]:
    """Each offline session folder (oldest first): its run record and history {step: {key: value}}."""
    sessions = []
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        (log_file,) = folder.glob("*.wandb")
        records = _wandb_records(log_file)
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        history: dict[int, dict] = {}
        for r in records:
            if r.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                history.setdefault(items["_step"], {}).update(items)
        sessions.append({"run": run, "history": history, "started": run.start_time.ToNanoseconds()})
    return sorted(sessions, key=lambda s: s["started"])


def _expected(rd: RunDir) -> dict[str, dict[int, float]]:
    """What a dashboard must show, written out from the JSONL rows (tag -> step -> value)."""
    want: dict[str, dict[int, float]] = {}
    for row in rd.read_jsonl("metrics.jsonl"):
        for key in METRICS:
            want.setdefault(f"train/{key}", {})[row["step"]] = row[key]
        for l, a in enumerate(row["alpha"] or [], 1):
            want.setdefault(f"alpha/layer_{l:02d}", {})[row["step"]] = a
    for row in rd.read_jsonl("eval.jsonl"):
        for key in ("loss", "ppl"):
            want.setdefault(f"eval/{key}", {})[row["step"]] = row[key]
    for row in rd.read_jsonl("probes.jsonl"):
        for key in ("act_norm", "branch_norm_attn", "branch_norm_ffn"):
            want.setdefault(f"probe/{key}/layer_{row['layer']:02d}", {})[row["step"]] = row[key]
    return want


def _assert_tensorboard_equals_rows(rd: RunDir) -> None:
    got, want = _tb_scalars(rd.path / "tensorboard"), _expected(rd)
    assert set(got) == set(want)
    for tag, by_step in want.items():
        assert got[tag] == sorted(by_step.items()), tag  # each step once, exactly the row's value


def _assert_history_equals_rows(history: dict[int, dict], rd: RunDir, after: int = -1) -> None:
    want = _expected(rd)
    steps = sorted({s for by_step in want.values() for s in by_step if s > after})
    assert sorted(history) == steps
    for tag, by_step in want.items():
        for step, value in by_step.items():
            if step > after:
                assert history[step][tag] == value, (tag, step)


def test_tensorboard_and_wandb_hold_the_rows_of_the_run_directory(cache_dir, tmp_path):
    cfg = _cfg(cache_dir, ["tensorboard", "wandb"])
    rd = RunDir(_train(cfg, tmp_path / "out").run_dir)
    assert len(rd.read_jsonl("metrics.jsonl")) == STEPS and len(rd.read_jsonl("eval.jsonl")) == 2
    assert {r["step"] for r in rd.read_jsonl("probes.jsonl")} == {0, 10, 20}
    _assert_tensorboard_equals_rows(rd)

    (session,) = _wandb_sessions(rd.path)  # offline: nothing set in W&B's own settings
    run = session["run"]
    assert (run.run_id, run.display_name, run.run_group) == (run_id(cfg), rd.path.name, cfg.grid)
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert {k: config[k] for k in to_dict(cfg)} == json.loads(json.dumps(to_dict(cfg)))
    _assert_history_equals_rows(session["history"], rd)


@pytest.mark.slow
def test_a_resume_continues_the_same_tracker_runs_without_duplicates(cache_dir, tmp_path):
    """Killed after step 20's rows were written but before its checkpoint: the resume from step 10 truncates
    rows 11-20 from the JSONL logs and writes them again. TensorBoard shows each step once, the resumed value;
    W&B keeps one offline folder per session, both with the run's id, the second starting at step 11."""
    cfg = _cfg(cache_dir, ["tensorboard", "wandb"])
    rd = RunDir(_train(cfg, tmp_path / "out").run_dir)
    shutil.rmtree(rd.checkpoints / "step_0000020")
    (rd.checkpoints / "latest").write_text("step_0000010")
    rd.write_status("running", 20)
    assert _train(cfg, tmp_path / "out").state == "completed"

    assert [r["step"] for r in rd.read_jsonl("metrics.jsonl")] == list(range(1, STEPS + 1))
    _assert_tensorboard_equals_rows(rd)
    assert len(list((rd.path / "tensorboard").glob("events.out.tfevents.*"))) == 2

    first, resumed = _wandb_sessions(rd.path)
    assert first["run"].run_id == resumed["run"].run_id == run_id(cfg)
    assert min(first["history"]) == 0 and max(first["history"]) == STEPS  # the killed session's own rows
    _assert_history_equals_rows(resumed["history"], rd, after=10)


def test_a_user_w_and_b_mode_is_theirs(cache_dir, tmp_path, monkeypatch):
    """WANDB_MODE is W&B's own setting: 'disabled' there means no W&B files, and the run still trains."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    rd = RunDir(_train(_cfg(cache_dir, ["wandb"]), tmp_path / "out").run_dir)
    assert len(rd.read_jsonl("metrics.jsonl")) == STEPS
    assert not list((rd.path / "wandb").glob("offline-run-*"))


def test_a_broken_tracker_warns_once_and_training_goes_on(cache_dir, tmp_path, monkeypatch, caplog):
    import sys
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if the extra were not installed
    cfg = _cfg(cache_dir, ["tensorboard", "wandb"])
    run_dir = RunDir.for_config(cfg, tmp_path / "out").path
    run_dir.mkdir(parents=True)
    (run_dir / "tensorboard").write_text("a file where TensorBoard's folder goes")
    result = _train(cfg, tmp_path / "out")
    assert result.state == "completed" and len(RunDir(run_dir).read_jsonl("metrics.jsonl")) == STEPS
    warnings = [r.getMessage() for r in caplog.records if "tracker" in r.getMessage()]
    assert len(warnings) == 2, warnings  # one each, however many rows came after
    assert any("tracker wandb off" in w and "prores-study[track]" in w for w in warnings)
    assert any("tracker tensorboard off" in w for w in warnings)
