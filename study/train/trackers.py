"""Live dashboards, opt-in (`train.trackers: [tensorboard, wandb]`, extra [track]).

Every row the trainer appends to metrics.jsonl, eval.jsonl or probes.jsonl (RunDir.append_jsonl calls its
listeners) also goes, as scalars at the row's step, to TensorBoard event files in <run>/tensorboard/ and to a
Weights & Biases run whose files live in <run>/wandb/. metrics.jsonl stays the record: a tracker that cannot be
imported, started or written to warns once and is dropped, and training goes on. Rank 0 only.

W&B: group = the grid, name = the run name, id = the run id (so a resumed run continues the same W&B run),
config = the resolved config. Offline unless the user chose a mode in W&B's own settings (WANDB_MODE, `wandb
online`); W&B's console chatter is off unless `study -v`.

A resume truncates the rows past its checkpoint from the JSONL logs and writes those steps again. TensorBoard:
the new writer starts with a purge at the first step it writes, so TensorBoard drops the killed session's values
at that step and later (its purge_orphaned_data) and shows exactly metrics.jsonl. W&B never rewrites a step:
offline, each session is a folder of its own with the same run id (the resumed one starting after the
checkpoint); online, or once synced, the steps the killed session had already logged keep its values (W&B drops
a step that does not increase). On CPU those values equal the resumed ones (a resume is bit-identical) except
tokens/s; metrics.jsonl holds the resumed rows.
"""

from __future__ import annotations

import contextlib
import logging
import time

from study import console
from study.config import run_id, to_dict
from study.extras import MissingExtra, require

log = logging.getLogger(__name__)

METRIC_KEYS = ("loss", "lr", "grad_norm", "tokens", "tokens_per_s", "mfu")  # metrics.jsonl -> train/<key>
EVAL_KEYS = ("loss", "ppl")  # eval.jsonl -> eval/<key>
PROBE_KEYS = ("act_norm", "branch_norm_attn", "branch_norm_ffn")  # probes.jsonl -> probe/<key>/layer_<l>
WANDB_PROJECT = "prores-study"  # when the user's W&B settings name none


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def layer_tag(l: int) -> str:
    return f"layer_{l:02d}"


def scalars(name: str, row: dict) -> dict[str, float]:
    """A JSONL row as dashboard scalars {tag: value}; absent (None) values are left out, NaN/inf kept."""
    if name == "metrics.jsonl":
        out = {f"train/{k}": row.get(k) for k in METRIC_KEYS}
        out.update({f"alpha/{layer_tag(l)}": a for l, a in enumerate(row.get("alpha") or (), 1)})
    elif name == "eval.jsonl":
        out = {f"eval/{k}": row.get(k) for k in EVAL_KEYS}
    elif name == "probes.jsonl":
        out = {f"probe/{k}/{layer_tag(row['layer'])}": row.get(k) for k in PROBE_KEYS}
    else:
        return {}
    return {tag: float(v) for tag, v in out.items() if _number(v)}


class _TensorBoard:
    def __init__(self, cfg, run_dir, first_step: int):
        require("tensorboard", "track", "train.trackers: tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard forgets what an earlier session wrote at first_step and later (see above).
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=first_step, flush_secs=10)

    def write(self, step: int, values: dict[str, float], wall: float) -> None:
        for tag, value in values.items():  # doubles, so the dashboard shows exactly the JSONL values
            self.writer.add_scalar(tag, value, step, walltime=wall, new_style=True, double_precision=True)

    def close(self, failed: bool) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, cfg, run_dir, first_step: int):
        wandb = require("wandb", "track", "train.trackers: wandb")
        # What the user set in W&B's own settings (environment, settings files) stays theirs; we fill the rest.
        users = getattr(wandb.setup().settings, "model_fields_set", set())
        quiet = {} if console.verbose() else {"silent": True, "quiet": True, "show_info": False,
                                               "show_warnings": False}
        self.run = wandb.init(
            project=None if "project" in users else WANDB_PROJECT, group=cfg.grid, name=run_dir.name,
            id=run_id(cfg), resume="allow", config=to_dict(cfg), dir=str(run_dir),
            mode=None if "mode" in users else "offline",
            settings=wandb.Settings(console="off", **quiet))  # our console lines are not W&B's to capture

    def write(self, step: int, values: dict[str, float], wall: float) -> None:
        self.run.log(values, step=step)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


_KINDS = {"tensorboard": _TensorBoard, "wandb": _WandB}


class Trackers:
    """A RunDir listener fanning rows out to the configured trackers. Trackers start at the first row (its step
    is where a resumed session begins) and never raise: a failure warns once and drops that tracker."""

    def __init__(self, cfg, run_dir):
        self.cfg, self.run_dir = cfg, run_dir
        self.pending = list(dict.fromkeys(cfg.train.trackers))  # not started yet
        self.live: dict[str, object] = {}

    def __call__(self, name: str, row: dict) -> None:
        values = scalars(name, row)
        if not values:
            return
        step, wall = int(row["step"]), row.get("time") or time.time()
        for kind in self.pending:
            self._guard(kind, lambda k=kind: self.live.__setitem__(k, _KINDS[k](self.cfg, self.run_dir, step)))
        self.pending = []
        for kind, tracker in list(self.live.items()):
            self._guard(kind, lambda t=tracker: t.write(step, values, wall))

    def close(self, failed: bool = False) -> None:
        for kind, tracker in list(self.live.items()):
            self._guard(kind, lambda t=tracker: t.close(failed))
        self.live, self.pending = {}, []

    def _guard(self, kind: str, action) -> None:
        try:
            action()
        except Exception as exc:  # a dashboard is never worth a run: warn once, go on without it
            self.live.pop(kind, None)
            why = str(exc) if isinstance(exc, MissingExtra) else f"{type(exc).__name__}: {exc}"
            log.warning("tracker %s off for %s: %s (metrics.jsonl has every row)", kind, self.run_dir.name,
                        why.splitlines()[0] if why else type(exc).__name__)


@contextlib.contextmanager
def attached(cfg, rd, *, main: bool):
    """Feed rd's rows to cfg.train.trackers while the block runs (on the main rank; elsewhere nothing)."""
    if not (main and cfg.train.trackers):
        yield
        return
    trackers = Trackers(cfg, rd.path)
    rd.listeners.append(trackers)
    failed = True
    try:
        yield
        failed = False
    finally:
        rd.listeners.remove(trackers)
        trackers.close(failed)

