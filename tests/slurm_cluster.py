"""A real single-node SLURM cluster on this machine, for the dispatch tests.

Usable as a module (the `slurm` test fixture) and as a script::

    python tests/slurm_cluster.py start     # install if missing, configure, start; prints `export SLURM_CONF=...`
    python tests/slurm_cluster.py status    # which daemons run, sinfo
    python tests/slurm_cluster.py stop      # stop every daemon this module started, by its pid file

Everything lives in one state directory (``$STUDY_SLURM_DIR``, default ``/tmp/study-slurm``): slurm.conf,
slurmdbd.conf, the MariaDB data directory, slurmctld state, slurmd spool, pid files and logs. Nothing is written
under /etc. Clients find the cluster through ``SLURM_CONF`` (``Cluster.env()``; `start` also sets it in
``os.environ`` of the calling process so submitit's sbatch/sacct/scancel see it, and jobs inherit it).

The configuration is the one that works in a container without systemd or cgroups (DESIGN.md, "Grids and
dispatch"): proctrack/linuxproc, task/none, select/cons_tres with CR_Core_Memory, accounting through slurmdbd
(submitit reads job states with sacct), short scheduler intervals so that a requeued job restarts in seconds.
munged runs as user munge with its default socket (/run/munge/munge.socket.2); if a working munged is already
running it is reused and left alone at stop.

`start` is idempotent: daemons already running (checked by pid file and health probe) are kept. `stop` only
stops daemons whose pid file this module wrote (`<state>/run/*.pid`, and `owned-munged` for munge), SIGTERM
then SIGKILL after a grace period, after cancelling the jobs left on the cluster.

Installation, only when asked (``start(install=True)``; the tests pass pytest's ``--install-slurm``, which the
README's test command and .ci/run give): if a binary is missing and we are root, ``apt-get install -y slurm-wlm
munge slurmdbd mariadb-server`` runs non-interactively (with a temporary policy-rc.d so that no service
auto-starts). Any failure raises `ClusterUnavailable` with the reason; the tests turn that into a visible skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DIR = "/tmp/study-slurm"
CLUSTER_NAME = "studytest"
PARTITION = "debug"
PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server")
DB_PORT = int(os.environ.get("STUDY_SLURM_DB_PORT", "13306"))
CTLD_PORT, SLURMD_PORT, DBD_PORT = 6817, 6818, 6819
DB_USER, DB_PASS, DB_NAME = "slurm", "studyslurm", "slurm_acct_db"
MUNGE_SOCKET = "/run/munge/munge.socket.2"
MUNGE_PID = "/run/munge/munged.pid"

# binary -> package that provides it
BINARIES = {
    "slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "sbatch": "slurm-wlm", "sacct": "slurm-wlm",
    "sacctmgr": "slurm-wlm", "scontrol": "slurm-wlm", "sinfo": "slurm-wlm", "squeue": "slurm-wlm",
    "scancel": "slurm-wlm", "srun": "slurm-wlm", "slurmdbd": "slurmdbd", "munged": "munge", "munge": "munge",
    "unmunge": "munge", "mariadbd": "mariadb-server", "mariadb-install-db": "mariadb-server",
    "mariadb": "mariadb-server",
}


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be installed or started here; the message says why."""


def _log(msg: str) -> None:
    print(f"[slurm_cluster] {msg}", file=sys.stderr, flush=True)


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin", "/sbin") if (p := Path(d) / name).exists()), None
    )


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if _which(b) is None]


def ensure_installed() -> None:
    """Install the Debian packages when a binary is missing (root + apt-get), else raise ClusterUnavailable."""
    missing = missing_binaries()
    if not missing:
        return
    packages = sorted({BINARIES[b] for b in missing} | set(PACKAGES))
    if os.geteuid() != 0:
        raise ClusterUnavailable(f"missing {', '.join(missing)} and not root: cannot apt-get install {packages}")
    if shutil.which("apt-get") is None:
        raise ClusterUnavailable(f"missing {', '.join(missing)} and no apt-get on this machine")
    _log(f"missing {', '.join(missing)}: apt-get install -y {' '.join(PACKAGES)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    wrote_policy = False
    if not policy.exists():  # keep the postinst scripts from starting services (no systemd here)
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        wrote_policy = True
    try:
        cmd = ["apt-get", "install", "-y", *PACKAGES]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=600)
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            raise ClusterUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: {' | '.join(tail)}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterUnavailable(f"apt-get install failed: {exc}") from exc
    finally:
        if wrote_policy:
            policy.unlink(missing_ok=True)
    still = missing_binaries()
    if still:
        raise ClusterUnavailable(f"after apt-get install, still missing: {', '.join(still)}")


