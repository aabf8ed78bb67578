"""`study run GRID --jobs N`: up to N cells of a grid at once on this machine, each in a process of its own.

Each cell trains in a fresh `python -m study.jobs` child that calls `train_run` exactly as `study run` does in
process (same run directory, same lease, same resume), with cores // N intra-op threads (torch.set_num_threads in
the child). The children run in sessions of their own, so a terminal's Ctrl-C reaches only this process, which
passes each signal on to every running child: the first SIGINT or SIGTERM makes each child checkpoint and stop
as a single run does (and no further cell starts); a second Ctrl-C aborts them at once. Children print only
warnings and errors (all of it with `study -v`); this process prints one line per finished cell with the grid's
ETA. What a child did is read from its run's status.json (exit 0), or from its exit code (busy, an error, aborted).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from study import console
from study.config import run_id, to_dict
from study.errors import StudyError
from study.lease import RunBusy

log = logging.getLogger(__name__)

EXIT_ABORTED = 130  # a child stopped by a second Ctrl-C at once, without a checkpoint (as `study` exits then)
POLL_S = 0.2


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a SLURM allocation sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    return max(1, available_cores() // max(1, jobs))


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _eta(durations: list[float], queued: int, ages: list[float], jobs: int) -> float:
    """Seconds until the grid is done: the cells still queued take the mean duration so far, running ones what
    they lack of it, and `jobs` of them go at a time."""
    mean = sum(durations) / len(durations)
    return (queued * mean + sum(max(mean - age, 0.0) for age in ages)) / jobs


@dataclass
class _Child:
    index: int
    cell: object
    proc: subprocess.Popen
    started: float


class _Signals:
    """While the pool runs: SIGINT/SIGTERM are counted and passed on to the children, never raised here."""

    def __init__(self, forward):
        self.forward, self.received = forward, []

    def __enter__(self):
        self.previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in self.previous:
            signal.signal(s, self._on)
        return self

    def _on(self, signum, frame):
        self.received.append(signum)
        if len(self.received) == 1:
            log.warning("%s: asking the running cells to checkpoint and stop; no further cell starts%s",
                        signal.Signals(signum).name,
                        " (Ctrl-C again aborts them at once)" if signum == signal.SIGINT else "")
        self.forward(signum)

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def run_parallel(todo: list[tuple[int, object, str]], root: Path, jobs: int) -> Counter:
    """Train `todo` ([(index, cell, its console label)], cells not finished yet) in up to `jobs` children at once.
    Returns how many ended in each state (a run state, 'skipped (busy)', 'failed', 'aborted', 'not started')."""
    threads = threads_per_job(jobs)
    log.info("%d cells, %d at a time, %d thread%s each", len(todo), jobs, threads, "s" if threads > 1 else "")
    summary: Counter = Counter()
    queue, running, durations = list(todo), [], []
    done = 0

    def forward(signum):
        for child in running:
            if child.proc.poll() is None:
                child.proc.send_signal(signum)

    with _Signals(forward) as signals:
        while queue or running:
            while queue and len(running) < jobs and not signals.received:
                index, cell, head = queue.pop(0)
                state = cell.status(root).get("state")
                log.debug("%s: %s", head, "run" if not state else f"resume ({state})")
                running.append(_Child(index, cell, _spawn(cell, root, threads), time.monotonic()))
            if signals.received and not running:
                break
            time.sleep(POLL_S)
            for child in [c for c in running if c.proc.poll() is not None]:
                running.remove(child)
                done += 1
                outcome = _outcome(child, root)
                summary[outcome] += 1
                durations.append(time.monotonic() - child.started)
                eta = _eta(durations, len(queue), [time.monotonic() - c.started for c in running], jobs)
                eta = f", eta {_clock(eta)}" if (queue or running) and not signals.received else ""
                head = next(h for i, _, h in todo if i == child.index)
                log.info("%s: %s in %s (%d/%d done%s)", head, outcome, _clock(durations[-1]), done, len(todo), eta)
    if signals.received and queue:
        summary["not started"] += len(queue)
        log.warning("stopped: %d cells not started (run the same command again to resume)", len(queue))
    return summary


def _spawn(cell, root: Path, threads: int) -> subprocess.Popen:
    spec = {"config": to_dict(cell.config), "run_id": run_id(cell.config), "axes": cell.axes, "root": str(root),
            "threads": threads, "verbose": console.verbose(), "argv": sys.argv}
    proc = subprocess.Popen([sys.executable, "-m", "study.jobs"], stdin=subprocess.PIPE, text=True,
                            start_new_session=True)  # our signals reach it only through `forward`
    proc.stdin.write(json.dumps(spec))
    proc.stdin.close()
    return proc


def _outcome(child: _Child, root: Path) -> str:
    code = child.proc.returncode
    if code == RunBusy.exit_code:
        return "skipped (busy)"
    if code == EXIT_ABORTED:
        return "aborted"
    if code == 0:  # train_run returned: its state is in status.json (completed, diverged or interrupted)
        return str(child.cell.status(root).get("state") or "failed")
    return "failed" if code > 0 else f"failed (killed by {signal.Signals(-code).name})"


def _child_main() -> int:
    """A child: train one cell described on stdin, with the given threads, and exit with its outcome."""
    spec = json.loads(sys.stdin.read())
    console.setup(console.VERBOSE if spec["verbose"] else console.QUIET)
    import torch

    from study import config
    from study.train import train_run

    torch.set_num_threads(int(spec["threads"]))
    cfg = config.resolve(spec["config"])
    if run_id(cfg) != spec["run_id"]:  # the config must travel unchanged, or this would be another run
        raise RuntimeError(f"cell config changed on its way to the child: {run_id(cfg)} != {spec['run_id']}")
    try:
        result = train_run(cfg, spec["root"], axes=spec["axes"], argv=spec["argv"])
    except StudyError as exc:
        console.log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C: abort without a checkpoint, as a single run does
        return EXIT_ABORTED
    log.debug("%s: %s at step %d", result.run_dir.name, result.state, result.step)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
