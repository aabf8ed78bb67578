"""Nothing lost, nothing twice, nothing wrong in silence: kills at many points, identity on resume, safe loading,
full disks, leftovers of interrupted saves, Ctrl-C.

Kills are injected in-process: a chosen call (a metrics/eval/probe row append, a status write, a torch.save or
an os.replace inside a checkpoint write, ...) raises `Killed`, a BaseException the trainer does not handle,
so the run directory is left exactly as a SIGKILL at that point would leave it (up to the temporary checkpoint
folder, which the save removes on the way out and test_leftover_temporary_checkpoints_are_reclaimed covers).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
from pathlib import Path

import pytest
import torch

from study import lease as lease_mod
from study.config import resolve, run_id
from study.errors import CheckpointError, ConfigError, StorageError
from study.fsutil import sha256_file
from study.results import RunDir
from study.train import checkpoint as ckpt
from study.train import train_run
from tests.conftest import StopAfter, tiny_raw

STEPS = 8


def small(cache_dir, **overrides):
    """A run that takes a few seconds: 2 layers of width 32, 8 steps, a checkpoint every 2, evals every 4."""
    raw = tiny_raw(cache_dir, **{
        "model.seq_len": 64, "model.d_model": 32, "model.n_heads": 2, "model.ffn_hidden": 64, "model.n_layers": 2,
        "train.steps": STEPS, "train.log_every": 1, "train.ckpt_every": 2, "train.keep_checkpoints": 2,
        "train.probe_every": 4, "train.probe_len": 16, "eval.every": 4, "eval.tokens": 512, "eval.batch_size": 4,
        "prores.schedule": "linear", "prores.T": 2})
    for key, value in overrides.items():
        from study.rawconfig import set_path
        set_path(raw, key, value)
    return resolve(raw)


class Killed(BaseException):
    """A kill at an injected point (not an Exception: the trainer records nothing, like after SIGKILL)."""


def _rows(rd: RunDir, name: str) -> list[dict]:
    return rd.read_jsonl(name)


def _final_model(rd: RunDir) -> dict:
    return torch.load(rd.checkpoints / f"step_{STEPS:07d}" / "model.pt", weights_only=True)


def _assert_same_run(rd: RunDir, ref: RunDir) -> None:
    """Bit-identical weights and exactly the reference's rows, each once."""
    a, b = _final_model(rd), _final_model(ref)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in _rows(rd, "metrics.jsonl")] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in _rows(rd, "metrics.jsonl")] == [r["loss"] for r in _rows(ref, "metrics.jsonl")]
    def strip(rows):  # the measured wall-clock fields differ between runs by nature
        return [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s", "mfu")} for r in rows]

    assert strip(_rows(rd, "eval.jsonl")) == strip(_rows(ref, "eval.jsonl"))
    assert strip(_rows(rd, "probes.jsonl")) == strip(_rows(ref, "probes.jsonl"))
    assert rd.read_status()["state"] == "completed"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("reference")
    result = train_run(small(cache_dir), root, handle_signals=False)
    assert result.state == "completed"
    return RunDir(result.run_dir)


class Injector:
    """Counts the calls that write run state and raises Killed at the chosen one."""

    def __init__(self, monkeypatch):
        self.kill_at, self.count, self.kill_on_completed = None, 0, False
        self.kill_name: str | None = None  # or: die at the first call of this name
        from study import results

        def wrap(owner, name):
            real = getattr(owner, name)

            def hooked(*args, **kwargs):
                self.count += 1
                if name == self.kill_name or (self.kill_at is not None and self.count == self.kill_at):
                    raise Killed(f"{name} #{self.count}")
                if self.kill_on_completed and name == "write_status" and "completed" in args[1:2]:
                    raise Killed("before 'completed'")
                return real(*args, **kwargs)

            monkeypatch.setattr(owner, name, hooked)

        wrap(results.RunDir, "append_jsonl")
        wrap(results.RunDir, "write_status")
        wrap(torch, "save")
        wrap(os, "replace")
        wrap(ckpt, "_prune")

    def arm(self, kill_at=None, *, completed=False, name=None):
        self.kill_at, self.count, self.kill_on_completed, self.kill_name = kill_at, 0, completed, name


@pytest.mark.slow
def test_kills_at_many_points_resume_bit_exact_without_duplicate_rows(reference, cache_dir, tmp_path, monkeypatch):
    cfg = small(cache_dir)
    inject = Injector(monkeypatch)
    inject.arm()
    # Count the injection points of a whole run once, then kill successive attempts at points spread over it;
    # every attempt resumes from what the previous one left.
    probe_root = tmp_path / "count"
    train_run(cfg, probe_root, handle_signals=False)
    total = inject.count
    points = sorted({max(1, round(total * f)) for f in (0.03, 0.11, 0.23, 0.37, 0.5, 0.64, 0.8, 0.93)})
    root, killed = tmp_path / "killed", []
    # The first attempt dies inside its first checkpoint's torch.save (by name: where the spread of points
    # lands depends on how many writes a run makes, and the later attempts resume near the end).
    inject.arm(name="save")
    with pytest.raises(Killed) as kill:
        train_run(cfg, root, handle_signals=False)
    killed.append(str(kill.value))
    for k in points:
        # Each attempt dies at its k-th write, or else just before 'completed' (after the final eval row).
        inject.arm(k, completed=True)
        with pytest.raises(Killed) as kill:
            train_run(cfg, root, handle_signals=False)
        killed.append(str(kill.value))
    inject.arm()
    result = train_run(cfg, root, handle_signals=False)
    assert result.state == "completed"
    names = {k.split(" #")[0] for k in killed}
    # killed while appending rows, inside checkpoint writes (torch.save / rename), and after the final eval
    assert {"append_jsonl", "save", "replace", "before 'completed'"} <= names, killed
    _assert_same_run(RunDir(result.run_dir), reference)


def test_kill_between_final_eval_and_completed_writes_no_row_twice(cache_dir, tmp_path, monkeypatch):
    cfg = small(cache_dir, **{"train.steps": 4, "eval.every": 3, "train.probe_every": 0})
    inject = Injector(monkeypatch)
    inject.arm(completed=True)
    with pytest.raises(Killed):
        train_run(cfg, tmp_path, handle_signals=False)
    rd = RunDir.for_config(cfg, tmp_path)
    assert [r["step"] for r in _rows(rd, "eval.jsonl")] == [3, 4]  # the final eval is in, 'completed' is not
    inject.arm()
    assert train_run(cfg, tmp_path, handle_signals=False).state == "completed"
    assert [r["step"] for r in _rows(rd, "eval.jsonl")] == [3, 4]
    assert [r["step"] for r in _rows(rd, "metrics.jsonl")] == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------------
# Resume verifies identity
# ---------------------------------------------------------------------------------------------------
def _interrupted(cfg, root, at=2) -> RunDir:
    result = train_run(cfg, root, stop=StopAfter(at), handle_signals=False)
    assert result.state == "interrupted" and result.step == at
    return RunDir(result.run_dir)


def _rewrite_manifest(folder: Path) -> None:
    manifest = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                for p in sorted(folder.iterdir()) if p.name != "MANIFEST.json"}
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))


