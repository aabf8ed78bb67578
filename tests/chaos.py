"""A chaos soak of `study submit --cluster slurm`: one job array of tiny cells driven through overlapping faults.

tests/test_chaos.py uses it. `Chaos(plan, ...)` submits the grid once, then injects the plan's faults one after
another at random moments (a seeded `random.Random`: the order of the faults, the pauses between them, the length
of the disk windows and which running task each one hits), settles the grid as a user would (waits for the queue
to drain, runs `study submit` again, with --rerun-failed when the trainer recorded a storage error, until every
cell is completed or a generous deadline passes); tests/test_chaos.py then compares every cell with an
uninterrupted run of the same config trained in its own process. The timing of the jobs is the machine's, so a
seed fixes the sequence of faults and their pauses, not the training step each one lands on. The task faults
and the disk windows wait (up to 90 s) for a task whose trainer is past step 0, then a seeded 0-6 s more, so
that they hit training at any step up to the final save, not a job still importing torch.

Faults (FAULTS), each logged with its monotonic and UTC time in the event log:
    requeue         `scontrol requeue TASK` of a running task (SIGTERM to the job, then SLURM requeues it)
    usr2            `scancel --signal=USR2 TASK.0`: the path of SLURM's own time-limit signal (`--signal=USR2@90`,
                    sent to the job steps, not the batch shell): the trainer checkpoints and submitit requeues
    term            `scancel --signal=TERM TASK`: every step of the job (not the batch shell); the trainer
                    checkpoints and ends 'interrupted'; the next `study submit` resumes it. (Slurm 22.05 answers
                    a signal to an array task whose siblings still pend with exit code 229, "job pending", after
                    delivering it; the log keeps the code.)
    term_full       `scancel --full --signal=TERM TASK`: the batch shell and srun as well. srun answers SIGTERM by
                    forcing the step's end (SIGKILL to the tasks), so the trainer dies before its next step
                    boundary, as under kill9: nothing recorded, resumed by a submit
    kill9           SIGKILL to the task's training process (an OOM kill): nothing recorded, resumed by a submit
    slurmd_restart  slurmd killed and started again after a few seconds; the jobs keep running
    node_failure    slurmd and every job process frozen and killed at one instant, the node marked DOWN (SLURM
                    requeues its jobs), slurmd back after a few seconds and the node resumed
    disk_full       the results root (a tmpfs of its own) filled by a ballast file for a few seconds
    read_only       the results root remounted read-only for a few seconds
    resubmit        `study submit` of the same grid while it runs

The results root is a small tmpfs mounted for the soak (root only; nothing outside it fills or turns read-only),
and the submitit logs live outside it: SLURM keeps each job's log files open for writing, and Linux refuses to
remount a filesystem read-only while files are open for writing on it. Tracebacks in the job logs are listed in
the event log, not failed on: submitit prints one for every exception a job raises, the one-line StorageError of a
full or read-only disk included.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.conftest import tiny_raw

REPO = Path(__file__).resolve().parents[1]
GRID = "chaos"
TASK_FAULTS = ("requeue", "usr2", "term", "term_full", "kill9")
FAULTS = (*TASK_FAULTS, "slurmd_restart", "node_failure", "disk_full", "read_only", "resubmit")
# One CPU per task, as many tasks at once as the machine has cores; the reference runs use one thread too.
SUBMIT_OPTS = ["--cluster", "slurm", "--cpus-per-task", "1", "--mem-gb", "1", "--time", "60",
               "--array-parallelism", str(max(1, min(2, os.cpu_count() or 1)))]
# Smaller than the tiny preset: a job spends most of its life starting Python, so the steps are cheap.
MODEL = {"model.n_layers": 2, "model.d_model": 32, "model.n_heads": 2, "model.ffn_hidden": 86, "model.seq_len": 64}


@dataclass(frozen=True)
class Plan:
    """What one soak does: the grid's size and length, and the faults (each kind `repeat` times)."""

    seed: int
    seeds: int  # training seeds per (lr, schedule): the grid has 4 * seeds cells
    steps: int
    repeat: int  # every fault kind this many times, plus as many extra resubmits
    gap_s: tuple[float, float] = (1.0, 6.0)  # pause before each fault
    window_s: tuple[float, float] = (2.0, 6.0)  # length of a full-disk / read-only window, node downtime
    aim_s: tuple[float, float] = (0.0, 6.0)  # once a trainer trains, how long before the fault lands on it
    timeout_s: float = 1200.0  # the whole soak, faults and settling, before it is called stuck

    @property
    def cells(self) -> int:
        return 4 * self.seeds

    def describe(self) -> str:
        return (f"chaos seed {self.seed}: {self.cells} cells x {self.steps} steps, {len(FAULTS) * self.repeat} "
                f"faults + {self.repeat} extra resubmits")


