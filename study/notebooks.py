"""Running the analysis notebooks headlessly (papermill-style parameters, executed by nbclient).

inject_parameters(nb, params) a cell assigning `params`, right after the cell tagged 'parameters'
run_notebook(path, params)    execute a notebook with parameters injected (the first cell of each notebook in
                              analysis/ shows the call; tests/test_notebooks.py runs them all through it)
"""

from __future__ import annotations

import os
from pathlib import Path


def inject_parameters(nb, params: dict):
    """Papermill-style: a cell tagged 'injected-parameters' assigning `params` goes right after the cell tagged
    'parameters' (or first, if none is tagged); a previous injected cell is replaced."""
    import nbformat

    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    if not params:
        return nb
    source = "# Parameters injected by study.notebooks.run_notebook\n" + "".join(
        f"{k} = {v!r}\n" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    idx = next((i + 1 for i, c in enumerate(nb.cells)
                if "parameters" in c.get("metadata", {}).get("tags", [])), 0)
    nb.cells.insert(idx, cell)
    return nb


def run_notebook(path: str | os.PathLike, params: dict | None = None, out_path: str | os.PathLike | None = None,
                 *, timeout: int = 600, kernel_name: str | None = None, cwd: str | os.PathLike | None = None):
    """Execute a notebook headlessly (nbclient) with `params` injected after its 'parameters' cell.

    Writes the executed notebook to out_path when given and returns it. A failing cell raises
    nbclient.exceptions.CellExecutionError naming the cell and the error.
    """
    from study.extras import require_extra
    require_extra("notebooks", "running the analysis notebooks")
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    inject_parameters(nb, dict(params or {}))
    kernel = kernel_name or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel,
                            resources={"metadata": {"path": str(cwd or Path(path).resolve().parent)}})
    try:
        client.execute()
    finally:
        if out_path is not None:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, str(out_path))
    return nb
