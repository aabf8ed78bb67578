"""study.collect on a synthetic results root: states, problems, tables, Parquet round trip, `study collect`.

The synthetic root (tests/synthetic_runs.py) has completed, diverged, running, failed, partial (no status.json,
truncated last metrics line), unreadable-config and no-run.json runs. Generic checks run on every root in
ROOTS (add a fixture name, e.g. the real tiny CPU runs' `tiny_results_root`, or set STUDY_TEST_RESULTS_ROOT).
"""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from study import collect as collect_mod
from study.cli import main
from study.collect import collect, load
from tests.synthetic_runs import STEPS, root_from_param, synthetic_root  # noqa: F401  (session fixture)

# Roots the generic tests run on: the synthetic root, the real tiny CPU runs of conftest.py's `tiny_results_root`
# fixture when it exists (skipped otherwise), and a root named by STUDY_TEST_RESULTS_ROOT.
ROOTS = ["synthetic_root", "tiny_results_root"] + (["env"] if os.environ.get("STUDY_TEST_RESULTS_ROOT") else [])


@pytest.fixture(scope="module")
def syn(synthetic_root):  # noqa: F811
    root, manifest = synthetic_root
    return root, manifest, collect(root)


@pytest.fixture(scope="module", params=ROOTS)
def any_collection(request):
    return collect(root_from_param(request, request.param))


# ---------------------------------------------------------------------------------------------------
# generic: any root
# ---------------------------------------------------------------------------------------------------
def test_tables_are_tidy_and_consistent(any_collection):
    col = any_collection
    runs = col.runs
    assert len(runs) > 0 and runs["run_id"].is_unique
    for name in ("run_id", "run_name", "grid", "path", "state", "step", "method", "schedule", "scale",
                 "n_layers", "norm", "init", "T", "W", "lr", "params", "final_loss", "final_eval_ppl",
                 "diverged_step", "label"):
        assert name in runs.columns, name
    assert any(c.startswith("cfg.") for c in runs.columns)
    assert set(runs["state"]) <= set(collect_mod.STATES) | {"partial", "corrupt"}
    ids = set(runs["run_id"])
    for table in ("metrics", "evals", "probes", "lm_eval", "probe_files"):
        df = getattr(col, table)
        if len(df):
            assert set(df["run_id"].astype(str)) <= ids, table
    m = col.metrics
    assert {"step", "loss", "lr", "grad_norm"} <= set(m.columns)
    assert m["loss"].dtype == np.float64 and m["step"].dtype.kind == "i"
    # n_metrics in runs matches the step-level table
    counts = m.groupby("run_id", observed=True).size()
    for r in runs.itertuples():
        assert counts.get(r.run_id, 0) == r.n_metrics
    assert list(col.lm_eval.columns[:6]) == ["run_id", "task", "metric", "filter", "value", "stderr"]


def test_parquet_round_trip(any_collection, tmp_path):
    col = any_collection
    path = col.save(tmp_path / "results.parquet")
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [f"{t}.parquet" for t in collect_mod.TABLES] + ["collection.json"])
    back = load(path)
    for table in collect_mod.TABLES:
        a, b = getattr(col, table), getattr(back, table)
        assert a.shape == b.shape, table
        assert list(a.columns) == list(b.columns), table
    pd.testing.assert_frame_equal(col.metrics, back.metrics)
    pd.testing.assert_frame_equal(col.evals, back.evals)
    for c in ("run_id", "state", "final_eval_ppl", "n_layers", "W", "diverged_step"):
        pd.testing.assert_series_equal(col.runs[c], back.runs[c], check_dtype=False, check_names=False)
    assert back.root == col.root
    # saving again replaces it; a folder that is not a collection is never overwritten
    col.save(path)
    (tmp_path / "other").mkdir()
    with pytest.raises(FileExistsError):
        col.save(tmp_path / "other")


# ---------------------------------------------------------------------------------------------------
# synthetic: known answers
# ---------------------------------------------------------------------------------------------------
def test_every_run_kept_with_its_state(syn):
    root, man, col = syn
    runs = col.runs
    assert len(runs) == man["n_runs"]
    states = runs["state"].value_counts()
    for state, n in man["states"].items():
        assert states[state] == n, state
    assert states["completed"] == man["n_runs"] - sum(man["states"].values())
    by_name = runs.set_index("run_name")
    b = man["broken"]
    assert by_name.loc[b["partial"], "state"] == "partial"
    assert by_name.loc[b["running"], "state"] == "running"
    assert by_name.loc[b["failed"], "error"].startswith("RuntimeError")
    div = by_name.loc[man["diverged"]]
    assert div["state"] == "diverged" and div["diverged_step"] == man["diverged_step"]
    assert math.isnan(div["final_loss"]) and math.isnan(div["final_eval_ppl"])


