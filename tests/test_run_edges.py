"""The sharp edges of runs and their checkpoints (issue 20): a checkpoint manifest of the wrong JSON shape falls
back like any other corruption, things of the wrong file type where checkpoints go, a disk that fills inside
torch.save, checkpoints that verify but cannot be loaded (resume and `study eval`), a deleted config.yaml, a run
whose owner died while its job lives, duplicate eval rows. Each is one line with its code, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch

from study import status
from study.cli import main
from study.dispatch import decide
from study.errors import CheckpointError, StorageError
from study.results import RunDir
from study.train import checkpoint as ckpt
from study.train import runtime, train_run
from tests.test_lease import _dead_pid, _write_lease
from tests.test_reliability import _interrupted, _rewrite_manifest, small


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, cache_dir):
    """A run stopped at step 4 with checkpoints at steps 2 and 4 (a copy per test: they damage it)."""
    root = tmp_path_factory.mktemp("interrupted")
    rd = _interrupted(small(cache_dir), root, at=4)
    assert [p.name for p in ckpt.list_checkpoints(rd.checkpoints)] == ["step_0000002", "step_0000004"]
    return root, rd.path.relative_to(root)


@pytest.fixture
def run(interrupted, tmp_path, cache_dir):
    root, rel = interrupted
    shutil.copytree(root, tmp_path / "root")
    return small(cache_dir), tmp_path / "root", RunDir(tmp_path / "root" / rel)


def _config_file(cfg, tmp_path):
    from study import config as config_mod

    path = tmp_path / "cfg.yaml"
    path.write_text(config_mod.dump_yaml(cfg))
    return str(path)


@pytest.mark.parametrize("manifest", ["[1, 2]", '{"model.pt": 5}', "{}", '{"../../model.pt": {"bytes": 1, '
                                                                        '"sha256": "00"}}', "7"])
def test_a_manifest_of_the_wrong_shape_falls_back_to_the_earlier_checkpoint(run, manifest, caplog):
    cfg, root, rd = run
    (rd.checkpoints / "step_0000004" / "MANIFEST.json").write_text(manifest)
    assert "MANIFEST.json" in ckpt.verify(rd.checkpoints / "step_0000004")
    result = train_run(cfg, root, handle_signals=False)
    assert result.state == "completed"
    assert rd.read_run()["resumes"][-1]["step"] == 2  # resumed from the earlier checkpoint
    assert "falling back to an earlier one" in caplog.text
    assert [r["step"] for r in rd.read_jsonl("metrics.jsonl")] == list(range(1, 9))


def test_checkpoints_that_is_a_file_is_one_line_before_any_training(run, tmp_path, capsys):
    cfg, root, rd = run
    shutil.rmtree(rd.checkpoints)
    rd.checkpoints.write_text("not a folder")
    rows = rd.read_jsonl("metrics.jsonl")
    assert main(["train", _config_file(cfg, tmp_path), "--out", str(root)]) == CheckpointError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoints is a file, not the checkpoints folder; move it away" in err
    assert rd.read_jsonl("metrics.jsonl") == rows  # the run's rows were not truncated by a fresh start
    assert rd.checkpoints.read_text() == "not a folder"


def test_a_folder_where_the_latest_pointer_goes_is_one_line_before_any_training(run, tmp_path, capsys):
    cfg, root, rd = run
    (rd.checkpoints / "latest").unlink()
    (rd.checkpoints / "latest").mkdir()
    assert main(["train", _config_file(cfg, tmp_path), "--out", str(root)]) == CheckpointError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "latest is a folder, not the pointer file" in err and "Traceback" not in err


def test_a_folder_in_the_way_of_a_write_mid_run_is_a_storage_error_line():
    exc = IsADirectoryError(errno.EISDIR, "Is a directory", "/r/checkpoints/latest")
    error = runtime.storage_error(exc)
    assert isinstance(error, StorageError) and "cannot write /r/checkpoints/latest: Is a directory" in str(error)
    assert "move it away" in str(error)


class _FullDisk:
    """A file on a disk that fills after `room` bytes: its write raises ENOSPC, as the OS does."""

    def __init__(self, fh, room: int):
        self.fh, self.room = fh, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)


def test_a_disk_that_fills_inside_torch_save_ends_failed_with_the_storage_line(cache_dir, tmp_path, monkeypatch):
    cfg = small(cache_dir)
    real_init = ckpt._HashingWriter.__init__

    def init(self, fh, name):
        real_init(self, _FullDisk(fh, 4096) if name.endswith("optim.pt") else fh, name)

    monkeypatch.setattr(ckpt._HashingWriter, "__init__", init)
    with pytest.raises(StorageError) as err:
        train_run(cfg, tmp_path, handle_signals=False)
    message = str(err.value)
    assert isinstance(err.value.__cause__, RuntimeError)  # what torch.save raised: no errno of its own
    assert "\n" not in message and "No space left on device" in message and "optim.pt" in message
    rd = RunDir.for_config(cfg, tmp_path)
    assert rd.read_status()["state"] == "failed" and "No space left" in rd.read_status()["error"]
    assert not [p for p in rd.checkpoints.iterdir() if p.name.startswith(".tmp-")]


def test_torch_save_into_a_full_disk_raises_a_runtime_error_the_storage_line_names():
    """What the test above relies on: torch.save turns the OSError into a RuntimeError."""
    with open(os.devnull, "wb") as fh, pytest.raises(RuntimeError) as err:
        torch.save({"w": torch.zeros(10_000)}, ckpt._HashingWriter(_FullDisk(fh, 1000), "x.pt"))
    error = runtime.storage_error(err.value)
    assert isinstance(error, StorageError) and "cannot write x.pt: No space left on device" in str(error)


def _damage(folder, how: str) -> None:
    if how == "shapes":
        state = torch.load(folder / "model.pt", weights_only=True)
        state[next(iter(state))] = torch.zeros(3)
        torch.save(state, folder / "model.pt")
    elif how == "not-a-dict":
        torch.save([1, 2], folder / "model.pt")
    elif how == "garbage":
        (folder / "model.pt").write_bytes(b"x" * 100)
    elif how == "state":
        (folder / "state.json").write_text("[4]")
    _rewrite_manifest(folder)  # it verifies: only loading it can tell


@pytest.mark.parametrize("how, says", [
    ("shapes", "does not fit this run's model: RuntimeError: Error(s) in loading state_dict"),
    ("not-a-dict", "does not fit this run's model: TypeError"),
    ("garbage", "cannot be read: UnpicklingError: Weights only load failed."),
    ("state", "cannot be read: state.json is not an object with an integer step and tokens"),
])
def test_a_checkpoint_that_verifies_but_cannot_be_loaded_is_one_line_in_eval_and_resume(run, tmp_path, how, says,
                                                                                         capsys):
    cfg, root, rd = run
    _damage(rd.checkpoints / "step_0000004", how)
    assert main(["eval", str(rd.path), "--tasks", "none"]) == CheckpointError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "step_0000004" in err
    assert main(["train", _config_file(cfg, tmp_path), "--out", str(root)]) == CheckpointError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err


def test_a_deleted_config_yaml_is_written_again_on_resume(run):
    cfg, root, rd = run
    (rd.path / "config.yaml").unlink()
    assert train_run(cfg, root, handle_signals=False).state == "completed"
    assert rd.read_config() == cfg


def test_a_run_whose_owner_died_reads_interrupted_while_its_job_still_runs(tmp_path):
    """Seen on a GPU: a run killed while writing its final checkpoint, its job still alive (another rank, or a
    requeued start not yet training): status said 'running' until something restarted it."""
    path = tmp_path / "run"
    RunDir(path).write_status("running", 8, checkpoint_step=6)
    RunDir(path).record_job("77", "slurm", submitted="2026-12-05T00:00:00+00:00")
    _write_lease(path, pid=_dead_pid(), pid_start=None)
    run = status.refine(status.read_run_state(path), "RUNNING")
    assert run.state == "interrupted" and "owner gone" in run.error and "job 77 is still RUNNING" in run.error
    assert decide(run) == (False, "interrupted, but its job 77 is still RUNNING: never submitted twice")
    _write_lease(path)  # alive (this process): a running run indeed
    run = status.refine(status.read_run_state(path), "RUNNING")
    assert run.state == "running" and decide(run)[0] is False
    _write_lease(path, pid=_dead_pid(), pid_start=None)
    run = status.refine(status.read_run_state(path), "COMPLETED")  # the job ended too: resubmit
    assert run.state == "interrupted" and decide(run)[0] is True


def test_collect_drops_duplicate_eval_rows_and_counts_them_as_problems(tmp_path):
    from study.collect import collect
    from tests.synthetic_runs import write_run

    path = write_run(tmp_path, grid="g", method="pre-ln", scale="130m")
    evals = path / "eval.jsonl"
    rows = [json.loads(line) for line in evals.read_text().splitlines()]
    again = dict(rows[-1], eval_s=1.0)  # the same measurement appended twice (a copied file, a rerun by hand)
    other = dict(rows[-1], tokens=rows[-1].get("tokens", 0) + 1, ppl=1.0)  # a different measurement: kept
    with open(evals, "a") as fh:
        fh.write(json.dumps(again) + "\n" + json.dumps(rows[-1]) + "\n" + json.dumps(other) + "\n")
    col = collect(tmp_path)
    assert len(col.evals) == len(rows) + 1
    problems = col.problems[col.problems["file"] == "eval.jsonl"]["problem"].tolist()
    assert problems == ["2 duplicate rows (same step, dataset, split, source, tokens, seq_len); kept the last of "
                        "each"]
    assert int(col.runs["n_problems"].iloc[0]) == 1 and int(col.runs["n_evals"].iloc[0]) == len(rows) + 1
