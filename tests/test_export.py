"""`study export`: tiny runs of every placement become folders that transformers loads (Pre-LN at alpha = 1 as a
plain LlamaForCausalLM, everything else through the exported modeling file) with fp32 logits equal to ours, and
lm-eval's own `hf` model scores an export as `study eval` scores the run."""

from __future__ import annotations

import ast
import dataclasses
import json
import math

import pytest
import torch

from study.config import NORMS, resolve
from study.evaluate.load import load_for_eval
from study.export import export_run
from study.export.hf import MODELING_FILE
from study.model.norms import placement
from tests.conftest import tiny_raw

STEPS = 10
WARM_T = 4  # linear ProRes with T = 4 on 4 layers: at step 10 of 20 the deeper layers are still below alpha 1


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch):
    """Everything here is local: loading an export must never need the hub."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _train(cache_dir, root, **overrides):
    from study.train import train_run

    raw = tiny_raw(cache_dir, **{"train.steps": STEPS, "train.ckpt_every": 10, "eval.every": 0,
                                 "eval.at_end": False, **overrides})
    result = train_run(resolve(raw), root, handle_signals=False)
    assert result.state == "completed"
    return result.run_dir


@pytest.fixture(scope="module")
def runs(cache_dir, tmp_path_factory):
    """One tiny run per placement (no ProRes: alpha = 1), and a Pre-LN ProRes run to export mid-warmup."""
    root = tmp_path_factory.mktemp("export-runs")
    out = {norm: _train(cache_dir, root, **{"model.norm": norm}) for norm in NORMS}
    out["pre-warmup"] = _train(cache_dir, root, **{"train.steps": 20, "prores.schedule": "linear",
                                                   "prores.T": WARM_T})
    return out


def _load_hf(folder, fmt):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    if fmt == "llama":  # plain transformers: no remote code allowed
        return LlamaForCausalLM.from_pretrained(str(folder)).eval()
    return AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True).eval()


def _assert_same_logits(run_dir, folder, fmt, step="latest"):
    ours = load_for_eval(run_dir, step=step)
    theirs = _load_hf(folder, fmt)
    assert type(theirs).__name__ == ("LlamaForCausalLM" if fmt == "llama" else "ProResForCausalLM")
    assert theirs.dtype == torch.float32
    m = ours.cfg.model
    ids = torch.randint(0, m.vocab_size, (3, m.seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = ours.model(ids), theirs(ids).logits
        short = theirs(ids[:, :17]).logits
    assert torch.equal(got, want)  # exactly: the same kernels on the same numbers
    assert torch.equal(short, ours.model(ids[:, :17]).detach())


@pytest.mark.parametrize("norm", NORMS)
def test_every_placement_loads_in_transformers_with_our_logits(runs, norm, tmp_path):
    result = export_run(runs[norm], tmp_path / "hf")
    want_fmt = "llama" if norm == "pre" else "prores"
    assert (result.fmt, result.step) == (want_fmt, STEPS)
    files = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "export.json"} <= files
    assert ("modeling_prores.py" in files) == (norm != "pre")
    record = json.loads((tmp_path / "hf" / "export.json").read_text())
    assert (record["format"], record["step"], record["norm"]) == (want_fmt, STEPS, norm)
    if want_fmt == "prores":  # the modeling file builds the model from the placement table's row, carried here
        row = placement(norm, load_for_eval(runs[norm]).cfg.model.n_layers)
        carried = json.loads((tmp_path / "hf" / "config.json").read_text())["placement"]
        assert carried == {k: v for k, v in dataclasses.asdict(row).items() if k != "name"}
    _assert_same_logits(runs[norm], tmp_path / "hf", want_fmt)


def test_the_modeling_file_names_no_placement():
    """It reads config.json's placement row, so a new placement of the same slots needs no edit of it."""
    quoted = {f'"{n}"' for n in NORMS} | {f"'{n}'" for n in NORMS}
    assert not [q for q in quoted if q in MODELING_FILE.read_text()]


def test_a_checkpoint_mid_warmup_exports_with_its_alphas(runs, tmp_path):
    from study.errors import ExportError

    alphas = load_for_eval(runs["pre-warmup"], step=10).model.alphas().tolist()
    assert any(a < 1 for a in alphas)
    result = export_run(runs["pre-warmup"], tmp_path / "hf", step=10)
    assert result.fmt == "prores"  # Pre-LN, but alpha < 1: Llama cannot say that
    _assert_same_logits(runs["pre-warmup"], tmp_path / "hf", "prores", step=10)
    with pytest.raises(ExportError, match="alpha is below 1 in layer"):
        export_run(runs["pre-warmup"], tmp_path / "llama", step=10, fmt="llama")
    # After the warmup the same run is a plain Llama again.
    assert export_run(runs["pre-warmup"], tmp_path / "end").fmt == "llama"
    _assert_same_logits(runs["pre-warmup"], tmp_path / "end", "llama")


