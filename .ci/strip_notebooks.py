"""Keep notebooks stored without outputs: strip outputs and execution counts in place, or --check only.

    python .ci/strip_notebooks.py [--check] analysis/*.ipynb

Stored outputs would put figures and numbers from someone's results root into the repository (and into every
diff); the notebooks are run against a results root instead (tests/test_notebooks.py runs them headlessly).
Exit status 1 when a notebook had outputs (with --check: when one would be changed). Standard library only, so
the pre-commit hook works in any Python.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def strip(nb: dict) -> bool:
    """Remove outputs and execution counts from the code cells; True if anything was removed."""
    changed = False
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            cell["outputs"] = []
            changed = True
        if cell.get("execution_count") is not None:
            cell["execution_count"] = None
            changed = True
    return changed


def main(argv: list[str]) -> int:
    check = "--check" in argv
    dirty = []
    for name in (a for a in argv if a != "--check"):
        path = Path(name)
        nb = json.loads(path.read_text(encoding="utf-8"))
        if not strip(nb):
            continue
        dirty.append(name)
        if not check:  # nbformat's own layout, so a stripped notebook diffs only where outputs were
            path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    for name in dirty:
        print(f"{name}: {'has outputs' if check else 'outputs stripped'}", file=sys.stderr)
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
