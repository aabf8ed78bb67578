"""`study export RUN_DIR --out DIR [--step N] [--format auto|llama|prores]`: a checkpoint as a transformers model."""

from __future__ import annotations

from study.commands.eval import checkpoint_step


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="write a run's checkpoint as a Hugging Face model folder (safetensors, config, tokenizer)",
        description="Pre-LN with every alpha = 1 becomes a plain LlamaForCausalLM; every other placement, and a "
                    "checkpoint mid-warmup, loads with AutoModelForCausalLM.from_pretrained(DIR, "
                    "trust_remote_code=True) from the modeling_prores.py written beside the weights.")
    p.add_argument("run_dir", help="run directory (holds config.yaml and checkpoints/)")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--step", type=checkpoint_step, default="latest", help="checkpoint step or 'latest' (default)")
    p.add_argument("--format", dest="fmt", default="auto", choices=("auto", "llama", "prores"),
                   help="auto (default): llama where exact, else prores; llama: refuse if not exact")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.export import export_run

    result = export_run(args.run_dir, args.out, step=args.step, fmt=args.fmt)
    how = "LlamaForCausalLM" if result.fmt == "llama" else "trust_remote_code=True"
    print(f"exported step {result.step} as {result.fmt} ({how}): {result.out}")
    return 0
