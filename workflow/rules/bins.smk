rule make_bins:
    input:
        "results/irt/{dataset}/items.parquet",
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
    params:
        n_bins=config["bins"]["n_bins"],
    shell:
        "crossdiff make-bins --items {input} --n-bins {params.n_bins} "
        "--output {output.bins} --summary {output.summary} > {log} 2>&1"
