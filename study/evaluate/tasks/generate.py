"""Small evaluation tasks made from held-out documents of the bundled default corpus (no network).

    corpus_cloze     multiple_choice        next word among 4 choices          acc, acc_norm
    corpus_lastword  loglikelihood          LAMBADA-style last word            perplexity, acc
    corpus_rolling   loglikelihood_rolling  WikiText-style document perplexity word_perplexity, ...

`generate(cache_dir, data_cfg=None)` writes one JSONL file per task under a folder keyed by everything the
examples depend on (generator version, corpus fingerprint, held-out fraction, sizes), so the files are made
once and are identical on every machine. Examples come only from held-out documents (`documents(cfg,
'heldout')`): when the run trained on the default corpus, its own held-out fraction is used, so no example was
seen in training. Deterministic: a fixed-seed `random.Random`, documents in corpus order.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace
from pathlib import Path

GENERATOR_VERSION = 1
SEED = 20250305
N_CLOZE = 200
N_LASTWORD = 200
N_ROLLING = 32
MIN_WORDS, MAX_WORDS = 30, 60
_WORD = re.compile(r"^[A-Za-z]{3,}$")
_TRAIL = ".,;:!?'\")]}-"

TASK_FILES = {"corpus_cloze": "corpus_cloze.jsonl", "corpus_lastword": "corpus_lastword.jsonl",
              "corpus_rolling": "corpus_rolling.jsonl"}


def _corpus_cfg(data_cfg=None):
    """The default-corpus data config whose held-out documents the tasks use."""
    from study.config import DataConfig

    if data_cfg is not None and getattr(data_cfg, "source", None) == "default":
        return replace(data_cfg)
    base = DataConfig()
    if data_cfg is not None:  # keep the caller's cache folder
        base.cache_dir = data_cfg.cache_dir
    return base


def _passages(docs: list[tuple[str, str]], rng: random.Random) -> list[tuple[list[str], str]]:
    """Non-overlapping word windows of MIN_WORDS..MAX_WORDS words that end on a plain word.

    Returns (context words, target word) pairs; the target is the window's last alphabetic word of three or
    more letters, stripped of trailing punctuation.
    """
    out = []
    for _, text in docs:
        words = text.split()
        start = 0
        while start + MIN_WORDS < len(words):
            end = min(len(words), start + rng.randint(MIN_WORDS, MAX_WORDS))
            k = end - 1
            while k > start + MIN_WORDS // 2 and not _WORD.match(words[k].rstrip(_TRAIL)):
                k -= 1
            target = words[k].rstrip(_TRAIL)
            if _WORD.match(target) and words[k][:len(target)] == target:
                out.append((words[start:k], target))
            start = end
    return out


def _select(items: list, n: int, rng: random.Random) -> list:
    if len(items) <= n:
        return list(items)
    keep = sorted(rng.sample(range(len(items)), n))
    return [items[i] for i in keep]


def build_examples(docs: list[tuple[str, str]]) -> dict[str, list[dict]]:
    """The three tasks' examples from (doc_id, text) documents (pure function of its input)."""
    rng = random.Random(SEED)
    passages = _passages(docs, rng)
    vocab = sorted({w for _, text in docs for w in (t.rstrip(_TRAIL) for t in text.split()) if _WORD.match(w)})

    lastword = [{"text": " ".join(ctx + [target])} for ctx, target in _select(passages, N_LASTWORD, rng)]

    cloze = []
    for ctx, target in _select(passages, N_CLOZE, rng):
        pool = [w for w in rng.sample(vocab, min(len(vocab), 12)) if w.lower() != target.lower()]
        distractors: list[str] = []
        for w in pool:
            if w.lower() not in {d.lower() for d in distractors}:
                distractors.append(w)
            if len(distractors) == 3:
                break
        choices = distractors + [target]
        rng.shuffle(choices)
        cloze.append({"context": " ".join(ctx), "choices": choices, "label": choices.index(target)})

    rolling = [{"page": text.strip(), "doc_id": doc_id} for doc_id, text in _select(docs, N_ROLLING, rng)]
    return {"corpus_cloze": cloze, "corpus_lastword": lastword, "corpus_rolling": rolling}


def cache_key(data_cfg=None) -> dict:
    from study.data.corpus import default_fingerprint

    cfg = _corpus_cfg(data_cfg)
    return {"generator": GENERATOR_VERSION, "seed": SEED, "corpus": default_fingerprint(),
            "heldout_fraction": cfg.heldout_fraction, "sizes": [N_CLOZE, N_LASTWORD, N_ROLLING],
            "words": [MIN_WORDS, MAX_WORDS]}


def generate(cache_dir: str | Path | None = None, data_cfg=None) -> dict[str, Path]:
    """Write (once) and return {task name: absolute path of its JSONL file}.

    cache_dir: where the files go (default: `<data.cache_dir>/eval_tasks`); a subfolder per cache key.
    """
    from study.data.cache import locked, stable_hash
    from study.data.corpus import documents
    from study.fsutil import atomic_write_text

    cfg = _corpus_cfg(data_cfg)
    key = cache_key(cfg)
    root = Path(cache_dir).expanduser() if cache_dir is not None else Path(cfg.cache_dir).expanduser() / "eval_tasks"
    folder = (root / f"corpus-{stable_hash(key)}").resolve()
    paths = {task: folder / name for task, name in TASK_FILES.items()}
    if all(p.is_file() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder / "build"):
        if all(p.is_file() for p in paths.values()):
            return paths
        examples = build_examples(list(documents(cfg, "heldout")))
        for task, rows in examples.items():
            if not rows:
                from study.errors import DataError

                raise DataError(f"the default corpus' held-out documents gave no examples for {task}")
            atomic_write_text(paths[task], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        atomic_write_text(folder / "key.json", json.dumps(key, indent=1) + "\n")
    return paths
