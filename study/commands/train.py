"""`study train CONFIG.yaml [--set a.b=c ...] [--out ROOT]`: train one run (resuming if it has a checkpoint)."""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: the run stopped early and resumes when the same command is run again


def register(sub) -> None:
    p = sub.add_parser("train", help="train one run from a config file (resumes from its latest checkpoint)")
    p.add_argument("config", nargs="?", help="run config YAML (default: the built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=1e-3 (repeatable)")
    p.add_argument("--out", default="results", help="results root (default: ./results)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    from study import config
    from study.results import RunDir

    cfg = config.load(args.config, args.overrides)
    if args.print_config:
        print(config.dump_yaml(cfg), end="")
        return 0
    from study.train import train_run

    result = train_run(cfg, args.out, argv=sys.argv)
    print(f"{result.state} at step {result.step}: {RunDir(result.run_dir).path}")
    return EXIT_INTERRUPTED if result.state == "interrupted" else 0
