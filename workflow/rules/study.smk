# Training data of each fine-tune of the study design (crossdiff.study.designs): one bin's items, or a
# train set / subsample / curriculum.
rule make_sft_data:
    input:
        item_table=lambda wc: items_table(wc.dataset),
        bins="results/bins/{dataset}/bins.parquet",
    output:
        "results/sft/{dataset}/bin{b}.jsonl",
    log:
        "logs/make_sft_data/{dataset}/bin{b}.log",
    params:
        prompt=lambda wc: prompt_json(wc.dataset),
    shell:
        "crossdiff make-sft-data --items {input.item_table:q} --bins {input.bins:q} "
        "--bin {wildcards.b} --prompt {params.prompt} --output {output:q} > {log:q} 2>&1"


# Training data of the other study designs (crossdiff.study.designs): a train set (set-<name>), a
# subsample (-n<size>), or both; curricula are written in training order.
rule make_train_set:
    input:
        item_table=lambda wc: items_table(wc.dataset),
        bins="results/bins/{dataset}/bins.parquet",
    output:
        "results/sft/{dataset}/{sftset}.jsonl",
    log:
        "logs/make_train_set/{dataset}/{sftset}.log",
    params:
        prompt=lambda wc: prompt_json(wc.dataset),
        design=train_set_args,
    shell:
        "crossdiff make-train-set --items {input.item_table:q} --bins {input.bins:q} "
        "{params.design} --prompt {params.prompt} --output {output:q} > {log:q} 2>&1"


# A model's own training solutions (models[].solutions.<dataset>, crossdiff.study.solutions): its items
# with column model_solution, and the training data of its fine-tunes built from them.
rule attach_model_solutions:
    input:
        item_table=lambda wc: items_table(wc.dataset),
        solutions=lambda wc: plan_inputs.model_solution_files(
            MODELS[wc.model], wc.dataset
        ),
    output:
        "results/items/{dataset}/solutions-{model}.parquet",
    log:
        "logs/attach_model_solutions/{dataset}/{model}.log",
    params:
        settings=lambda wc: cli_json(own_solutions(wc.model, wc.dataset)),
        model_id=lambda wc: MODELS[wc.model]["id"],
    shell:
        "crossdiff attach-solutions --items {input.item_table:q} --settings {params.settings} "
        "--dataset {wildcards.dataset} --model-id {params.model_id:q} --output {output:q} > {log:q} 2>&1"


use rule make_sft_data as make_model_sft_data with:
    input:
        item_table="results/items/{dataset}/solutions-{model}.parquet",
        bins="results/bins/{dataset}/bins.parquet",
    output:
        "results/sft/{dataset}/solutions-{model}/bin{b}.jsonl",
    log:
        "logs/make_sft_data/{dataset}/solutions-{model}/bin{b}.log",


use rule make_train_set as make_model_train_set with:
    input:
        item_table="results/items/{dataset}/solutions-{model}.parquet",
        bins="results/bins/{dataset}/bins.parquet",
    output:
        "results/sft/{dataset}/solutions-{model}/{sftset}.jsonl",
    log:
        "logs/make_train_set/{dataset}/solutions-{model}/{sftset}.log",
