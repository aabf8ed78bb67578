"""Submission options that decide whether a cluster job can do its work (CPUs, requeue, checkpoint lead), and a
failed submission that leaves nothing behind. No scheduler is needed: these are the sbatch parameters and the
files a submission writes."""

from __future__ import annotations

import pytest

from study import dispatch
from study.cli import main
from study.errors import StudyError
from tests.test_dispatch import grid_file


def test_cpus_per_task_and_requeue_are_set_per_task_kind_and_overridable():
    gpu = dispatch.resolve_options({"gpus_per_node": 4}, None, None)
    cpu = dispatch.resolve_options({}, None, None)
    assert gpu["cpus_per_task"] == dispatch.CPUS_PER_GPU_TASK and gpu["sources"]["cpus_per_task"] == "default"
    assert cpu["cpus_per_task"] == dispatch.CPUS_PER_CPU_TASK
    params = dispatch.executor_parameters(gpu, name="g")
    assert params["cpus_per_task"] == dispatch.CPUS_PER_GPU_TASK  # SLURM would give a GPU task one CPU
    assert params["slurm_additional_parameters"] == {"requeue": True}
    grid = dispatch.resolve_options({}, None, {"cpus_per_task": 16, "additional": {"mail-type": "END"}})
    assert dispatch.executor_parameters(grid, name="g")["cpus_per_task"] == 16
    off = dispatch.resolve_options({"requeue": False, "cpus_per_task": 2}, None, grid={"additional": {"requeue": True}})
    params = dispatch.executor_parameters(off, name="g")
    assert params["slurm_additional_parameters"] == {"no-requeue": True} and params["cpus_per_task"] == 2


def test_signal_lead_is_a_cli_option_with_a_warning_when_time_is_short(tmp_path, cache_dir, capsys):
    grid = grid_file(tmp_path, cache_dir)
    rc = main(["submit", str(grid), "--cluster", "slurm", "--dry-run", "--out", str(tmp_path / "r"),
               "--time", "20", "--signal-delay-s", "600", "--no-requeue"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "slurm_signal_delay_s=600" in out and "'no-requeue': True" in out
    assert "warning: --time 20 min with a 600 s checkpoint lead" in out
    assert main(["submit", str(grid), "--cluster", "slurm", "--dry-run", "--out", str(tmp_path / "r"),
                 "--time", "1"]) == 0  # the default 90 s lead is longer than the job
    assert "warning: --signal-delay-s 90 is not shorter than --time 1 min" in capsys.readouterr().out
    assert main(["submit", str(grid), "--cluster", "slurm", "--dry-run", "--out", str(tmp_path / "r"),
                 "--time", "600"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_failed_submission_removes_its_pickles(tmp_path, cache_dir, monkeypatch):
    from submitit.local.local import LocalExecutor

    from study.grid import load_grid

    def refuse(self, command):
        raise RuntimeError("sbatch: error: Invalid partition name specified")

    monkeypatch.setattr(LocalExecutor, "_submit_command", refuse)
    grid = load_grid(grid_file(tmp_path, cache_dir))
    root = tmp_path / "results"
    logs = root / grid.name / ".submitit"
    (logs / "earlier").mkdir(parents=True)
    (logs / "earlier" / "keep.out").write_text("an earlier job's log")
    with pytest.raises(StudyError, match="Invalid partition name.*nothing was submitted"):
        dispatch.submit_grid(grid, root=root, cluster="local", options=dispatch.resolve_options({"time": 5}),
                           out=lambda *_: None)
    left = sorted(p.relative_to(logs).as_posix() for p in logs.rglob("*"))
    assert left == ["earlier", "earlier/keep.out"]  # no .pkl of the refused submission, an earlier log kept


def test_submit_refuses_a_missing_token_store_only_for_cells_it_would_submit(tmp_path, cache_dir, capsys):
    """Compute nodes read a prepared store: submitting cells whose store is missing is refused (exit 2, naming
    both ways to prepare it) before the plan is printed and before any job exists; a dry run prints the plan and
    a note; a finished cell's missing store does not block anything."""
    from study.grid import load_grid
    from tests.test_dispatch import write_status

    grid = grid_file(tmp_path, cache_dir, lrs=(1e-3,), data__store=True, data__store_dir=str(tmp_path / "none"))
    out = tmp_path / "r"
    cmd = ["submit", str(grid), "--cluster", "debug", "--out", str(out)]
    assert main(cmd) == 2
    printed = capsys.readouterr()
    assert printed.out == ""  # no plan, no "submitting ..." before the refusal
    (line,) = printed.err.strip().splitlines()
    assert f"token store {tmp_path / 'none'} of the runs to submit is not prepared" in line
    assert f"`study data prepare {grid} --workers N`" in line and f"`study data prepare {grid} --cluster debug`" in line
    assert not (out / "lt" / ".submitit").exists()  # nothing was submitted
    assert main([*cmd, "--dry-run"]) == 0  # a dry run lists, and notes the store
    printed = capsys.readouterr().out
    assert "would submit 1 run(s)" in printed and "note: token store" in printed
    (cell,) = load_grid(grid).cells()
    write_status(cell.run_dir(out), state="completed", step=1)
    capsys.readouterr()
    assert main(cmd) == 0 and "nothing to submit" in capsys.readouterr().out


def test_local_cluster_with_gpus_checks_the_machine_and_one_run_at_a_time(tmp_path, cache_dir, monkeypatch):
    """--cluster local hands a job the first GPUs this process sees (CUDA_VISIBLE_DEVICES respected); more than
    the machine shows is refused, and so are several runs at once (each would take the same GPUs)."""
    import torch

    from study.errors import ConfigError
    from study.grid import load_grid

    options = dispatch.resolve_options({"gpus_per_node": 2, "time": 5})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="--gpus-per-node 2 but this machine shows 1 GPU"):
        dispatch.make_executor("local", tmp_path / "logs", options, name="g")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    executor = dispatch.make_executor("local", tmp_path / "logs", options, name="g")
    assert executor._executor.parameters["visible_gpus"] == [4, 5, 6, 7]
    grid = load_grid(grid_file(tmp_path, cache_dir, lrs=(1e-3, 2e-3)))
    with pytest.raises(ConfigError, match="each would train on the same 2 GPU"):
        dispatch.submit_grid(grid, root=tmp_path / "r", cluster="local", options=options, dry_run=True,
                           out=lambda *_: None)