# The short soak trains 300 steps: at 150 a quiet machine finished the whole array (~70 s) before the last of
# seed 20's faults (a TERM at 74 s) had a task to hit, and a fault that never lands fails the soak.
SHORT = {"seeds": 3, "steps": 300, "repeat": 1, "timeout_s": 1200.0}
LONG = {"seeds": 6, "steps": 300, "repeat": 3, "timeout_s": 3000.0}


def write_grid(folder: Path, cache_dir: Path, plan: Plan) -> Path:
    """The soak's grid: lr x seed x schedule (none, linear), probes and evals on, a checkpoint every 5 steps."""
    base = tiny_raw(cache_dir, **MODEL, **{
        "train.steps": plan.steps, "train.ckpt_every": 5, "train.log_every": 5, "train.probe_every": 50,
        "train.probe_len": 32, "eval.every": 50, "eval.tokens": 2048})
    spec = {"name": GRID, "base": base,
            "axes": {"optim.lr": [1e-3, 3e-3], "train.seed": list(range(plan.seeds)),
                     "prores.schedule": ["none", "linear"]},
            "rules": [{"when": {"prores.schedule": "linear"}, "set": {"prores.T": 5}}]}
    path = folder / f"{GRID}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# ----------------------------------------------------------------------------------------------------------------
# the event log


