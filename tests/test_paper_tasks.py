"""study/paper_tasks.py: one record per column of the paper's Tables 3 and 4, read by study eval and paper_figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from study import paper_tasks
from study.cli import main
from study.evaluate import tasks as eval_tasks

REFERENCE = Path(__file__).resolve().parents[1] / "paper_figures" / "reference"
FILES = {"table3": "table3_zeroshot_1.3B.csv", "table4": "table4_ood_ppl_1.3B.csv"}
KEYS = {"method", "prores", "avg"}  # row keys, and Table 3's Avg (computed from the task columns)


@pytest.mark.parametrize("table", sorted(FILES))
def test_every_column_of_the_papers_table_has_exactly_one_record(table):
    columns = [c for c in pd.read_csv(REFERENCE / FILES[table], nrows=0).columns if c not in KEYS]
    assert [t.column for t in paper_tasks.of_table(table)] == columns  # the paper's order too


def test_task_sets_spellings_and_yamls_come_from_the_records():
    assert eval_tasks.expand("zeroshot") == [t.task for t in paper_tasks.of_table("table3")]
    # paper: every task of both tables once (Table 4's LAMBADA is Table 3's lambada_openai, another metric)
    assert eval_tasks.expand("paper") == list(paper_tasks.ZERO_SHOT) + ["wikitext"]
    assert eval_tasks.expand("arc_e,obqa,lambada") == ["arc_easy", "openbookqa", "lambada_openai"]
    assert set(eval_tasks.LM_EVAL_PATHS) == set(eval_tasks.TASK_SETS["paper"])
    assert {t.metric for t in paper_tasks.of_table("table4")} == {"word_perplexity", "perplexity"}
    assert all(t.metric is None for t in paper_tasks.of_table("table3"))  # Table 3's acc_norm/acc rule


def test_every_yaml_is_in_the_installed_lm_eval():
    pytest.importorskip("lm_eval")
    root = eval_tasks._lm_eval_tasks_dir()
    assert all((root / t.lm_eval_yaml).exists() for t in paper_tasks.TASKS)


def test_eval_help_lists_each_set_with_its_tasks(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, names in eval_tasks.TASK_SETS.items():
        assert f"{name} ({', '.join(names)})" in text
