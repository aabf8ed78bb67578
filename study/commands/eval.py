"""`study eval RUN_DIR [--step N|latest] [--tasks paper|local|NAME,...] [--limit N] [--batch-size B]
[--tokens N] [--data-dir DIR] [--no-ppl]`: evaluate a run's checkpoint into its run directory."""

from __future__ import annotations

import argparse


def checkpoint_step(value: str):
    """argparse type of --step: a checkpoint step (>= 0) or 'latest'."""
    if value == "latest":
        return value
    try:
        step = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--step must be an integer or 'latest', got {value!r}") from None
    if step < 0:
        raise argparse.ArgumentTypeError("--step must be >= 0")
    return step


def positive_int(value: str) -> int:
    """argparse type of a count: an integer >= 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def register(sub) -> None:
    from study.evaluate.tasks import describe_sets  # no lm-eval import: the set names are plain data

    p = sub.add_parser(
        "eval", help="evaluate a run's checkpoint: held-out perplexity (eval.jsonl) and lm-eval (lm_eval.json)",
        description=f"Held-out perplexity on the run's own held-out sequences (appended to eval.jsonl, source "
                    "'eval') and lm-eval tasks in process (lm_eval.json; lm_eval/step_XXXXXXX.json keeps every "
                    f"step). Task sets: {describe_sets()}; none; or lm-eval task or group names. paper: every "
                    f"task of the paper's Tables 3 and 4, zeroshot: Table 3's (study/paper_tasks.py); local: "
                    f"offline, from the bundled corpus.")
    p.add_argument("run_dir", help="run directory (holds config.yaml and checkpoints/)")
    p.add_argument("--step", type=checkpoint_step, default="latest", help="checkpoint step or 'latest' (default)")
    p.add_argument("--tasks", default=None,
                   help="comma-separated task sets/names (default: eval.lm_eval_tasks of the run, else paper); "
                        "'none' for perplexity only")
    p.add_argument("--limit", type=positive_int, default=None, help="at most N examples per task (testing only)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="lm-eval batch size (default eval.lm_eval_batch_size); results do not depend on it")
    p.add_argument("--tokens", type=positive_int, default=None, help="held-out perplexity tokens (default eval.tokens)")
    p.add_argument("--data-dir", default=None,
                   help="local copies of the hub datasets: DIR/<dataset>/<config>/<split>.jsonl "
                        "(default eval.lm_eval_data_dir; docs/evaluation.md)")
    p.add_argument("--no-ppl", action="store_true", help="skip held-out perplexity")
    p.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 autocast where the run trained with it (GPU), else fp32")
    p.add_argument("--bootstrap-iters", type=int, default=100000,
                   help="lm-eval bootstrap iterations for stderr of non-mean metrics (default 100000; 0: none)")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.evaluate.run import evaluate_run
    from study.results import RunDir

    tasks = args.tasks
    if tasks is None:
        rd = RunDir(args.run_dir)
        configured = rd.read_config().eval.lm_eval_tasks if rd.exists() else []
        tasks = ",".join(configured) if configured else "paper"
    if tasks not in ("none", ""):
        from study.extras import require_extra
        require_extra("eval", "study eval with lm-eval tasks (--tasks none: held-out perplexity only)")
    from study.evaluate.run import resolve_device
    from study.train.distributed import launched_group

    # Under torchrun each rank scores its share of the held-out batches (rank 0 writes, and runs lm-eval).
    with launched_group(cuda=resolve_device(args.device).type == "cuda") as launch:
        outcome = evaluate_run(args.run_dir, step=args.step, tasks=tasks, limit=args.limit,
                               batch_size=args.batch_size, tokens=args.tokens, data_dir=args.data_dir,
                               ppl=not args.no_ppl, device=args.device, dtype=args.dtype,
                               bootstrap_iters=args.bootstrap_iters, allow_hub=not args.offline)
    if launch is None or launch.rank == 0:
        written = ", ".join(str(p) for p in dict.fromkeys(outcome.files)) or "nothing"
        print(f"evaluated step {outcome.step}: wrote {written}")
    return 0
