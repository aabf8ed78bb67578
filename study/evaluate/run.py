"""`study eval`: evaluate a run's checkpoint — held-out perplexity and lm-eval tasks — into its run directory.

    evaluate_run(run_dir, step='latest', tasks='paper', ...) -> EvalOutcome

1. Resolves the lm-eval tasks first (tasks.prepare), so a task whose data is missing offline fails before any
   model work.
2. Loads the checkpoint with study.evaluate.load.load_for_eval (weights and ProRes alphas).
3. Held-out perplexity on exactly the packed sequences of the in-training evaluation (heldout_batches with
   cfg.eval.tokens and cfg.eval.batch_size, same dtype rule as the trainer) -> one eval.jsonl row, source "eval".
   Under a process group (`torchrun --nproc-per-node N -m study eval ...`) every rank loads the model and scores
   its share of the batches (study.perplexity), and rank 0 writes the row and runs step 4 alone.
4. lm-eval in process (lm_eval.simple_evaluate over StudyLM) -> lm_eval/step_XXXXXXX.json (results of every
   evaluation of that step, merged by task) and lm_eval.json (a copy of the step file just written).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from study import console, paper_tasks
from study.timeutil import now

logger = logging.getLogger(__name__)

NUM_FEWSHOT = paper_tasks.NUM_FEWSHOT  # pinned for every task, not left to each task config's default
LM_EVAL_DIR = "lm_eval"
LM_EVAL_FILE = "lm_eval.json"
MERGED_KEYS = ("results", "groups", "versions", "n-shot", "higher_is_better", "n-samples", "task_sources",
               "data_files")


@dataclass
class EvalOutcome:
    run_dir: Path
    step: int
    eval_row: dict | None = None
    lm_eval: dict | None = None  # the document written for this evaluation (this call's tasks only)
    files: list[Path] = field(default_factory=list)


def step_file_name(step: int) -> str:
    return f"step_{int(step):07d}.json"


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def eval_dtype(cfg, device: torch.device, dtype: str | None = "auto"):
    """The trainer's rule: bf16 autocast when the run trained under bf16 autocast on this kind of device."""
    if dtype not in (None, "auto"):
        return None if dtype == "fp32" else dtype
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return "bf16" if precision == "bf16" else None


def jsonable(obj):
    """lm-eval's results as plain JSON: numpy/torch scalars -> Python numbers, tuples -> lists, others -> str."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj
    if hasattr(obj, "item"):
        try:
            return jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    return str(obj)


@contextlib.contextmanager
def _preserved_rng():
    """simple_evaluate seeds python, numpy and torch; keep the caller's generators as they were."""
    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def run_lm_eval(model, tokenizer, setup, *, limit=None, batch_size: int = 8, device="cpu", dtype=None,
                max_length: int | None = None, bootstrap_iters: int = 100000) -> dict:
    """lm_eval.simple_evaluate over our model for a prepared TaskSetup; lm-eval's result dict, JSON-ready
    (samples dropped) plus our keys: lm_eval_version, batch_size, dtype, limit, num_fewshot (pinned to 0: every task
    zero-shot, as the paper; lm-eval's per-task n-shot confirms it), tasks, task_sources."""
    import lm_eval

    from study.evaluate.lm_eval_adapter import StudyLM

    lm = StudyLM(model, tokenizer, batch_size=batch_size, device=device, dtype=dtype, max_length=max_length)
    with _preserved_rng(), console.captured_output("lm-eval"):  # its bootstrap prints bars of its own
        out = lm_eval.simple_evaluate(model=lm, tasks=list(setup.tasks), task_manager=setup.task_manager(),
                                      limit=limit, batch_size=batch_size, log_samples=False,
                                      bootstrap_iters=bootstrap_iters, num_fewshot=NUM_FEWSHOT)
    out = dict(out or {})
    out.pop("samples", None)
    out.pop("configs", None)  # task configs hold functions; versions and n-shot identify the tasks
    config = jsonable(out.get("config", {}))
    config.update({"device": str(device), "bootstrap_iters": bootstrap_iters, "max_length": lm.max_length})
    doc = {
        "lm_eval_version": getattr(lm_eval, "__version__", "unknown"),
        "batch_size": int(batch_size),
        "dtype": lm.dtype_name,
        "limit": limit,
        "num_fewshot": NUM_FEWSHOT,
        "tasks": list(setup.tasks),
        "task_sources": dict(setup.sources),
        "data_files": jsonable(setup.data_files),
        "results": jsonable(out.get("results", {})),
        "groups": jsonable(out.get("groups", {})),
        "versions": jsonable(out.get("versions", {})),
        "n-shot": jsonable(out.get("n-shot", {})),
        "higher_is_better": jsonable(out.get("higher_is_better", {})),
        "n-samples": jsonable(out.get("n-samples", {})),
        "config": config,
    }
    return doc


