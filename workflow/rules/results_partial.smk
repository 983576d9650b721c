# Results while the study runs (crossdiff.results.partial): `snakemake results/partial/progress.csv` writes
# results/partial/ (progress per model x dataset x method, heatmaps with the missing cells hatched, the
# summary on the cells that exist), all labelled partial.
#
# The rule has NO input on the evaluation cells: it lists the planned cells (from the plan) that exist when
# it runs, so asking for it schedules no evaluation or fine-tune, claims none of their files and leaves
# every output of the main DAG as it was (it writes only under results/partial/). Beside a running study
# ask with --nolock: Snakemake removes the whole .snakemake/locks folder when an instance that locked ends,
# the running study's locks included. Its `state` param is a fingerprint of the planned cells that exist (path, size,
# mtime of each result and its per-sample log): a cell written, changed or removed since the last build
# makes the next request rebuild it (Snakemake's params trigger, on by default); with nothing new the
# request finds it up to date.
import crossdiff.results.partial as results_partial


localrules:
    partial_results,


# the planned cells, compactly: models, each dataset's evaluation labels, the test bins
PARTIAL_PLANNED = {
    "n_bins": N_BINS,
    "models": list(MODELS),
    "datasets": {d: list(eval_labels(d)) for d in study_datasets()},
    "root": "results/eval",
}


rule partial_results:
    output:
        progress="results/partial/progress.csv",
        table="results/partial/table.csv",
        summary="results/partial/summary.csv",
        best="results/partial/best_train_bin.csv",
        text="results/partial/summary.txt",
        figures=directory("results/partial/figures"),
    log:
        "logs/partial_results.log",
    params:
        planned=cli_json(PARTIAL_PLANNED),
        settings=lambda wc: cli_json(
            {
                "aggregate": config["aggregate"],
                "summary": summary_settings(),
                "show_diagonal": config["bins"]["holdout_fraction"] > 0,
            }
        ),
        state=lambda wc: results_partial.fingerprint(PARTIAL_PLANNED),
    shell:
        "crossdiff partial-results --planned {params.planned} --settings {params.settings} "
        "--outdir results/partial > {log:q} 2>&1"