def test_problems_reported_not_raised(syn):
    root, man, col = syn
    p = col.problems
    by = {(row.path.rsplit("/", 1)[-1], row.file): row.problem for row in p.itertuples()}
    b = man["broken"]
    assert "missing" in by[(b["partial"], "status.json")]
    assert "truncated" in by[(b["partial"], "metrics.jsonl")]
    assert "YAML" in by[(b["bad_config"], "config.yaml")]
    assert by[(b["no_run_json"], "run.json")] == "missing"
    assert len(p) == 4, p
    runs = col.runs.set_index("run_name")
    assert runs.loc[b["partial"], "n_problems"] == 2
    # the truncated line is dropped, every whole line kept
    assert runs.loc[b["partial"], "n_metrics"] == STEPS // 5
    # unreadable config: the run stays, from run.json, with no cfg values
    bad = runs.loc[b["bad_config"]]
    assert bad["method"] == "lns" and bad["state"] == "completed" and pd.isna(bad["n_layers"])
    # no run.json: the run id is the config's semantic hash
    from study import config

    nrj = runs.loc[b["no_run_json"]]
    cfg = config.load(os.path.join(nrj["path"], "config.yaml"))
    assert nrj["run_id"] == config.run_id(cfg)
    assert "problems" in col.summary() or "4 problems" in col.summary()


