# summary.sgr: Supervision Gap Recovered (Hase et al. 2024), per model x dataset x method x test bin, with
# its paired bootstrap interval, their main figure's layout and the report's front-page section
# (crossdiff.results.sgr). Targets: sgr_targets() in common.smk.


rule sgr:
    input:
        table="results/tables/results.parquet",
        results=all_eval_results,
    output:
        csv=report(
            "results/tables/sgr.csv",
            caption="../report/sgr.rst",
            category="Summary",
        ),
        figure=report(
            "results/figures/sgr.png",
            caption="../report/sgr.rst",
            category="Summary",
        ),
        text="results/summary/sgr.rst",
    log:
        "logs/sgr.log",
    params:
        settings=lambda wc: cli_json(PLAN.sgr() or {}),
        n_bins=N_BINS,
    shell:
        "crossdiff sgr --table {input.table:q} --csv {output.csv:q} --figure {output.figure:q} "
        "--text {output.text:q} --n-bins {params.n_bins} --settings {params.settings} > {log:q} 2>&1"