def test_the_tokenizer_is_the_runs(runs, tmp_path):
    from transformers import AutoTokenizer

    export_run(runs["post"], tmp_path / "hf")
    ours = load_for_eval(runs["post"]).tokenizer
    theirs = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    text = "And God said, Let there be light: and there was light.\nFriends, Romans, countrymen"
    assert theirs.encode(text, add_special_tokens=False) == ours.encode(text)
    assert theirs.eos_token_id == ours.eos_id and theirs.decode(ours.encode(text)) == text


def test_the_modeling_file_stands_alone():
    """It is copied beside the weights and imported by transformers: torch, transformers and the standard
    library only, never the study package."""
    tree = ast.parse(MODELING_FILE.read_text())
    roots = {(n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
             for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
             for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert roots <= {"__future__", "math", "torch", "transformers"}, roots


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys):
    from study.cli import main

    empty_run = tmp_path / "fresh"
    empty_run.mkdir()
    (empty_run / "config.yaml").write_text((runs["post"] / "config.yaml").read_text())
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("x")
    cases = {
        "not a run directory": [str(tmp_path), "--out", str(tmp_path / "a")],
        "no usable checkpoint": [str(empty_run), "--out", str(tmp_path / "b")],
        "no checkpoint for step 7": [str(runs["post"]), "--out", str(tmp_path / "c"), "--step", "7"],
        "not an empty folder": [str(runs["post"]), "--out", str(occupied)],
        "LlamaForCausalLM is Pre-LN only": [str(runs["post"]), "--out", str(tmp_path / "d"), "--format", "llama"],
    }
    for expected, args in cases.items():
        capsys.readouterr()
        assert main(["export", *args]) == 2, expected
        err = capsys.readouterr().err.strip()
        assert err.startswith("study: error: ") and expected in err and "\n" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "occupied"]  # nothing written
    assert main(["export", str(runs["post"]), "--out", str(tmp_path / "empty-ok")]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_lm_eval_hf_scores_an_export_as_study_eval_scores_the_run(runs, norm, tmp_path):
    """lm-eval's own `hf` model (AutoModelForCausalLM + AutoTokenizer from the folder) against `study eval`, on
    the three local tasks. Accuracies are equal exactly. Perplexities agree to 1e-5 relative, not to the bit:
    study eval pads each row to a multiple of 64 tokens (so its numbers do not depend on the batch size) and
    sums log-likelihoods in float64, lm-eval runs each request at its own length and sums in float32; both
    change only the last bits of fp32 sums over <= 128 tokens (measured: < 1e-7 relative), where a model that
    differs in one norm or one alpha moves them by orders of magnitude."""
    import lm_eval

    from study.evaluate import tasks as tasks_mod
    from study.evaluate.run import evaluate_run

    limit = 20
    ours = evaluate_run(runs[norm], tasks="local", limit=limit, ppl=False, bootstrap_iters=0, allow_hub=False,
                        device="cpu").lm_eval["results"]
    fmt = export_run(runs[norm], tmp_path / "hf").fmt
    assert fmt == ("llama" if norm == "pre" else "prores")
    setup = tasks_mod.prepare("local", tmp_path / "tasks", corpus_data_cfg=load_for_eval(runs[norm]).cfg.data,
                              allow_hub=False)
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={tmp_path / 'hf'},trust_remote_code={fmt == 'prores'},dtype=float32",
        tasks=list(setup.tasks), task_manager=setup.task_manager(), limit=limit, batch_size=4,
        bootstrap_iters=0, device="cpu")["results"]
    compared = 0
    for task, metrics in ours.items():
        for key, value in metrics.items():
            if not isinstance(value, float) or "stderr" in key:
                continue
            other = theirs[task][key]
            if key.startswith("acc"):
                assert other == value, (task, key)
            else:
                assert math.isclose(other, value, rel_tol=1e-5), (task, key, value, other)
            compared += 1
    assert compared >= 6  # acc and acc_norm, perplexity and acc, three rolling perplexities
