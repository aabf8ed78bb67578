"""Run ownership: one live trainer per run directory, also across the nodes of a shared cluster filesystem.

The owner holds <run_dir>/owner.json, a lease naming its host, pid (with the process start time, so a reused
pid is not mistaken for the owner), SLURM job id and a heartbeat it rewrites every `heartbeat_s` seconds.

Taking the lease is atomic on local and network filesystems alike: the lease is written to a private temporary
file and hard-linked to owner.json (`link` fails if the name exists; O_EXCL is not reliable over NFS). A lease
is stale when its owner is gone:
    same host, and its pid is dead (or now belongs to another process)      -> gone at once (SIGKILL, OOM kill)
    any host, and its heartbeat is older than `stale_after_s`               -> gone (node failure, hung FS)
    it names this process's own SLURM job id                                -> gone: SLURM requeued the job (a
                                                                               job keeps its id), the old start
                                                                               is dead
A stale lease is taken over under a short takeover lock (owner.json.takeover, itself taken by `link`), so two
processes that both find it stale cannot both win. A live lease is refused with RunBusy naming its owner.

The heartbeat thread also notices when the lease stopped being ours (taken over after a long stall): the
trainer checks `lease.lost` at step boundaries and stops without writing anything further.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from study.errors import StudyError
from study.fsutil import atomic_write_json

log = logging.getLogger(__name__)

LEASE = "owner.json"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # twenty missed heartbeats: a stalled filesystem, not a slow step
TAKEOVER_STALE_S = 60.0  # a takeover lock older than this belongs to a taker that died mid-takeover


class RunBusy(StudyError):
    """Another live process owns the run directory."""

    exit_code = 3


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first); None where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc here: the pid exists, that is all we can tell
    if fields[0] in ("Z", "X"):  # a zombie has finished running
        return False
    return start is None or len(fields) <= 19 or fields[19] == start  # else: the pid was reused


def read(run_dir) -> dict | None:
    """The lease of `run_dir` (None when there is none or it is unreadable)."""
    return read_json_file(Path(run_dir) / LEASE)


def owner_gone(lease: dict | None, *, now: float | None = None, stale_after_s: float | None = None) -> str | None:
    """Why the owner of `lease` is gone (a reason), or None while it may still be alive."""
    if lease is None:
        return "no owner"
    now = time.time() if now is None else now
    limit = float(lease.get("stale_after_s") or STALE_AFTER_S) if stale_after_s is None else stale_after_s
    host, pid = lease.get("host"), lease.get("pid")
    job = lease.get("slurm_job_id")
    # The same job id in a later start (SLURM counts restarts): this process IS the job, requeued. Another
    # process of the same start (a second `study train` in one allocation) is checked like any other owner.
    if job and job == _slurm_job() and lease.get("slurm_restart") != _slurm_restart():
        return f"its SLURM job {job} was requeued (this is the job's new start)"
    if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid, lease.get("pid_start")):
        return f"its process {pid} on {host} is gone"
    beat = lease.get("heartbeat")
    if not isinstance(beat, (int, float)):
        return "its lease has no heartbeat"
    if now - beat > limit:
        return f"its last heartbeat from {host} (pid {pid}) is {now - beat:.0f} s old (limit {limit:.0f} s)"
    return None


def _slurm_job() -> str | None:
    """This process's SLURM job as `squeue`, `sacct` and status.json name it: '157_3' for task 3 of array 157
    (whose own SLURM_JOB_ID is another number), else the job id; None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def _slurm_restart() -> int:
    """How many times SLURM has restarted (requeued) this job: 0 on its first start or outside SLURM."""
    value = os.environ.get("SLURM_RESTART_COUNT", "")
    return int(value) if value.isdigit() else 0


def describe(lease: dict) -> str:
    job = f", SLURM job {lease['slurm_job_id']}" if lease.get("slurm_job_id") else ""
    beat = lease.get("heartbeat")
    age = f", heartbeat {time.time() - beat:.0f} s ago" if isinstance(beat, (int, float)) else ""
    return f"pid {lease.get('pid')} on {lease.get('host')}{job}{age}"