def write_lm_eval(run_dir: Path, doc: dict) -> list[Path]:
    """lm_eval/step_XXXXXXX.json (merged with earlier evaluations of the same step, by task) and lm_eval.json
    (a copy of it): every step ever evaluated keeps its file."""
    from study.results import read_json, write_json_atomic

    run_dir = Path(run_dir)
    folder = run_dir / LM_EVAL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / step_file_name(doc["step"])
    previous = read_json(path, None) or {}
    merged = dict(doc)
    for key in MERGED_KEYS:
        merged[key] = {**(previous.get(key) or {}), **(doc.get(key) or {})}
    merged["tasks"] = list(dict.fromkeys([*(previous.get("tasks") or []), *doc["tasks"]]))
    history = list(previous.get("evaluations") or [])
    history.append({k: doc.get(k) for k in ("date", "tasks", "batch_size", "dtype", "limit", "num_fewshot",
                                            "lm_eval_version")})
    merged["evaluations"] = history
    write_json_atomic(path, merged)
    write_json_atomic(run_dir / LM_EVAL_FILE, merged)
    return [path, run_dir / LM_EVAL_FILE]


def evaluate_run(run_dir, *, step="latest", tasks="paper", limit: int | None = None, batch_size: int | None = None,
                 tokens: int | None = None, data_dir: str | None = None, ppl: bool = True,
                 device: str | None = "auto", dtype: str | None = "auto", bootstrap_iters: int = 100000,
                 allow_hub: bool = True, log=None) -> EvalOutcome:
    """Evaluate one checkpoint of a run directory (see the module docstring). `tasks=None` or 'none': only
    perplexity. `batch_size`: lm-eval batch size (default cfg.eval.lm_eval_batch_size). `tokens`: held-out
    perplexity budget (default cfg.eval.tokens). `data_dir`: local copies of hub datasets (default
    cfg.eval.lm_eval_data_dir)."""
    from study.evaluate import tasks as tasks_mod
    from study.evaluate.load import load_for_eval, read_run
    from study.perplexity import dtype_name, eval_row
    from study.train.distributed import Dist

    log = log or logger.info
    rd, cfg = read_run(run_dir)
    d = Dist.current()  # under torchrun: each rank scores its share of the held-out batches, rank 0 writes
    if not d.main:
        log = logger.debug
    task_names = [] if tasks in (None, "none", "") or not d.main else tasks_mod.expand(tasks)
    data_dir = data_dir if data_dir is not None else cfg.eval.lm_eval_data_dir
    dev = resolve_device(device)

    with tempfile.TemporaryDirectory(prefix="study-eval-") as work:
        setup = None
        if task_names:  # before any model work: missing data fails fast
            setup = tasks_mod.prepare(task_names, work, data_dir=data_dir, corpus_data_cfg=cfg.data,
                                      allow_hub=allow_hub)
        loaded = load_for_eval(rd.path, step=step, device=dev)
        model, tok = loaded.model, loaded.tokenizer
        outcome = EvalOutcome(run_dir=rd.path, step=loaded.step)
        amp = eval_dtype(cfg, dev, dtype)
        log(f"eval {rd.path.name} step {loaded.step} on {dev} ({dtype_name(amp)}), "
            f"alpha = {[round(a, 4) for a in model.alphas().tolist()]}")

        if ppl:
            from study.data import heldout_batches

            batches = heldout_batches(cfg.data, tok, seq_len=cfg.model.seq_len,
                                      tokens=int(tokens or cfg.eval.tokens), batch_size=cfg.eval.batch_size)
            row = eval_row(model, batches, step=loaded.step, data_cfg=cfg.data, seq_len=cfg.model.seq_len,
                           source="eval", device=dev, dtype=amp, rank=d.rank, world=d.world)
            outcome.eval_row = row
            if d.main:
                rd.append_jsonl("eval.jsonl", row)
                outcome.files.append(rd.path / "eval.jsonl")
            log(f"  held-out {row['dataset']}/{row['split']}: loss {row['loss']:.4f}  ppl {row['ppl']:.3f}  "
                f"({row['tokens']} tokens)")

        if setup is not None:
            bs = int(batch_size or cfg.eval.lm_eval_batch_size)
            lim = limit if limit is not None else cfg.eval.lm_eval_limit
            doc = run_lm_eval(model, tok, setup, limit=lim, batch_size=bs, device=dev, dtype=amp,
                              max_length=cfg.model.seq_len, bootstrap_iters=bootstrap_iters)
            doc = {"lm_eval_version": doc.pop("lm_eval_version"), "step": loaded.step, **doc,
                   "run_dir": str(rd.path), "date": now()}
            doc["config"]["alpha"] = [float(a) for a in model.alphas().tolist()]
            outcome.lm_eval = doc
            outcome.files += write_lm_eval(rd.path, doc)
            for line in summary_lines(doc):
                log("  " + line)
    return outcome


def summary_lines(doc: dict) -> list[str]:
    """One line per task: its main metrics."""
    lines = []
    for task, metrics in (doc.get("results") or {}).items():
        shown = []
        for key, value in metrics.items():
            if key in ("alias", "name", "sample_len") or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric = key.split(",")[0]
            shown.append(f"{metric} {value:.4f}" if math.isfinite(value) else f"{metric} {value}")
        lines.append(f"{task}: " + ", ".join(shown))
    return lines
