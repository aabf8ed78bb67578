"""The paper's lm-eval tasks: one record per column of its Table 3 (zero-shot accuracy) and Table 4 (OOD perplexity).

Pure data (no lm-eval), read by `study eval` (the `paper` and `zeroshot` task sets, each task's lm-eval YAML, the
spellings `--tasks` accepts, the set listing of `study eval --help`) and by paper_figures (which lm-eval task and
metric fill each column, how a column is headed). A new paper-table task is one record here; the paper's own
number for it is data, a column of paper_figures/reference/<table>.csv.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every paper task is zero-shot (Table 3; Table 4's perplexities take no shots): `study eval` passes this to
# lm-eval instead of leaving each task config's default, and records it in lm_eval.json.
NUM_FEWSHOT = 0


@dataclass(frozen=True)
class PaperTask:
    column: str  # its column in the paper's table (paper_figures/reference/<table>.csv)
    table: str  # 'table3' (zero-shot accuracy) or 'table4' (OOD perplexity)
    task: str  # the lm-eval task `study eval` runs for it
    lm_eval_yaml: str  # the task's YAML (file or folder) under lm_eval/tasks/: indexing just these is instant
    metric: str | None = None  # the lm-eval metric read; None: Table 3's rule (acc_norm where reported, else acc)
    header: str | None = None  # the column's printed name, when not `column`
    spellings: tuple[str, ...] = ()  # other names `--tasks` accepts for the task
    also_read: tuple[str, ...] = ()  # other lm-eval result names read, in order, when `task` has no result

    @property
    def reads(self) -> tuple[str, ...]:
        """The lm-eval result names that fill the column, first found wins."""
        return (self.task, *self.also_read)


_LAMBADA = dict(task="lambada_openai", lm_eval_yaml="lambada/lambada_openai.yaml",
                also_read=("lambada", "lambada_standard"))

# In the paper's column order.
TASKS: tuple[PaperTask, ...] = (
    PaperTask("piqa", "table3", "piqa", "piqa/piqa.yaml"),
    PaperTask("siqa", "table3", "social_iqa", "siqa/siqa.yaml", spellings=("siqa",), also_read=("siqa",)),
    PaperTask("hellaswag", "table3", "hellaswag", "hellaswag/hellaswag.yaml"),
    PaperTask("winogrande", "table3", "winogrande", "winogrande/default.yaml"),
    PaperTask("arc_easy", "table3", "arc_easy", "arc/arc_easy.yaml", spellings=("arc_e",)),
    PaperTask("arc_challenge", "table3", "arc_challenge", "arc/arc_challenge.yaml", spellings=("arc_c",)),
    PaperTask("openbookqa", "table3", "openbookqa", "openbookqa/openbookqa.yaml", spellings=("obqa",)),
    PaperTask("race", "table3", "race", "race/race.yaml"),
    PaperTask("lambada", "table3", spellings=("lambada",), **_LAMBADA),
    PaperTask("mmlu", "table3", "mmlu", "mmlu/default"),
    PaperTask("wikitext", "table4", "wikitext", "wikitext/wikitext.yaml", metric="word_perplexity",
              header="WikiText"),
    PaperTask("lambada", "table4", metric="perplexity", header="LAMBADA", **_LAMBADA),
)


def of_table(table: str) -> tuple[PaperTask, ...]:
    """The records of one table ('table3', 'table4'), in its column order."""
    return tuple(t for t in TASKS if t.table == table)


def _tasks(records) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t.task for t in records))


ZERO_SHOT = _tasks(of_table("table3"))  # the lm-eval tasks of Table 3 (its Avg is their plain mean)
PAPER = _tasks(TASKS)  # every lm-eval task of Tables 3 and 4, each once
SPELLINGS = {name: t.task for t in TASKS for name in t.spellings}  # --tasks spelling -> lm-eval task
LM_EVAL_YAML = {t.task: t.lm_eval_yaml for t in TASKS}
