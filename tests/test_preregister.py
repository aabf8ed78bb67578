"""study.preregister: the registered design file, its hash, refusing to replace it, and the claims table's
`registered` column."""

from __future__ import annotations

import json

import pytest

from study import preregister as R

CONTENT = {"seeds": [0, 1, 2], "rows": [{"key": "row-a", "cells": {"0": ["a0", "b0"], "1": ["a1", "b1"],
                                                                      "2": ["a2", "b2"]}}],
           "cells": [{"run_id": f"{x}{s}", "seed": s} for x in "ab" for s in range(3)]}


def test_write_is_idempotent_and_refuses_another_design(tmp_path):
    d, written = R.write(tmp_path, "g", CONTENT)
    assert written and d.hash == R.content_hash(CONTENT) and not d.altered and d.grid == "g"
    again, written = R.write(tmp_path, "g", json.loads(json.dumps(CONTENT)))
    assert not written and again.hash == d.hash
    other = {**CONTENT, "seeds": [0, 1, 2, 3]}
    with pytest.raises(R.DesignExists, match="--replace-design"):
        R.write(tmp_path, "g", other)
    new, written = R.write(tmp_path, "g", other, replace=True)
    assert written and new.hash != d.hash
    assert json.loads((tmp_path / R.FILE).read_text())["replaces"] == d.hash


def test_an_edited_design_reads_as_altered(tmp_path):
    R.write(tmp_path / "g", "g", CONTENT)
    doc = json.loads((tmp_path / "g" / R.FILE).read_text())
    doc["content"]["seeds"] = [0, 1]
    (tmp_path / "g" / R.FILE).write_text(json.dumps(doc))
    found = R.find([str(tmp_path / "g" / "some-run")])
    assert found["g"].altered
    assert R.status("row-a", {"a0": 0}, ["g"], found) == "no (design.json edited after registration)"


def test_find_reads_designs_beside_runs_and_in_a_root(tmp_path):
    R.write(tmp_path / "g", "g", CONTENT)
    assert set(R.find([str(tmp_path / "g" / "run-1")])) == {"g"}
    assert set(R.find([], tmp_path)) == {"g"}                      # before any run exists
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / R.FILE).write_text("{not json")
    assert set(R.find([], tmp_path)) == {"g"}                      # an unreadable file registers nothing
    with pytest.raises(R.StudyError, match="not a registered design"):
        R.read(tmp_path / "h" / R.FILE)


@pytest.mark.parametrize("key, runs, want", [
    ("row-a", {f"{x}{s}": s for x in "ab" for s in range(3)}, "yes"),
    ("row-a", {"a0": 0, "b0": 0, "a1": 1, "b1": 1}, "incomplete (2 of 3 registered seeds)"),
    ("row-a", {"a0": 0, "b0": 0, "a5": 5, "b5": 5}, "no (seed 5 not registered)"),
    ("row-a", {"a0": 0, "zz": 0}, "no (runs zz are not registered cells)"),
    ("row-b", {"a0": 0, "b0": 0}, "no (row not in the design)"),
])
def test_status(tmp_path, key, runs, want):
    R.write(tmp_path / "g", "g", CONTENT)
    designs = R.find([], tmp_path)
    assert R.status(key, runs, ["g"] * len(runs), designs) == want
    assert R.status(key, runs, ["other-grid"] * len(runs), designs) == "—"
