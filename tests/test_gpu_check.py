"""benchmarks/gpu_check.sh (and step_kernels.py, which shares its step), rehearsed on the CPU (`--smoke`): the
script a GPU session runs in its few lent minutes must not fail on a flag or a renamed function. Every one of its
four steps runs at toy sizes, exits 0 and writes its JSON with the fields benchmarks/README.md reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_step(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--smoke", str(out)],
                          env={"PY": sys.executable, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    logs = {name: (out / f"{name}.log").read_text()[-1500:] for name in summary}
    assert set(summary) == {"step_time", "throughput", "prores_overhead", "store_read"}
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