def _link_new(path: Path, data: dict) -> bool:
    """Create `path` holding `data` iff it does not exist, atomically. False if it exists."""
    tmp = path.with_name(f".{path.name}.{data['token']}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:  # a filesystem without hard links: O_EXCL is the best it offers
        if exc.errno not in (1, 38, 95):  # EPERM, ENOSYS, EOPNOTSUPP
            raise
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(tmp.read_text())
        return True
    finally:
        tmp.unlink(missing_ok=True)


class Lease:
    """Ownership of one run directory; `acquire()` it, `release()` it (also a context manager)."""

    def __init__(self, run_dir, *, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LEASE
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.token = uuid.uuid4().hex
        self.lost = False
        self.took_over: str | None = None  # why the previous owner was found gone, if there was one
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict:
        pid = os.getpid()
        return {"token": self.token, "host": socket.gethostname(), "pid": pid, "pid_start": _proc_start(pid),
                "slurm_job_id": _slurm_job(), "slurm_restart": _slurm_restart(),
                "acquired": time.time(), "heartbeat": time.time(),
                "heartbeat_s": self.heartbeat_s, "stale_after_s": self.stale_after_s}

    def acquire(self) -> Lease:
        """Take the lease, taking over a stale one; RunBusy if a live process owns the run."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a lease that disappears between our reads: try again
            if _link_new(self.path, self._record()):
                self._start_heartbeat()
                return self
            current = read(self.path.parent)
            if current is None and self.path.exists():
                time.sleep(0.05)  # being written by its owner's heartbeat rename? read again
                current = read(self.path.parent)
            reason = owner_gone(current)
            if current is not None and reason is None:
                raise RunBusy(f"{self.run_dir} is being trained by another process ({describe(current)}); "
                              f"not training it twice. If that process is really gone, wait "
                              f"{self.stale_after_s:.0f} s for its lease to go stale or delete {self.path}")
            if self._take_over(current, reason):
                self._start_heartbeat()
                return self
        raise RunBusy(f"{self.run_dir}: could not take its lease {self.path} (contended); try again")

    def _take_over(self, seen: dict | None, reason: str) -> bool:
        lock = self.path.with_name(self.path.name + ".takeover")
        if not _link_new(lock, {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                                "heartbeat": time.time()}):
            held = read_json_file(lock)
            if held and owner_gone(held, stale_after_s=TAKEOVER_STALE_S):
                lock.unlink(missing_ok=True)  # its taker died mid-takeover
            time.sleep(0.1)
            return False
        try:
            current = read(self.path.parent)
            if (current or {}).get("token") != (seen or {}).get("token"):
                return False  # someone else took it over meanwhile: look again
            self.path.unlink(missing_ok=True)
            if not _link_new(self.path, self._record()):
                return False
            self.took_over = reason
            log.warning("took over %s: the previous owner is gone (%s)", self.run_dir.name, reason)
            return True
        finally:
            lock.unlink(missing_ok=True)

    # ---- heartbeat ---------------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.run_dir.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.heartbeat()

    def heartbeat(self) -> None:
        current = read(self.run_dir)
        if current is None or current.get("token") != self.token:
            if not self.lost:
                log.error("lost ownership of %s (%s); stopping without writing to it", self.run_dir,
                          f"now {describe(current)}" if current else "its lease was removed")
            self.lost = True
            self._stop.set()
            return
        current["heartbeat"] = time.time()
        try:
            atomic_write_json(self.path, current, indent=1, fsync=False)
        except OSError as exc:  # a full disk must not kill the trainer from this thread; the lease just ages
            log.warning("cannot refresh the lease %s: %s", self.path, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        current = read(self.run_dir)
        if current is not None and current.get("token") == self.token:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as exc:  # a read-only or failing disk must not hide the error that ended the run;
                # the lease left behind reads 'owner gone' as soon as this process is (study.lease.owner_gone)
                log.warning("cannot remove the lease %s: %s", self.path, exc)
        _sweep_orphans(self.path)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


ORPHAN_AGE_S = 1.0  # a live writer's temporary lease file exists for microseconds, between its write and link


def _sweep_orphans(path: Path) -> None:
    """Remove the temporary files of lease writes whose process was killed between write and link or rename
    (a node failure, kill -9): they would stay in the run directory for ever."""
    now = time.time()
    for tmp in path.parent.glob(f".{path.name}.*"):
        try:
            if now - tmp.stat().st_mtime > ORPHAN_AGE_S:
                tmp.unlink()
        except OSError:  # gone already, or a read-only disk: harmless either way
            pass


def read_json_file(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
