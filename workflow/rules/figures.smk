rule difficulty_histogram:
    input:
        irt="results/irt/{dataset}/items.parquet",
        bins="results/bins/{dataset}/bins.parquet",
    output:
        report(
            "results/figures/{dataset}/difficulty/histogram.png",
            caption="../report/histogram.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/figures/{dataset}/histogram.log",
    shell:
        "crossdiff plot-difficulty --figure histogram --irt-items {input.irt:q} "
        "--bins {input.bins:q} --title {wildcards.dataset} --output {output:q} > {log:q} 2>&1"


rule difficulty_bin_accuracy:
    input:
        irt="results/irt/{dataset}/items.parquet",
        bins="results/bins/{dataset}/bins.parquet",
    output:
        report(
            "results/figures/{dataset}/difficulty/bin_accuracy.png",
            caption="../report/bin_accuracy.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/figures/{dataset}/bin_accuracy.log",
    shell:
        "crossdiff plot-difficulty --figure bin_accuracy --irt-items {input.irt:q} "
        "--bins {input.bins:q} --title {wildcards.dataset} --output {output:q} > {log:q} 2>&1"


rule difficulty_calibration:
    input:
        irt="results/irt/{dataset}/items.parquet",
        heldout="results/irt/{dataset}/heldout.parquet",
    output:
        report(
            "results/figures/{dataset}/difficulty/calibration.png",
            caption="../report/calibration.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/figures/{dataset}/calibration.log",
    shell:
        "crossdiff plot-difficulty --figure calibration --irt-items {input.irt:q} "
        "--heldout {input.heldout:q} --title {wildcards.dataset} --output {output:q} "
        "> {log:q} 2>&1"


rule difficulty_spearman:
    input:
        irt="results/irt/{dataset}/items.parquet",
        item_table=lambda wc: items_table(wc.dataset),
    output:
        report(
            "results/figures/{dataset}/difficulty/spearman.png",
            caption="../report/spearman.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/figures/{dataset}/spearman.log",
    params:
        item_table=lambda wc, input: (
            f"--items {shlex.quote(input.item_table)}" if input.item_table else ""
        ),
    shell:
        "crossdiff plot-difficulty --figure spearman --irt-items {input.irt:q} "
        "{params.item_table} --title {wildcards.dataset} --output {output:q} > {log:q} 2>&1"


rule difficulty_truth:
    input:
        irt="results/irt/{dataset}/items.parquet",
        truth="results/simulated/{dataset}/truth_items.parquet",
    output:
        report(
            "results/figures/{dataset}/difficulty/truth.png",
            caption="../report/truth.rst",
            category="Difficulty",
            subcategory="{dataset}",
        ),
    log:
        "logs/figures/{dataset}/truth.log",
    shell:
        "crossdiff plot-difficulty --figure truth --irt-items {input.irt:q} "
        "--truth {input.truth:q} --title {wildcards.dataset} --output {output:q} > {log:q} 2>&1"
