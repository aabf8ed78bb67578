"""`study train CONFIG.yaml [--set a.b=c ...] [--out ROOT] [--nproc-per-node N]`: train one run (resuming if it
has a checkpoint).

Several processes on one machine (DDP or FSDP, per train.parallelism): `torchrun --nproc-per-node N -m study
train CONFIG`, or `study train CONFIG --nproc-per-node N`, which starts the N workers itself with torchrun's
variables (study.train.distributed.Launch) and waits for them: a SIGTERM, SIGUSR2 or Ctrl-C it receives goes to
every worker once, and the workers checkpoint and stop together however long the save takes (torchrun gives its
workers 30 s after forwarding a SIGTERM, then kills them).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: the run stopped early and resumes when the same command is run again
FAILED_RANK_GRACE_S = 10  # after one worker failed, the others (blocked in a collective) are killed after this


def register(sub) -> None:
    p = sub.add_parser("train", help="train one run from a config file (resumes from its latest checkpoint)")
    p.add_argument("config", nargs="?", help="run config YAML (default: the built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=1e-3 (repeatable)")
    p.add_argument("--out", default="results", help="results root (default: ./results)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--nproc-per-node", type=int, default=None, metavar="N",
                   help="train with N processes on this machine (one per GPU; gloo processes on CPU), the "
                        "parallelism of train.parallelism; like torchrun --nproc-per-node N -m study train")
    p.set_defaults(func=run)


def run(args) -> int:
    from study import config
    from study.errors import ConfigError
    from study.results import RunDir
    from study.train.distributed import Launch, launched_group
    from study.train.runtime import wants_cuda

    cfg = config.load(args.config, args.overrides)
    if args.print_config:
        print(config.dump_yaml(cfg), end="")
        return 0
    if args.nproc_per_node is not None:
        if args.nproc_per_node < 1:
            raise ConfigError(f"--nproc-per-node must be >= 1, got {args.nproc_per_node}")
        if Launch.from_env() is not None:
            raise ConfigError("--nproc-per-node inside a launched process (torchrun, a submitted job): the launcher "
                              "already started the processes; drop --nproc-per-node")
        return _spawn_workers(args)
    from study.train import train_run

    with launched_group(cuda=wants_cuda(cfg.train)) as launch:  # torchrun's workers: their process group
        result = train_run(cfg, args.out, argv=sys.argv)
    if launch is None or launch.rank == 0:
        print(f"{result.state} at step {result.step}: {RunDir(result.run_dir).path}")
    return EXIT_INTERRUPTED if result.state == "interrupted" else 0


def _worker_argv(args) -> list[str]:
    """The same `study train` command without --nproc-per-node, for each worker."""
    from study import console

    loudness = {console.QUIET: ["-q"], console.VERBOSE: ["-v"]}.get(getattr(args, "verbosity", None), [])
    argv = [sys.executable, "-m", "study", *loudness, "train"]
    argv += [args.config] if args.config else []
    for override in args.overrides:
        argv += ["--set", override]
    return argv + ["--out", args.out]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_workers(args) -> int:
    """Start N workers of this machine's launch, forward stop signals to them, wait for all; the exit code is a
    failed worker's, else 75 if the run was interrupted, else 0."""
    from study.console import log
    from study.train.distributed import Launch

    n, port = args.nproc_per_node, _free_port()
    threads = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n))} if "OMP_NUM_THREADS" not in os.environ \
        else {}  # as torchrun: N processes share the cores (a user's setting wins)
    workers = []
    for rank in range(n):
        env = {**os.environ, **threads, **Launch(rank, n, rank, n, "127.0.0.1", port).env()}
        # A session of its own: a Ctrl-C in the terminal reaches this process only, which forwards it once.
        workers.append(subprocess.Popen(_worker_argv(args), env=env, start_new_session=True))
    log.info("started %d training processes (rendezvous 127.0.0.1:%d)", n, port)

    def forward(signum, frame):
        for w in workers:
            if w.poll() is None:
                w.send_signal(signum)

    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
    previous = {s: signal.signal(s, forward) for s in stops}
    try:
        failed_at = None
        while any(w.poll() is None for w in workers):
            codes = [w.returncode for w in workers]
            if failed_at is None and any(c not in (None, 0, EXIT_INTERRUPTED) for c in codes):
                failed_at = time.monotonic()  # the others wait for it in a collective: they cannot finish
            if failed_at is not None and time.monotonic() - failed_at > FAILED_RANK_GRACE_S:
                for w in workers:
                    if w.poll() is None:
                        w.kill()
            time.sleep(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    codes = [w.returncode for w in workers]
    failed = [c for c in codes if c not in (0, EXIT_INTERRUPTED)]
    if failed:
        log.error("training process(es) failed with exit codes %s", codes)
        return failed[0] if failed[0] > 0 else 1
    return EXIT_INTERRUPTED if EXIT_INTERRUPTED in codes else 0
