"""Evaluation: perplexity, the lm-eval adapter, offline tasks and `study eval` (no network anywhere).

One tiny ProRes run (linear schedule, T=10, stopped at step 20 of its warmup: alpha = [1, 1, 2/3, 1/2]) is
trained once per module and evaluated through the CLI; the adapter tests use an untrained tiny model.
"""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_raw

LINEAR_T = 10


# ---------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok(cache_dir):
    from study.config import resolve
    from study.data import build_tokenizer

    cfg = resolve(tiny_raw(cache_dir))
    return build_tokenizer(cfg.data, vocab_size=cfg.model.vocab_size)


@pytest.fixture(scope="module")
def model(cache_dir):
    from study.config import resolve
    from study.model import build_model

    cfg = resolve(tiny_raw(cache_dir))
    torch.manual_seed(0)
    return build_model(cfg.model).eval()


@pytest.fixture(scope="module")
def prores_run(cache_dir, tmp_path_factory):
    """A tiny run trained 20 steps with ProRes linear (T=10): checkpoints and eval rows at steps 10 and 20."""
    from study.config import resolve
    from study.train import train_run

    cfg = resolve(tiny_raw(cache_dir, prores__schedule="linear", prores__T=LINEAR_T))
    result = train_run(cfg, tmp_path_factory.mktemp("eval-runs"), handle_signals=False)
    assert result.state == "completed" and result.step == 20
    return result.run_dir


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch):
    """Belt and braces: even on a machine with internet these tests never reach the hub."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


def _instances(kind, args_list):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=args, idx=i) for i, args in enumerate(args_list)]


PAIRS = [
    ("And God said, Let there be", " light"),
    ("To be, or not to be, that is the", " question"),
    ("Friends, Romans, countrymen, lend me your", " ears: I come to bury Caesar"),
    ("In the beginning ", "God created the heaven and the earth."),  # trailing space moves to the continuation
    ("", "Now is the winter of our discontent"),  # empty context: conditioned on EOS
    ("The LORD is my shepherd; I shall not", " want."),
]


def _direct_loglikelihood(model, tok, context, continuation):
    """Sum of log-softmax of the continuation's tokens, from one unpadded forward pass."""
    if context:
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        whole, ctx = tok.encode(context + continuation), tok.encode(context)
        cont = whole[len(ctx):]
    else:
        ctx, cont = [tok.eos_id], tok.encode(continuation)
    ids = torch.tensor([(ctx + cont)[:-1]])
    with torch.no_grad():
        logp = F.log_softmax(model(ids).float(), dim=-1)[0, -len(cont):]
    return float(logp.gather(-1, torch.tensor(cont)[:, None]).double().sum())


# ---------------------------------------------------------------------------------------------------
# perplexity
# ---------------------------------------------------------------------------------------------------
def test_perplexity_is_token_weighted_mean_and_restores_mode(model):
    from study.perplexity import perplexity

    torch.manual_seed(1)
    ids = torch.randint(0, 2048, (3, 16))
    labels = torch.randint(0, 2048, (3, 16))
    labels[0, 10:] = -100
    labels[2, :4] = -100
    batches = [{"input_ids": ids[:2], "labels": labels[:2]}, {"input_ids": ids[2:], "labels": labels[2:]}]
    model.train()
    out = perplexity(model, batches, device="cpu")
    assert model.training  # the trainer calls this mid-training
    model.eval()
    with torch.no_grad():
        nll = F.cross_entropy(model(ids).reshape(-1, 2048), labels.reshape(-1), ignore_index=-100,
                              reduction="sum")
    n = int((labels != -100).sum())
    assert out["tokens"] == n == 48 - 6 - 4
    assert out["loss"] == pytest.approx(float(nll) / n, rel=1e-6)  # / n, not / (n + 1)
    assert out["ppl"] == pytest.approx(math.exp(out["loss"]))
    assert perplexity(model, batches, device="cpu") == out  # bit-identical on a second evaluation


