"""Preparing a token store (`study data prepare`): locking, resuming, the worker threads or processes, the
manifest and the final rename; `_prepare_task`, what a job-array task or finalize job runs (study.dispatch.prepare
submits them). study.data.store describes the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from study import fsutil
from study.data import cache, corpus
from study.data.hf_tokenizer import load_tokenizer_dir, save_tokenizer
from study.data.store_check import damaged, write_stamps
from study.data.store_manifest import SPLITS, StoreError, build_manifest, source_fingerprint, spec, store_path
from study.data.store_progress import (
    CAP_FILE,
    JOBS_FILE,
    PLAN_FILE,
    jobs_prepared,
    partial_of,
    read_cap,
    read_jobs,
    write_plan,
)
from study.data.store_read import forget, read_manifest
from study.data.store_repair import repair
from study.data.store_units import (
    UNITS_FORMAT,
    Unit,
    marker_ok,
    plan_units,
    process_units,
    units_in_store,
    worker_jobs,
)
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
            finalize: bool = True, max_tokens: int | None = None) -> Path:
    """Build the store of `data_cfg` (idempotent): returns its folder.

    `units` restricts the work to these unit positions (a job-array task's share); `finalize=False` leaves the
    partial folder for another task to finish. `max_tokens`: stop at the shortest run of training units, in
    source order, that holds at least this many training tokens (0: the whole source; None: what the partial
    store records, else the whole source); the result depends on it, never on the workers.
    """
    path = store_path(data_cfg, vocab_size)
    if (path / "manifest.json").exists():
        return _reuse(data_cfg, vocab_size, path, max_tokens, workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A job-array task (units given, no finalize) works on its own units only: no lock, so tasks run together
    # (their files are disjoint and every write is an atomic rename); whoever finalizes holds the lock.
    share_only = units is not None and not finalize
    with contextlib.nullcontext() if share_only else cache.locked(path):
        if (path / "manifest.json").exists():
            return path
        start = time.perf_counter()
        partial = partial_of(path)
        partial.mkdir(parents=True, exist_ok=True)
        my_spec = {**spec(data_cfg, vocab_size), "units_format": UNITS_FORMAT}
        spec_file = partial / "spec.json"
        if spec_file.exists() and json.loads(spec_file.read_text()) != my_spec:
            log.warning("%s was started for other data (or cut into units differently): rebuilding it", partial)
            shutil.rmtree(partial)
            partial.mkdir(parents=True)
        fsutil.atomic_write_text(spec_file, json.dumps(my_spec, sort_keys=True))
        max_tokens = _recorded_cap(partial, max_tokens)

        # The tokenizer is saved first and every worker loads that copy: the store's tokens are the saved
        # tokenizer's, and the same copy is what training loads.
        tok_dir = partial / "tokenizer"
        built = None
        if not (tok_dir / "fingerprint.json").exists():
            built = build_tokenizer(dataclasses.replace(data_cfg, store=False), vocab_size=vocab_size)
            save_tokenizer(built, tok_dir)

        # The bundled corpus is parsed once, here (a `files` source is read by each unit from its position)
        finite = list(corpus.finite_documents(data_cfg)) if data_cfg.source == "default" else None
        plan = plan_units(data_cfg, finite)
        write_plan(partial, plan)
        todo = [u for k, u in enumerate(plan) if (units is None or k in units) and marker_ok(partial, u) is None]
        log.info("token store %s: %s", path, _work_line(len(plan), units, todo, workers, max_tokens, finalize))
        parallel_start = time.perf_counter()
        if todo:
            with _runner(data_cfg, tok_dir, finite, workers, partial) as run:
                for wave in _waves(todo, plan, partial, max_tokens, workers):
                    run(wave)
        parallel_s = time.perf_counter() - parallel_start
        if not finalize:
            return path
        markers = [marker_ok(partial, u, hashes=False) for u in plan]  # hashed when resumed; sizes suffice here
        kept = units_in_store(plan, markers, max_tokens)
        missing = [plan[k].name for k in kept if markers[k] is None]
        if missing:
            raise DataError(f"token store {path}: {len(missing)} units not prepared yet (first: {missing[0]}); "
                            f"run `study data prepare` again to finish them")
        _drop_other_units(partial, plan, kept)
        tok = _saved_tokenizer(tok_dir, built if data_cfg.tokenizer == "default" else None)
        manifest = build_manifest(data_cfg, vocab_size, tok, [plan[k] for k in kept], [markers[k] for k in kept],
                                  workers, time.perf_counter() - start)
        cpu_s = sum(markers[k].get("cpu_s", 0.0) for k in kept)
        submissions = read_jobs(partial) if units is not None else []  # the finalize of tasks, here or a job
        if submissions:
            manifest["prepared"] = jobs_prepared(submissions, cpu_s)
        else:
            manifest["prepared"].update(units_s=round(parallel_s, 3), units_cpu_s=round(cpu_s, 3))
        n_train = sum(1 for u in plan if "train" in u.splits)
        manifest.update(max_tokens=max_tokens or None,
                        complete=sum(1 for k in kept if "train" in plan[k].splits) == n_train)
        fsutil.atomic_write_text(partial / "manifest.json", json.dumps(manifest, indent=1))
        write_stamps(partial, {f"{split}/{rec['file']}.bin": {"sha256": rec["sha256"], "id": markers[k]["ids"][split]}
                               for k in kept if "ids" in markers[k] for split, rec in markers[k]["shards"].items()})
        shutil.rmtree(partial / "units", ignore_errors=True)
        for name in (CAP_FILE, PLAN_FILE, JOBS_FILE):
            (partial / name).unlink(missing_ok=True)
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


def _work_line(n: int, units: list[int] | None, todo: list, workers: int, max_tokens: int, finalize: bool) -> str:
    """What this preparation is about to do, in words: '4 of 10 units to do (this task's share: 5) on 2 workers,
    up to 3,000 training tokens', 'all 10 units done', 'finalizing (10 units planned)'."""
    if units is not None and not units:  # no share of units: the finalize, or the submitter's setup
        return f"finalizing ({n} units planned)" if finalize else f"{n} units planned"
    if not todo:
        return f"all {n} units done" if units is None else f"this task's {len(units)} of {n} units are done"
    share = f" (this task's share: {len(units)})" if units is not None else ""
    cap = f", up to {max_tokens:,} training tokens" if max_tokens else ""
    return f"{len(todo)} of {n} units to do{share} on {workers} worker{'s' if workers != 1 else ''}{cap}"


