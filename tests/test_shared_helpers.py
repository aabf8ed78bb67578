"""The small shared helpers: atomic files/folders (study.fsutil), timestamps (study.timeutil), the paper's labels
(study.labels, paper_figures.labels), the peak-FLOP/s lookup (study.cost) and the notebook-output check."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from study import cost, fsutil, labels, timeutil

REPO = Path(__file__).resolve().parent.parent


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "status.json"
    path.write_text("old")
    fsutil.atomic_write_json(path, {"state": "running", "step": 3})
    assert json.loads(path.read_text()) == {"state": "running", "step": 3}
    assert path.read_text().endswith("}\n")
    fsutil.atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert _leftovers(tmp_path) == []


def test_atomic_write_honours_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = fsutil.atomic_write_text(tmp_path / "a.txt", "x")
        folder = tmp_path / "d"
        with fsutil.atomic_dir(folder) as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    # readable by the group, as a plain open() would make it (tempfile.mkstemp would give 0600 / 0700)
    assert path.stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_mode & 0o777 == 0o755


def test_atomic_write_failure_keeps_the_old_content(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"keep": true}')
    with pytest.raises(TypeError):
        fsutil.atomic_write_json(path, {"bad": object()})
    assert path.read_text() == '{"keep": true}'
    assert _leftovers(tmp_path) == []


def test_atomic_dir_replaces_only_when_told(tmp_path):
    out = tmp_path / "collection"
    with fsutil.atomic_dir(out) as tmp:
        (tmp / "runs.parquet").write_text("v1")
    assert (out / "runs.parquet").read_text() == "v1"

    with pytest.raises(FileExistsError), fsutil.atomic_dir(out):
        pytest.fail("the block must not run when the folder exists and replace is False")
    with pytest.raises(FileExistsError), fsutil.atomic_dir(out, replace=lambda p: (p / "other").exists()):
        pytest.fail("the predicate said no")

    with fsutil.atomic_dir(out, replace=lambda p: (p / "runs.parquet").exists()) as tmp:
        (tmp / "runs.parquet").write_text("v2")
    assert sorted(p.name for p in out.iterdir()) == ["runs.parquet"]
    assert (out / "runs.parquet").read_text() == "v2"
    assert _leftovers(tmp_path) == []


def test_atomic_dir_failure_leaves_the_old_folder(tmp_path):
    out = tmp_path / "tokens"
    out.mkdir()
    (out / "meta.json").write_text("old")
    with pytest.raises(RuntimeError), fsutil.atomic_dir(out, replace=True) as tmp:
        (tmp / "meta.json").write_text("new")
        raise RuntimeError("killed while writing")
    assert (out / "meta.json").read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_timestamps_are_utc():
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    stamp = timeutil.now()
    parsed = dt.datetime.fromisoformat(stamp)
    assert stamp.endswith("+00:00") and "." not in stamp
    assert before <= parsed <= dt.datetime.now(dt.timezone.utc)
    compact = timeutil.file_stamp()
    assert dt.datetime.strptime(compact, "%Y%m%dT%H%M%S.%fZ").year == parsed.year


def test_series_and_value_labels():
    assert labels.series_label("pre-ln", "linear") == "Pre-LN (ProRes)"
    assert labels.series_label("pre-ln-ds-init", "equal") == "Pre-LN (DS-Init, ProRes-equal)"
    assert labels.series_label("pre-ln", "none") == "Pre-LN"
    assert labels.method_label(None, "pre", "ds-init") == "Pre-LN (DS-Init)"
    assert labels.value_label([1, True, None]) == "1-true-null"


def test_paper_scale_labels():
    from paper_figures.labels import scale_label, series_label

    assert scale_label("1.3b") == "1.3B" and scale_label("71m-48l") == "71M-48L"
    assert scale_label("tiny") == "tiny" and scale_label(None) is None
    assert series_label is labels.series_label  # one definition


def test_peak_flops_table_is_the_one_the_trainer_and_grid_use():
    from study.train import loop

    assert cost.device_peak_flops("NVIDIA H100 80GB HBM3") == cost.DEFAULT_PEAK_FLOPS == 989e12
    assert cost.device_peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert cost.device_peak_flops("Some CPU") is None
    assert not hasattr(loop, "PEAK_FLOPS")  # no second table


def test_notebook_output_check_and_strip(tmp_path):
    nb = {"cells": [{"cell_type": "code", "execution_count": 3, "id": "a", "metadata": {}, "source": ["1+1"],
                     "outputs": [{"output_type": "execute_result", "data": {"text/plain": ["2"]},
                                  "execution_count": 3, "metadata": {}}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb, indent=1))
    script = [sys.executable, str(REPO / ".ci" / "strip_notebooks.py")]
    assert subprocess.run([*script, "--check", str(path)], capture_output=True).returncode == 1
    assert json.loads(path.read_text())["cells"][0]["outputs"]  # --check changes nothing
    assert subprocess.run([*script, str(path)], capture_output=True).returncode == 1
    cell = json.loads(path.read_text())["cells"][0]
    assert cell["outputs"] == [] and cell["execution_count"] is None and cell["source"] == ["1+1"]
    assert subprocess.run([*script, "--check", str(path)], capture_output=True).returncode == 0


def test_stored_notebooks_have_no_outputs():
    notebooks = sorted(str(p) for p in (REPO / "analysis").glob("*.ipynb"))
    assert notebooks
    done = subprocess.run([sys.executable, str(REPO / ".ci" / "strip_notebooks.py"), "--check", *notebooks],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
