"""Evaluation: the lm-eval harness in process, offline task data, checkpoint loading, `study eval`.

    from study.perplexity import perplexity, eval_row, dataset_label     (a layer below: the trainer uses it too)
        perplexity(model, batches, device=, dtype=None) -> {'loss', 'ppl', 'tokens'}
    from study.evaluate.load import load_for_eval
        load_for_eval(run_dir, step=, device=) -> LoadedRun (the model with its weights and ProRes alphas)
    from study.evaluate.lm_eval_adapter import StudyLM
        StudyLM(model, tokenizer, batch_size=, max_length=, device=, dtype=)   (an lm-eval TemplateLM)
    from study.evaluate import tasks
        tasks.expand(spec), tasks.prepare(...) -> TaskSetup, tasks.export_hub_data(dir); tasks/generate.py
    from study.evaluate.run import evaluate_run
        evaluate_run(run_dir, step=, tasks=, limit=, batch_size=, tokens=, data_dir=, ppl=) -> EvalOutcome

Importing this package imports nothing heavy: lm-eval and transformers load only with the adapter and task
code. (Names are not re-exported here, so that each module is imported only by whoever needs it.)
"""
