# The results stage: the tidy table (aggregate), heatmaps, the size x difficulty figures and the
# summary (summarize).


rule aggregate:
    input:
        all_eval_results,
    output:
        table="results/tables/results.parquet",
        csv=report(
            "results/tables/results.csv",
            caption="../report/results_table.rst",
            category="Results",
        ),
    log:
        "logs/aggregate.log",
    params:
        settings=lambda wc: cli_json(config["aggregate"]),
    shell:
        "crossdiff aggregate --results {input:q} --output {output.table:q} --csv {output.csv:q} "
        "--settings {params.settings} > {log:q} 2>&1"


rule plot_results:
    input:
        "results/tables/results.parquet",
    output:
        accuracy=report(
            expand("results/figures/{{dataset}}/{model}/accuracy.png", model=MODELS),
            caption="../report/accuracy_heatmap.rst",
            category="Results",
            subcategory="{dataset}",
        ),
        gain=report(
            expand("results/figures/{{dataset}}/{model}/gain.png", model=MODELS),
            caption="../report/gain_heatmap.rst",
            category="Results",
            subcategory="{dataset}",
        ),
        gap=report(
            "results/figures/{dataset}/gain_vs_gap.png",
            caption="../report/gain_vs_gap.rst",
            category="Results",
            subcategory="{dataset}",
        ),
        zero_shot=report(
            "results/figures/{dataset}/zero_shot.png",
            caption="../report/zero_shot.rst",
            category="Results",
            subcategory="{dataset}",
        ),
    log:
        "logs/plot_results/{dataset}.log",
    shell:
        "crossdiff plot-results --table {input:q} --dataset {wildcards.dataset} "
        + ("--show-diagonal " if config["bins"]["holdout_fraction"] > 0 else "")
        + "--outdir results/figures/{wildcards.dataset} > {log:q} 2>&1"


# every method other than sft (crossdiff.study.methods: icl-k<k>, ...): its cells' heatmaps in a folder of
# its own label, beside SFT's
rule plot_results_method:
    input:
        "results/tables/results.parquet",
    output:
        accuracy=report(
            expand(
                "results/figures/{{dataset}}/{{label}}/{model}/accuracy.png",
                model=MODELS,
            ),
            caption="../report/accuracy_heatmap.rst",
            category="Results",
            subcategory="{dataset} {label}",
        ),
        gain=report(
            expand(
                "results/figures/{{dataset}}/{{label}}/{model}/gain.png", model=MODELS
            ),
            caption="../report/gain_heatmap.rst",
            category="Results",
            subcategory="{dataset} {label}",
        ),
        gap="results/figures/{dataset}/{label}/gain_vs_gap.png",
        zero_shot="results/figures/{dataset}/{label}/zero_shot.png",
    log:
        "logs/plot_results/{dataset}-{label}.log",
    wildcard_constraints:
        label=study_methods.other_labels_pattern(),
    shell:
        "crossdiff plot-results --table {input:q} --dataset {wildcards.dataset} --method {wildcards.label:q} "
        + ("--show-diagonal " if config["bins"]["holdout_fraction"] > 0 else "")
        + "--outdir results/figures/{wildcards.dataset}/{wildcards.label} > {log:q} 2>&1"


# study.train_sizes: accuracy over (train bin, n) per test bin and overall; best train bin per n
rule size_difficulty:
    input:
        results=dataset_eval_results,
        bins="results/bins/{dataset}/bins.parquet",
    output:
        figures=report(
            expand(
                "results/figures/{{dataset}}/{model}/size_difficulty.png", model=MODELS
            ),
            caption="../report/size_difficulty.rst",
            category="Results",
            subcategory="{dataset}",
        ),
        best=report(
            "results/figures/{dataset}/best_train_bin.png",
            caption="../report/size_difficulty.rst",
            category="Results",
            subcategory="{dataset}",
        ),
        table="results/tables/{dataset}/best_train_bin.csv",
    log:
        "logs/size_difficulty/{dataset}.log",
    params:
        settings=lambda wc: cli_json(config["aggregate"]),
    shell:
        "crossdiff size-difficulty --results {input.results:q} --bins {input.bins:q} "
        "--dataset {wildcards.dataset} --outdir results/figures/{wildcards.dataset} "
        "--table {output.table:q} --settings {params.settings} > {log:q} 2>&1"


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
        run="results/summary/run.json",
    log:
        "logs/summarize.log",
    params:
        settings=lambda wc: cli_json(summary_settings()),
        run=lambda wc: cli_json({"config": config, "configfiles": CONFIGFILES}),
    shell:
        "crossdiff summarize --table {input.table:q} --csv {output.csv:q} --best {output.best:q} "
        "--figure {output.figure:q} --text {output.text:q} --images {input.images:q} "
        "--run-record {output.run:q} --run-config {params.run} "
        "--settings {params.settings} > {log:q} 2>&1"