def test_checkpoint_of_another_run_is_refused(cache_dir, tmp_path):
    cfg = small(cache_dir)
    other = small(cache_dir, **{"optim.lr": 1e-2})
    rd = _interrupted(cfg, tmp_path / "a")
    foreign = _interrupted(other, tmp_path / "b", at=4)
    shutil.copytree(foreign.checkpoints / "step_0000004", rd.checkpoints / "step_0000004")
    with pytest.raises(CheckpointError, match=f"belongs to run {run_id(other)}, not to this run"):
        train_run(cfg, tmp_path / "a", handle_signals=False)
    assert rd.read_status()["state"] == "failed"
    assert [r["step"] for r in _rows(rd, "metrics.jsonl")] == [1, 2]  # nothing was trained on top of it


def test_resume_refuses_changed_eval_tokens_and_records_a_cadence_change(cache_dir, tmp_path):
    cfg = small(cache_dir)
    rd = _interrupted(cfg, tmp_path)
    changed = small(cache_dir, **{"eval.tokens": 1024})
    assert run_id(changed) == run_id(cfg)  # same run directory: only the identity check stands in the way
    with pytest.raises(ConfigError, match=r"eval.tokens: 512 -> 1024"):
        train_run(changed, tmp_path, handle_signals=False)
    cadence = small(cache_dir, **{"eval.every": 2, "train.log_every": 2})
    assert train_run(cadence, tmp_path, handle_signals=False).state == "completed"
    assert rd.read_config().eval.every == 2  # config.yaml says what produced the rows from the resume on
    resumes = rd.read_run()["resumes"]
    assert resumes[-1]["changed"]["eval.every"] == [4, 2] and "eval.tokens" not in resumes[-1]["changed"]
    assert [r["step"] for r in _rows(rd, "eval.jsonl")] == [4, 6, 8]  # cadence 4 up to step 2, then 2


