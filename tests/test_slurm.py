"""A real single-node SLURM cluster (tests/slurm_cluster.py): one job array of 4 tiny CPU cells, one cell preempted
with SIGUSR2 and requeued, resumed bit-identically, and a resubmission that runs nothing twice; a cell stopped by
scancel and resubmitted; a token store prepared as a job array (every job COMPLETED), with a lost task and a rerun;
a request no node can hold refused before anything is queued.

The cluster is started once per session (installed with apt-get when missing) and its daemons are stopped by pid
at the end, also when a test fails; where it cannot be installed or started the tests skip with the reason
(printed to stderr and in pytest's skip summary), never pass silently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.test_dispatch import assert_identical, final_weights, grid_file, losses, read_status, run_reference

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
STEPS = 60
LRS = (1e-3, 2e-3, 3e-3, 4e-3)
SUBMIT_OPTS = ["--cluster", "slurm", "--cpus-per-task", "1", "--mem-gb", "1", "--time", "20",
               "--array-parallelism", "2"]


def _study(*args, timeout=120) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "study", *args], capture_output=True, text=True, cwd=REPO,
                         timeout=timeout, env=dict(os.environ))
    return res


def _sh(*cmd) -> str:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=True, timeout=30).stdout


def _logs(root: Path) -> str:
    parts = []
    for f in sorted((root / "slurmtest" / ".submitit").rglob("*.err"))[:8]:
        parts.append(f"--- {f}\n{f.read_text()[-1500:]}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def array_run(slurm_cluster, tmp_path_factory, cache_dir):
    """Submit 4 cells as one array; resubmit while they are live; preempt cell 0 once it has a checkpoint; train
    cell 0's reference in this process meanwhile; wait for everything to finish."""
    from study.grid import load_grid

    tmp = tmp_path_factory.mktemp("slurm")
    path = grid_file(tmp, cache_dir, name="slurmtest", lrs=LRS,
                     **{"train.steps": STEPS, "train.ckpt_every": 10, "train.log_every": 5, "eval.every": 0,
                        "eval.tokens": 2048})
    grid = load_grid(path)
    cells = grid.cells()
    root = tmp / "results"
    # Warm the shared tokenizer/token cache once, so that four jobs do not all train the BPE.
    from study.data import TrainStream, build_tokenizer

    cfg = cells[0].config
    TrainStream(cfg.data, build_tokenizer(cfg.data, vocab_size=cfg.model.vocab_size), seq_len=cfg.model.seq_len,
                seed=cfg.train.seed)

    t0 = time.monotonic()
    res = _study("submit", str(path), "--out", str(root), *SUBMIT_OPTS)
    assert res.returncode == 0, res.stderr + res.stdout
    first = res.stdout
    (record_path,) = (root / "slurmtest" / ".submissions").glob("*.json")
    record = json.loads(record_path.read_text())

    # Live jobs (pending or running) are never submitted again.
    res = _study("submit", str(path), "--out", str(root), *SUBMIT_OPTS)
    assert res.returncode == 0, res.stderr
    while_live = res.stdout

    run0 = cells[0].run_dir(root)
    deadline = time.monotonic() + 300
    while not (read_status(run0).get("state") == "running" and read_status(run0).get("checkpoint_step", 0) >= 10):
        if time.monotonic() > deadline:
            pytest.fail(f"cell 0 never reached a checkpoint: {read_status(run0)}\n{_logs(root)}")
        time.sleep(0.2)
    job0 = read_status(run0)["job_id"]
    # Signal the job step (where submitit's handler and the trainer live, as SLURM's own --signal=USR2@90 does).
    # `scancel --signal=USR2 A_0` would also work once, but Slurm 22.05 answers it with "Job can not be altered
    # now" while sibling array tasks are pending, and scancel then re-sends the signal every few seconds for a
    # minute, which would preempt the resumed task again.
    subprocess.run(["scancel", "--signal=USR2", f"{job0}.0"], check=True, timeout=30)
    preempted_at = time.monotonic()

    ref = run_reference(cells[0].config, tmp / "reference", threads=1)  # the job's cpus_per_task=1 -> 1 thread

    deadline = time.monotonic() + 420
    while True:
        states = [read_status(c.run_dir(root)).get("state") for c in cells]
        queue = _sh("squeue", "-h", "-o", "%i %T").strip()
        if all(s == "completed" for s in states) and not queue:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"cells did not finish: {states}; squeue: {queue}\n{_logs(root)}")
        time.sleep(1)
    elapsed = time.monotonic() - t0
    print(f"\nslurm array: 4 cells incl. one preemption finished in {elapsed:.0f}s "
          f"(requeue + resume {time.monotonic() - preempted_at:.0f}s after the signal)", file=sys.stderr)
    return {"path": path, "grid": grid, "cells": cells, "root": root, "first": first, "while_live": while_live,
            "record": record, "job0": job0, "reference": Path(ref.run_dir)}


