"""Which lm-eval tasks to run, and where their data comes from (offline-capable).

Task names (`--tasks`): a set name (`paper`, `zeroshot`, `local`), an lm-eval task or group name, or one of the
local corpus tasks, comma-separated. `prepare(...)` turns them into a `TaskSetup`: the names to hand to
`lm_eval.simple_evaluate` and a TaskManager over a folder of generated task YAMLs.

Where each task's data comes from, in this order:
1. local corpus tasks (`corpus_cloze`, `corpus_lastword`, `corpus_rolling`): JSONL files generated from
   held-out documents of the bundled default corpus (tasks/generate.py), YAMLs in this folder;
2. a pre-downloaded copy under `data_dir` (`--data-dir`, `eval.lm_eval_data_dir`): for a task whose lm-eval
   YAML reads Hugging Face dataset `PATH` (config `NAME`), the files
       DATA_DIR/PATH/NAME/<split>.jsonl      (NAME = 'default' when the task has no config; .json also read)
   holding the hub dataset's rows unchanged, one JSON object per line (`export_hub_data` writes them on a
   machine with internet). A generated YAML includes lm-eval's own task YAML (so prompts, metrics, versions
   and preprocessing functions are lm-eval's) and overrides only `dataset_path: json` and
   `dataset_kwargs.data_files` (absolute paths); splits that are not on disk are switched off, except the
   split the task is scored on, which must be there;
3. the Hugging Face Hub, only when it can be reached: otherwise `prepare` raises DataError at once (no
   network retries) naming every missing dataset and the files that would provide it.

Only local tasks -> TaskManager(include_path=<generated>, include_defaults=False): ~15 s faster to build.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from study import paper_tasks
from study.data.hub import hub_reachable
from study.errors import ConfigError, DataError

HERE = Path(__file__).resolve().parent

LOCAL_TASKS = ("corpus_cloze", "corpus_lastword", "corpus_rolling")
# The paper's tasks, sets and spellings come from study/paper_tasks.py (one record per table column):
# paper = every task of Tables 3 and 4, zeroshot = Table 3's; local = offline, from the bundled corpus.
PAPER_ZERO_SHOT = paper_tasks.ZERO_SHOT
TASK_SETS = {
    "paper": paper_tasks.PAPER,
    "zeroshot": paper_tasks.ZERO_SHOT,
    "local": LOCAL_TASKS,
}
ALIASES = paper_tasks.SPELLINGS
LM_EVAL_PATHS = paper_tasks.LM_EVAL_YAML  # indexing just these is instant; all of lm-eval's tasks take ~15 s
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
DATA_SUFFIXES = (".jsonl", ".json")


def describe_sets() -> str:
    """The task sets with their tasks, for help texts: 'paper (piqa, ...); zeroshot (...); local (...)'."""
    return "; ".join(f"{name} ({', '.join(tasks)})" for name, tasks in TASK_SETS.items())


def expand(spec) -> list[str]:
    """Task names from a spec: 'paper', 'local', 'piqa,corpus_cloze', or a list of such; aliases resolved,
    duplicates dropped, order kept."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or [])
    out: list[str] = []
    for item in items:
        for part in str(item).split(","):
            name = part.strip()
            if not name:
                continue
            names = TASK_SETS.get(name, (ALIASES.get(name, name),))
            out.extend(n for n in names if n not in out)
    return out


# ---------------------------------------------------------------------------------------------------
# lm-eval's task index (only the parts we need)
# ---------------------------------------------------------------------------------------------------
def _lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


_FULL_INDEX: dict | None = None


def _index_for(names: list[str]) -> dict:
    """lm-eval's task index over the folders of the paper's tasks, or over all of lm-eval when a name is
    not one of them (cached per process)."""
    from lm_eval.tasks._index import TaskIndex

    global _FULL_INDEX
    root = _lm_eval_tasks_dir()
    if all(n in LM_EVAL_PATHS for n in names):
        index: dict = {}
        for n in names:
            path = root / LM_EVAL_PATHS[n]
            part = TaskIndex.build([path]) if path.is_dir() else _index_file(path)
            index.update(part)
        return index
    if _FULL_INDEX is None:
        _FULL_INDEX = TaskIndex.build([root])
    return _FULL_INDEX


def _index_file(path: Path) -> dict:
    from lm_eval.tasks._index import TaskIndex
    from lm_eval.tasks._yaml_loader import load_yaml

    index: dict = {}
    TaskIndex.process_cfg(load_yaml(path, resolve_func=False), path, index)
    return index


@dataclass
class _Tree:
    leaves: list = field(default_factory=list)  # Entries of tasks
    groups: list = field(default_factory=list)  # Entries of groups
    unsupported: list = field(default_factory=list)  # names we cannot redirect to local files