def _recorded_cap(partial: Path, max_tokens: int | None) -> int:
    """The cap to use (0: none): `max_tokens` when given (and recorded for the job array's other tasks and its
    finalize job), else the one the partial store records."""
    if max_tokens is None:
        return read_cap(partial)
    if max_tokens < 0:
        raise DataError(f"--max-tokens must be >= 0 (0: the whole source), got {max_tokens}")
    fsutil.atomic_write_text(partial / CAP_FILE, json.dumps({"max_tokens": int(max_tokens)}))
    return int(max_tokens)


def _reuse(data_cfg, vocab_size: int, path: Path, max_tokens: int | None, workers: int) -> Path:
    """A finished store, checked (its manifest; the bundled corpus' content, which its key does not hold; enough
    training tokens for `max_tokens`; every file, hashed where no stamp vouches for it) and its damaged files
    rewritten (store_repair)."""
    manifest = read_manifest(path, data_cfg, vocab_size)
    if data_cfg.source == "default" and manifest["source"]["fingerprint"] != source_fingerprint(data_cfg):
        raise StoreError(f"token store {path} was prepared from another version of the bundled corpus; delete it "
                         f"and prepare it again")
    have = manifest["splits"]["train"]["tokens"]
    if max_tokens and not manifest.get("complete", True) and have < max_tokens:
        raise StoreError(f"token store {path} holds {have:,} training tokens (prepared with --max-tokens "
                         f"{manifest.get('max_tokens'):,}), {max_tokens:,} asked for; delete it and prepare it "
                         f"again with the larger --max-tokens, or point data.store_dir elsewhere")
    with contextlib.ExitStack() as held:
        with contextlib.suppress(OSError):  # a read-only store is checked all the same (and not repaired)
            held.enter_context(cache.locked(path))
        bad = damaged(path, manifest, workers=workers)
        if not bad:
            log.info("token store %s is already prepared (every file matches its manifest)", path)
            return path
        for split, _, name, problem in bad:
            log.warning("token store %s: %s/%s %s", path, split, name, problem)
        forget(path)  # this process' open view reads the damaged files
        try:
            repair(data_cfg, path, bad, _worker_tokenizer(path / "tokenizer"))
        except OSError as exc:
            raise StoreError(f"token store {path}: {len(bad)} damaged file(s) cannot be rewritten here "
                             f"({exc.strerror or exc}); prepare it where it can be written") from None
    return path


