# The answer in numbers: slope of gain on |gap|, asymmetry, best train bin per test bin
# (crossdiff.results.summary), a figure across models and datasets and the report's front-page paragraph.


rule summarize:
    input:
        table="results/tables/results.parquet",
        results=all_eval_results,
        images=summary_images,
    output:
        csv=report(
            "results/tables/summary.csv",
            caption="../report/summary_table.rst",
            category="Summary",
        ),
        best=report(
            "results/tables/best_train_bin.csv",
            caption="../report/best_train_bin.rst",
            category="Summary",
        ),
        figure=report(
            "results/figures/summary.png",
            caption="../report/summary_figure.rst",
            category="Summary",
        ),
        text="results/summary/summary.rst",
    log:
        "logs/summarize.log",
    params:
        settings=cli_json(summary_settings()),
    shell:
        "crossdiff summarize --table {input.table:q} --csv {output.csv:q} --best {output.best:q} "
        "--figure {output.figure:q} --text {output.text:q} --images {input.images:q} "
        "--settings {params.settings} > {log:q} 2>&1"
