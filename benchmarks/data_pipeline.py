"""Data pipeline benchmark (issue 6): tokenize + pack throughput, and useful-token fraction of pack vs pad.

    .venv/bin/python benchmarks/data_pipeline.py [--vocab 32000] [--seq-len 1024] [--out FILE.json]

Prints, on the default corpus with the default byte-level BPE:
  (a) training tokens/s of TrainStream (construction + one epoch of next_batch): cold (no token cache: the whole
      corpus is tokenized with encode_batch first) and warm (token cache on disk); plus tokenization alone, and
      the streamed-HF code path (the same documents as a local JSONL file read with datasets' streaming json
      builder, tokenized block by block), the path C4 takes;
  (b) the useful-token fraction (labels that are real text / all label positions) of pack vs the official pad
      mode over one epoch of the same training documents, at seq_len 1024 and 128.
Writes benchmarks/results/data_pipeline.json (device, versions, date, command, numbers). `pipeline_tokens_per_s`
returns the tokens/s for reuse (e.g. against the training step's consumption rate).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

from study.config import DataConfig
from study.data import TrainStream, build_tokenizer, documents
from study.data import tokens as tokens_mod

RESULTS = Path(__file__).resolve().parent / "results" / "data_pipeline.json"


def _epoch_tokens(stream: TrainStream) -> int:
    """Label tokens in one epoch of a finite stream in pack mode (documents + one EOS each, less one)."""
    docs = stream._docs
    return int(docs.corpus.lengths()[docs.train].sum() + len(docs.train) - 1)


def pipeline_tokens_per_s(data_cfg: DataConfig, tok, *, seq_len: int = 1024, batch: int = 8,
                          tokens: int | None = None, cold: bool = False) -> dict:
    """Tokens/s of the training data path: TrainStream construction plus next_batch until `tokens` label tokens
    (default: one epoch) have been produced. cold=True first empties the token cache (a fresh cache folder for
    the token arrays; the tokenizer is given) so construction tokenizes the whole corpus.

    Returns {'tokens_per_s', 'tokens', 'seconds', 'construct_s', 'batches_s', 'cpu_s', 'tokens_per_cpu_s'}.
    """
    cfg = data_cfg
    tmp = None
    if cold:
        tmp = tempfile.TemporaryDirectory(prefix="bench-data-")
        cfg = dataclasses.replace(data_cfg, cache_dir=tmp.name)
    tokens_mod._MEMO.clear()
    try:
        c0, t0 = common.cpu_seconds(), time.perf_counter()
        stream = TrainStream(cfg, tok, seq_len=seq_len, seed=0)
        t1 = time.perf_counter()
        if tokens is None:
            tokens = _epoch_tokens(stream) if hasattr(stream._docs, "corpus") else 10 * seq_len * batch
        done = 0
        while done < tokens:
            done += stream.next_batch(batch)["n_tokens"]
        t2, c2 = time.perf_counter(), common.cpu_seconds()
    finally:
        tokens_mod._MEMO.clear()
        if tmp is not None:
            tmp.cleanup()
    return {"tokens_per_s": done / (t2 - t0), "tokens": done, "seconds": t2 - t0, "construct_s": t1 - t0,
            "batches_s": t2 - t1, "cpu_s": c2 - c0, "tokens_per_cpu_s": done / (c2 - c0)}


def data_tokens_per_s(data_cfg: DataConfig | None = None, *, vocab_size: int = 32000, seq_len: int = 1024,
                      cold: bool = False) -> float:
    """Just the number: training tokens/s of the default data path (for comparisons with the training step)."""
    data_cfg = data_cfg or DataConfig()
    tok = build_tokenizer(data_cfg, vocab_size)
    return pipeline_tokens_per_s(data_cfg, tok, seq_len=seq_len, cold=cold)["tokens_per_s"]


def tokenize_tokens_per_s(data_cfg: DataConfig, tok) -> dict:
    """encode_batch alone over every document of the corpus."""
    texts = [t for _, t in documents(data_cfg, "train")]
    c0, t0 = common.cpu_seconds(), time.perf_counter()
    n = sum(len(ids) for ids in tok.encode_batch(texts))
    sec, cpu = time.perf_counter() - t0, common.cpu_seconds() - c0
    return {"tokens_per_s": n / sec, "tokens": n, "seconds": sec, "documents": len(texts),
            "cpu_s": cpu, "tokens_per_cpu_s": n / cpu,
            "mb_per_s": sum(len(t.encode()) for t in texts) / sec / 1e6}


def hf_stream_tokens_per_s(data_cfg: DataConfig, tok, *, seq_len: int, tokens: int, batch: int = 8) -> dict:
    """The streamed-HF path (datasets json builder, streaming=True) over the default corpus' documents written
    to a temporary JSONL file."""
    with tempfile.TemporaryDirectory(prefix="bench-hf-") as tmp:
        path = Path(tmp) / "corpus.jsonl"
        with open(path, "w") as fh:
            for _, text in documents(data_cfg, "train"):
                fh.write(json.dumps({"text": text}) + "\n")
        cfg = dataclasses.replace(data_cfg, source="hf", hf_path="json", hf_data_files={"train": [str(path)]},
                                  streaming=True, heldout_fraction=0.0)
        return pipeline_tokens_per_s(cfg, tok, seq_len=seq_len, batch=batch, tokens=tokens)


def useful_fraction(data_cfg: DataConfig, tok, *, seq_len: int, packing: str) -> dict:
    """Fraction of label positions that are real text over one epoch of the training documents."""
    cfg = dataclasses.replace(data_cfg, packing=packing)
    stream = TrainStream(cfg, tok, seq_len=seq_len, seed=0)
    useful = positions = 0
    n_docs = len(stream._docs.train)
    if packing == "pad":
        for _ in range(0, n_docs, 64):
            b = stream.next_batch(min(64, n_docs - stream.sequences))
            useful, positions = useful + b["n_tokens"], positions + b["labels"].numel()
    else:  # every full sequence of the epoch (the remainder continues into the next epoch)
        full = _epoch_tokens(stream) // seq_len
        while stream.sequences < full:
            b = stream.next_batch(min(64, full - stream.sequences))
            useful, positions = useful + b["n_tokens"], positions + b["labels"].numel()
    return {"useful_fraction": useful / positions, "useful_tokens": useful, "label_positions": positions,
            "sequences": positions // seq_len, "documents": n_docs,
            # share of the epoch's text that is trained on (pad truncates every document to seq_len + 1 tokens)
            "text_kept_fraction": useful / _epoch_tokens(stream)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3, help="warm measurements (median reported)")
    ap.add_argument("--cache-dir", default=None, help="default: data.cache_dir (~/.cache/prores-study)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    cfg = DataConfig() if args.cache_dir is None else DataConfig(cache_dir=args.cache_dir)
    t0 = time.perf_counter()
    tok = build_tokenizer(cfg, args.vocab)
    tok_s = time.perf_counter() - t0
    print(f"tokenizer {tok.name}: ready in {tok_s:.1f} s (trained or read from the cache)")

    res: dict = {"tokenizer": tok.name, "tokenizer_ready_s": tok_s}
    res["tokenize_only"] = tokenize_tokens_per_s(cfg, tok)
    res["cold"] = pipeline_tokens_per_s(cfg, tok, seq_len=args.seq_len, batch=args.batch, cold=True)
    pipeline_tokens_per_s(cfg, tok, seq_len=args.seq_len, batch=args.batch)  # make sure the cache exists
    warm = [pipeline_tokens_per_s(cfg, tok, seq_len=args.seq_len, batch=args.batch) for _ in range(args.repeats)]
    res["warm"] = min(warm, key=lambda r: abs(r["tokens_per_s"] - statistics.median(w["tokens_per_s"] for w in warm)))
    res["warm_all_tokens_per_s"] = [w["tokens_per_s"] for w in warm]
    res["hf_stream"] = hf_stream_tokens_per_s(cfg, tok, seq_len=args.seq_len, batch=args.batch,
                                              tokens=min(res["cold"]["tokens"], 2_000_000))
    print(f"(a) tokenize + pack, seq_len {args.seq_len}, default corpus, {res['cold']['tokens']:,} tokens/epoch")
    print(f"    tokenize only (encode_batch)   {res['tokenize_only']['tokens_per_s']:>12,.0f} tokens/s "
          f"({res['tokenize_only']['mb_per_s']:.2f} MB/s; {res['tokenize_only']['tokens_per_cpu_s']:,.0f} tokens per "
          f"CPU-second)")
    for key, label in (("cold", "cold (no token cache)"), ("warm", "with token cache"),
                       ("hf_stream", "streamed HF json path")):
        r = res[key]
        print(f"    {label:<30} {r['tokens_per_s']:>12,.0f} tokens/s  ({r['tokens']:,} tokens in {r['seconds']:.2f} s; "
              f"construct {r['construct_s']:.2f} s; {r['tokens_per_cpu_s']:,.0f} tokens per CPU-second)")

    res["useful_fraction"] = {}
    print("(b) useful-token fraction over one epoch (real-text labels / label positions)")
    for S in (1024, 128):
        row = {p: useful_fraction(cfg, tok, seq_len=S, packing=p) for p in ("pack", "pad")}
        res["useful_fraction"][str(S)] = row
        print(f"    seq_len {S:>5}: pack {row['pack']['useful_fraction']:.4f}   pad {row['pad']['useful_fraction']:.4f}"
              f"   (pad: {row['pad']['documents']} documents, one sequence each, keeping "
              f"{row['pad']['text_kept_fraction']:.1%} of the text; "
              f"pack keeps {row['pack']['text_kept_fraction']:.1%})")

    out = {
        "benchmark": "data_pipeline",
        "command": " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable), *sys.argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": {"kind": "cpu", "name": common.cpu_name(), "cores": os.cpu_count(),
                   "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                   "note": "shared machine; absolute times are noisy, compare numbers from the same run"},
        "versions": common.versions("numpy", "tokenizers", "datasets"),
        "config": {"vocab_size": args.vocab, "seq_len": args.seq_len, "batch": args.batch, "corpus": "default"},
        "results": res,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
