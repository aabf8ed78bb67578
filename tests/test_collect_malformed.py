"""One malformed row (a text step, a list where a loss should be, a bare number) is skipped and reported by
`study collect`, and `study figures` still draws from the rest: nothing aborts, no column turns into text."""

from __future__ import annotations

import json

import pandas as pd

from study.cli import main
from study.collect import collect
from tests.synthetic_runs import write_run


def test_malformed_metric_rows_are_skipped_and_reported(tmp_path):
    run = write_run(tmp_path, grid="g", method="pre-ln", scale="130m")
    metrics = run / "metrics.jsonl"
    good = [json.loads(line) for line in metrics.read_text().splitlines()]
    with open(metrics, "a") as fh:
        fh.write(json.dumps({"step": "x", "loss": 1.0}) + "\n")
        fh.write(json.dumps({"step": len(good) + 1, "loss": [1, 2]}) + "\n")
        fh.write("3\n")
    col = collect(tmp_path)
    m = col.metrics
    assert len(m) == len(good)
    assert pd.api.types.is_integer_dtype(m["step"]) and pd.api.types.is_float_dtype(m["loss"])
    problems = " ".join(col.problems["problem"].astype(str))
    assert "3 unreadable or malformed lines skipped" in problems

    assert main(["collect", str(tmp_path)]) == 0
    assert main(["figures", str(tmp_path), "--out", str(tmp_path / "figs")]) == 0
