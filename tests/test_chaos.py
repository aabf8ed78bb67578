"""The chaos soak on the real SLURM cluster (tests/chaos.py): a grid of tiny cells submitted once as one job
array, every fault of tests/chaos.FAULTS injected at seeded random moments while it runs, the grid resubmitted as
a user would until it is done; then every cell must be completed and equal, row for row and weight for weight, to
an uninterrupted run of its config trained in this process, with no duplicate row and nothing left behind.

    pytest tests/test_chaos.py                        # the short soak (in the normal suite, `slurm` marker)
    pytest tests/test_chaos.py -m chaos               # the long soak: twice the cells, every fault three times
    pytest tests/test_chaos.py --chaos-seed 7         # another sequence of faults

A failure names its seed and prints the event log (every fault and resubmission with its monotonic and UTC time).
Durations are in README.md ("Test tiers"); the short soak takes a few minutes, most of it jobs starting Python.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tests.chaos import FAULTS, LONG, SHORT, Chaos, EventLog, Plan, sh, tmpfs, write_grid
from tests.test_dispatch import run_reference

# ----------------------------------------------------------------------------------------------------------------
# the checks

TIMING = ("time", "tokens_per_s", "mfu")  # row fields that depend on the machine's speed, not on the run


def check(chaos: Chaos, cells, references: dict[str, Path]) -> list[str]:
    """What differs from the uninterrupted references, or was left behind; empty when all is well."""
    problems = list(chaos.problems)
    for cell in cells:
        run, ref = cell.run_dir(chaos.root), references[cell.run_id]
        problems += [f"{run.name}: {p}" for p in compare_run(run, ref, cell.config)]
    queue = sh("squeue", "-h", "-o", "%i %j %T").stdout.strip()
    if queue:
        problems.append(f"jobs left in squeue: {queue}")
    return problems


def compare_run(run: Path, ref: Path, cfg) -> list[str]:
    """Differences between a soaked run directory and its uninterrupted reference, and leftovers in it."""
    problems = []
    status = json.loads((run / "status.json").read_text()) if (run / "status.json").exists() else {}
    if status.get("state") != "completed" or status.get("step") != cfg.train.steps:
        problems.append(f"status.json says {status.get('state')} at step {status.get('step')}")
    for name in ("metrics.jsonl", "eval.jsonl", "probes.jsonl"):
        got, want = jsonl_rows(run / name), jsonl_rows(ref / name)
        keys = [(r.get("step"), r.get("layer"), r.get("dataset"), r.get("split"), r.get("source")) for r in got]
        dupes = sorted({k for k in keys if keys.count(k) > 1}, key=str)
        if dupes:
            problems.append(f"{name}: duplicate rows {dupes[:5]}")
        if got != want:
            i = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
            problems.append(f"{name} differs from the reference at row {i} ({len(got)} vs {len(want)} rows): "
                            f"{got[i] if i < len(got) else None} vs {want[i] if i < len(want) else None}")
    if [r["step"] for r in jsonl_rows(run / "metrics.jsonl")] != list(range(1, cfg.train.steps + 1)):
        problems.append("metrics.jsonl does not hold exactly one row per step")
    ckpt, ref_ckpt = final_checkpoint(run), final_checkpoint(ref)
    if ckpt is None or not (ckpt / "model.pt").exists():
        problems.append("no final checkpoint")
    elif tensors_digest(ckpt / "model.pt") != tensors_digest(ref_ckpt / "model.pt"):
        problems.append(f"final weights differ from the reference ({ckpt.name})")
    probes = sorted(p.name for p in (run / "probes").glob("*.pt"))
    if probes != sorted(p.name for p in (ref / "probes").glob("*.pt")):
        problems.append(f"probe tensors {probes} differ from the reference's")
    elif any(tensors_digest(run / "probes" / p) != tensors_digest(ref / "probes" / p) for p in probes):
        problems.append("probe tensors differ from the reference")
    problems += [f"leftover {p}" for p in leftovers(run, cfg)]
    return problems


def leftovers(run: Path, cfg) -> list[str]:
    """Temporary files and folders, a lease (owner.json) of an owner that is gone, more checkpoints than kept."""
    out = [str(p.relative_to(run)) for p in sorted(run.rglob("*")) if p.name.startswith((".", "owner.json"))]
    steps = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    if len(steps) > cfg.train.keep_checkpoints:
        out.append(f"checkpoints {steps} (keep_checkpoints={cfg.train.keep_checkpoints})")
    return out


def copy_for_inspection(root: Path, dest: Path) -> None:
    """The results root without tensors, kept beside the event log when a soak fails."""
    with contextlib.suppress(OSError, shutil.Error):
        shutil.copytree(root, dest, ignore=shutil.ignore_patterns("*.pt", ".ballast"), dirs_exist_ok=True)


def jsonl_rows(path: Path, drop=TIMING) -> list[dict]:
    if not path.exists():
        return []
    return [{k: v for k, v in json.loads(ln).items() if k not in drop}
            for ln in path.read_text().splitlines() if ln.strip()]


def tensors_digest(path: Path) -> str:
    """sha256 over every tensor of a .pt file (names, dtypes, shapes and bytes), independent of the zip layout."""
    h = hashlib.sha256()

    def feed(obj, name=""):
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                feed(obj[k], f"{name}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                feed(v, f"{name}.{i}")
        else:
            h.update(f"{name}={obj!r}|".encode())

    feed(torch.load(path, map_location="cpu", weights_only=True))
    return h.hexdigest()


def final_checkpoint(run_dir: Path) -> Path | None:
    latest = run_dir / "checkpoints" / "latest"
    return run_dir / "checkpoints" / latest.read_text().strip() if latest.is_file() else None


# ----------------------------------------------------------------------------------------------------------------
# the soak


@pytest.fixture
def chaos_seed(request) -> int:
    return request.config.getoption("--chaos-seed")


def train_reference(cell, root: Path) -> Path:
    """The cell trained uninterrupted in this process, with the one thread its job gets (--cpus-per-task 1)."""
    return Path(run_reference(cell.config, root, threads=1).run_dir)


def run(chaos: Chaos, cells, reference_root: Path) -> list[str]:
    """Submit once, inject every fault while the references train in a thread, settle, compare."""
    first = chaos.submit("the whole grid, once")
    if first.returncode != 0 or f"submitted {len(cells)} job(s) as array" not in first.stdout:
        return [f"the first submission failed: {first.stdout}{first.stderr}"]
    pool = ThreadPoolExecutor(1)  # the references train meanwhile, one after another
    try:
        refs = {c.run_id: pool.submit(train_reference, c, reference_root) for c in cells}
        chaos.inject_all()
        chaos.settle()
        problems = check(chaos, cells, {k: f.result() for k, f in refs.items()})
    finally:
        pool.shutdown(cancel_futures=True)
    for line in chaos.job_log_tracebacks():
        chaos.log("job traceback", line)
    landed = chaos.log.landed()
    return problems + [f"fault {k} never landed (skipped each time)" for k in FAULTS if k not in landed]


def soak(plan: Plan, cluster, tmp_path: Path, cache_dir: Path) -> None:
    from study.data import TrainStream, build_tokenizer
    from study.grid import load_grid

    log = EventLog(tmp_path / "events.log")
    grid_path = write_grid(tmp_path, cache_dir, plan)
    cells = load_grid(grid_path).cells()
    assert len(cells) == plan.cells >= 12
    cfg = cells[0].config  # the shared tokenizer and token cache, built once before the jobs need it
    TrainStream(cfg.data, build_tokenizer(cfg.data, vocab_size=cfg.model.vocab_size), seq_len=cfg.model.seq_len,
                seed=cfg.train.seed)
    t0 = time.monotonic()
    problems: list[str] = []
    try:
        with tmpfs(tmp_path / "results", 64 + 8 * plan.cells, log) as root:
            chaos = Chaos(plan, cluster=cluster, grid_path=grid_path, root=root, logs=tmp_path / "logs", log=log)
            try:
                problems = run(chaos, cells, tmp_path / "reference")
            except Exception:
                problems.append(traceback.format_exc())
            finally:
                if chaos.jobs:  # nothing of a failed soak keeps running (its own jobs: not another suite's)
                    sh("scancel", *sorted(chaos.jobs))
                if problems:
                    copy_for_inspection(root, tmp_path / "results-after")
    except Exception:  # the tmpfs itself
        problems.append(traceback.format_exc())
    wall = time.monotonic() - t0
    submits = sum(1 for event, _ in log.events if event in ("submit", "resubmit"))
    log("end", f"{'FAILED' if problems else 'passed'} after {wall:.0f} s wall, {submits} submits")
    print(f"\n{plan.describe()}: {'FAILED' if problems else 'passed'} in {wall:.0f} s\n{log.text()}",
          file=sys.stderr)
    if problems:
        pytest.fail(f"{plan.describe()} FAILED (rerun: pytest tests/test_chaos.py --chaos-seed {plan.seed}"
                    f"{' -m chaos' if plan.repeat > 1 else ''}; event log {log.path}, results without tensors in "
                    f"{tmp_path / 'results-after'}):\n  " + "\n  ".join(problems)
                    + f"\nevent log:\n{log.text()}", pytrace=False)


@pytest.mark.slurm
@pytest.mark.timeout(SHORT["timeout_s"] + 600)
def test_chaos_soak(slurm_cluster, tmp_path, cache_dir, chaos_seed):
    soak(Plan(seed=chaos_seed, **SHORT), slurm_cluster, tmp_path, cache_dir)


@pytest.mark.slurm
@pytest.mark.chaos
@pytest.mark.timeout(LONG["timeout_s"] + 600)
def test_chaos_soak_long(slurm_cluster, tmp_path, cache_dir, chaos_seed):
    soak(Plan(seed=chaos_seed, **LONG), slurm_cluster, tmp_path, cache_dir)


def test_the_checks_catch_what_a_soak_must_not_leave(tmp_path):
    """compare_run against a reference: equal up to timing passes; a changed loss, a duplicate row, other weights,
    a temporary file or a dead owner's lease are each reported."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(train=SimpleNamespace(steps=3, keep_checkpoints=2))

    def make(path: Path, weight: float = 1.0, tokens_per_s: float = 10.0) -> Path:
        (path / "checkpoints" / "step_0000003").mkdir(parents=True)
        torch.save({"w": torch.full((2, 2), weight), "alpha": torch.tensor(1.0)},
                   path / "checkpoints" / "step_0000003" / "model.pt")
        (path / "checkpoints" / "latest").write_text("step_0000003\n")
        (path / "status.json").write_text(json.dumps({"state": "completed", "step": 3}))
        (path / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "loss": 1.0 / s, "tokens_per_s": tokens_per_s * s, "time": s}) + "\n"
            for s in (1, 2, 3)))
        (path / "eval.jsonl").write_text(json.dumps({"step": 3, "dataset": "d", "split": "s", "loss": 0.5}) + "\n")
        return path

    ref = make(tmp_path / "ref")
    assert compare_run(make(tmp_path / "same", tokens_per_s=99.0), ref, cfg) == []  # timing fields aside

    run = make(tmp_path / "loss")
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text().replace('"loss": 0.5', '"loss": 0.25'))
    assert any("metrics.jsonl differs from the reference at row 1" in p for p in compare_run(run, ref, cfg))

    run = make(tmp_path / "dup")
    with open(run / "eval.jsonl", "a") as fh:
        fh.write((run / "eval.jsonl").read_text())
    assert any("eval.jsonl: duplicate rows" in p for p in compare_run(run, ref, cfg))

    assert any("final weights differ" in p for p in compare_run(make(tmp_path / "w", weight=2.0), ref, cfg))

    run = make(tmp_path / "left")
    (run / "owner.json").write_text("{}")
    (run / "checkpoints" / ".tmp-step_0000004-1").mkdir()
    assert [p for p in compare_run(run, ref, cfg) if p.startswith("leftover")] == [
        "leftover checkpoints/.tmp-step_0000004-1", "leftover owner.json"]
