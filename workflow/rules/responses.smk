rule import_responses:
    input:
        raw=raw_responses,
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
            f"--items {input.item_table}" if input.item_table else ""
        ),
    shell:
        "crossdiff import-responses --source {params.source} --input {input.raw} "
        "--settings {params.settings} --filters {params.filters} {params.item_table} "
        "--output {output.matrix} --dropped {output.dropped} --stats {output.stats} "
        "> {log} 2>&1"
