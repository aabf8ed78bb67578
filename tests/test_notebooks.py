"""Every notebook in analysis/ executes headlessly (nbclient via study.analysis.run_notebook) on a results root
given as a parameter, and shows what it should. Generic checks run on every root in ROOTS (add a fixture name,
e.g. `tiny_results_root`, or set STUDY_TEST_RESULTS_ROOT)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from study.analysis import inject_parameters, run_notebook
from tests.synthetic_runs import root_from_param, synthetic_root  # noqa: F401  (session fixture)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "analysis"
NAMES = ("main_results", "stability", "schedule_ablation", "depth_scaling")
# Roots the generic tests run on: the synthetic root, the real tiny CPU runs of conftest.py's `tiny_results_root`
# fixture when it exists (skipped otherwise), and a root named by STUDY_TEST_RESULTS_ROOT.
ROOTS = ["synthetic_root", "tiny_results_root"] + (["env"] if os.environ.get("STUDY_TEST_RESULTS_ROOT") else [])
# text each notebook must show on the synthetic root
EXPECT = {
    "main_results": ["Table 2: C4 eval perplexity", "14.67", "Table 3", "Table 7", "residual_warmup_end"],
    "stability": ["loss_spike_score", "diverged", "config.yaml"],
    "schedule_ablation": ["Table 6", "19.51", "diverged"],
    "depth_scaling": ["Pre-LN (ProRes-equal)"],
}


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            for key in ("text/plain", "text/markdown", "text/html"):
                parts.append(str(out.get("data", {}).get(key, "")))
    return "\n".join(parts)


def test_notebooks_are_thin_and_parameterised():
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), name
        assert code[0].source.startswith('results_root = "results"'), name
        assert all(not c.get("outputs") for c in code), f"{name} is committed with outputs"
        assert sum(len(c.source.splitlines()) for c in code) < 60, f"{name} is not thin"
    nb = nbformat.read(NOTEBOOKS / "stability.ipynb", as_version=4)
    inject_parameters(nb, {"results_root": "/x"})
    assert nb.cells[2].metadata["tags"] == ["injected-parameters"] and "results_root = '/x'" in nb.cells[2].source
    inject_parameters(nb, {"results_root": "/y"})   # replaces, never stacks
    assert sum("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1


@pytest.fixture(scope="module", params=ROOTS)
def executed(request, tmp_path_factory):
    """All four notebooks executed on one root, two kernels at a time (each kernel is its own process)."""
    root = root_from_param(request, request.param)
    tmp = tmp_path_factory.mktemp("notebooks")

    def one(name):
        params = {"results_root": str(root), "out_dir": str(tmp / "figs" / name), "formats": "png"}
        return name, run_notebook(NOTEBOOKS / f"{name}.ipynb", params, tmp / f"{name}.ipynb", timeout=300)

    with ThreadPoolExecutor(2) as pool:
        done = dict(pool.map(one, NAMES))
    return request.param, done, tmp


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_headlessly(name, executed):
    root_param, done, tmp = executed
    nb = done[name]
    assert (tmp / f"{name}.ipynb").exists()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    text = _text(nb)
    assert "runs under" in text
    if root_param == "synthetic_root":
        for want in EXPECT[name]:
            assert want in text, (name, want)
        images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
        assert images >= {"main_results": 2, "stability": 2, "schedule_ablation": 1, "depth_scaling": 4}[name]


def test_a_failing_cell_raises(tmp_path):
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("assert x == 2, 'x is ' + str(x)")])
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(CellExecutionError, match="x is 3"):
        run_notebook(path, {"x": 3}, tmp_path / "bad-out.ipynb")
    assert (tmp_path / "bad-out.ipynb").exists()   # written even when it fails, to look at
