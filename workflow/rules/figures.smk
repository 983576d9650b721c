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
        "crossdiff plot-difficulty --figure histogram --irt-items {input.irt} "
        "--bins {input.bins} --title {wildcards.dataset} --output {output} > {log} 2>&1"


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
        "crossdiff plot-difficulty --figure bin_accuracy --irt-items {input.irt} "
        "--bins {input.bins} --title {wildcards.dataset} --output {output} > {log} 2>&1"


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
        "crossdiff plot-difficulty --figure calibration --irt-items {input.irt} "
        "--heldout {input.heldout} --title {wildcards.dataset} --output {output} "
        "> {log} 2>&1"


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
            f"--items {input.item_table}" if input.item_table else ""
        ),
    shell:
        "crossdiff plot-difficulty --figure spearman --irt-items {input.irt} "
        "{params.item_table} --title {wildcards.dataset} --output {output} > {log} 2>&1"


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
        "crossdiff plot-difficulty --figure truth --irt-items {input.irt} "
        "--truth {input.truth} --title {wildcards.dataset} --output {output} > {log} 2>&1"
