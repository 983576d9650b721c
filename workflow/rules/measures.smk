# Difficulty measures with a job of their own, per (dataset, model): Hase et al.'s answer_prob / question_prob
# (bins.by or bins.measures), and the other models' zero_shot: / loss: tables that datasets.<d>.bins.measures
# lists beside bins.by (crossdiff.bins.measure_set; bins.by's own tables are written by evaluate.smk).


# answer_prob:<slug> / question_prob:<slug>: summed NLL of the answer / question text with an empty prompt
# (crossdiff.evaluate.text_prob); one model load writes both tables
rule text_prob_measure:
    input:
        base=lambda wc: base_model_files(wc.model),
        item_table=lambda wc: items_table(wc.dataset),
        irt="results/irt/{dataset}/items.parquet",
    output:
        answer="results/bins/{dataset}/measures/answer_prob/{model}.parquet",
        question="results/bins/{dataset}/measures/question_prob/{model}.parquet",
    log:
        "logs/text_prob_measure/{dataset}/{model}.log",
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        gpu=config["resources"]["evaluate"]["gpu"],
        mem_mb=lambda wc, attempt: config["resources"]["evaluate"]["mem_mb"] * attempt,
        runtime=lambda wc, attempt: config["resources"]["evaluate"]["runtime"] * attempt,
    params:
        **gpu_params(),
        base=lambda wc: shlex.quote(base_model_ref(wc.model)),
        prompt=lambda wc: prompt_json(wc.dataset),
        settings=lambda wc: eval_settings_json(wc.dataset, wc.model),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("evaluate")
        + "crossdiff text-prob-measure --items {input.item_table:q} --irt {input.irt:q} "
        "--model {params.base} --model-name {wildcards.model:q} --prompt {params.prompt} "
        "--settings {params.settings} --answer-output {output.answer:q} "
        "--question-output {output.question:q} > {log:q} 2>&1"


# bins.measures: zero_shot:<slug> of a model other than bins.by's (same job as rule zero_shot_measure)
rule zero_shot_measure_model:
    input:
        base=lambda wc: base_model_files(wc.model),
        task_config=task_config_files,
        item_table=lambda wc: items_table(wc.dataset),
        irt="results/irt/{dataset}/items.parquet",
    output:
        table="results/bins/{dataset}/measures/zero_shot/{model}.parquet",
        samples="results/bins/{dataset}/measures/zero_shot/{model}.samples.jsonl",
    log:
        "logs/zero_shot_measure/{dataset}/{model}.log",
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        gpu=config["resources"]["evaluate"]["gpu"],
        mem_mb=lambda wc, attempt: config["resources"]["evaluate"]["mem_mb"] * attempt,
        runtime=lambda wc, attempt: config["resources"]["evaluate"]["runtime"] * attempt,
    params:
        **gpu_params(),
        base=lambda wc: shlex.quote(base_model_ref(wc.model)),
        prompt=lambda wc: prompt_json(wc.dataset),
        settings=lambda wc: eval_settings_json(wc.dataset, wc.model),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("evaluate")
        + "crossdiff zero-shot-measure --items {input.item_table:q} --irt {input.irt:q} "
        "--model {params.base} --model-name {wildcards.model:q} --dataset {wildcards.dataset} "
        "--prompt {params.prompt} --settings {params.settings} --output {output.table:q} > {log:q} 2>&1"


# bins.measures: loss:<slug> of a model other than bins.by's (same job as rule loss_measure)
rule loss_measure_model:
    input:
        base=lambda wc: base_model_files(wc.model),
        item_table=lambda wc: items_table(wc.dataset),
        irt="results/irt/{dataset}/items.parquet",
    output:
        "results/bins/{dataset}/measures/loss/{model}.parquet",
    log:
        "logs/loss_measure/{dataset}/{model}.log",
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        gpu=config["resources"]["evaluate"]["gpu"],
        mem_mb=lambda wc, attempt: config["resources"]["evaluate"]["mem_mb"] * attempt,
        runtime=lambda wc, attempt: config["resources"]["evaluate"]["runtime"] * attempt,
    params:
        **gpu_params(),
        base=lambda wc: shlex.quote(base_model_ref(wc.model)),
        prompt=lambda wc: prompt_json(wc.dataset),
        settings=lambda wc: eval_settings_json(wc.dataset, wc.model),
    shell:
        "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} "
        + gpu_prefix("evaluate")
        + "crossdiff loss-measure --items {input.item_table:q} --irt {input.irt:q} "
        "--model {params.base} --model-name {wildcards.model:q} --prompt {params.prompt} "
        "--settings {params.settings} --output {output:q} > {log:q} 2>&1"
