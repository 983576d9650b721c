"""``bins.by: length_tokens:COLUMN``: an item's difficulty as the length of a text column in tokens.

Liu et al. 2026 take the length of the ground-truth chain of thought as the task-side difficulty
(``length_tokens:solution``, or ``length_tokens:model_solution`` for a model's own solutions); ``length:COLUMN``
counts characters instead. The count is ``len(tokenizer(text, add_special_tokens=False)["input_ids"])``: the
tokens of the text itself, without BOS/EOS or a chat template. The tokenizer is ``datasets.<d>.bins.tokenizer``
(a model slug of ``models[]``, a hub id or a local path) or, by default, the first model's; a locally built
model's directory is an input of the job (:func:`crossdiff.plan.corpora.tokenizer_of`).

The table (``results/bins/{dataset}/length_tokens_measure.parquet``) has one row per item of the item table:
``item_id``, ``measure`` (the token count; higher = harder). ``make-bins`` joins it like the other measure
tables of :mod:`crossdiff.bins.measures`.
"""

from __future__ import annotations

import argparse

import polars as pl

from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns, write_parquet


def load_tokenizer(ref: str):
    """A tokenizer from a local model directory or a hub id (offline: the local cache only)."""
    from crossdiff.hub import offline_env

    offline_env(ref)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(ref))
    except (OSError, ValueError) as exc:
        raise CrossdiffError(f"bins.tokenizer {ref!r}: cannot load a tokenizer: {str(exc).splitlines()[0]} (a hub id "
                             "needs network access or the Hugging Face cache; or name a local model directory)") from None


def token_lengths(items: pl.DataFrame, column: str, tokenizer, where: str = "item table",
                  batch_size: int = 1000) -> pl.DataFrame:
    """(item_id, measure): tokens of ``column`` per item; a missing or empty text is an error naming items."""
    require_columns(items, ["item_id", column], where, f"item table (bins.by = 'length_tokens:{column}')")
    texts = items[column].cast(pl.Utf8).to_list()
    bad = [iid for iid, t in zip(items["item_id"].to_list(), texts) if t is None or not t.strip()]
    if bad:
        raise CrossdiffError(f"{where}: bins.by = 'length_tokens:{column}': {len(bad)} item(s) have no {column} text, "
                             f"e.g. {bad[:3]}; expected text for every item")
    counts: list[int] = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], add_special_tokens=False)["input_ids"]
        counts += [len(ids) for ids in enc]
    return pl.DataFrame({"item_id": items["item_id"].cast(pl.Utf8), "measure": pl.Series(counts, dtype=pl.Float64)})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="item table (parquet)")
    p.add_argument("--column", required=True, help="the text column to count (length_tokens:COLUMN)")
    p.add_argument("--tokenizer", required=True, help="a local model directory or a hub id")
    p.add_argument("--output", required=True, help="per-item table (item_id, measure)")


def run(args: argparse.Namespace) -> None:
    items = read_table(args.items, "item table")
    tok = load_tokenizer(args.tokenizer)
    table = token_lengths(items, args.column, tok, args.items)
    write_parquet(table, args.output)
    m = table["measure"]
    print(f"{args.column} in tokens of {args.tokenizer}: {table.height} items, min {m.min():.0f}, median "
          f"{m.median():.0f}, max {m.max():.0f}; wrote {args.output}")
