"""Console output: the project's own `study:` lines through logging, other libraries' bars and chatter off,
one plain progress line per log step off a terminal, info from rank 0 only, -q/-v, and missing extras."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from study import console
from tests.conftest import REPO, tiny_raw


@pytest.fixture
def captured():
    """console.setup() writing into a buffer; restores the default setup afterwards."""
    buf = io.StringIO()

    def setup(verbosity=console.NORMAL):
        console.setup(verbosity, stream=buf)
        return buf

    yield setup
    console.setup(console.NORMAL)


def test_levels_and_prefixes(captured):
    buf = captured()
    log = logging.getLogger("study.something")
    log.info("hello %d", 1)
    log.debug("hidden")
    log.warning("careful")
    log.error("broken")
    assert buf.getvalue().splitlines() == ["study: hello 1", "study: warning: careful", "study: error: broken"]

    quiet = captured(console.QUIET)
    quiet.truncate(0), quiet.seek(0)
    log.info("not shown")
    log.warning("shown")
    assert quiet.getvalue().splitlines() == ["study: warning: shown"]


def test_info_only_from_rank_zero(captured, monkeypatch):
    buf = captured()
    monkeypatch.setenv("RANK", "1")
    log = logging.getLogger("study.x")
    log.info("rank one says hi")
    log.warning("rank one trouble")
    monkeypatch.setenv("RANK", "0")
    log.info("rank zero says hi")
    assert buf.getvalue().splitlines() == ["study: warning: [rank 1] rank one trouble", "study: rank zero says hi"]


def test_third_party_loggers_quiet_unless_verbose(captured):
    captured()
    assert logging.getLogger("datasets").getEffectiveLevel() == logging.ERROR
    assert logging.getLogger("lm_eval").getEffectiveLevel() == logging.ERROR
    captured(console.VERBOSE)
    assert logging.getLogger("datasets").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("study").getEffectiveLevel() == logging.DEBUG


def test_python_warning_is_one_line(captured):
    buf = captured()
    warnings.warn_explicit("first line\nsecond line", UserWarning, "/some/lib/module.py", 12)
    assert buf.getvalue().splitlines() == ["study: warning: UserWarning: first line (module.py:12)"]


def test_captured_output_drops_bars_keeps_warnings(captured):
    buf = captured()
    with console.captured_output("lm-eval"):
        print("bootstrapping for stddev: perplexity")
        print("100%|##########| 100/100 [00:01<00:00, 90.1it/s]", end="\r", file=sys.stderr)
        print("WARNING: something real", file=sys.stderr)
    assert buf.getvalue().splitlines() == ["study: warning: lm-eval: WARNING: something real"]


def test_train_progress_plain_lines_every_n_steps(captured):
    buf = captured()
    progress = console.TrainProgress("run-a", total=100, initial=0, every=25, stream=io.StringIO())
    for step in range(5, 101, 5):
        progress.update(step, loss=3.0 + 1 / step, lr=1e-3, tokens_per_s=12345.0, mfu=0.25)
    progress.close()
    lines = buf.getvalue().splitlines()
    assert [line.split(" | ")[0] for line in lines] == [f"study: run-a step {s}/100" for s in (25, 50, 75, 100)]
    assert all("loss 3.0" in x and "lr 1.00e-03" in x and "12.3k tok/s" in x and "mfu 25.0%" in x and "eta "
               in x for x in lines)
    assert "\r" not in buf.getvalue()


def test_train_progress_disabled_prints_nothing(captured):
    buf = captured()
    progress = console.TrainProgress("run-a", total=10, initial=0, every=1, enabled=False, stream=io.StringIO())
    progress.update(10, loss=1.0, lr=1.0, tokens_per_s=None, mfu=None)
    assert buf.getvalue() == ""


def test_missing_extra_is_one_clear_error():
    from study.extras import MissingExtra, require

    with pytest.raises(MissingExtra, match=r"pip install 'prores-study\[figures\]'"):
        require("no_such_module_for_study_tests", "figures", "study figures")
    assert require("json", "figures", "x").dumps([]) == "[]"


@pytest.mark.slow  # trains in a subprocess
def test_study_run_console_is_the_projects_own(tmp_path, cache_dir):
    """`study run` into a file (not a terminal): every line is a `study:` line or the command's summary; one
    progress line per console_every steps; no carriage returns, no third-party bars."""
    steps, every = 20, 10
    base = tiny_raw(cache_dir, **{"train.steps": steps, "train.progress": True, "train.console_every": every,
                                  "eval.every": 10})
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "console", "base": base, "axes": {"optim.lr": [1e-3, 3e-3]}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "DATASETS_"))}
    res = subprocess.run([sys.executable, "-m", "study", "run", str(grid), "--out", str(tmp_path / "r")],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "\r" not in res.stdout
    lines = res.stdout.splitlines()
    foreign = [x for x in lines if not (x.startswith("study: ") or x.startswith("summary: "))]
    assert not foreign, foreign
    progress = [x for x in lines if " step " in x and "| loss " in x]
    assert len(progress) == 2 * steps // every, lines
    assert lines[-1] == "summary: 2 completed"
    assert len(lines) == 1 + 2 * (2 + steps // every) + 1  # header, per cell: start, progress, end; summary


@pytest.mark.slow  # trains in a subprocess
def test_study_quiet_prints_only_the_result(tmp_path, cache_dir):
    base = tiny_raw(cache_dir, **{"train.steps": 4, "train.progress": True, "eval.every": 0})
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "quiet", "base": base, "axes": {"optim.lr": [1e-3]}}))
    res = subprocess.run([sys.executable, "-m", "study", "-q", "run", str(grid), "--out", str(tmp_path / "r")],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:]
    assert res.stdout.splitlines() == ["summary: 1 completed"]


def test_cli_error_is_one_line(tmp_path):
    missing = Path(tmp_path) / "nope.yaml"
    res = subprocess.run([sys.executable, "-m", "study", "run", str(missing)], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("study: error: "), res.stderr


@pytest.mark.slow
def test_quickstart_console_has_no_third_party_chatter(tmp_path, cache_dir):
    """The quickstart (training, lm-eval, collect, figures) into a file: no progress bars, no lm-eval chatter."""
    base = tiny_raw(cache_dir, **{"train.steps": 20, "train.progress": True, "eval.every": 10})
    grid = tmp_path / "q.yaml"
    grid.write_text(yaml.safe_dump({"name": "quick", "base": base,
                                    "axes": {"schedule": ["none", {"label": "linear-T2", "prores.schedule": "linear",
                                                                   "prores.T": 2}]}}))
    res = subprocess.run([sys.executable, "-m", "study", "quickstart", "--grid", str(grid), "--out",
                          str(tmp_path / "r"), "--limit", "5"], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:]
    out = res.stdout
    assert "\r" not in out
    for chatter in ("it/s]", "bootstrapping for stddev", "Running loglikelihood", "Generating ", "Map: "):
        assert chatter not in out, chatter
    assert len(out.splitlines()) < 80, out
