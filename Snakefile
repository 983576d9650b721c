# crossdiff: does training on data of one difficulty help on data of another?
# The DAG: items + responses -> IRT difficulty -> equal-size bins -> one fine-tune per
# model x dataset x bin -> zero-shot and cross-bin evaluation -> tidy table, heatmaps, report.
# Logic lives in the crossdiff package; rules call its CLI.
#
# `snakemake --lint` asks for a conda environment or container per rule. Every rule runs the
# crossdiff CLI from one environment with tested pins (envs/requirements.txt, installed by
# `make venv`): the same software for every step, on a workstation and on SLURM nodes alike.
# That is the one lint we deliberately leave (tests/test_workflow.py checks nothing else).
from snakemake.utils import min_version

min_version("9.0")

import copy
import sys

import crossdiff.config


configfile: "config/config.yaml"


# `--configfile mine.yaml` replaces the embedded default instead of extending it (Snakemake would
# merge the two, running the default's datasets and models beside yours); `--config k=v` still
# overrides. Then JSON-schema validation with defaults filled in everywhere (also inside each
# dataset entry); a bad key stops here with its name. `config` is updated in place so rules and
# the report see the same validated dict.
if workflow.overwrite_configfiles:
    config.clear()
    config.update(copy.deepcopy(dict(workflow.config_settings.overwrite_config)))
_validated = crossdiff.config.validate(
    config, origin=", ".join(map(str, workflow.overwrite_configfiles)) or "config"
)
config.clear()
config.update(_validated)
CONFIGFILES = [str(f) for f in workflow.overwrite_configfiles]

# `snakemake --report` builds the report from this config's DAG, while the front page describes the run
# that made results/: refuse a report from another config (crossdiff.results.run_record).
if "--report" in sys.argv:
    import crossdiff.results.run_record

    crossdiff.results.run_record.check_report_config(config, CONFIGFILES)


report: "workflow/report/workflow.rst"


# Small or hub-facing jobs run on the submitting host, never as cluster jobs: a paper-scale run
# would otherwise submit hundreds of tiny jobs, and compute nodes are often offline.
localrules:
    model_table,
    prepare_items,
    simulate_leaderboard,
    collect_leaderboard,
    plan_leaderboard,
    build_base_model,
    make_bins,
    bin_stability,
    difficulty_histogram,
    difficulty_bin_accuracy,
    difficulty_calibration,
    difficulty_spearman,
    difficulty_truth,
    make_sft_data,
    attach_model_solutions,
    make_model_sft_data,
    make_model_train_set,
    make_task,
    aggregate,
    plot_results,
    make_train_set,
    bin_agreement,
    size_difficulty,
    summarize,
    sgr,
    make_bins_measure,
    plot_transfer,
    optimum_by_n,


# One rule file per DAG stage, named like the stage (and its crossdiff subpackage):
# items -> responses -> irt -> bins (and the difficulty figures) -> models -> study (training
# data) -> finetune -> evaluate -> results (table, figures, summary).
include: "workflow/rules/common.smk"
include: "workflow/rules/items.smk"
include: "workflow/rules/responses.smk"
include: "workflow/rules/irt.smk"
include: "workflow/rules/bins.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/study.smk"
include: "workflow/rules/finetune_common.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/grpo_common.smk"
include: "workflow/rules/grpo.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/measures.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/results.smk"
include: "workflow/rules/sgr.smk"
include: "workflow/rules/corpora_common.smk"
include: "workflow/rules/corpora.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/optimum.smk"
include: "workflow/rules/results_partial.smk"
include: "workflow/rules/plan_estimate.smk"


rule all:
    default_target: True
    input:
        all_targets(),
        summary_targets(),
        sgr_targets(),
        grpo_targets(),


# On failure, one line per failed job on the console: the error line of its log (rules send all
# output to their log files, so Snakemake itself shows only the log's path).
onerror:
    from crossdiff.runtime.failures import print_summary

    print_summary(log)