def _walk(name: str, index: dict, tree: _Tree, seen: set) -> None:
    from lm_eval.tasks._index import Kind

    if name in seen:
        return
    seen.add(name)
    entry = index.get(name)
    if entry is None:
        tree.unsupported.append(name)
        return
    if entry.kind == Kind.TASK:
        tree.leaves.append(entry)
    elif entry.kind == Kind.GROUP:
        tree.groups.append(entry)
        for child in entry.cfg.get("task", []):
            if isinstance(child, str):
                _walk(child, index, tree, seen)
            else:
                tree.unsupported.append(f"{name} (inline task config)")
    elif entry.kind == Kind.TAG:
        for child in sorted(entry.tags):
            _walk(child, index, tree, seen)
    else:
        tree.unsupported.append(name)


# ---------------------------------------------------------------------------------------------------
# local copies of hub datasets
# ---------------------------------------------------------------------------------------------------
def dataset_of(cfg: dict) -> tuple[str | None, str]:
    return cfg.get("dataset_path"), str(cfg.get("dataset_name") or "default")


def local_dataset_dir(data_dir, cfg: dict) -> Path:
    path, name = dataset_of(cfg)
    return Path(data_dir).expanduser().resolve() / str(path) / name


def scored_split(cfg: dict) -> str | None:
    """The split lm-eval scores a task on: test if the task has one, else validation."""
    return cfg.get("test_split") or cfg.get("validation_split")


def _split_file(folder: Path, split: str) -> Path | None:
    for suffix in DATA_SUFFIXES:
        path = folder / f"{split}{suffix}"
        if path.is_file():
            return path
    return None


def _local_override(entry, data_dir) -> dict | None:
    """The override YAML of one lm-eval task reading `data_dir`, or None when its scored split is absent."""
    cfg = entry.cfg
    if data_dir is None or not cfg.get("dataset_path") or cfg.get("custom_dataset"):
        return None
    folder = local_dataset_dir(data_dir, cfg)
    scored = scored_split(cfg)
    if scored is None or _split_file(folder, scored) is None:
        return None
    override: dict = {"include": str(Path(entry.yaml_path).resolve()), "task": entry.name,
                      "dataset_path": "json", "dataset_name": None}
    data_files: dict = {}
    for key in SPLIT_KEYS:
        split = cfg.get(key)
        if split is None:
            continue
        found = _split_file(folder, split)
        if found is None:
            override[key] = None  # not on disk: lm-eval must not ask for it
        else:
            data_files[split] = str(found)
    override["dataset_kwargs"] = {"data_files": data_files}
    return override


def missing_message(missing: list[tuple[str, dict | None]], data_dir, *, hub_allowed: bool = True) -> str:
    """One line: which datasets are missing and how to provide them locally."""
    by_dataset: dict = {}
    unsupported = []
    for task, cfg in missing:
        if cfg is None:
            unsupported.append(f"{task} (cannot read local files)")
            continue
        path, name = dataset_of(cfg)
        by_dataset.setdefault((task.split("/")[0], path), []).append((name, scored_split(cfg), cfg))
    root = Path(data_dir).expanduser().resolve() if data_dir else Path("DATA_DIR")
    parts = []
    for (task, path), configs in by_dataset.items():
        if len(configs) == 1:
            name, split, _ = configs[0]
            shown = f" config '{name}'" if name != "default" else ""
            parts.append(f"{task}: Hugging Face dataset '{path}'{shown} -> {root / path / name / split}.jsonl")
        else:
            names = ", ".join(c[0] for c in configs[:3]) + (", ..." if len(configs) > 3 else "")
            parts.append(f"{task}: Hugging Face dataset '{path}' ({len(configs)} configs: {names}) -> "
                         f"{root / path}/<config>/{configs[0][1]}.jsonl")
    parts += unsupported
    why = "the Hugging Face Hub cannot be reached" if hub_allowed else "hub downloads are off"
    return (f"{why} and no local copy was found for: {'; '.join(parts)}. Provide each dataset's rows as JSONL "
            f"under --data-dir DIR as DIR/<dataset>/<config>/<split>.jsonl (study.evaluate.tasks."
            f"export_hub_data(DIR) writes them on a machine with internet; see docs/evaluation.md), or run the "
            f"offline tasks with --tasks local")


# ---------------------------------------------------------------------------------------------------
# the setup handed to lm-eval
# ---------------------------------------------------------------------------------------------------
@dataclass
class TaskSetup:
    tasks: list[str]  # names for simple_evaluate
    include_dir: Path  # generated YAMLs
    include_defaults: bool  # True when some task reads the hub through lm-eval's own YAMLs
    sources: dict[str, str]  # requested name -> 'corpus' | 'data-dir' | 'hub'
    data_files: dict[str, dict] = field(default_factory=dict)  # leaf task -> {split: path}

    def task_manager(self):
        from lm_eval.tasks import TaskManager

        return TaskManager(include_path=str(self.include_dir), include_defaults=self.include_defaults)


