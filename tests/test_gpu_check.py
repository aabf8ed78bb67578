"""benchmarks/gpu_check.sh (and step_kernels.py, which shares its step), rehearsed on the CPU (`--smoke`): the
script a GPU session runs in its few lent minutes must not fail on a flag or a renamed function. Every one of its
steps runs at toy sizes, exits 0 and writes its JSON with the fields benchmarks/README.md reports; it runs with
the packages the lent GPU machine lacks (submitit, lm-eval, datasets) made unimportable, as they are there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STEPS = {"step_time", "throughput", "prores_overhead", "store_read", "store_prepare", "train130m", "fsdp1",
         "sharded_eval", "big_step"}
ABSENT_ON_THE_GPU_MACHINE = ("submitit", "lm_eval", "datasets")

BLOCKER = f'''import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT_ON_THE_GPU_MACHINE!r}:
            raise ImportError(f"{{name}} is not installed on the GPU machine")
sys.meta_path.insert(0, _Absent())
'''


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gpu_check_smoke_runs_every_step(tmp_path):
    out, site = tmp_path / "gpu", tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {"PY": sys.executable, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": os.environ["HOME"]}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--smoke", str(out)],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    logs = {name: (out / f"{name}.log").read_text()[-1500:] for name in summary}
    assert set(summary) == STEPS
    assert all(step["rc"] == 0 for step in summary.values()), logs
    step_time = json.loads((out / "step_time_cpu.json").read_text())["results"]
    assert step_time["params_ours"] == step_time["params_hf"]
    train = json.loads((out / "throughput.json").read_text())["results"]["cpu_train"]
    assert train["scale"] == "tiny" and train["tokens_per_s"] > 0
    overhead = json.loads((out / "prores_overhead.json").read_text())["results"]
    assert "eager" in overhead and "error" not in overhead["eager"]
    reads = json.loads((out / "store_read.json").read_text())["results"]
    assert sorted(reads["readers"]) == ["1", "2", "4"]
    assert {r["rows_read_per_rank_per_batch"] for r in reads["readers"].values()} == {16}
    # The trainer end to end from the token store, and FSDP through torchrun at world size 1.
    for name, fsdp in (("train130m", False), ("fsdp1", True)):
        run = json.loads((out / f"{name}.json").read_text())["results"]
        assert run["state"] == "completed" and run["world_size"] == 1 and run["sharded_checkpoint"] == fsdp, name
        assert run["tokens_per_s_steady_median"] > 0 and run["eval"], name
        assert len((out / f"{name}_metrics.jsonl").read_text().splitlines()) == run["steps"]
    sharded = json.loads((out / "sharded_eval.json").read_text())["results"]
    assert sharded["max_rel_diff"] <= 1e-6 and sharded["tokens_single"] == sharded["tokens_sharded"] > 0
    big = json.loads((out / "big_step.json").read_text())["results"]
    assert big["step_median_s"] > 0 and big["save"]["bytes"] > 0 and big["save"]["async_stall_s"] >= 0
    assert big["save"]["full_checkpoint_bytes"] > big["save"]["bytes"]


@pytest.mark.slow
def test_step_kernels_runs(tmp_path):
    """The CPU kernel profile shares step_time's step: it must keep running when that step changes."""
    out = tmp_path / "kernels.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "step_kernels.py"), "--scale", "tiny",
                           "--layers", "0", "--seq", "32", "--batch", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert results["scale"] == "tiny" and results["models"]
