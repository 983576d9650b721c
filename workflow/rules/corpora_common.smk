# Helpers of rules/corpora.smk, rules/transfer.smk and rules/optimum.smk (issue 28: datasets without responses,
# token-length measures, cross-dataset testing, the optimum per n). Functions only: the rules are in those files.
import crossdiff.plan.corpora as plan_corpora

TRANSFER_PAIRS = plan_corpora.transfer_pairs(PLAN)
TEST_ONLY_DATASETS = plan_corpora.test_only_datasets(PLAN)
TRAINED_LABELS = [m.name for m in PLAN.trained_methods()]


def no_irt_datasets():
    return [d for d in DATASETS if not PLAN.has_irt(d)]


def no_irt_pattern():
    return "|".join(re.escape(d) for d in no_irt_datasets()) or "(?!)"


def tokenizer_files(wildcards):
    """The tokenizer's files: a built model's directory, a local model's files; nothing for a hub id."""
    return (PLAN.tokenizer(wildcards.dataset) or {}).get("files") or []


def tokenizer_ref(wildcards):
    return (PLAN.tokenizer(wildcards.dataset) or {}).get("ref") or ""


def no_irt_bins_inputs(wildcards):
    out = {"item_table": items_table(wildcards.dataset)}
    if measure_table_of(wildcards.dataset):
        out["measure"] = measure_table_of(wildcards.dataset)
    return out


def transfer_dir(test):
    return f"{plan_corpora.TRANSFER_DIR}{test}"


def transfer_eval_results(wildcards=None):
    """Every cross-dataset cell's result, and the zero-shot cells of datasets that are only test sets."""
    out = []
    for name, test in TRANSFER_PAIRS:
        for model in MODELS:
            for label in trained_eval_labels(name):
                out += [
                    f"results/eval/{model}/{name}/{label}/{transfer_dir(test)}/bin{t}.json"
                    for t in range(N_BINS)
                ]
    for test in TEST_ONLY_DATASETS:
        for model in MODELS:
            out += eval_outputs(model, test, "zero-shot")
    return out


def transfer_figures():
    out = []
    for name, test in TRANSFER_PAIRS:
        for label in TRAINED_LABELS:
            sub = f"results/figures/{name}/{transfer_dir(test)}/{study_methods.figure_dir(label)}"
            out += [f"{sub}{m}/{k}.png" for m in MODELS for k in ("accuracy", "gain")]
            out += [f"{sub}{k}.png" for k in ("gain_vs_gap", "zero_shot")]
    return out


def transfer_targets():
    return transfer_eval_results() + transfer_figures()


def optimum_study():
    """study.train_sizes with single train bins and a trained method: the optimum per n has something to say."""
    return size_study() and bool(PLAN.trained_methods())


def optimum_targets():
    if not optimum_study() or not study_datasets():
        return []
    return [
        "results/tables/optimum_by_n.csv",
        "results/tables/optimum_shift.csv",
        "results/figures/optimum_by_n.png",
        "results/summary/optimum.rst",
    ]
