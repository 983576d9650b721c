# Datasets without responses (responses.source: none: training corpora, benchmarks without a leaderboard):
# no IRT fit, the bins come from an item measure of the item table alone (crossdiff.plan.corpora); and the
# token-length measure of a text column (bins.by: length_tokens:COLUMN, crossdiff.bins.token_length).


# the bins of a dataset without responses: the same outputs as make_bins, which needs an IRT fit
ruleorder: make_bins_measure > make_bins


rule make_bins_measure:
    input:
        unpack(no_irt_bins_inputs),
    output:
        bins="results/bins/{dataset}/bins.parquet",
        summary=report(
            "results/bins/{dataset}/summary.csv",
            caption="../report/bin_summary.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/make_bins/{dataset}.log",
    wildcard_constraints:
        dataset=no_irt_pattern(),
    params:
        n_bins=config["bins"]["n_bins"],
        design=lambda wc: bins_args(wc.dataset),
    shell:
        "crossdiff make-bins --no-irt --items {input.item_table:q} --n-bins {params.n_bins}{params.design} "
        "--output {output.bins:q} --summary {output.summary:q} > {log:q} 2>&1"


# bins.by: length_tokens:COLUMN: tokens of the column per item (datasets.<d>.bins.tokenizer, or the first model's)
rule length_tokens_measure:
    input:
        item_table=lambda wc: items_table(wc.dataset),
        tokenizer=tokenizer_files,
    output:
        "results/bins/{dataset}/length_tokens_measure.parquet",
    log:
        "logs/length_tokens_measure/{dataset}.log",
    params:
        column=lambda wc: measure_model(wc.dataset),
        tokenizer=tokenizer_ref,
    shell:
        "crossdiff length-tokens-measure --items {input.item_table:q} --column {params.column:q} "
        "--tokenizer {params.tokenizer:q} --output {output:q} > {log:q} 2>&1"
