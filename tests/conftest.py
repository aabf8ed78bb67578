"""Shared fixtures: a session-wide data cache (the default BPE is trained once) and tiny CPU run configs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from study.train.signals import StopFlag

REPO = Path(__file__).resolve().parents[1]

# Two cores: one intra-op thread per test process keeps parallel subprocess tests from thrashing.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


CHAOS_SEED = 20  # the soak's fixed seed in CI; --chaos-seed N picks another sequence of faults


def pytest_addoption(parser):
    parser.addoption("--install-slurm", action="store_true", default=False,
                     help="apt-get install slurm-wlm, munge, slurmdbd and mariadb-server when missing (as root), so "
                          "the SLURM tests can start a real cluster; without it they use an installed SLURM or skip")
    parser.addoption("--chaos-seed", type=int, default=CHAOS_SEED,
                     help=f"seed of the chaos soak's faults (tests/test_chaos.py; default {CHAOS_SEED}); a failing "
                          f"soak prints the seed that reproduces its sequence of faults")


# Test tiers (markers declared in pyproject.toml). Besides explicit marks on single tests, whole modules and the
# fixtures that train real runs make a test slow or multi-process; they are listed here, in one place.
MULTIPROCESS_MODULES = {"test_fsdp.py", "test_fsdp_meta.py", "test_fsdp_compile.py"}
SLOW_MODULES = {"test_resume.py", "test_train.py", "test_notebooks.py", "test_slurm.py"}
SLOW_FIXTURES = {"tiny_results_root", "prores_run", "reference", "executed"}  # each trains or executes for real
SLOW_TESTS = {"test_debug_executor_runs_cells_in_process_and_never_twice"}  # trains several cells in process
MULTIPROCESS_TESTS = {"test_local_executor_preempted_with_usr2_requeues_and_resumes_bit_identical",
                      "test_local_executor_two_gloo_processes_match_one_process"}


def pytest_collection_modifyitems(config, items):
    chaos_selected = "chaos" in (config.option.markexpr or "")
    for item in items:
        if item.get_closest_marker("chaos") and not chaos_selected:  # the long soak: only when asked for by its marker
            item.add_marker(pytest.mark.skip(reason="the long chaos soak runs only when selected: -m chaos"))
        module = item.path.name
        if module in MULTIPROCESS_MODULES or item.originalname in MULTIPROCESS_TESTS:
            item.add_marker(pytest.mark.multiprocess)
        params = getattr(getattr(item, "callspec", None), "params", {})  # fixtures chosen by parametrize
        used = set(getattr(item, "fixturenames", ())) | {v for v in params.values() if isinstance(v, str)}
        if module in SLOW_MODULES or item.originalname in SLOW_TESTS or SLOW_FIXTURES & used:
            item.add_marker(pytest.mark.slow)


class StopAfter(StopFlag):
    """A stop flag that becomes set (as by SIGTERM) at its n-th check; the trainer checks once per step when
    log_every is 1, so StopAfter(n) interrupts a run after n steps. A real signal received first is kept."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.calls = n, 0

    def __bool__(self) -> bool:
        self.calls += 1
        if self.calls >= self.n and self.signum is None:
            self.request()
        return super().__bool__()


@pytest.fixture
def one_thread():
    """Tiny models: one intra-op thread avoids OpenMP spin-waiting on a shared 2-core machine (a module opts in
    with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One tokenizer/token cache for the whole session (the default BPE trains once)."""
    return tmp_path_factory.mktemp("study-cache")


def tiny_raw(cache_dir, **overrides) -> dict:
    """A raw config dict for a run that trains in seconds on CPU."""
    raw = {
        "model": {"scale": "tiny"},
        "train": {"steps": 20, "micro_batch": 4, "global_batch": 8, "log_every": 5, "ckpt_every": 10,
                  "progress": False},
        "eval": {"every": 10, "tokens": 4096, "batch_size": 8},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "data": {"cache_dir": str(cache_dir)},
    }
    from study.rawconfig import set_path
    for key, value in overrides.items():
        set_path(raw, key.replace("__", "."), value)
    return raw


@pytest.fixture
def tiny_cfg(cache_dir):
    from study.config import resolve

    def make(**overrides):
        return resolve(tiny_raw(cache_dir, **overrides))

    return make


@pytest.fixture(scope="session")
def tiny_results_root(tmp_path_factory, cache_dir) -> Path:
    """A results root made by REAL tiny CPU runs, as `study run` would write it.

    Grid 'tiny': Pre-LN and Post-LN each without and with ProRes (linear, T=5), with probes and evals; one
    extra run forced to diverge (huge LR, no clipping); one run left incomplete (interrupted at step 10 of 30).
    """
    from study.config import resolve
    from study.train import train_run

    root = tmp_path_factory.mktemp("tiny-results")
    common = {"grid": "tiny", "train.steps": 30, "train.probe_every": 10, "eval.every": 10, "eval.tokens": 2048}
    for method in ("pre-ln", "post-ln"):
        for schedule, extra in (("none", {}), ("linear", {"prores.T": 5})):
            cfg = resolve(tiny_raw(cache_dir, method=method, **common, **{"prores.schedule": schedule}, **extra))
            assert train_run(cfg, root, axes={"method": method, "schedule": schedule}).state == "completed"
    diverging = resolve(tiny_raw(cache_dir, method="pre-ln", **common, **{
        "optim.lr": 1e4, "optim.warmup_steps": 0, "optim.grad_clip": 1e9}))
    assert train_run(diverging, root, axes={"method": "pre-ln", "schedule": "lr1e4"}).state == "diverged"

    partial = resolve(tiny_raw(cache_dir, method="sandwich-ln", **common))
    result = train_run(partial, root, axes={"method": "sandwich-ln", "schedule": "none"}, stop=StopAfter(10))
    assert result.state == "interrupted" and result.step == 10
    return root


@pytest.fixture(scope="session")
def slurm_cluster(request):
    """The real single-node SLURM cluster (tests/slurm_cluster.py), started once per session for the SLURM tests;
    its daemons are stopped at the end if this session started them. Skips with the reason where it cannot run."""
    from tests import slurm_cluster as sc

    install = request.config.getoption("--install-slurm")
    if not install and sc.missing_binaries():
        pytest.skip(f"SLURM is not installed (missing {', '.join(sc.missing_binaries())}): pass --install-slurm to "
                    f"apt-get install {' '.join(sc.PACKAGES)} as root (the README's test command does)")
    try:
        cluster = sc.start(install=install)
    except sc.ClusterUnavailable as exc:
        msg = f"SLURM test cluster unavailable: {exc}"
        print(msg, file=sys.stderr, flush=True)
        pytest.skip(msg)
    try:
        yield cluster
    finally:
        if cluster.started:  # only what this session started; a cluster started by hand stays up
            sc.stop(cluster.dir)