def test_one_array_of_four_tasks(array_run):
    record, cells = array_run["record"], array_run["cells"]
    array_id = record["array_job_id"]
    assert array_id and array_id.isdigit(), record
    assert f"submitted 4 job(s) as array {array_id}" in array_run["first"]
    assert sorted(record["jobs"].values()) == [f"{array_id}_{i}" for i in range(4)]
    assert set(record["jobs"]) == {c.run_id for c in cells}
    rows = [ln.split("|") for ln in _sh("sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", array_id).split()]
    assert sorted(r[0] for r in rows) == [f"{array_id}_{i}" for i in range(4)], rows
    assert all(r[1] == "COMPLETED" for r in rows), rows
    for _i, c in enumerate(cells):  # each run's provenance names its array task
        prov = json.loads((c.run_dir(array_run["root"]) / "run.json").read_text())["provenance"]
        assert prov["slurm_array_job_id"] == array_id
        assert read_status(c.run_dir(array_run["root"]))["job_id"] == record["jobs"][c.run_id]


def test_live_jobs_are_not_submitted_twice(array_run):
    out = array_run["while_live"]
    assert "0 to submit, 4 skipped" in out and "nothing to submit (0 new jobs)" in out, out
    assert "queued as job" in out or "running as job" in out


def test_every_cell_completed_with_results_on_disk(array_run):
    root = array_run["root"]
    for c in array_run["cells"]:
        run = c.run_dir(root)
        st = read_status(run)
        assert st["state"] == "completed" and st["step"] == STEPS, st
        assert [s for s, _ in losses(run)] == list(range(1, STEPS + 1))  # every step, none twice
        assert (run / "eval.jsonl").read_text().strip()
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "latest").is_file()
    res = _study("status", str(array_run["path"]), "--out", str(root))
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "4 runs: 4 completed", res.stdout


def test_preempted_cell_was_requeued_and_resumed_bit_identical(array_run):
    root, cell = array_run["root"], array_run["cells"][0]
    job0 = array_run["job0"]
    run = cell.run_dir(root)
    history = _sh("sacct", "-D", "-X", "-n", "-P", "-o", "JobID,State", "-j", job0)
    assert "REQUEUED" in history and "COMPLETED" in history, history  # the same task ran twice
    resumes = json.loads((run / "run.json").read_text()).get("resumes", [])
    assert len(resumes) == 1 and 10 <= resumes[0]["step"] < STEPS, resumes
    assert resumes[0]["provenance"]["slurm_array_task_id"] == "0"
    err = "".join(p.read_text() for p in (root / "slurmtest" / ".submitit").rglob(f"{job0}_0_log.err"))
    # our own line (submitit's INFO lines are off in a job log): the signal SLURM sent, and the requeue
    assert "preempted or timed out (SIGUSR2): requeueing to resume from the checkpoint" in err
    assert f"resuming {run.name} from checkpoint step {resumes[0]['step']}" in err
    assert_identical(final_weights(run), final_weights(array_run["reference"]))
    assert losses(run) == losses(array_run["reference"])