# --------------------------------------------------------------------------------------------------------------
# processes


def _read_pid(path: Path | str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None, name: str | None = None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.split(") ")[-1].startswith("Z"):
            return False
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return name is None or comm.startswith(name[:15])


def _run(cmd: list[str], env: dict | None = None, timeout: float = 30, check: bool = False,
         user: str | None = None) -> subprocess.CompletedProcess:
    if user is not None and os.geteuid() == 0:
        cmd = ["runuser", "-u", user, "--", *cmd]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise ClusterUnavailable(f"`{' '.join(cmd)}` failed ({res.returncode}): {(res.stderr or res.stdout).strip()}")
    return res


def _wait(predicate, timeout: float, what: str, log: Path | None = None, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    tail = ""
    if log is not None and log.exists():
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-4:])
    raise ClusterUnavailable(f"{what} did not come up within {timeout:.0f}s" + (f": {tail}" if tail else ""))


def _stop_pid(pid: int, name: str, grace: float = 20.0) -> bool:
    if not _alive(pid, name):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid, name):
            return True
        time.sleep(0.1)
    _log(f"{name} (pid {pid}) ignored SIGTERM for {grace:.0f}s: SIGKILL")
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        os.kill(pid, signal.SIGKILL)
    return True


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


# --------------------------------------------------------------------------------------------------------------
# the cluster


