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


MEASURES: dict[str, Measure] = {
    "zero_shot": Measure("zero_shot", "zero_shot_measure", "zero_shot_measure.parquet",
                         "the base model's zero-shot error (1 - correct; crossdiff.evaluate.zero_shot)"),
    "loss": Measure("loss", "loss_measure", "loss_measure.parquet",
                    "the base model's mean NLL of the training target (crossdiff.evaluate.loss_measure)"),
    "length_tokens": Measure("length_tokens", "length_tokens_measure", "length_tokens_measure.parquet",
                             "the column's length in tokens (crossdiff.bins.token_length; Liu et al. 2026's CoT length)",
                             argument="column"),
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
    if slug not in models:
        raise CrossdiffError(
            f"datasets.{dataset}.bins.by = {by!r}: no model with slug {slug!r}; "
            f"expected {m.prefix}:<slug> of one of models: {sorted(models) or '(none configured)'}"
        )


def table_path(dataset: str, by: str) -> str | None:
    found = parse(by)
    return f"results/bins/{dataset}/{found[0].table}" if found else None