# ---------------------------------------------------------------------------------------------------
# the lm-eval adapter
# ---------------------------------------------------------------------------------------------------
def test_loglikelihood_matches_direct_computation(model, tok):
    from study.evaluate.lm_eval_adapter import StudyLM

    lm = StudyLM(model, tok, batch_size=4)
    got = lm.loglikelihood(_instances("loglikelihood", PAIRS), disable_tqdm=True)
    for (context, continuation), (score, greedy) in zip(PAIRS, got, strict=True):
        assert isinstance(greedy, bool)
        assert score == pytest.approx(_direct_loglikelihood(model, tok, context, continuation), abs=1e-5)


def test_loglikelihood_rolling_scores_every_token_once(model, tok):
    from study.evaluate.lm_eval_adapter import StudyLM

    short = "Blessed are the meek: for they shall inherit the earth."
    long = " ".join(["And it came to pass in those days, that there went out a decree from Caesar."] * 30)
    lm = StudyLM(model, tok, batch_size=3)
    S = lm.max_length
    assert S == 128
    got = lm.loglikelihood_rolling(_instances("loglikelihood_rolling", [(short,), (long,)]), disable_tqdm=True)

    def direct(text):
        toks = tok.encode(text)
        total, predicted = 0.0, 0
        while predicted < len(toks):  # windows of S predictions; later ones keep a full S-token context
            end = min(len(toks), predicted + S)
            window = ([tok.eos_id] + toks)[max(0, end - S):end]
            with torch.no_grad():
                logp = F.log_softmax(model(torch.tensor([window])).float(), dim=-1)[0]
            targets = toks[predicted:end]
            total += float(logp[-len(targets):].gather(-1, torch.tensor(targets)[:, None]).double().sum())
            predicted = end
        return total

    assert len(tok.encode(long)) > 3 * S  # several windows
    assert got[0] == pytest.approx(direct(short), abs=1e-5)
    assert got[1] == pytest.approx(direct(long), abs=1e-4)