class Cluster:
    """Paths and client environment of the cluster in `state_dir`."""

    def __init__(self, state_dir: str | Path | None = None, name: str = CLUSTER_NAME):
        self.dir = Path(state_dir or os.environ.get("STUDY_SLURM_DIR") or DEFAULT_DIR).resolve()
        self.name = name
        self.etc = self.dir / "etc"
        self.conf = self.etc / "slurm.conf"
        self.dbd_conf = self.etc / "slurmdbd.conf"
        self.run_dir = self.dir / "run"
        self.log_dir = self.dir / "log"
        self.db_dir = self.dir / "mysql"
        self.db_socket = self.run_dir / "mysqld.sock"
        self.pids = {
            "mariadbd": self.run_dir / "mariadbd.pid",
            "slurmdbd": self.run_dir / "slurmdbd.pid",
            "slurmctld": self.run_dir / "slurmctld.pid",
            "slurmd": self.run_dir / "slurmd.pid",
        }
        self.munge_owned = self.run_dir / "owned-munged"
        self.started: list[str] = []  # daemons started by this call of start()

    # ---- environment seen by clients (sbatch, sacct, ...) and daemons
    def env(self) -> dict:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def activate(self) -> None:
        """Point this process (and its children: submitit's sbatch/sacct, the jobs) at the cluster."""
        os.environ["SLURM_CONF"] = str(self.conf)

    # ---- configuration
    def write_config(self) -> None:
        for d in (self.etc, self.run_dir, self.log_dir, self.dir / "slurmctld", self.dir / "slurmd"):
            d.mkdir(parents=True, exist_ok=True)
        cpus = os.cpu_count() or 1
        mem_mb = _mem_total_mb()
        real = max(512, mem_mb - 2048)
        def_mem = max(256, min(2048, real // max(1, cpus) // 2))
        conf = f"""# written by tests/slurm_cluster.py
ClusterName={self.name}
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort={CTLD_PORT}
SlurmdPort={SLURMD_PORT}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
StateSaveLocation={self.dir}/slurmctld
SlurmdSpoolDir={self.dir}/slurmd
SlurmctldPidFile={self.pids['slurmctld']}
SlurmdPidFile={self.pids['slurmd']}
SlurmctldLogFile={self.log_dir}/slurmctld.log
SlurmdLogFile={self.log_dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_interval=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={DBD_PORT}
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=600
Waittime=0
JobRequeue=1
DefMemPerCPU={def_mem}
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={real} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        self.conf.write_text(conf)
        dbd = f"""# written by tests/slurm_cluster.py
AuthType=auth/munge
DbdHost=localhost
DbdPort={DBD_PORT}
SlurmUser=root
PidFile={self.pids['slurmdbd']}
LogFile={self.log_dir}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={DB_PORT}
StorageUser={DB_USER}
StoragePass={DB_PASS}
StorageLoc={DB_NAME}
"""
        self.dbd_conf.write_text(dbd)
        self.dbd_conf.chmod(0o600)

    # ---- munge
    def munge_ok(self) -> bool:
        if not Path(MUNGE_SOCKET).exists():
            return False
        try:
            cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=5)
            if cred.returncode != 0:
                return False
            res = subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=5)
            return res.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def start_munge(self) -> None:
        if self.munge_ok():
            return
        try:
            pw = pwd.getpwnam("munge")
        except KeyError as exc:
            raise ClusterUnavailable("no user 'munge' (munge package not installed properly)") from exc
        key = Path("/etc/munge/munge.key")
        for d, mode in ((Path("/run/munge"), 0o755), (Path("/var/lib/munge"), 0o711), (Path("/var/log/munge"), 0o700),
                        (Path("/etc/munge"), 0o700)):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            d.chmod(mode)
        if not key.exists():
            if shutil.which("mungekey"):
                _run(["mungekey", "--create", "--keyfile", str(key)], check=True)
            else:
                key.write_bytes(os.urandom(128))
            os.chown(key, pw.pw_uid, pw.pw_gid)
            key.chmod(0o400)
        log = Path("/var/log/munge/munged.log")
        _run([_which("munged"), "--force"], user="munge", check=True)
        _wait(self.munge_ok, 15, "munged", log)
        pid = _read_pid(MUNGE_PID)
        self.munge_owned.write_text(f"{pid}\n")
        self.started.append("munged")

    # ---- mariadb
    def _sql(self, sql: str, timeout: float = 15) -> subprocess.CompletedProcess:
        return _run([_which("mariadb"), "--no-defaults", "-S", str(self.db_socket), "-u", "root", "-e", sql],
                    timeout=timeout)

    def db_ok(self) -> bool:
        return _alive(_read_pid(self.pids["mariadbd"]), "mariadbd") and self._sql("SELECT 1").returncode == 0

    def start_db(self) -> None:
        if self.db_ok():
            return
        log = self.log_dir / "mariadb.err"
        if not (self.db_dir / "mysql").is_dir():
            shutil.rmtree(self.db_dir, ignore_errors=True)
            _run([_which("mariadb-install-db"), "--no-defaults", "--user=root", f"--datadir={self.db_dir}",
                  "--auth-root-authentication-method=socket", "--skip-test-db"], timeout=180, check=True)
        mysqld = _which("mariadbd") or _which("mysqld")
        cmd = [mysqld, "--no-defaults", "--user=root", f"--datadir={self.db_dir}", f"--socket={self.db_socket}",
               f"--port={DB_PORT}", "--bind-address=127.0.0.1", f"--pid-file={self.pids['mariadbd']}",
               f"--log-error={log}", "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
               "--innodb-flush-log-at-trx-commit=2", "--skip-log-bin", "--performance-schema=OFF"]
        with open(self.log_dir / "mariadbd.out", "ab") as out:
            subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        _wait(self.db_ok, 60, "mariadbd", log)
        self.started.append("mariadbd")
        grants = "".join(
            f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{h}' IDENTIFIED BY '{DB_PASS}'; "
            f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'{h}'; " for h in ("localhost", "127.0.0.1")
        )
        res = self._sql(grants + "FLUSH PRIVILEGES;")
        if res.returncode != 0:
            raise ClusterUnavailable(f"creating the slurm database user failed: {res.stderr.strip()}")

    # ---- slurm daemons
    def dbd_ok(self) -> bool:
        if not _alive(_read_pid(self.pids["slurmdbd"]), "slurmdbd"):
            return False
        res = _run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env=self.env(), timeout=15)
        return res.returncode == 0

    def start_dbd(self) -> None:
        if not self.dbd_ok():
            _run([_which("slurmdbd")], env=self.env(), check=True)
            _wait(self.dbd_ok, 30, "slurmdbd", self.log_dir / "slurmdbd.log", interval=0.2)
            self.started.append("slurmdbd")
        res = _run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env=self.env())
        if self.name not in res.stdout.split():
            _run(["sacctmgr", "-i", "add", "cluster", self.name], env=self.env(), check=True)

    def ctld_ok(self) -> bool:
        if not _alive(_read_pid(self.pids["slurmctld"]), "slurmctld"):
            return False
        return "UP" in _run(["scontrol", "ping"], env=self.env(), timeout=10).stdout

    def node_state(self) -> str:
        res = _run(["sinfo", "-h", "-N", "-n", "localhost", "-o", "%T"], env=self.env(), timeout=10)
        return res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout.strip() else ""

    def slurmd_ok(self) -> bool:
        if not _alive(_read_pid(self.pids["slurmd"]), "slurmd"):
            return False
        state = self.node_state().rstrip("*~#!%$@^-")
        return state in ("idle", "mixed", "allocated", "completing")

    def start_slurm(self) -> None:
        if not self.ctld_ok():
            _run([_which("slurmctld"), "-f", str(self.conf)], env=self.env(), check=True)
            _wait(self.ctld_ok, 30, "slurmctld", self.log_dir / "slurmctld.log", interval=0.2)
            self.started.append("slurmctld")
        if not self.slurmd_ok():
            if not _alive(_read_pid(self.pids["slurmd"]), "slurmd"):
                self.start_slurmd()
                self.started.append("slurmd")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not self.slurmd_ok():
                if self.node_state().startswith(("down", "drain")):
                    _run(["scontrol", "update", "nodename=localhost", "state=resume"], env=self.env())
                time.sleep(0.2)
            _wait(self.slurmd_ok, 1, f"slurmd (node state {self.node_state()!r})", self.log_dir / "slurmd.log")

    # ---- faults (tests/chaos.py)
    def stepd_pids(self) -> list[int]:
        """The slurmstepd processes of this cluster's jobs (their environment names our slurm.conf)."""
        out = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if (proc / "comm").read_text().strip() != "slurmstepd":
                        continue
                    environ = (proc / "environ").read_bytes()
                except OSError:
                    continue
                if f"SLURM_CONF={self.conf}".encode() in environ:
                    out.append(int(proc.name))
        return out

    def start_slurmd(self) -> None:
        _run([_which("slurmd"), "-f", str(self.conf), "-N", "localhost"], env=self.env(), check=True)

    def restart_slurmd(self, down_s: float) -> None:
        """slurmd crashes and comes back after `down_s` seconds. Its jobs keep running (each slurmstepd is a
        process of its own), as on a node whose slurmd is restarted; the controller notices nothing while the
        gap stays under SlurmdTimeout."""
        pid = _read_pid(self.pids["slurmd"])
        if _alive(pid, "slurmd"):
            os.kill(pid, signal.SIGKILL)
        time.sleep(down_s)
        self.start_slurmd()
        _wait(self.slurmd_ok, 30, "slurmd after its restart", self.log_dir / "slurmd.log", interval=0.2)

    def fail_node(self, down_s: float) -> list[int]:
        """A node failure: slurmd and every process of every job on the node die at one instant (all frozen by
        SIGSTOP first, so that no step reports its end), the node is marked DOWN as a health check would (the
        controller then requeues its jobs at once, instead of noticing them missing minutes later), slurmd comes
        back after `down_s` seconds and the node is resumed. Returns the pids killed."""
        children: dict[int, list[int]] = {}
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(proc.name))
        victims, todo = [], [p for p in [_read_pid(self.pids["slurmd"])] if p] + self.stepd_pids()
        while todo:
            pid = todo.pop()
            victims.append(pid)
            todo += children.get(pid, [])
        for sig in (signal.SIGSTOP, signal.SIGKILL, signal.SIGCONT):
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        _run(["scontrol", "update", "nodename=localhost", "state=down", "reason=chaos: node failure"],
             env=self.env(), check=True)
        time.sleep(down_s)
        self.start_slurmd()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.slurmd_ok():  # ReturnToService=2 may resume it first
            if self.node_state().startswith(("down", "drain")):
                _run(["scontrol", "update", "nodename=localhost", "state=resume"], env=self.env())
            time.sleep(0.2)
        _wait(self.slurmd_ok, 1, "slurmd after the node failure", self.log_dir / "slurmd.log")
        return victims

    # ---- whole stack
    def running(self) -> dict:
        return {
            "munged": self.munge_ok(),
            "mariadbd": _alive(_read_pid(self.pids["mariadbd"]), "mariadbd"),
            "slurmdbd": _alive(_read_pid(self.pids["slurmdbd"]), "slurmdbd"),
            "slurmctld": _alive(_read_pid(self.pids["slurmctld"]), "slurmctld"),
            "slurmd": _alive(_read_pid(self.pids["slurmd"]), "slurmd"),
        }

    def healthy(self) -> bool:
        return self.munge_ok() and self.db_ok() and self.dbd_ok() and self.ctld_ok() and self.slurmd_ok()


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 4096


def start(state_dir: str | Path | None = None, *, install: bool = False, activate: bool = True) -> Cluster:
    """Install if missing, configure and start every daemon not yet running. Raises ClusterUnavailable.

    The returned Cluster's `.started` lists the daemons this call started (empty if all were running).
    """
    t0 = time.monotonic()
    if sys.platform != "linux":
        raise ClusterUnavailable(f"needs Linux, not {sys.platform}")
    if install:
        ensure_installed()
    elif missing_binaries():
        raise ClusterUnavailable(f"missing {', '.join(missing_binaries())}")
    if os.geteuid() != 0:
        raise ClusterUnavailable("starting munged/slurmd needs root")
    cluster = Cluster(state_dir)
    try:
        cluster.write_config()
    except OSError as exc:
        raise ClusterUnavailable(f"cannot write the cluster's state directory {cluster.dir}: {exc}") from exc
    try:
        cluster.start_munge()
        cluster.start_db()
        cluster.start_dbd()
        cluster.start_slurm()
    except (ClusterUnavailable, subprocess.TimeoutExpired, OSError) as exc:
        if cluster.started:  # leave nothing half-started behind
            _log(f"start failed; stopping what was started: {cluster.started}")
            stop(cluster.dir, cancel_jobs=False)
        if isinstance(exc, ClusterUnavailable):
            raise
        raise ClusterUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if activate:
        cluster.activate()
    _log(f"cluster {cluster.name!r} up in {time.monotonic() - t0:.1f}s (started: {cluster.started or 'none'}); "
         f"SLURM_CONF={cluster.conf}")
    return cluster


def stop(state_dir: str | Path | None = None, *, cancel_jobs: bool = True) -> list[str]:
    """Stop the daemons started from this state dir, by pid file, in reverse order. Returns those stopped."""
    cluster = Cluster(state_dir)
    stopped = []
    env = cluster.env()
    if cancel_jobs and cluster.ctld_ok():
        _run(["scancel", "--full", "--partition", PARTITION], env=env, timeout=15)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            res = _run(["squeue", "-h", "-o", "%i"], env=env, timeout=10)
            if res.returncode != 0 or not res.stdout.strip():
                break
            time.sleep(0.3)
    for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd"):
        pid = _read_pid(cluster.pids[name])
        if pid and _stop_pid(pid, name):
            stopped.append(name)
        cluster.pids[name].unlink(missing_ok=True)
    # job steps outlive slurmd: stop the slurmstepd processes of this cluster (their environment names our conf)
    for pid in cluster.stepd_pids():
        _stop_pid(pid, "slurmstepd", grace=5)
        stopped.append(f"slurmstepd:{pid}")
    if cluster.munge_owned.exists():
        owned = _read_pid(cluster.munge_owned)
        if owned and owned == _read_pid(MUNGE_PID) and _stop_pid(owned, "munged"):
            stopped.append("munged")
        cluster.munge_owned.unlink(missing_ok=True)
    _log(f"stopped: {stopped or 'nothing'}")
    return stopped


def status(state_dir: str | Path | None = None) -> dict:
    cluster = Cluster(state_dir)
    out = {"state_dir": str(cluster.dir), "slurm_conf": str(cluster.conf), "daemons": cluster.running()}
    if out["daemons"]["slurmctld"]:
        out["node"] = cluster.node_state()
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--dir", default=None, help=f"state directory (default $STUDY_SLURM_DIR or {DEFAULT_DIR})")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install missing packages")
    args = parser.parse_args(argv)
    if args.action == "start":
        try:
            cluster = start(args.dir, install=not args.no_install)
        except ClusterUnavailable as exc:
            print(f"slurm cluster unavailable: {exc}", file=sys.stderr)
            return 1
        print(f"export SLURM_CONF={cluster.conf}")
        return 0
    if args.action == "stop":
        stop(args.dir)
        return 0
    print(json.dumps(status(args.dir), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