def _write_yaml(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _local_task_yaml(task: str, data_file: Path) -> dict:
    cfg = yaml.safe_load((HERE / f"{task}.yaml").read_text())
    cfg["dataset_kwargs"] = {"data_files": {cfg["test_split"]: str(Path(data_file).resolve())}}
    return cfg


def prepare(tasks, work_dir, *, data_dir=None, corpus_data_cfg=None, corpus_cache_dir=None,
            allow_hub: bool = True) -> TaskSetup:
    """Resolve `tasks` and write their YAMLs under `work_dir` (a scratch folder that outlives the evaluation).

    data_dir: pre-downloaded hub datasets (layout in the module docstring).
    corpus_data_cfg / corpus_cache_dir: where the local corpus tasks' JSONL files are cached (generate.py).
    allow_hub: False never touches the network (a task without a local copy is an error).
    Raises DataError, before any download is attempted, when a task has no local copy and the hub is
    unreachable (or allow_hub is False).
    """
    names = expand(tasks)
    if not names:
        raise DataError("no lm-eval tasks given")
    include = Path(work_dir) / "lm_eval_tasks"
    if include.exists():
        shutil.rmtree(include)
    include.mkdir(parents=True)
    sources: dict[str, str] = {}
    data_files: dict[str, dict] = {}

    local = [n for n in names if n in LOCAL_TASKS]
    if local:
        from study.evaluate.tasks.generate import generate

        files = generate(corpus_cache_dir, corpus_data_cfg)
        for task in local:
            cfg = _local_task_yaml(task, files[task])
            _write_yaml(include / "corpus" / f"{task}.yaml", cfg)
            sources[task] = "corpus"
            data_files[task] = cfg["dataset_kwargs"]["data_files"]

    hub_names = [n for n in names if n not in LOCAL_TASKS]
    need_hub: list[str] = []
    missing: list[tuple[str, dict | None]] = []
    if hub_names:
        index = _index_for(hub_names)
        unknown = [n for n in hub_names if n not in index]
        if unknown:
            raise ConfigError(f"unknown lm-eval task {', '.join(map(repr, unknown))}; give an lm-eval task or "
                              f"group name, a local task ({', '.join(LOCAL_TASKS)}) or a set "
                              f"({', '.join(TASK_SETS)})", key="tasks")
        for name in hub_names:
            tree = _Tree()
            _walk(name, index, tree, set())
            overrides = {e.name: _local_override(e, data_dir) for e in tree.leaves}
            if tree.leaves and not tree.unsupported and all(o is not None for o in overrides.values()):
                for entry in tree.leaves:
                    _write_yaml(include / "local" / name / f"{entry.name}.yaml", overrides[entry.name])
                    data_files[entry.name] = overrides[entry.name]["dataset_kwargs"]["data_files"]
                for group in tree.groups:
                    _write_yaml(include / "local" / name / f"_group_{group.name}.yaml",
                                {"include": str(Path(group.yaml_path).resolve()), "group": group.name})
                sources[name] = "data-dir"
            else:
                need_hub.append(name)
                missing += [(f"{name}/{e.name}" if e.name != name else name, e.cfg)
                            for e in tree.leaves if overrides[e.name] is None]
                missing += [(u, None) for u in tree.unsupported]
    if need_hub:
        if not allow_hub or not hub_reachable():
            raise DataError(missing_message(missing, data_dir, hub_allowed=allow_hub))
        for name in need_hub:
            sources[name] = "hub"
    return TaskSetup(tasks=names, include_dir=include, include_defaults=bool(need_hub), sources=sources,
                     data_files=data_files)


# ---------------------------------------------------------------------------------------------------
# making a local copy (run once on a machine with internet)
# ---------------------------------------------------------------------------------------------------
def export_hub_data(data_dir, tasks="paper", *, include_train: bool = False) -> list[Path]:
    """Download the hub datasets of `tasks` and write them in the layout `--data-dir` reads.

    Writes DATA_DIR/<dataset_path>/<config or 'default'>/<split>.jsonl for the split each task is scored on,
    its few-shot split and validation (training splits only with include_train=True). Needs internet; run it
    once, copy DATA_DIR to the offline machine. Returns the files written.
    """
    import datasets

    names = [n for n in expand(tasks) if n not in LOCAL_TASKS]
    index = _index_for(names)
    written: list[Path] = []
    done: set = set()
    for name in names:
        tree = _Tree()
        _walk(name, index, tree, set())
        if tree.unsupported:
            raise DataError(f"cannot export {', '.join(tree.unsupported)}: not a YAML task with a hub dataset")
        for entry in tree.leaves:
            cfg = entry.cfg
            path, config_name = dataset_of(cfg)
            keys = SPLIT_KEYS if include_train else tuple(k for k in SPLIT_KEYS if k != "training_split")
            splits = {cfg[k] for k in keys if cfg.get(k)}
            folder = local_dataset_dir(data_dir, cfg)
            for split in sorted(splits):
                if (path, config_name, split) in done:
                    continue
                done.add((path, config_name, split))
                ds = datasets.load_dataset(path, cfg.get("dataset_name"), split=split,
                                           **(cfg.get("dataset_kwargs") or {}))
                folder.mkdir(parents=True, exist_ok=True)
                out = folder / f"{split}.jsonl"
                ds.to_json(str(out), lines=True, force_ascii=False)
                written.append(out)
    return written
