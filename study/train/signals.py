"""Stopping a run cleanly: signals set a StopFlag that the trainer reads at step boundaries.

A signal never interrupts a step: SIGTERM/SIGUSR2 (scancel, preemption, time limit) and the first Ctrl-C only
ask for a stop; the trainer then saves a checkpoint, records 'interrupted' and returns. A second Ctrl-C aborts at
once. study.dispatch.job wraps StopFlag to remember every signal (a SIGUSR2 among them means requeue).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

__all__ = ["StopFlag", "signals_to"]


class StopFlag:
    """Set by SIGTERM / SIGUSR2 / SIGINT (or by a launcher calling request()); read at step boundaries."""

    def __init__(self):
        self.signum: int | None = None

    def request(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def signals_to(flag: StopFlag, enabled: bool) -> Iterator[None]:
    """For the block: SIGTERM, SIGUSR2 and SIGINT set `flag` (the trainer checkpoints at the next step boundary);
    the previous handlers come back afterwards. Only in the main thread (Python delivers signals there)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)}

    def on_signal(signum, frame):
        if signum == signal.SIGINT and flag.signum == signal.SIGINT:  # a second Ctrl-C: stop now, no checkpoint
            raise KeyboardInterrupt
        if signum == signal.SIGINT:
            log.warning("Ctrl-C: checkpointing at the end of this step (press Ctrl-C again to abort at once)")
        flag.request(signum)

    for s in previous:
        signal.signal(s, on_signal)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