def test_results_do_not_depend_on_batch_size(model, tok):
    from study.evaluate.lm_eval_adapter import StudyLM

    pairs = PAIRS + [(c[: len(c) // 2], " " + c.split()[-1]) for c, _ in PAIRS if c]
    texts = [(" ".join([c + k for c, k in PAIRS]) * (i + 1),) for i in range(3)]
    ll, roll = {}, {}
    for bs in (1, 3, 8):
        lm = StudyLM(model, tok, batch_size=bs)
        ll[bs] = lm.loglikelihood(_instances("loglikelihood", pairs), disable_tqdm=True)
        roll[bs] = lm.loglikelihood_rolling(_instances("loglikelihood_rolling", texts), disable_tqdm=True)
    assert ll[1] == ll[3] == ll[8]  # bit-identical, not just close
    assert roll[1] == roll[3] == roll[8]


def test_generate_until_is_greedy_and_stops(model, tok):
    from study.evaluate.lm_eval_adapter import StudyLM

    lm = StudyLM(model, tok, batch_size=2)
    reqs = _instances("generate_until", [("And God said", {"until": ["\n"], "max_gen_toks": 5})] * 2)
    out = lm.generate_until(reqs, disable_tqdm=True)
    assert out[0] == out[1] and isinstance(out[0], str) and "\n" not in out[0]


# ---------------------------------------------------------------------------------------------------
# tasks: sets, local corpus tasks, local copies of hub datasets, failing fast offline
# ---------------------------------------------------------------------------------------------------
def test_task_sets():
    from study.evaluate.tasks import PAPER_ZERO_SHOT, expand

    paper = expand("paper")
    assert len(PAPER_ZERO_SHOT) == 10 and paper[:10] == list(PAPER_ZERO_SHOT) and paper[10:] == ["wikitext"]
    assert "social_iqa" in paper and "lambada_openai" in paper and "mmlu" in paper
    assert expand("local") == ["corpus_cloze", "corpus_lastword", "corpus_rolling"]
    assert expand("siqa,local,corpus_cloze") == ["social_iqa", "corpus_cloze", "corpus_lastword", "corpus_rolling"]


def test_local_tasks_are_deterministic(tmp_path):
    from study.evaluate.tasks.generate import generate

    a, b = generate(tmp_path / "a"), generate(tmp_path / "b")
    for task in a:
        assert a[task].read_bytes() == b[task].read_bytes()
    cloze = [json.loads(line) for line in a["corpus_cloze"].read_text().splitlines()]
    assert 50 <= len(cloze) <= 500
    assert all(len(r["choices"]) == 4 and 0 <= r["label"] < 4 for r in cloze)
    assert all(len(set(c.lower() for c in r["choices"])) == 4 for r in cloze)


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_data_dir_copy_of_hub_tasks_runs_offline(model, tok, tmp_path):
    """A local copy in the hub's own format runs through lm-eval's own task YAMLs (process_docs included)."""
    from study.evaluate.run import run_lm_eval
    from study.evaluate.tasks import prepare

    data = tmp_path / "data"
    _write_jsonl(data / "Rowan/hellaswag/default/validation.jsonl", [
        {"ind": i, "activity_label": "Cooking", "ctx_a": "A man stands in a kitchen.", "ctx_b": "he",
         "ctx": "A man stands in a kitchen. he", "endings": [" cuts an onion.", " flies away.", " sings.",
                                                                " [title] sleeps."],
         "source_id": "x", "split": "val", "split_type": "indomain", "label": str(i % 4)} for i in range(4)])
    _write_jsonl(data / "allenai/ai2_arc/ARC-Easy/test.jsonl", [
        {"id": f"q{i}", "question": "Which of these is a fruit?",
         "choices": {"text": ["apple", "stone", "iron"], "label": ["A", "B", "C"]}, "answerKey": "A"}
        for i in range(3)])
    setup = prepare("hellaswag,arc_easy", tmp_path / "work", data_dir=data, allow_hub=False)
    assert setup.sources == {"hellaswag": "data-dir", "arc_easy": "data-dir"} and not setup.include_defaults
    doc = run_lm_eval(model, tok, setup, batch_size=4, bootstrap_iters=0)
    assert doc["results"]["hellaswag"]["sample_len"] == 4 and doc["results"]["arc_easy"]["sample_len"] == 3
    # zero-shot, pinned and recorded: our num_fewshot, and lm-eval's own per-task count agrees
    assert doc["num_fewshot"] == 0 and doc["n-shot"] == {"hellaswag": 0, "arc_easy": 0}
    assert {"acc,none", "acc_norm,none"} <= set(doc["results"]["hellaswag"])
    assert doc["versions"]["hellaswag"] == 1.0
    json.dumps(doc)

    # the split a task is scored on must be there: arc_easy is scored on test, not validation
    (data / "allenai/ai2_arc/ARC-Easy/test.jsonl").rename(data / "allenai/ai2_arc/ARC-Easy/validation.jsonl")
    from study.errors import DataError

    with pytest.raises(DataError, match=r"allenai/ai2_arc.*ARC-Easy/test\.jsonl"):
        prepare("arc_easy", tmp_path / "work", data_dir=data, allow_hub=False)


@pytest.mark.parametrize("offline_flag", [True, False], ids=["--offline", "hf-offline-mode"])
def test_hub_task_without_local_copy_fails_fast(prores_run, tmp_path, capsys, offline_flag):
    from study.cli import main

    argv = ["eval", str(prores_run), "--tasks", "hellaswag", "--data-dir", str(tmp_path)]
    start = time.monotonic()
    rc = main(argv + (["--offline"] if offline_flag else []))
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err.strip()
    assert rc in (1, 2)
    assert elapsed < 10
    assert len(err.splitlines()) == 1 and err.startswith("study: error:")
    assert "Rowan/hellaswag" in err and str(tmp_path / "Rowan/hellaswag/default/validation.jsonl") in err


# ---------------------------------------------------------------------------------------------------
# `study eval` end to end on a trained ProRes run
# ---------------------------------------------------------------------------------------------------
def test_checkpoint_mid_warmup_keeps_its_alphas(prores_run):
    from study import prores
    from study.evaluate.load import load_for_eval
    from study.train.checkpoint import find

    for step in (10, 20):
        loaded = load_for_eval(prores_run, step=step)
        stored = json.loads((find(prores_run / "checkpoints", step) / "state.json").read_text())["alpha"]
        alpha = loaded.model.alphas().tolist()
        assert alpha == pytest.approx(stored) and alpha == pytest.approx(prores.alphas("linear", step, 4, LINEAR_T))
        assert not all(a == 1.0 for a in alpha) and not all(a == 0.0 for a in alpha)


def test_study_eval_perplexity_equals_training_eval(prores_run):
    from study.cli import main
    from study.results import read_jsonl

    for step in (10, 20):
        assert main(["eval", str(prores_run), "--step", str(step), "--tasks", "none"]) == 0
    rows = read_jsonl(prores_run / "eval.jsonl")
    for step in (10, 20):
        train = [r for r in rows if r["step"] == step and r["source"] == "train"]
        evals = [r for r in rows if r["step"] == step and r["source"] == "eval"]
        assert len(train) == 1 and len(evals) == 1
        assert {k: v for k, v in evals[0].items() if k != "source"} == \
               {k: v for k, v in train[0].items() if k != "source"}  # identical, to the last bit
    assert not (prores_run / "lm_eval.json").exists()


def test_study_eval_runs_local_tasks_through_lm_eval(prores_run, capsys):
    from study.cli import main

    rc = main(["eval", str(prores_run), "--step", "10", "--tasks", "local", "--limit", "4", "--batch-size", "4",
               "--no-ppl", "--bootstrap-iters", "100"])
    assert rc == 0
    doc = json.loads((prores_run / "lm_eval.json").read_text())
    for key in ("lm_eval_version", "step", "batch_size", "dtype", "limit", "num_fewshot", "tasks", "results",
                "versions", "n-shot", "config"):
        assert key in doc, key
    assert doc["num_fewshot"] == 0 and set(doc["n-shot"].values()) == {0}
    assert doc["evaluations"][-1]["num_fewshot"] == 0
    assert doc["step"] == 10 and doc["batch_size"] == 4 and doc["dtype"] == "fp32" and doc["limit"] == 4
    res = doc["results"]
    assert {"acc,none", "acc_stderr,none", "acc_norm,none"} <= set(res["corpus_cloze"])  # multiple_choice
    assert {"perplexity,none", "acc,none"} <= set(res["corpus_lastword"])  # loglikelihood
    assert {"word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"} <= set(res["corpus_rolling"])
    assert all(res[t]["sample_len"] == 4 for t in res)
    assert doc["versions"] == {"corpus_cloze": 1.0, "corpus_lastword": 1.0, "corpus_rolling": 1.0}
    assert doc["config"]["alpha"] == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
    assert doc["task_sources"] == {t: "corpus" for t in res}

    # a later step keeps the earlier one's file; lm_eval.json holds the latest
    assert main(["eval", str(prores_run), "--tasks", "corpus_cloze", "--limit", "3", "--no-ppl",
                 "--bootstrap-iters", "0"]) == 0
    latest = json.loads((prores_run / "lm_eval.json").read_text())
    assert latest["step"] == 20 and list(latest["results"]) == ["corpus_cloze"]
    assert json.loads((prores_run / "lm_eval/step_0000010.json").read_text())["results"] == res
    assert (prores_run / "lm_eval/step_0000020.json").exists()
