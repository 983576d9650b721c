# Cross-dataset testing (datasets.<d>.test_on, crossdiff.plan.corpora): every checkpoint trained on a bin of
# one dataset is also scored on every bin of the others, with their task folders and evaluation settings; a
# dataset scored only as another's test set gets its own zero-shot cells. Heatmaps per (train, test) pair.


# {trained}: a trained method's evaluation label (train3, dft-train3-n100, ...); {test}: the scored dataset
rule evaluate_transfer:
    input:
        checkpoint=lambda wc: (
            f"results/finetune/{wc.model}/{wc.dataset}/{PLAN.run_of_eval(wc.trained)}"
        ),
        task_config=lambda wc: plan_inputs.task_files(dataset(wc.test)),
        tasks=expand("results/tasks/{{test}}/bin{t}", t=range(N_BINS)),
    output:
        results=expand(
            "results/eval/{{model}}/{{dataset}}/{{trained}}/on-{{test}}/bin{t}.json",
            t=range(N_BINS),
        ),
        samples=expand(
            "results/eval/{{model}}/{{dataset}}/{{trained}}/on-{{test}}/bin{t}.samples.jsonl",
            t=range(N_BINS),
        ),
    log:
        "logs/evaluate/{model}/{dataset}/{trained}/on-{test}.log",
    wildcard_constraints:
        test=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        gpu=config["resources"]["evaluate"]["gpu"],
        mem_mb=lambda wc, attempt: config["resources"]["evaluate"]["mem_mb"] * attempt,
        runtime=lambda wc, attempt: config["resources"]["evaluate"]["runtime"] * attempt,
    params:
        **gpu_params(),
        settings=lambda wc: eval_settings_json(wc.test, wc.model),
        train=lambda wc: result_train_label(wc.trained),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("evaluate")
        + "crossdiff evaluate --model {input.checkpoint:q} "
        "--model-name {wildcards.model} --train-bin {params.train} --train-dataset {wildcards.dataset} "
        "--tasks {input.tasks:q} --outputs {output.results:q} --settings {params.settings} > {log:q} 2>&1"


rule plot_transfer:
    input:
        "results/tables/results.parquet",
    output:
        accuracy=report(
            [
                f"results/figures/{{dataset}}/on-{{test}}/{study_methods.figure_dir(l)}{m}/accuracy.png"
                for l in TRAINED_LABELS
                for m in MODELS
            ],
            caption="../report/transfer_heatmap.rst",
            category="Results",
            subcategory="{dataset} on {test}",
        ),
        gain=report(
            [
                f"results/figures/{{dataset}}/on-{{test}}/{study_methods.figure_dir(l)}{m}/gain.png"
                for l in TRAINED_LABELS
                for m in MODELS
            ],
            caption="../report/transfer_heatmap.rst",
            category="Results",
            subcategory="{dataset} on {test}",
        ),
        other=[
            f"results/figures/{{dataset}}/on-{{test}}/{study_methods.figure_dir(l)}{k}.png"
            for l in TRAINED_LABELS
            for k in ("gain_vs_gap", "zero_shot")
        ],
    log:
        "logs/plot_transfer/{dataset}-on-{test}.log",
    wildcard_constraints:
        test=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    params:
        methods=" ".join(TRAINED_LABELS),
    shell:
        "crossdiff plot-transfer --table {input:q} --dataset {wildcards.dataset} --test-dataset {wildcards.test} "
        "--methods {params.methods} --outdir results/figures/{wildcards.dataset}/on-{wildcards.test} > {log:q} 2>&1"