def test_resubmitting_the_finished_grid_runs_nothing(array_run):
    root, path = array_run["root"], array_run["path"]
    metrics = {c.run_id: (c.run_dir(root) / "metrics.jsonl").read_bytes() for c in array_run["cells"]}
    jobs_before = _sh("sacct", "-X", "-n", "-P", "-o", "JobID")
    res = _study("submit", str(path), "--out", str(root), *SUBMIT_OPTS)
    assert res.returncode == 0, res.stderr
    assert "0 to submit, 4 skipped" in res.stdout and "nothing to submit (0 new jobs)" in res.stdout
    assert res.stdout.count("completed at step 60") == 4
    time.sleep(3)  # anything submitted would be in the queue by now
    assert _sh("squeue", "-h", "-o", "%i").strip() == ""
    assert _sh("sacct", "-X", "-n", "-P", "-o", "JobID") == jobs_before
    assert len(list((root / "slurmtest" / ".submissions").glob("*.json"))) == 1
    assert metrics == {c.run_id: (c.run_dir(root) / "metrics.jsonl").read_bytes() for c in array_run["cells"]}


def _wait(predicate, what: str, root: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{_logs(root)}")
        time.sleep(0.2)


def test_hard_killed_and_queue_cancelled_cells_are_resubmitted_by_a_plain_submit(slurm_cluster, tmp_path,
                                                                                 cache_dir):
    """A task killed without the trainer recording anything (SIGKILL, as the OOM killer or a node failure does)
    reads 'interrupted' and a plain `study submit` resumes it; a task cancelled while still queued reads
    'pending' and is submitted again. Neither needs --rerun-failed."""
    from study.grid import load_grid

    path = grid_file(tmp_path, cache_dir, name="slurmtest", lrs=(1e-3,),
                     **{"train.steps": STEPS, "train.ckpt_every": 10, "train.log_every": 5, "eval.every": 0,
                        "eval.tokens": 2048})
    (cell,) = load_grid(path).cells()
    root, run = tmp_path / "results", cell.run_dir(tmp_path / "results")
    res = _study("submit", str(path), "--out", str(root), *SUBMIT_OPTS)
    assert res.returncode == 0, res.stderr + res.stdout
    _wait(lambda: read_status(run).get("checkpoint_step", 0) >= 10, "a first checkpoint", root)
    job = read_status(run)["job_id"]
    subprocess.run(["scancel", "--signal=KILL", f"{job}.0"], check=True, timeout=30)  # the trainer's step
    _wait(lambda: not _sh("squeue", "-h", "-j", str(job).split("_")[0]).strip(), "the job to end", root)
    def state():
        (row,) = json.loads(_study("status", str(path), "--out", str(root), "--json").stdout)["runs"]
        return row

    # slurmdbd records the job's end a moment after squeue forgets it: poll, as a user re-running status would.
    _wait(lambda: state()["state"] == "interrupted", "status to read the killed cell as interrupted", root,
          timeout=60)
    res = _study("submit", str(path), "--out", str(root), *SUBMIT_OPTS)  # no --rerun-failed
    assert res.returncode == 0 and "1 to submit" in res.stdout, res.stdout + res.stderr
    _wait(lambda: read_status(run).get("state") == "completed", "the resubmitted cell", root, timeout=420)
    assert [s for s, _ in losses(run)] == list(range(1, STEPS + 1))  # one row per step, none twice

    # Cancelled while queued: held back by --begin, then scancel'ed before it ever started.
    (tmp_path / "q").mkdir()
    queued = grid_file(tmp_path / "q", cache_dir, name="slurmtest-q", lrs=(2e-3,), **{"train.steps": 5})
    profile = tmp_path / "later.yaml"
    profile.write_text("additional: {begin: now+1hour}\n")
    res = _study("submit", str(queued), "--out", str(root), "--profile", str(profile), *SUBMIT_OPTS)
    assert res.returncode == 0, res.stderr + res.stdout
    (qcell,) = load_grid(queued).cells()
    qjob = read_status(qcell.run_dir(root))["job_id"]
    subprocess.run(["scancel", str(qjob)], check=True, timeout=30)
    _wait(lambda: "CANCELLED" in _sh("sacct", "-X", "-n", "-o", "State", "-j", str(qjob).split("_")[0]),
          "sacct to record the cancellation", root, timeout=60)
    (row,) = json.loads(_study("status", str(queued), "--out", str(root), "--json").stdout)["runs"]
    assert row["state"] == "pending" and "before the run started" in row["error"], row
    res = _study("submit", str(queued), "--out", str(root), "--dry-run", *SUBMIT_OPTS)
    assert "1 to submit" in res.stdout, res.stdout


# ---------------------------------------------------------------------------------------------------------------
# A token store's preparation as a job array (study.dispatch.prepare), and what the cluster records of it
# ---------------------------------------------------------------------------------------------------------------
PREPARE_OPTS = ["--cluster", "slurm", "--cpus-per-task", "1", "--mem-gb", "1", "--time", "10", "--workers", "1",
                "--max-tokens", "0"]


def _sacct(*ids: str) -> dict[str, str]:
    """{job id: state} of these jobs (array tasks expanded), as the accounting database has them."""
    out = _sh("sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(i.split("_")[0] for i in ids))
    return {row.split("|")[0]: row.split("|")[1].split()[0] for row in out.split() if "|" in row}


def _queue_empty() -> bool:
    return _sh("squeue", "-h", "-o", "%i").strip() == ""


def _prepare_config(tmp: Path, cache_dir, files: int) -> tuple[str, Path]:
    from tests.test_prepare_jobs import _config, _source

    source = _source(tmp / "source", files)
    return _config(tmp, cache_dir, source, tmp / "store"), tmp / "store"


def _local_copy(tmp: Path, config: str) -> dict:
    """The store a local `study data prepare` builds from the same source (another store_dir): its shard files."""
    from tests.test_prepare_jobs import _files

    raw = yaml.safe_load(Path(config).read_text())
    raw["data"]["store_dir"] = str(tmp / "local")
    (tmp / "local.yaml").write_text(yaml.safe_dump(raw))
    res = _study("data", "prepare", str(tmp / "local.yaml"), "--workers", "1", "--max-tokens", "0")
    assert res.returncode == 0, res.stderr
    return _files(tmp / "local")


def test_a_cluster_preparation_ends_with_every_job_completed_and_the_local_store(slurm_cluster, tmp_path,
                                                                                cache_dir):
    from tests.test_prepare_jobs import _files

    config, store = _prepare_config(tmp_path, cache_dir, 3)
    res = _study("data", "prepare", config, "--tasks", "3", *PREPARE_OPTS)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "submitted array job" in res.stdout and "(3 tasks, 5 units) and finalize job" in res.stdout, res.stdout
    _wait(lambda: (store / "manifest.json").exists() and _queue_empty(), "the preparation", tmp_path, timeout=300)
    prepared = json.loads((store / "manifest.json").read_text())["prepared"]
    array, final = prepared["jobs"][0].split("_")[0], prepared["jobs"][-1]
    assert prepared["jobs"] == [f"{array}_{i}" for i in range(3)] + [final] and prepared["cluster"] == "slurm"
    _wait(lambda: set(_sacct(array, final).values()) == {"COMPLETED"}, "sacct to record every job COMPLETED",
          tmp_path, timeout=60)
    assert sorted(_sacct(array, final)) == sorted(prepared["jobs"])
    assert sorted(p.name for p in store.iterdir()) == ["heldout", "manifest.json", "spec.json", "tokenizer", "train",
                                                      "verified.json"]  # the stamps of the hashed shards
    scripts = "".join(p.read_text() for p in (tmp_path / "store.submitit").glob("*.sh"))
    assert "#SBATCH --no-requeue" in scripts and "--signal" not in scripts and "--requeue\n" not in scripts
    assert _files(store) == _local_copy(tmp_path, config)


def test_a_lost_task_strands_the_finalize_job_and_a_rerun_submits_only_its_units(slurm_cluster, tmp_path,
                                                                                cache_dir):
    """Task 0 of 2 is cancelled while it tokenizes (its SIGTERM ends it at once, its finished units kept); task 1
    finishes; the finalize job can never start (afterok). `study data info` says so; a rerun cancels the stranded
    finalize job, submits task 0's unfinished units only, and ends complete with nothing left queued."""
    from tests.test_prepare_jobs import _files

    config, store = _prepare_config(tmp_path, cache_dir, 150)  # 60,000 documents: seconds per task
    profile = tmp_path / "one-at-a-time.yaml"
    profile.write_text("array_parallelism: 1\n")
    res = _study("data", "prepare", config, "--tasks", "2", "--profile", str(profile), *PREPARE_OPTS)
    assert res.returncode == 0, res.stderr + res.stdout
    (record,) = json.loads((Path(f"{store}.partial") / "jobs.json").read_text())["submissions"]
    (task0, task1), final = sorted(record["tasks"]), record["finalize"]
    log0 = tmp_path / "store.submitit" / f"{task0}_0_log.err"
    _wait(lambda: log0.is_file() and "units to do" in log0.read_text(), "task 0 to start tokenizing", tmp_path)
    subprocess.run(["scancel", task0], check=True, timeout=30)
    _wait(lambda: _sacct(task0, task1).get(task1) == "COMPLETED", "task 1 to finish", tmp_path, timeout=300)
    assert _sacct(task0).get(task0) == "CANCELLED" and "stopped by SIGTERM" in log0.read_text()
    reason = _sh("squeue", "-h", "-o", "%T %r", "-j", final).strip()
    assert reason == "PENDING DependencyNeverSatisfied", reason

    res = _study("data", "info", config, "--json")
    info = json.loads(res.stdout)
    assert not info["prepared"] and info["stranded"] == final and 0 < info["units_to_do"] < info["units"], info
    left = info["units_to_do"]
    line = _study("data", "info", config).stdout
    assert "the finalize job is stranded" in line and f"task {task0} ended with units undone" in line, line

    res = _study("data", "prepare", config, "--tasks", "4", *PREPARE_OPTS)
    assert res.returncode == 0, res.stderr + res.stdout
    assert f"cancelled finalize job {final}: task {task0} (CANCELLED) ended with units undone" in res.stdout
    assert f" of {info['units']} units) and finalize job" in res.stdout and f"({min(4, left)} task" in res.stdout
    (_, again) = json.loads((Path(f"{store}.partial") / "jobs.json").read_text())["submissions"]
    rerun = [u for share in again["tasks"].values() for u in share]
    assert len(rerun) == left and set(rerun) <= set(record["tasks"][task0])  # task 0's unfinished units only
    _wait(lambda: (store / "manifest.json").exists() and _queue_empty(), "the rerun", tmp_path, timeout=300)
    assert _sacct(final)[final] == "CANCELLED"
    new = [*again["tasks"], again["finalize"]]
    _wait(lambda: set(_sacct(*new).values()) == {"COMPLETED"}, "the rerun's jobs COMPLETED", tmp_path, timeout=60)
    assert _files(store) == _local_copy(tmp_path, config)
    assert "held-out tokens" in _study("data", "info", config).stdout


def test_a_request_larger_than_any_node_is_refused_before_anything_is_queued(slurm_cluster, tmp_path, cache_dir):
    path = grid_file(tmp_path, cache_dir, name="slurmtest", lrs=(1e-3,))
    cpus = max(int(c) for c in _sh("sinfo", "-h", "-N", "-o", "%c").split())
    jobs_before = _sh("sacct", "-X", "-n", "-P", "-o", "JobID")
    res = _study("submit", str(path), "--out", str(tmp_path / "results"), "--cluster", "slurm", "--cpus-per-task",
                 str(cpus + 1), "--time", "5")
    assert res.returncode == 2 and res.stdout == "", res.stdout
    assert res.stderr.strip() == (f"study: error: key '--cpus-per-task': {cpus + 1} CPUs per task, but no node of "
                                  f"partition 'debug' has more than {cpus} CPUs: the job would wait forever; give "
                                  f"--cpus-per-task {cpus} or less")
    config, store = _prepare_config(tmp_path, cache_dir, 1)
    res = _study("data", "prepare", config, *PREPARE_OPTS, "--cpus-per-task", str(cpus + 1))
    assert res.returncode == 2 and "key '--cpus-per-task'" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not Path(f"{store}.partial").exists()  # refused before anything was written
    time.sleep(2)
    assert _queue_empty() and _sh("sacct", "-X", "-n", "-P", "-o", "JobID") == jobs_before
    assert not (tmp_path / "results" / "slurmtest" / ".submitit").exists()


def test_a_cell_stopped_by_scancel_resumes_to_the_metrics_of_an_uninterrupted_run(slurm_cluster, tmp_path,
                                                                                 cache_dir):
    """`scancel` sends SIGTERM: the trainer saves at the next step (between log steps here) and ends
    'interrupted'; `study submit` resumes it; its metrics.jsonl equals an uninterrupted run's in every field but
    timing. While it runs, `study status` names its owner by the array task's id."""
    from study.grid import load_grid
    from study.results import RunDir

    path = grid_file(tmp_path, cache_dir, name="slurmtest", lrs=(1e-3,),
                     **{"train.steps": STEPS, "train.ckpt_every": 10, "train.log_every": 5, "eval.every": 0,
                        "eval.tokens": 2048})
    (cell,) = load_grid(path).cells()
    root, run = tmp_path / "results", cell.run_dir(tmp_path / "results")
    res = _study("submit", str(path), "--out", str(root), *SUBMIT_OPTS)
    assert res.returncode == 0, res.stderr + res.stdout
    _wait(lambda: read_status(run).get("state") == "running" and read_status(run).get("checkpoint_step", 0) >= 10,
          "a first checkpoint", root)
    job = read_status(run)["job_id"]
    status = _study("status", str(path), "--out", str(root)).stdout
    assert f"SLURM job {job}" in status, status  # the array task's id, as squeue and status.json name it
    subprocess.run(["scancel", job], check=True, timeout=30)
    _wait(lambda: read_status(run).get("state") == "interrupted" and _queue_empty(), "the stop", root, timeout=120)
    stopped_at = read_status(run)["step"]
    assert stopped_at < STEPS and read_status(run)["checkpoint_step"] == stopped_at
    res = _study("submit", str(path), "--out", str(root), *SUBMIT_OPTS)
    assert res.returncode == 0 and "1 to submit" in res.stdout, res.stdout + res.stderr
    ref = run_reference(cell.config, tmp_path / "reference", threads=1)
    _wait(lambda: read_status(run).get("state") == "completed", "the resumed cell", root, timeout=420)

    def rows(run_dir):
        return [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s", "mfu")}
                for r in RunDir(run_dir).read_jsonl("metrics.jsonl")]

    resumes = json.loads((run / "run.json").read_text()).get("resumes", [])
    assert [r["step"] for r in resumes] == [stopped_at]
    assert rows(run) == rows(ref.run_dir), f"stopped at step {stopped_at}"
