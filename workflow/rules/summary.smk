# The answer in numbers: slope of gain on |gap|, asymmetry, best train bin per test bin
# (crossdiff.summary), a figure across models and datasets and the report's front-page paragraph.


def summary_settings():
    """config["summary"] for the CLI: `diagonal: auto` resolved (include the diagonal only when
    each bin's held-out items are its test items, i.e. bins.holdout_fraction > 0)."""
    s = {k: v for k, v in config["summary"].items() if k != "front_figures"}
    if s["diagonal"] == "auto":
        held_out = (config["bins"].get("holdout_fraction") or 0) > 0
        s["diagonal"] = "include" if held_out else "exclude"
    return s


def summary_images(wildcards=None):
    """The gain heatmaps shown on the report's front page (the first summary.front_figures)."""
    pairs = [(name, model) for name in study_datasets() for model in MODELS]
    return [
        f"results/figures/{name}/{model}/gain.png"
        for name, model in pairs[: config["summary"]["front_figures"]]
    ]


def summary_targets():
    if not study_datasets():
        return []
    return [
        "results/tables/summary.csv",
        "results/tables/best_train_bin.csv",
        "results/figures/summary.png",
        "results/summary/summary.rst",
    ]


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
