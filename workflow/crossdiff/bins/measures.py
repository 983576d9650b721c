"""The difficulty measures that need a job of their own, in one table: ``bins.by: <prefix>:<model slug>`` (or
``<prefix>:<column>`` for a measure whose argument is a column, ``length_tokens:solution``).

A measure of this table is computed by its own rule into ``results/bins/{dataset}/<table>`` (one row per IRT
item: ``item_id``, ``measure``, higher = harder) before the bins are cut; ``make-bins --by <prefix>:<slug>
--measure-table TABLE`` bins by it, ties broken by IRT difficulty, then item_id. Item-table columns
(``n_ops``, ``length:COLUMN``) and ``published`` need no table of this kind. A new measure is its module (the
CLI that writes the table), its rule and one :data:`MEASURES` entry; the rules' inputs, the parse-time check of
its model, the Spearman figure and ``make-bins`` read this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from crossdiff.errors import CrossdiffError


@dataclass(frozen=True)
class Measure:
    prefix: str   #: ``bins.by: <prefix>:<slug>``
    rule: str     #: the Snakemake rule that writes the table
    table: str    #: its file under results/bins/{dataset}/
    about: str    #: what the measure is (logs, docs)
    #: what follows ``<prefix>:``: a model slug (the base model whose scores are the measure) or a column of the
    #: item table (``length_tokens:solution``; its tokenizer is ``datasets.<d>.bins.tokenizer``)
    argument: str = "model"
    #: ``<prefix>:avg`` is allowed too: the mean over the models its own settings name (bins.mdl.models)
    avg: bool = False


MEASURES: dict[str, Measure] = {
    "zero_shot": Measure("zero_shot", "zero_shot_measure", "zero_shot_measure.parquet",
                         "the base model's zero-shot error (1 - correct; crossdiff.evaluate.zero_shot)"),
    "loss": Measure("loss", "loss_measure", "loss_measure.parquet",
                    "the base model's mean NLL of the training target (crossdiff.evaluate.loss_measure)"),
    "pass_rate": Measure("pass_rate", "pass_rate_measure", "pass_rate_measure.parquet",
                         "1 - the base model's pass rate over k samples (crossdiff.evaluate.pass_rate)"),
    "length_tokens": Measure("length_tokens", "length_tokens_measure", "length_tokens_measure.parquet",
                             "the column's length in tokens (crossdiff.bins.token_length; Liu et al. 2026's CoT length)",
                             argument="column"),
    # Hase et al. 2024's text likelihoods: one job per (dataset, model) writes both tables ({model}: the slug)
    "answer_prob": Measure("answer_prob", "text_prob_measure", "measures/answer_prob/{model}.parquet",
                           "the base model's summed NLL of the answer text, empty prompt (crossdiff.evaluate.text_prob)"),
    "question_prob": Measure("question_prob", "text_prob_measure", "measures/question_prob/{model}.parquet",
                             "the base model's summed NLL of the question, empty prompt (crossdiff.evaluate.text_prob)"),
    "mdl": Measure("mdl", "mdl_measure", "mdl_measure.parquet",
                   "Hase et al.'s MDL: 1 - the mean gold-option probability of models fitted on n items "
                   "(crossdiff.evaluate.mdl)", avg=True),
}


def parse(by: str) -> tuple[Measure, str] | None:
    """(measure, model slug) of a ``bins.by`` value of this table, else None."""
    prefix, sep, slug = str(by).partition(":")
    if sep and prefix in MEASURES:
        return MEASURES[prefix], slug
    return None


def check_by(dataset: str, by: str, models) -> None:
    """Config-time check: a measure's ``<prefix>:<slug>`` must name one of the configured models (by slug)."""
    found = parse(by)
    if found is None:
        return
    m, slug = found
    if m.argument == "column":  # a column of the item table: checked by the job (crossdiff.plan.corpora checks the tokenizer)
        if not slug:
            raise CrossdiffError(f"datasets.{dataset}.bins.by = {by!r}: expected {m.prefix}:<column>, e.g. {m.prefix}:solution")
        return
    if m.avg and slug == "avg":
        return
    if slug not in models:
        raise CrossdiffError(
            f"datasets.{dataset}.bins.by = {by!r}: no model with slug {slug!r}; "
            f"expected {m.prefix}:<slug> of one of models: {sorted(models) or '(none configured)'}"
        )


def table_path(dataset: str, by: str) -> str | None:
    found = parse(by)
    return f"results/bins/{dataset}/{found[0].table.replace('{model}', found[1])}" if found else None


def extra_table_path(dataset: str, spec: str, by: str) -> str | None:
    """The table of a ``datasets.<d>.bins.measures`` entry of this table (crossdiff.bins.measure_set): bins.by's own
    when it is the same, a per-model table (``{model}`` in :attr:`Measure.table`), else
    ``results/bins/<d>/measures/<prefix>/<slug>.parquet`` (the rules of workflow/rules/measures.smk)."""
    found = parse(spec)
    if found is None:
        return None
    if spec == by or "{model}" in found[0].table:
        return table_path(dataset, spec)
    return f"results/bins/{dataset}/measures/{found[0].prefix}/{found[1]}.parquet"