def test_values_and_columns(syn):
    root, man, col = syn
    runs = col.runs.set_index("run_name")
    base = runs.loc[man["runs"]["main/pre-ln/130m/base"]]
    pro = runs.loc[man["runs"]["main/pre-ln/130m/prores"]]
    assert base["final_eval_ppl"] == pytest.approx(man["table2"][("Pre-LN", False, "130M")])
    assert pro["schedule"] == "linear" and pro["prores"] and pro["T"] == 10 and pro["W"] == 120
    assert pro["label"] == "Pre-LN (ProRes)" and base["label"] == "Pre-LN"
    assert pro["axis.schedule"] == "linear" and pro["cfg.optim.lr"] == 2e-3
    assert pro["cfg.optim.betas"] == "[0.9, 0.95]"   # lists as JSON text
    assert pro["n_metrics"] == STEPS and pro["final_step"] == STEPS
    assert pro["eval_dataset"] == "default" and pro["n_probe_steps"] == 0
    big = runs.loc[man["runs"]["main/pre-ln/1.3b/prores"]]
    assert big["n_probe_steps"] == STEPS // 50 + 1 and big["has_lm_eval"]
    # diverged metrics keep their NaN tail as floats ("nan" strings in the file)
    div_id = runs.loc[man["diverged"], "run_id"]
    m = col.metrics_for(div_id)
    assert m["loss"].isna().sum() == 6 and m["step"].max() == man["diverged_step"] + 5
    # probes: one row per step and layer; probe files listed
    pr = col.probes_for(big["run_id"])
    assert len(pr) == (STEPS // 50 + 1) * 24 and pr["layer"].min() == 1 and pr["layer"].max() == 24
    assert len(col.probe_files_for(big["run_id"])) == STEPS // 50 + 1
    # alpha dropped by default, kept as a list column on request
    assert "alpha" not in col.metrics.columns


def test_lm_eval_tidy(syn):
    root, man, col = syn
    rid = col.runs.set_index("run_name").loc[man["runs"]["main/pre-ln/1.3b/base"], "run_id"]
    lm = col.lm_eval_for(rid)
    piqa = lm[lm["task"] == "piqa"].set_index("metric")
    assert set(piqa.index) == {"acc", "acc_norm"}
    assert piqa.loc["acc_norm", "value"] == pytest.approx(man["table3"][("Pre-LN", False)]["piqa"] / 100)
    assert piqa.loc["acc", "stderr"] == pytest.approx(0.01)
    wiki = lm[(lm["task"] == "wikitext") & (lm["metric"] == "word_perplexity")]
    assert wiki["value"].iloc[0] == pytest.approx(man["table4"][("Pre-LN", False)]["wikitext"])
    assert math.isnan(wiki["stderr"].iloc[0])           # lm-eval's 'N/A'
    assert "mmlu" in set(lm["task"])                     # from 'groups'
    assert not (lm["metric"].str.endswith("_stderr")).any() and "alias" not in set(lm["metric"])


def test_keep_alpha(syn):
    root, man, _ = syn
    col = collect(root / "main", keep_alpha=True)
    a = col.metrics["alpha"]
    assert isinstance(a.dtype, pd.ArrowDtype)
    pro = col.runs[col.runs["schedule"] == "linear"]["run_id"].iloc[0]
    vals = col.metrics_for(pro).dropna(subset=["alpha"])
    assert len(vals) == STEPS // 10 and len(vals["alpha"].iloc[-1]) == col.run(pro)["n_layers"]


def test_corrupt_files_never_crash(tmp_path):
    root = tmp_path / "root"
    run = root / "g" / "weird"
    run.mkdir(parents=True)
    (run / "status.json").write_text("{not json")
    (run / "run.json").write_text("[1, 2]")
    (run / "metrics.jsonl").write_bytes(b'{"step": 1, "loss": 2.0}\n\x00\xff garbage\n{"step": 2, "loss": "nan"}\n')
    (run / "eval.jsonl").write_text("")
    (run / "lm_eval.json").write_text('{"results": ')
    (run / "probes").mkdir()
    (run / "probes" / "step_0000010.pt").write_bytes(b"")
    empty = root / "g" / "only-config"
    empty.mkdir()
    (empty / "config.yaml").write_text("method: pre-ln\n")
    col = collect(root)
    assert len(col.runs) == 2
    w = col.runs.set_index("run_name").loc["weird"]
    assert w["state"] == "corrupt" and w["run_id"] == "g/weird"
    m = col.metrics_for(w["run_id"])
    assert list(m["step"]) == [1, 2] and math.isnan(m["loss"].iloc[1])
    files = set(col.problems[col.problems["run_id"] == "g/weird"]["file"])
    assert {"status.json", "run.json", "metrics.jsonl", "lm_eval.json", "probes/step_0000010.pt"} <= files
    assert col.runs.set_index("run_name").loc["only-config", "state"] == "partial"
    assert collect(empty).runs.shape[0] == 1   # a run directory given as the root
    assert collect(tmp_path).runs.shape[0] == 2
    with pytest.raises(FileNotFoundError):
        collect(tmp_path / "no-such-root")


def test_repeated_steps_keep_the_last(tmp_path):
    run = tmp_path / "root" / "g" / "r"
    run.mkdir(parents=True)
    rows = [{"step": s, "loss": float(s)} for s in (1, 2, 3)] + [{"step": s, "loss": 10.0 + s} for s in (2, 3, 4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "status.json").write_text(json.dumps({"state": "completed", "step": 4}))
    col = collect(tmp_path / "root")
    m = col.metrics
    assert list(m["step"]) == [1, 2, 3, 4] and list(m["loss"]) == [1.0, 12.0, 13.0, 14.0]
    assert col.problems["problem"].str.contains("repeated").sum() == 1


def test_duplicate_run_ids_are_renamed(syn, tmp_path):
    root, man, _ = syn
    src = root / "7b"
    dst = tmp_path / "root"
    shutil.copytree(src, dst / "7b")
    shutil.copytree(src, dst / "7b-copy")
    col = collect(dst)
    assert len(col.runs) == 4 and col.runs["run_id"].is_unique
    assert (col.problems["problem"].str.contains("duplicate run_id")).sum() == 2


def test_study_collect_command(syn, tmp_path, capsys):
    root, man, _ = syn
    out = tmp_path / "c.parquet"
    assert main(["collect", str(root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{man['n_runs']} runs" in text and "diverged 1" in text and "partial 1" in text
    assert "4 problems" in text and "config.yaml: not valid YAML" in text
    assert load(out).runs.shape[0] == man["n_runs"]
    # default output: ROOT/collected.parquet, which a second collect does not mistake for a run
    small = tmp_path / "small"
    shutil.copytree(root / "7b", small / "7b")
    assert main(["collect", str(small)]) == 0
    assert (small / "collected.parquet" / "runs.parquet").exists()
    assert main(["collect", str(small)]) == 0 and load(small / "collected.parquet").runs.shape[0] == 2
    capsys.readouterr()
    assert main(["collect", str(tmp_path / "missing")]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_reuse_reads_only_changed_runs(synthetic_root, tmp_path):  # noqa: F811
    root, man = synthetic_root
    work = tmp_path / "root"
    shutil.copytree(root / "7b", work / "7b")
    shutil.copytree(root / "broken", work / "broken")
    first = collect(work)
    saved = first.save(tmp_path / "c.parquet")
    again = collect(work, reuse=saved)
    assert again.meta["reused_runs"] == len(first.runs) and again.meta["read_runs"] == 0
    for table in ("runs", "metrics", "evals", "problems", "lm_eval"):
        a, b = getattr(first, table), getattr(again, table)
        assert a.shape == b.shape, table
    pd.testing.assert_frame_equal(first.metrics, again.metrics)
    # one run moves on (a metrics line appended, status rewritten), one appears, one disappears
    moved = work / "broken" / man["broken"]["running"]
    with open(moved / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 10_000, "loss": 1.5, "lr": 1e-3, "grad_norm": 0.3}) + "\n")
    shutil.copytree(root / "climbmix", work / "climbmix")
    shutil.rmtree(work / "7b" / man["runs"]["7b/base"])
    third = collect(work, reuse=again)
    assert third.meta["read_runs"] == 1 + 2 and third.meta["reused_runs"] == len(first.runs) - 2
    fresh = collect(work)
    assert sorted(third.runs["run_id"]) == sorted(fresh.runs["run_id"])
    for table in ("metrics", "evals", "probes", "lm_eval", "problems", "probe_files"):
        assert getattr(third, table).shape == getattr(fresh, table).shape, table
    rid = fresh.runs.set_index("path").loc[str(moved.resolve()), "run_id"]
    assert third.metrics_for(rid)["step"].max() == 10_000
    m3 = third.metrics.sort_values(["run_id", "step"]).reset_index(drop=True)
    mf = fresh.metrics.sort_values(["run_id", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(m3[mf.columns], mf)
    # a collection made with another keep_alpha is not reused
    assert collect(work, reuse=third, keep_alpha=True).meta["reused_runs"] == 0