class EventLog:
    """One line per event, `+SECONDS  UTC  EVENT  DETAIL`, appended to a file as it happens."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.t0 = time.monotonic()
        self.events: list[tuple[str, str]] = []
        self.path.write_text("")

    @staticmethod
    def now() -> tuple[float, dt.datetime]:
        return time.monotonic(), dt.datetime.now(dt.timezone.utc)

    def __call__(self, event: str, detail: str = "", *, at: tuple[float, dt.datetime] | None = None) -> None:
        """Log `event`, stamped `at` (EventLog.now(), taken when it began) or now."""
        mono, utc = at or self.now()
        self.events.append((event, detail))
        line = f"+{mono - self.t0:9.3f}s  {utc.isoformat(timespec='milliseconds')}  {event:<15} {detail}".rstrip()
        with open(self.path, "a") as fh:
            fh.write(line + "\n")

    def text(self) -> str:
        return self.path.read_text()

    def landed(self) -> set[str]:
        """The faults that were injected at least once (not skipped for want of a running task)."""
        return {e for e, detail in self.events if e in FAULTS and not detail.startswith("skipped")}


# ----------------------------------------------------------------------------------------------------------------
# helpers


def sh(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


def _first_line(text: str) -> str:
    return next((ln for ln in text.strip().splitlines() if ln.strip()), "")


def fill(path: Path) -> None:
    """Allocate a file at `path` until its filesystem is full (to the last page): halving chunks, since the jobs
    keep writing meanwhile and a tmpfs gives nothing of an allocation it cannot make whole."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        offset, chunk = 0, 1 << 26
        while chunk >= 4096:
            try:
                os.posix_fallocate(fd, offset, chunk)
                offset += chunk
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2
    finally:
        os.close(fd)


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int, log: EventLog):
    """A tmpfs of `size_mb` at `path` for the block (writable again and unmounted afterwards, also on failure)."""
    path.mkdir(parents=True, exist_ok=True)
    res = sh("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path))
    if res.returncode != 0:
        raise RuntimeError(f"cannot mount a tmpfs for the results root: {res.stderr.strip()}")
    log("mount", f"tmpfs {size_mb} MB at {path}")
    try:
        yield path
    finally:
        sh("mount", "-o", "remount,rw", str(path))
        if sh("umount", str(path)).returncode != 0:  # a job of a failed soak still holds a file there
            sh("umount", "-l", str(path))
        log("umount", str(path))


# ----------------------------------------------------------------------------------------------------------------
# the driver


class Chaos:
    def __init__(self, plan: Plan, *, cluster, grid_path: Path, root: Path, logs: Path, log: EventLog):
        self.plan, self.cluster, self.grid_path, self.root, self.logs, self.log = plan, cluster, grid_path, root, \
            logs, log
        self.rng = random.Random(plan.seed)
        self.t_end = time.monotonic() + plan.timeout_s
        self.problems: list[str] = []  # tracebacks of `study` commands and the like, found on the way
        # The job ids this soak submitted: squeue's job name alone would also show another suite's soak on the
        # same cluster (two test runs on one machine once aimed a fault at the other's array).
        self.jobs: set[str] = set()

    # ---- study commands -------------------------------------------------------------------------------------
    def study(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "study", *args], capture_output=True, text=True, cwd=REPO,
                              timeout=timeout, env=dict(os.environ))

    def submit(self, why: str, *, rerun_failed: bool = False, event: str = "submit") -> subprocess.CompletedProcess:
        at = self.log.now()
        args = ["submit", str(self.grid_path), "--out", str(self.root), "--logs", str(self.logs / "%j"),
                *SUBMIT_OPTS, *(["--rerun-failed"] if rerun_failed else [])]
        res = self.study(*args)
        out = res.stdout.splitlines()
        summary = next((ln for ln in out if " cells selected, " in ln), "")
        done = next((ln for ln in out if ln.startswith(("submitted ", "nothing to submit"))), "")
        if done.startswith("submitted ") and ": " in done:
            self.jobs |= {job.split("_")[0] for job in done.split(": ", 1)[1].split(", ")}
        err = _first_line(res.stderr)
        flags = " --rerun-failed" if rerun_failed else ""
        self.log(event, f"study submit{flags} ({why}): rc {res.returncode}; {summary}; {done}"
                           + (f"; stderr: {err}" if err else ""), at=at)
        if "Traceback" in res.stderr:
            self.problems.append(f"`study submit{flags}` printed a traceback:\n{res.stderr[-3000:]}")
        return res

    def status(self) -> list[dict]:
        res = self.study("status", str(self.grid_path), "--out", str(self.root), "--json")
        if res.returncode != 0:
            raise RuntimeError(f"study status failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
        return json.loads(res.stdout)["runs"]

    # ---- the cluster ----------------------------------------------------------------------------------------
    def queue(self, states: str | None = None) -> list[tuple[str, str, str]]:
        """(task id, raw job id, state) of the jobs this soak submitted, in squeue: by default the live ones
        (pending, running, completing, ...; `-t all` would list ended jobs too, for MinJobAge)."""
        res = sh("squeue", "-h", "-r", "-n", GRID, *(["-t", states] if states else []), "-o", "%F|%i|%A|%T")
        rows = [ln.split("|") for ln in res.stdout.split() if ln.count("|") == 3]
        return [(task, raw, state) for array, task, raw, state in rows if array in self.jobs]

    def trainer_pid(self, raw_job: str) -> int | None:
        """The training process of a running job (a python process of step 0 of that job on this cluster)."""
        want = {f"SLURM_CONF={self.cluster.conf}".encode(), f"SLURM_JOB_ID={raw_job}".encode(), b"SLURM_STEP_ID=0"}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if not (proc / "comm").read_text().startswith("python"):
                    continue
                env = set((proc / "environ").read_bytes().split(b"\0"))
            except OSError:
                continue
            if want <= env:
                return int(proc.name)
        return None

    def training(self, wait_s: float = 90) -> list[tuple[str, str]]:
        """(task, raw job id) of the running tasks whose trainer has started training (status 'running' past step
        0), waiting up to `wait_s` for one; after that any running task; [] when nothing runs or is about to."""
        deadline = time.monotonic() + wait_s
        while True:
            running = sorted((t, raw) for t, raw, _ in self.queue("running"))
            training = [t for t in running if self._training(t[0])]
            if training or (running and time.monotonic() > deadline):
                return training or running
            if time.monotonic() > deadline or not self.queue("pending,running"):
                return []
            time.sleep(0.3)

    def _training(self, task: str) -> bool:
        for status in self.root.glob(f"{GRID}/*/status.json"):
            with contextlib.suppress(OSError, ValueError):
                st = json.loads(status.read_text())
                if st.get("job_id") == task and st.get("state") == "running" and (st.get("step") or 0) > 0:
                    return True
        return False

    def run_of(self, task: str) -> str:
        """The run a task trains, with its state and step as status.json has them."""
        for status in self.root.glob(f"{GRID}/*/status.json"):
            with contextlib.suppress(OSError, ValueError):
                st = json.loads(status.read_text())
                if st.get("job_id") == task:
                    return f"{status.parent.name} {st.get('state')} at step {st.get('step')}"
        return "?"

    # ---- faults ---------------------------------------------------------------------------------------------
    def inject(self, kind: str) -> None:
        if kind in TASK_FAULTS:
            tasks = self.training()
            if not tasks:
                self.log(kind, "skipped: no running task (the array finished or nothing started in time)")
                return
            task, raw = self.rng.choice(tasks)
            time.sleep(self.rng.uniform(*self.plan.aim_s))  # any step, up to the final save, not only the first
            pid = self.trainer_pid(raw)
            if kind == "kill9" and pid is None and (tasks := self.training()):  # it finished meanwhile
                task, raw = self.rng.choice(tasks)
                pid = self.trainer_pid(raw)
            at, target = self.log.now(), f"{task} ({self.run_of(task)}, trainer pid {pid})"
            if kind == "kill9":
                if pid is None:
                    self.log(kind, f"skipped: {target} has no training process yet", at=at)
                    return
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.log(kind, f"SIGKILL {target}", at=at)
                return
            cmd = {"requeue": ["scontrol", "requeue", task],
                   "usr2": ["scancel", "--signal=USR2", f"{task}.0"],
                   "term": ["scancel", "--signal=TERM", task],
                   "term_full": ["scancel", "--full", "--signal=TERM", task]}[kind]
            try:
                res = sh(*cmd)
            except subprocess.TimeoutExpired:  # slurmctld too busy to answer: the fault may or may not land later
                self.log(kind, f"skipped: `{' '.join(cmd)}` {target}: no answer from slurmctld in 60 s", at=at)
                return
            self.log(kind, f"`{' '.join(cmd)}` {target}: rc {res.returncode}"
                           + (f" {_first_line(res.stderr)}" if res.returncode else ""), at=at)
        elif kind == "slurmd_restart":
            at, down = self.log.now(), self.rng.uniform(1.0, 5.0)
            self.cluster.restart_slurmd(down)
            self.log(kind, f"SIGKILL slurmd, started again after {down:.1f} s; the node is back", at=at)
        elif kind == "node_failure":
            at, down = self.log.now(), self.rng.uniform(*self.plan.window_s)
            running = [f"{t} ({self.run_of(t)})" for t, _, _ in self.queue("running")]
            killed = self.cluster.fail_node(down)
            self.log(kind, f"node down for {down:.1f} s: killed {len(killed)} processes (running tasks: "
                           f"{'; '.join(running) or 'none'}); node resumed", at=at)
        elif kind in ("disk_full", "read_only"):
            window = self.rng.uniform(*self.plan.window_s)
            tasks = self.training()  # a window while every job is still importing torch would test nothing
            if not tasks:
                self.log(kind, "skipped: no running task (the array finished or nothing started in time)")
                return
            time.sleep(self.rng.uniform(*self.plan.aim_s))
            training = "; ".join(f"{t} ({self.run_of(t)})" for t, _ in tasks)
            (self.disk_full if kind == "disk_full" else self.read_only)(window, training)
        elif kind == "resubmit":
            self.submit("while the array runs", event="resubmit")
        else:
            raise ValueError(kind)

    def disk_full(self, window: float, training: str) -> None:
        ballast = self.root / ".ballast"
        try:
            fill(ballast)
            fs = os.statvfs(self.root)
            self.log("disk_full", f"results root full ({fs.f_bavail * fs.f_frsize} bytes free) for {window:.1f} s; "
                                  f"training: {training}")
            time.sleep(window)
        finally:
            ballast.unlink(missing_ok=True)
            fs = os.statvfs(self.root)
            self.log("disk_full", f"space freed ({fs.f_bavail * fs.f_frsize // 2**20} MB free)")

    def read_only(self, window: float, training: str) -> None:
        deadline, tries = time.monotonic() + 10, 0
        while True:  # EBUSY while a trainer has a file open for writing (a checkpoint being saved): try again
            tries += 1
            res = sh("mount", "-o", "remount,ro", str(self.root))
            if res.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if res.returncode != 0:
            self.log("read_only", f"skipped: remount,ro refused {tries} times: {res.stderr.strip()}")
            return
        try:
            self.log("read_only", f"results root read-only for {window:.1f} s (remount try {tries}); training: "
                                  f"{training}")
            time.sleep(window)
        finally:
            res = sh("mount", "-o", "remount,rw", str(self.root))
            self.log("read_only", f"results root writable again (rc {res.returncode})")

    # ---- the soak -------------------------------------------------------------------------------------------
    def inject_all(self) -> list[str]:
        """Every fault of the plan, in a seeded random order, each after a seeded random pause."""
        kinds = [k for k in FAULTS for _ in range(self.plan.repeat)] + ["resubmit"] * self.plan.repeat
        self.rng.shuffle(kinds)
        self.log("plan", f"{self.plan.describe()}; order: {' '.join(kinds)}")
        for kind in kinds:
            time.sleep(self.rng.uniform(*self.plan.gap_s))
            self.inject(kind)
        return kinds

    def wait_idle(self) -> None:
        """Until no job of the grid is pending or running; RuntimeError (a stuck job) after the deadline."""
        while self.queue():
            if time.monotonic() > self.t_end:
                raise RuntimeError("stuck: jobs still in the queue at the deadline: "
                                   + ", ".join("/".join(q) for q in self.queue()))
            time.sleep(1)

    def settle(self) -> list[dict]:
        """Resubmit what the faults left unfinished, as a user would, until every cell completed."""
        while True:
            self.wait_idle()
            runs = self.status()
            left = [r for r in runs if r["state"] != "completed"]
            if not left:
                self.log("settled", f"all {len(runs)} cells completed")
                return runs
            if time.monotonic() > self.t_end:
                raise RuntimeError("stuck: not completed at the deadline: "
                                   + "; ".join(f"{r['run_name']} {r['state']} ({r.get('error')})" for r in left))
            counts: dict[str, int] = {}
            for r in left:
                counts[r["state"]] = counts.get(r["state"], 0) + 1
            shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            failed = "failed" in counts
            if failed:  # a storage error the trainer recorded: the user frees the space and reruns those
                errors = sorted({str(r.get("error") or "").split(":")[0] for r in left if r["state"] == "failed"})
                shown += f" (failed: {', '.join(errors)})"
            self.submit(f"queue drained with {shown}: resubmitting as a user would", rerun_failed=failed)
            time.sleep(2)  # the accounting database records an ending job a moment after squeue forgets it

    # ---- checks ---------------------------------------------------------------------------------------------
    def job_log_tracebacks(self) -> list[str]:
        """The job logs that hold a Python traceback, each named with the exception that ended it."""
        out = []
        for err in sorted(self.logs.rglob("*_log.err")):
            text = err.read_text(errors="replace")
            if "Traceback (most recent call last):" in text:
                tail = text[text.rindex("Traceback (most recent call last):"):].splitlines()[1:]
                last = next((ln for ln in tail if ln.strip() and not ln.startswith(" ")), "")
                out.append(f"{err.relative_to(self.logs)}: {last[:300]}")
        return out