def _waves(todo: list[Unit], plan: list[Unit], partial: Path, max_tokens: int, workers: int):
    """`todo` in waves: all of it at once without a cap; with one, training units in source order, a few per
    worker at a time (local units hold 256 documents: at least 64 of them, for large encoding batches), until the
    finished units at the start of the plan hold `max_tokens` training tokens. The units past the cut that get
    done anyway are at most one wave's."""
    if not max_tokens:
        yield todo
        return
    yield [u for u in todo if "train" not in u.splits]  # an eval split's units: always whole
    train = [u for u in todo if "train" in u.splits]
    size = 2 * workers if any(u.hf_split for u in plan) else max(2 * workers, 64)
    cursor, total = 0, 0  # the finished prefix of the plan so far (finished units stay finished)
    for i in range(0, len(train), size):
        while cursor < len(plan) and total < max_tokens:
            unit = plan[cursor]
            marker = marker_ok(partial, unit, hashes=False) if "train" in unit.splits else {}
            if marker is None:
                break
            total += marker["shards"]["train"]["tokens"] if marker else 0
            cursor += 1
        if total >= max_tokens:
            return
        yield train[i:i + size]


def _drop_other_units(partial: Path, plan: list[Unit], kept: list[int]) -> None:
    """Remove what the store does not hold: shards of units past the cut, and temporary files of interrupted
    writes."""
    keep = {f"{plan[k].index:06d}" for k in kept}
    for split in SPLITS:
        folder = partial / split
        for f in folder.iterdir() if folder.is_dir() else ():
            if f.name.startswith(".") or f.name.split(".")[0] not in keep:
                f.unlink()


@contextlib.contextmanager
def _runner(data_cfg, tok_dir: Path, finite: list | None, workers: int, partial: Path):
    """run(units): tokenize and write these units, by this thread (1 worker), worker threads (a local corpus
    with a fast tokenizer: encode_batch releases the GIL, so threads tokenize in parallel with one shared BPE
    cache and nothing to fork or pickle; measured: 2 threads 1.7x faster than 1 at the same CPU per token, where
    2 processes spent 9% more CPU per token) or worker processes (streamed sources, whose reading holds the GIL,
    and Python tokenizers)."""
    if workers <= 1:
        encoder = _worker_tokenizer(tok_dir)

        def run(todo):
            work = [(u, None if finite is None else finite[u.start:u.stop]) for u in todo]
            process_units(data_cfg, encoder, work, partial)

        with _single_threaded_tokenizers():
            yield run
        return
    encoder = _worker_tokenizer(tok_dir) if data_cfg.source != "hf" else None
    if isinstance(encoder, _FastEncoder):
        from concurrent.futures import ThreadPoolExecutor

        with _single_threaded_tokenizers(), ThreadPoolExecutor(workers) as pool:
            yield lambda todo: list(pool.map(lambda job: process_units(data_cfg, encoder, job, partial),
                                             worker_jobs(todo, finite, workers)))
        return
    init = (dataclasses.asdict(data_cfg), str(tok_dir))
    with _pool_context().Pool(workers, initializer=_worker_init, initargs=init) as pool:
        yield lambda todo: list(pool.imap_unordered(_worker_run, [(job, str(partial))
                                                                 for job in worker_jobs(todo, finite, workers)]))


def _prepare_task(data_dict: dict, vocab_size: int, units: list[int], workers: int, finalize: bool = False) -> str:
    """One job-array task (or the finalize job): prepare these units of the store. A SIGTERM (`scancel`, the
    time limit) ends it at once: submitit ignores SIGTERM in its jobs (it waits for its own preemption signal,
    which these jobs do not get), but a task has nothing to save: its finished units are on disk, each complete
    (shards renamed into place before its marker), and a rerun of `study data prepare --cluster` does the rest."""
    from study import console
    from study.config import DataConfig, from_dict

    console.setup()  # a submitit job does not go through the CLI: its log gets our lines
    signal.signal(signal.SIGTERM, _end_on_sigterm)
    return str(prepare(from_dict(DataConfig, data_dict), vocab_size, workers=workers, units=units,
                       finalize=finalize))


def _end_on_sigterm(signum, frame) -> None:
    log.warning("stopped by %s: the units finished so far are kept; `study data prepare --cluster ...` again "
                "does the rest", signal.Signals(signum).name)
    for stream in (sys.stdout, sys.stderr):  # the job's log files
        stream.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # die of it, as an unhandled SIGTERM does (worker processes get their own)


