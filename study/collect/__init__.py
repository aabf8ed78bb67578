"""Results store -> tidy pandas tables (the input of study.analysis, paper_figures and the notebooks).

`collect(root)` walks `<root>/<grid>/<run-name>/` run directories (docs/ARCHITECTURE.md, section "results") and
returns a `Collection` of DataFrames:

runs         one row per run directory: run_id, run_name, grid, path, state, step, error, updated, diverged_step,
             method, schedule, prores (bool), label (the paper's series label), scale, n_layers, norm, init, T, W,
             lr, steps, decay_fraction, lr_schedule, params, provenance columns, `axis.<name>` per grid axis,
             `cfg.<dotted key>` per config value (lists/dicts as JSON text), and final values: final_step,
             final_loss, final_grad_norm, final_eval_step, final_eval_loss, final_eval_ppl, eval_dataset,
             n_metrics, n_evals, n_probe_steps, has_lm_eval, n_problems.
metrics      run_id + every metrics.jsonl field (alpha lists dropped unless collect(keep_alpha=True)).
evals        run_id + every eval.jsonl field.
probes       run_id + every probes.jsonl field (one row per probe step and layer).
lm_eval      tidy lm-eval scores: run_id, task, metric, filter, value, stderr (lm_eval.json's 'results').
probe_files  run_id, step, path of probes/step_XXXXXXX.pt (Figure 4 loads them lazily).
problems     path, run_id, file, problem: everything that is missing or unreadable. Never an exception.

States: the status.json state (pending, running, completed, diverged, failed, interrupted); `partial` when a run
directory has no status.json; `corrupt` when status.json cannot be read. Corrupt files (a truncated JSON line, an
unreadable config.yaml, a missing run.json) are reported in `problems` and the rest of the run is kept. Rows
written twice (the same eval measurement: step, dataset, split, source, tokens, seq_len; the same probe step and
layer; a repeated metrics step) keep their last copy, and the copies dropped are counted as a problem.

Speed: each .jsonl file is parsed by pyarrow's JSON reader (the fast path; runs are read on several threads);
a file it rejects is re-read line by line with json.loads, keeping every line that parses and reporting the
others. Tables are concatenated once in Arrow and converted to pandas once; run_id is categorical in the
step-level tables.

Modules: files (one file: .jsonl via Arrow, JSON, YAML, lm-eval scores), rundir (one run directory -> its
row and tables), store (Collection and its Parquet folder), cache (reuse the unchanged runs of a previous
collection), gather (collect() over a root). The paper's series labels come from study.labels.
"""

from study.collect.cache import SIGNATURE_FILES, signature
from study.collect.files import flatten, read_jsonl, tidy_lm_eval
from study.collect.gather import RUN_COLUMNS, collect
from study.collect.rundir import RUN_FILES, SKIP_DIRS, STATES, find_run_dirs
from study.collect.store import TABLES, Collection, is_saved_collection, load
from study.labels import method_label, prores_tag, series_label

__all__ = [
    "collect", "Collection", "load", "is_saved_collection", "TABLES", "RUN_COLUMNS", "RUN_FILES", "SKIP_DIRS",
    "STATES", "SIGNATURE_FILES", "signature", "find_run_dirs", "read_jsonl", "flatten", "tidy_lm_eval",
    "method_label", "prores_tag", "series_label",
]