# ---------------------------------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------------------------------
class _Plant:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_planted_pickle_in_trainer_state_is_never_executed(cache_dir, tmp_path):
    cfg = small(cache_dir)
    rd = _interrupted(cfg, tmp_path / "r")
    latest = ckpt.latest_valid(rd.checkpoints)
    marker = tmp_path / "pwned"
    with open(latest / "trainer.pt", "wb") as fh:  # a real torch.save of an object with a malicious __reduce__
        torch.save({"rng": _Plant(marker)}, fh, pickle_module=pickle)
    _rewrite_manifest(latest)
    with pytest.raises(CheckpointError, match="cannot be read"):
        train_run(cfg, tmp_path / "r", handle_signals=False)
    assert not marker.exists()


def test_trainer_state_round_trips_through_tensors_and_json(tmp_path):
    import random

    import numpy as np

    state = {"rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
             "data": {"epoch": 1, "offset": 7, "order": [3, 1, 2]}}
    ckpt.write_trainer_state(tmp_path, state)
    back = ckpt.read_trainer_state(tmp_path)  # weights_only=True inside
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"])
    assert back["rng"]["python"] == state["rng"]["python"] and back["data"] == state["data"]
    np_a, np_b = back["rng"]["numpy"], state["rng"]["numpy"]
    assert np_a[0] == np_b[0] and np.array_equal(np_a[1], np_b[1]) and np_a[1].dtype == np_b[1].dtype
    assert np_a[2:] == np_b[2:]
    random.setstate(back["rng"]["python"])
    np.random.set_state(np_a)


# ---------------------------------------------------------------------------------------------------
# Disks, leftovers, Ctrl-C
# ---------------------------------------------------------------------------------------------------
def test_full_disk_ends_failed_with_one_line_and_leaves_no_temporary_folder(cache_dir, tmp_path, monkeypatch,
                                                                            capsys):
    cfg = small(cache_dir)
    real_save = torch.save

    def full(obj, f, *a, **kw):
        if "optim.pt" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(StorageError) as err:
        train_run(cfg, tmp_path, handle_signals=False)
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message and "optim.pt" in message
    rd = RunDir.for_config(cfg, tmp_path)
    status = rd.read_status()
    assert status["state"] == "failed" and "No space left" in status["error"]
    assert not [p for p in rd.checkpoints.iterdir() if p.name.startswith(".tmp-")]
    assert not (rd.path / lease_mod.LEASE).exists()


def test_read_only_results_root_ends_failed_with_one_line_although_the_lease_cannot_be_removed(cache_dir, tmp_path,
                                                                                             monkeypatch):
    """Found by the chaos soak (tests/test_chaos.py, seed 20, a read-only window): on a read-only results root the
    trainer's final removal of its lease raised from a `finally`, so the run ended with an OSError traceback
    instead of its one-line StorageError. The lease that stays behind reads 'owner gone' once the process is."""
    from study import results

    cfg = small(cache_dir)
    rd = RunDir.for_config(cfg, tmp_path)
    read_only = []
    real_append, real_unlink = results.RunDir.append_jsonl, Path.unlink

    def append(self, name, row):
        if name == "metrics.jsonl" and row["step"] >= 4:
            read_only.append(True)  # the filesystem turns read-only here, for every write below
        if read_only:
            raise OSError(errno.EROFS, "Read-only file system", str(self.path / name))
        real_append(self, name, row)

    def unlink(self, missing_ok=False):
        if read_only and self.name == lease_mod.LEASE:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(results.RunDir, "append_jsonl", append)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(StorageError) as err:
        train_run(cfg, tmp_path, handle_signals=False)
    assert "\n" not in str(err.value) and "Read-only file system" in str(err.value), err.value
    monkeypatch.undo()
    lease = lease_mod.read(rd.path)
    assert lease is not None and lease["pid"] == os.getpid()  # left behind by the refused removal
    assert lease_mod.owner_gone({**lease, "pid": 2**22 + 7}) is not None  # a dead pid: gone, so taken over


