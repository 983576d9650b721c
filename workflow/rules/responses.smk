# Downloads per-model details from the Hub: resumable (the manifest in the cache dir survives a
# failed or killed job), concurrent, retried. Reads HF_TOKEN from the environment.
rule collect_leaderboard:
    input:
        item_table=lambda wc: items_table(wc.dataset),
        models_list=lambda wc: dataset(wc.dataset)["responses"]["models_list"] or [],
    output:
        matrix="results/leaderboard/{dataset}.parquet",
        report="results/leaderboard/{dataset}.report.json",
        summary=report(
            "results/leaderboard/{dataset}.summary.csv",
            caption="../report/leaderboard_summary.rst",
            category="Responses",
            subcategory="{dataset}",
        ),
    log:
        "logs/collect_leaderboard/{dataset}.log",
    params:
        settings=lambda wc: cli_json(dataset(wc.dataset)["responses"]),
        cache=lambda wc: f"{dataset(wc.dataset)['responses']['cache_dir']}/{wc.dataset}",
        # file sizes and doc ids are checked against the item table (only sizes for text keys)
        item_table=lambda wc, input: (
            f"--items {shlex.quote(input.item_table)}" if input.item_table else ""
        ),
        models_list=lambda wc, input: (
            f"--models-list {shlex.quote(input.models_list)}"
            if input.models_list
            else ""
        ),
    shell:
        "crossdiff collect-leaderboard --settings {params.settings} {params.item_table} "
        "{params.models_list} --cache-dir {params.cache:q} "
        "--manifest {params.cache:q}/manifest.jsonl --output {output.matrix:q} "
        "--report {output.report:q} --summary {output.summary:q} > {log:q} 2>&1"


# What a collection would download (models, files, bytes), without downloading: not part of `all`;
# `snakemake results/leaderboard/<dataset>.plan.json` (one listing request per model).
rule plan_leaderboard:
    input:
        item_table=lambda wc: items_table(wc.dataset),
        models_list=lambda wc: dataset(wc.dataset)["responses"]["models_list"] or [],
    output:
        "results/leaderboard/{dataset}.plan.json",
    log:
        "logs/plan_leaderboard/{dataset}.log",
    params:
        settings=lambda wc: cli_json(dataset(wc.dataset)["responses"]),
        cache=lambda wc: shlex.quote(
            f"{dataset(wc.dataset)['responses']['cache_dir']}/{wc.dataset}"
        ),
        options=lambda wc, input: " ".join(
            f"{flag} {shlex.quote(str(path))}"
            for flag, path in (
                ("--items", input.item_table),
                ("--models-list", input.models_list),
            )
            if path
        ),
    shell:
        "crossdiff collect-leaderboard --settings {params.settings} {params.options} "
        "--cache-dir {params.cache} --plan {output:q} --no-progress > {log:q} 2>&1"


rule import_responses:
    input:
        raw=raw_responses,
        files=response_files,
        item_table=lambda wc: items_table(wc.dataset),
    output:
        matrix="results/responses/{dataset}.parquet",
        dropped="results/responses/{dataset}.dropped.csv",
        stats="results/responses/{dataset}.stats.json",
    log:
        "logs/import_responses/{dataset}.log",
    params:
        source=lambda wc: dataset(wc.dataset)["responses"]["source"],
        settings=lambda wc: cli_json(dataset(wc.dataset)["responses"]),
        filters=lambda wc: cli_json(filters_for(wc.dataset)),
        item_table=lambda wc, input: (
            f"--items {shlex.quote(input.item_table)}" if input.item_table else ""
        ),
    shell:
        "crossdiff import-responses --source {params.source:q} --input {input.raw:q} "
        "--settings {params.settings} --filters {params.filters} {params.item_table} "
        "--output {output.matrix:q} --dropped {output.dropped:q} --stats {output.stats:q} "
        "> {log:q} 2>&1"


rule simulate_leaderboard:
    input:
        item_table="results/items/{dataset}.parquet",
    output:
        responses="results/simulated/{dataset}/responses.parquet",
        truth_items="results/simulated/{dataset}/truth_items.parquet",
        truth_models="results/simulated/{dataset}/truth_models.parquet",
    log:
        "logs/simulate_leaderboard/{dataset}.log",
    params:
        settings=lambda wc: cli_json(dataset(wc.dataset)["responses"]),
    shell:
        "crossdiff simulate-leaderboard --items {input.item_table:q} --settings {params.settings} "
        "--output {output.responses:q} --truth-items {output.truth_items:q} "
        "--truth-models {output.truth_models:q} > {log:q} 2>&1"
