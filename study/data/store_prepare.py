"""Preparing a token store (`study data prepare`): locking, resuming, the worker threads or processes, the
manifest and the final rename; also as a job array (`submit_prepare`). study.data.store describes the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path

from study import fsutil
from study.data import cache, corpus
from study.data.hf_tokenizer import load_tokenizer_dir, save_tokenizer
from study.data.store_manifest import build_manifest, spec, store_path
from study.data.store_read import open_store
from study.data.store_units import marker_ok, plan_units, process_units, worker_jobs
from study.data.tokenizer import build_tokenizer
from study.errors import DataError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _single_threaded_tokenizers():
    """Every encode_batch call runs on its calling thread (the preparing thread, or each worker thread or process):
    `--workers N` means N threads of work.
    (TOKENIZERS_PARALLELISM is the tokenizers library's own switch, read at every encode_batch.)"""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


# Worker processes: each builds its tokenizer once, then takes units.
_WORKER: dict = {}


def _worker_init(data_dict: dict, tokenizer_dir: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker: workers are the parallelism
    from study.config import DataConfig, from_dict

    _WORKER.update(cfg=from_dict(DataConfig, data_dict), tok=_worker_tokenizer(Path(tokenizer_dir)))


class _FastEncoder:
    """Just what process_units needs of a tokenizer, loaded from tokenizer.json by the `tokenizers` library alone
    (the same backend object study.data.Tokenizer encodes with; importing transformers in every worker costs
    seconds)."""

    def __init__(self, folder: Path, vocab_size: int, eos_id: int):
        from tokenizers import Tokenizer as TkTokenizer

        self._tk = TkTokenizer.from_file(str(folder / "tokenizer.json"))
        self.vocab_size, self.eos_id = vocab_size, eos_id

    def encode_batch(self, texts):
        return [e.ids for e in self._tk.encode_batch(list(texts), add_special_tokens=False)]


def _worker_tokenizer(folder: Path):
    meta = json.loads((folder / "fingerprint.json").read_text())
    if (folder / "tokenizer.json").exists() and meta.get("fast", False):
        return _FastEncoder(folder, meta["vocab_size"], meta["eos_id"])
    return load_tokenizer_dir(folder)


def _saved_tokenizer(folder: Path, built_default):
    """The tokenizer the manifest records: the saved copy as a reader loads it (study.data.store_read checks the
    two agree). The default BPE saves as its own tokenizer.json, unchanged by the round trip (tested), so when it
    was just built (`built_default`) it stands for its copy and the reload (0.2 s, a tenth of preparing the
    bundled corpus) is skipped; any other tokenizer, or a copy left by an interrupted preparation, is loaded back."""
    return built_default if built_default is not None else load_tokenizer_dir(folder)


def _worker_run(args) -> list[dict]:
    work, partial = args
    return process_units(_WORKER["cfg"], _WORKER["tok"], work, Path(partial))


def _pool_context():
    """fork where available (no re-import per worker: the bundled corpus takes seconds, imports as long), else
    spawn."""
    import multiprocessing as mp

    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def prepare(data_cfg, vocab_size: int, *, workers: int = 1, units: list[int] | None = None,
            finalize: bool = True) -> Path:
    """Build the store of `data_cfg` (idempotent): returns its folder.

    `units` restricts the work to these unit positions (a job-array task's share); `finalize=False` leaves the
    partial folder for another task to finish.
    """
    path = store_path(data_cfg, vocab_size)
    if (path / "manifest.json").exists():
        open_store(data_cfg, vocab_size)  # checks it
        log.info("token store %s is already prepared", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # A job-array task (units given, no finalize) works on its own units only: no lock, so tasks run together
    # (their files are disjoint and every write is an atomic rename); whoever finalizes holds the lock.
    share_only = units is not None and not finalize
    with contextlib.nullcontext() if share_only else cache.locked(path):
        if (path / "manifest.json").exists():
            return path
        start = time.perf_counter()
        partial = Path(f"{path}.partial")
        partial.mkdir(parents=True, exist_ok=True)
        my_spec = spec(data_cfg, vocab_size)
        spec_file = partial / "spec.json"
        if spec_file.exists() and json.loads(spec_file.read_text()) != my_spec:
            log.warning("%s was started for other data: rebuilding it", partial)
            shutil.rmtree(partial)
            partial.mkdir(parents=True)
        fsutil.atomic_write_text(spec_file, json.dumps(my_spec, sort_keys=True))

        # The tokenizer is saved first and every worker loads that copy: the store's tokens are the saved
        # tokenizer's, and the same copy is what training loads.
        tok_dir = partial / "tokenizer"
        built = None
        if not (tok_dir / "fingerprint.json").exists():
            built = build_tokenizer(dataclasses.replace(data_cfg, store=False), vocab_size=vocab_size)
            save_tokenizer(built, tok_dir)

        finite = None if data_cfg.source == "hf" else list(corpus.finite_documents(data_cfg))  # parsed once
        plan = plan_units(data_cfg, finite)
        todo = [u for k, u in enumerate(plan) if (units is None or k in units) and marker_ok(partial, u) is None]
        log.info("token store %s: %d units, %d to do, %d workers", path, len(plan), len(todo), workers)
        parallel_start = time.perf_counter()
        if todo:
            if workers <= 1:
                work = [(u, None if finite is None else finite[u.start:u.stop]) for u in todo]
                with _single_threaded_tokenizers():
                    process_units(data_cfg, _worker_tokenizer(tok_dir), work, partial)
            else:
                jobs = worker_jobs(todo, finite, workers)
                encoder = _worker_tokenizer(tok_dir) if finite is not None else None
                if isinstance(encoder, _FastEncoder):
                    # A finite source with a fast tokenizer: `workers` threads of this process. encode_batch
                    # releases the GIL, so threads tokenize in parallel with one shared BPE cache and nothing to
                    # fork or pickle (measured: 2 threads 1.7x faster than 1 at the same CPU per token, where 2
                    # processes spent 9% more CPU per token).
                    from concurrent.futures import ThreadPoolExecutor

                    with _single_threaded_tokenizers(), ThreadPoolExecutor(min(workers, len(jobs))) as pool:
                        for _ in pool.map(lambda job: process_units(data_cfg, encoder, job, partial), jobs):
                            pass
                else:
                    # Streamed sources (reading a stream holds the GIL) and Python tokenizers: processes.
                    init = (dataclasses.asdict(data_cfg), str(tok_dir))
                    with _pool_context().Pool(min(workers, len(jobs)), initializer=_worker_init,
                                              initargs=init) as pool:
                        for _ in pool.imap_unordered(_worker_run, [(job, str(partial)) for job in jobs]):
                            pass
        parallel_s = time.perf_counter() - parallel_start
        if not finalize:
            return path
        markers = [marker_ok(partial, u, hashes=False) for u in plan]  # hashed when resumed; sizes suffice here
        missing = [u.name for u, m in zip(plan, markers, strict=True) if m is None]
        if missing:
            raise DataError(f"token store {path}: {len(missing)} units not prepared yet (first: {missing[0]}); "
                            f"run `study data prepare` again to finish them")
        tok = _saved_tokenizer(tok_dir, built if data_cfg.tokenizer == "default" else None)
        manifest = build_manifest(data_cfg, vocab_size, tok, plan, markers, workers, time.perf_counter() - start)
        manifest["prepared"].update(units_s=round(parallel_s, 3),
                                    units_cpu_s=round(sum(m.get("cpu_s", 0.0) for m in markers), 3))
        fsutil.atomic_write_text(partial / "manifest.json", json.dumps(manifest, indent=1))
        shutil.rmtree(partial / "units", ignore_errors=True)
        try:
            os.rename(partial, path)
        except OSError:
            if not (path / "manifest.json").exists():
                raise
            shutil.rmtree(partial, ignore_errors=True)  # another preparer finished first: identical content
        log.info("token store %s: %d train and %d held-out tokens in %.1f s", path,
                 manifest["splits"]["train"]["tokens"], manifest["splits"]["heldout"]["tokens"],
                 time.perf_counter() - start)
    return path


def submit_prepare(data_cfg, vocab_size: int, executor, *, tasks: int, workers: int, after=None):
    """Prepare the store as a job array of `tasks` tasks (each its share of the units, `workers` processes),
    then finalize: as a job the scheduler starts once the array succeeded, when `after(executor, jobs)` can make
    the executor's next submission wait for them (its backend's run_after, study.clusters), else here after
    waiting for the array. Returns (array jobs, finalize job or None when finalized here)."""
    path = store_path(data_cfg, vocab_size)
    if (path / "manifest.json").exists():
        return [], None
    prepare(data_cfg, vocab_size, units=[], finalize=False)  # spec, tokenizer copy, plan check: once, here
    n = len(plan_units(data_cfg))
    tasks = max(1, min(tasks, n))
    shares = [list(range(k, n, tasks)) for k in range(tasks)]
    cfg = dataclasses.asdict(data_cfg)
    jobs = executor.map_array(_prepare_task, [cfg] * tasks, [vocab_size] * tasks, shares, [workers] * tasks)
    if after is not None:
        after(executor, jobs)
        executor.update_parameters(name="finalize")
        return jobs, executor.submit(_prepare_task, cfg, vocab_size, [], 1, True)
    for j in jobs:
        j.result()
    prepare(data_cfg, vocab_size, units=[])
    return jobs, None


def _prepare_task(data_dict: dict, vocab_size: int, units: list[int], workers: int, finalize: bool = False) -> str:
    """One job-array task (or the finalize job): prepare these units of the store."""
    from study.config import DataConfig, from_dict

    return str(prepare(from_dict(DataConfig, data_dict), vocab_size, workers=workers, units=units,
                       finalize=finalize))