def test_a_run_stopped_between_log_steps_resumes_to_the_rows_of_an_uninterrupted_run(cache_dir, tmp_path):
    """Found by the chaos soak (tests/test_chaos.py, seed 20: `scancel --signal=TERM` stopped a log_every=5 run at
    step 9): the row of the step a stop lands on carried the alphas that only log-step rows carry, so the resumed
    run's metrics.jsonl differed from an uninterrupted run's in more than its timing fields."""
    cfg = small(cache_dir, **{"train.log_every": 4, "train.ckpt_every": 4})
    reference = train_run(cfg, tmp_path / "reference", handle_signals=False)
    stopped = train_run(cfg, tmp_path / "resumed", stop=StopAfter(3), handle_signals=False)
    assert stopped.state == "interrupted" and stopped.step == 3  # between log steps
    assert train_run(cfg, tmp_path / "resumed", handle_signals=False).state == "completed"

    def rows(run_dir):
        return [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s", "mfu")}
                for r in RunDir(run_dir).read_jsonl("metrics.jsonl")]

    assert [r["step"] for r in rows(stopped.run_dir)] == list(range(1, STEPS + 1))
    assert rows(stopped.run_dir) == rows(reference.run_dir)
    assert [r["step"] for r in rows(stopped.run_dir) if r["alpha"] is not None] == [4, 8]  # log steps only


def test_leftover_temporary_checkpoints_are_reclaimed_on_next_start(cache_dir, tmp_path):
    cfg = small(cache_dir)
    rd = _interrupted(cfg, tmp_path)
    junk = rd.checkpoints / ".tmp-step_0000004-99999"
    junk.mkdir()
    (junk / "model.pt").write_bytes(b"\0" * 1000)
    (rd.checkpoints / ".latest.tmp-99999").write_text("step_0000004\n")
    assert train_run(cfg, tmp_path, stop=StopAfter(1), handle_signals=False).state == "interrupted"
    assert not junk.exists() and not (rd.checkpoints / ".latest.tmp-99999").exists()


def test_ctrl_c_checkpoints_like_sigterm(cache_dir, tmp_path, monkeypatch):
    from study import results

    cfg = small(cache_dir)
    real = results.RunDir.append_jsonl

    def append(self, name, row):
        real(self, name, row)
        if name == "metrics.jsonl" and row["step"] == 4:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the terminal sends

    monkeypatch.setattr(results.RunDir, "append_jsonl", append)
    # As in a terminal: Python's own Ctrl-C handler (a shell's background job starts with SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = train_run(cfg, tmp_path)  # handle_signals=True, as `study train` runs it
        handler_after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    # Step 4's rows are written after its stop check: the run stops at the end of step 5 with a checkpoint off
    # the ckpt_every=2 cadence, i.e. one the signal asked for.
    assert result.state == "interrupted" and result.step == 5 and result.signal == signal.SIGINT
    rd = RunDir(result.run_dir)
    assert ckpt.latest_valid(rd.checkpoints).name == "step_0000005"
    assert rd.read_status()["state"] == "interrupted"
    assert handler_after is signal.default_int_handler  # restored


def test_results_root_that_is_a_file_is_one_line_exit_2(cache_dir, tmp_path, capsys):
    from study.cli import main

    out = tmp_path / "results"
    out.write_text("not a folder")
    rc = main(["train", "--set", "model.scale=tiny", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "is a file" in err and "--out" in err and "Traceback" not in err


def test_sharded_checkpoint_metadata_is_checked_before_dcp_unpickles_it(tmp_path):
    import warnings

    import torch.distributed.checkpoint as dcp

    from study.train import sharded

    model = torch.nn.Linear(4, 4)
    good = tmp_path / "good"
    with warnings.catch_warnings():  # one process, no process group: DCP says so
        warnings.simplefilter("ignore")
        dcp.save({"model": model.state_dict()}, checkpoint_id=str(good / sharded.DCP_DIR))
    sharded.check_metadata(good)  # real metadata passes
    loaded = sharded.load_full_model_state(good)
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    marker = tmp_path / "pwned"
    (bad / sharded.DCP_DIR / ".metadata").write_bytes(pickle.dumps(_Plant(marker)))
    with pytest.raises(CheckpointError, match="not safe to load"):
        sharded.load_full_model_state(bad)
    assert not marker.exists()


def test_malformed_rows_never_break_a_resume(tmp_path, caplog):
    rd = RunDir(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n[1, 2]\n{"step": "x"}\n'
                                            '{"step": 5, "loss": 1.0}\n{"step": 6, "lo')
    assert [r["step"] for r in rd.read_jsonl("metrics.jsonl")] == [1, "x", 5]  # the list and torn line skipped
    assert "line 2 is not a JSON object" in caplog.text
    rd.truncate_jsonl("metrics.jsonl", 3)  # what a resume from step 3 does
    assert rd.read_jsonl("metrics.jsonl") == [{"step": 1, "loss": 2.0}]
