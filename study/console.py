"""Console output for people: the project's own concise lines through `logging`, other libraries quiet.

- `setup(verbosity)` once per process (the CLI does it; so does a submitit task): `study:` lines at INFO,
  `--quiet` keeps warnings and errors, `--verbose` adds debug lines and turns other libraries' logs and
  progress bars back on.
- Only rank 0 of a multi-process job prints info lines; every rank prints warnings and errors.
- `TrainProgress`: a bar on a terminal, one plain line per log step elsewhere (a SLURM log, `> log 2>&1`).
- `captured_output()`: for third-party code that prints bars and chatter on its own (lm-eval's bootstrap).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
import warnings

log = logging.getLogger("study")

QUIET, NORMAL, VERBOSE = -1, 0, 1

# Loggers of libraries whose INFO lines are not for our users (a real warning of theirs still passes).
_THIRD_PARTY = ("datasets", "transformers", "huggingface_hub", "lm_eval", "lm-eval", "submitit", "filelock",
                "fsspec", "urllib3", "httpx", "torch.distributed", "matplotlib", "PIL", "numexpr", "evaluate", "wandb",
                "tensorboard")

# These libraries read their verbosity and progress-bar switches when first imported, and their worker
# processes (datasets' num_proc pool, submitit tasks) inherit the environment: set only what the user left unset.
_THIRD_PARTY_ENV = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                    "TRANSFORMERS_VERBOSITY": "error", "DATASETS_VERBOSITY": "error",
                    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "TOKENIZERS_PARALLELISM": "false"}

_state = {"verbosity": NORMAL}


def process_rank() -> int:
    """This process's rank in a multi-process job (0 when alone), before or after init_process_group."""
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    for var in ("RANK", "SLURM_PROCID"):  # set by torchrun / srun for every task
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


class _RankZeroInfo(logging.Filter):
    """Info and debug lines from rank 0 only; warnings and errors from every rank (with the rank)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rank = process_rank()
        if rank == 0:
            return True
        if record.levelno >= logging.WARNING:
            record.msg = f"[rank {rank}] {record.msg}"
            return True
        return False


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"study: error: {text}"
        if record.levelno >= logging.WARNING:
            return f"study: warning: {text}"
        return f"study: {text}"


class _Handler(logging.StreamHandler):
    """Writes to the stream given, or to whatever sys.stderr is at the time (pytest and notebooks swap it)."""

    def __init__(self, stream=None):
        super().__init__(stream or sys.stderr)
        self._fixed = stream is not None
        self._study = True

    def emit(self, record: logging.LogRecord) -> None:
        if not self._fixed:
            self.stream = sys.stderr
        super().emit(record)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning as one line (the library's source line is noise to a user)."""
    first = str(message).strip().splitlines()[0] if str(message).strip() else ""
    logging.getLogger("study.warnings").warning("%s: %s (%s:%d)", category.__name__, first,
                                                os.path.basename(filename), lineno)


def setup(verbosity: int = NORMAL, *, stream=None) -> None:
    """Configure logging for this process. Idempotent: a second call replaces the first's handler."""
    _state["verbosity"] = verbosity
    root = logging.getLogger("study")
    for handler in list(root.handlers):
        if getattr(handler, "_study", False):
            root.removeHandler(handler)
    handler = _Handler(stream)
    handler.setFormatter(_Formatter())
    handler.addFilter(_RankZeroInfo())
    root.addHandler(handler)
    root.setLevel({QUIET: logging.WARNING, NORMAL: logging.INFO}.get(verbosity, logging.DEBUG))
    root.propagate = False
    verbose = verbosity >= VERBOSE
    for name in _THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:
        for key, value in _THIRD_PARTY_ENV.items():
            os.environ.setdefault(key, value)
        _quiet_loaded_libraries()
    warnings.showwarning = _show_warning


def _quiet_loaded_libraries() -> None:
    """Libraries imported before setup() (tests, notebooks) keep their import-time switches: set them now."""
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
        sys.modules["datasets"].logging.set_verbosity_error()
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()


def verbose() -> bool:
    return _state["verbosity"] >= VERBOSE


@contextlib.contextmanager
def captured_output(name: str = "third-party"):
    """Swallow what third-party code prints to stdout/stderr (progress bars, "bootstrapping for stddev"), unless
    --verbose. Lines that look like a warning or an error are passed on as one warning line each."""
    if verbose():
        yield
        return
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        for text in (out.getvalue(), err.getvalue()):
            for line in text.replace("\r", "\n").splitlines():
                lowered = line.lower()
                if "warning" in lowered or "error" in lowered:
                    log.warning("%s: %s", name, line.strip())


def _eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class TrainProgress:
    """Training progress: a tqdm bar on a terminal, else a plain line every `every` steps (one per log step by
    default): step, loss, lr, tokens/s, MFU, ETA. Only rank 0 builds one."""

    def __init__(self, name: str, total: int, initial: int, *, every: int, enabled: bool = True,
                 stream=None):
        self.name, self.total, self.initial, self.every = name, total, initial, max(int(every), 1)
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.last_line = initial
        self.bar = None
        self.enabled = enabled and log.isEnabledFor(logging.INFO)
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=name, unit="step", dynamic_ncols=True,
                            file=self.stream)

    def update(self, step: int, *, loss: float, lr: float, tokens_per_s: float | None, mfu: float | None) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}" if tokens_per_s else "-")
            return
        if step - self.last_line < self.every and step < self.total:
            return
        self.last_line = step
        done = step - self.initial
        rate = (time.monotonic() - self.started) / done if done > 0 else 0.0
        parts = [f"{self.name} step {step}/{self.total}", f"loss {loss:.4f}", f"lr {lr:.2e}"]
        if tokens_per_s:
            parts.append(f"{tokens_per_s / 1e3:,.1f}k tok/s")
        if mfu is not None:
            parts.append(f"mfu {mfu:.1%}")
        parts.append(f"eta {_eta(rate * (self.total - step))}")
        log.info(" | ".join(parts))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
