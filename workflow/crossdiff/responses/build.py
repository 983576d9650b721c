"""Stage 1: build the canonical response matrix of one dataset from its source, with filters.

Steps: read the source; collapse exact duplicate (model, item) rows and reject conflicting ones;
check item ids against the item table; then filter (identical models, items everybody gets right
or wrong, too few responses per model or item; repeated until stable) and record every dropped
model or item with the reason in ``dropped.csv``.
"""

from __future__ import annotations

import argparse
import json

import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import atomic_path, read_table, require_columns, write_csv, write_parquet
from crossdiff.items.ifeval import doc_checker
from crossdiff.responses.importers import key_by_doc_hash, read_source
from crossdiff.responses.matching import match_rows, read_keyed_rows

DROPPED_SCHEMA = {"kind": pl.Utf8, "id": pl.Utf8, "reason": pl.Utf8, "detail": pl.Utf8}


def resolve_duplicates(df: pl.DataFrame, path) -> tuple[pl.DataFrame, int]:
    """Collapse identical duplicate (model, item) rows; raise on conflicting ones."""
    agg = df.group_by(["model_id", "item_id"]).agg(
        pl.col("correct").min().alias("lo"), pl.col("correct").max().alias("hi"), pl.len().alias("n")
    )
    conflict = agg.filter(pl.col("lo") != pl.col("hi")).sort(["model_id", "item_id"])
    if conflict.height:
        r = conflict.row(0, named=True)
        raise CrossdiffError(
            f"{path}: model {r['model_id']!r}, item {r['item_id']!r} appears {r['n']} times with conflicting "
            f"correctness (0 and 1); expected one value per (model, item) pair "
            f"({conflict.height} conflicting pair(s) in all)"
        )
    n_extra = int((agg["n"] - 1).sum())
    return agg.select("model_id", "item_id", pl.col("lo").alias("correct")), n_extra


def check_items(df: pl.DataFrame, items: pl.DataFrame, path, items_path) -> tuple[pl.DataFrame, list[dict]]:
    """Responses of whole subtasks the item table leaves out (``items.subtasks``; BBH's default 21 of the
    leaderboard's 24) are dropped, one ``dropped.csv`` row per subtask; any other unknown item id is an error."""
    known = items.select(pl.col("item_id").cast(pl.Utf8))
    unknown = df.select("item_id").unique().join(known, on="item_id", how="anti")
    if not unknown.height:
        return df, []
    dropped: list[dict] = []
    ids = known["item_id"]
    if ids.len() and ids.str.contains("/", literal=True).all():  # subtask-prefixed ids (bbh, math, musr)
        prefixes = set(ids.str.split("/").list.first().to_list())
        prefix = pl.col("item_id").str.split("/").list.first()
        outside = (df.join(unknown, on="item_id")
                     .filter(pl.col("item_id").str.contains("/", literal=True) & ~prefix.is_in(list(prefixes)))
                     .with_columns(prefix.alias("subtask")))
        for r in (outside.group_by("subtask").agg(pl.len().alias("n"), pl.col("model_id").n_unique().alias("models"),
                                                   pl.col("item_id").n_unique().alias("items"))
                  .sort("subtask").iter_rows(named=True)):
            dropped.append({"kind": "subtask", "id": r["subtask"], "reason": "subtask_not_in_items",
                            "detail": f"{r['n']} responses of {r['models']} model(s) to {r['items']} item(s); the item "
                                      f"table leaves this subtask out (datasets.<name>.items.subtasks)"})
        if dropped:
            df = df.join(outside.select("item_id").unique(), on="item_id", how="anti")
            unknown = unknown.join(outside.select("item_id").unique(), on="item_id", how="anti")
    if unknown.height:
        examples = ", ".join(repr(x) for x in sorted(unknown["item_id"].to_list())[:5])
        raise CrossdiffError(f"{path}: {unknown.height} item id(s) not in the item table {items_path} (e.g. {examples}); "
                             f"the responses' item ids must match the items' item_id column")
    return df, dropped


def apply_filters(df: pl.DataFrame, f: dict) -> tuple[pl.DataFrame, list[dict]]:
    dropped: list[dict] = []
    if f.get("dedupe_models", True):
        # models with identical answers on identical items: keep the first by model_id
        sig = (df.sort("item_id").group_by("model_id", maintain_order=False)
                 .agg(pl.col("item_id").str.join("\x1f").alias("items"), pl.col("correct").cast(pl.Utf8).str.join("").alias("answers"))
                 .sort("model_id"))
        first = sig.group_by(["items", "answers"], maintain_order=True).agg(pl.col("model_id").first().alias("kept"))
        dup = sig.join(first, on=["items", "answers"]).filter(pl.col("model_id") != pl.col("kept"))
        for r in dup.iter_rows(named=True):
            dropped.append({"kind": "model", "id": r["model_id"], "reason": "duplicate_model", "detail": f"identical responses to {r['kept']}"})
        df = df.join(dup.select("model_id"), on="model_id", how="anti")
    min_m, min_i = int(f.get("min_responses_per_model", 1)), int(f.get("min_responses_per_item", 1))
    while True:
        changed = False
        if f.get("drop_constant_items", True):
            st = df.group_by("item_id").agg(pl.col("correct").mean().alias("acc"), pl.len().alias("n"))
            const = st.filter((pl.col("acc") == 0) | (pl.col("acc") == 1)).sort("item_id")
            for r in const.iter_rows(named=True):
                reason = "all_correct" if r["acc"] == 1 else "all_wrong"
                dropped.append({"kind": "item", "id": r["item_id"], "reason": reason, "detail": f"{r['n']} responses"})
            if const.height:
                df, changed = df.join(const.select("item_id"), on="item_id", how="anti"), True
        for key, kind, minimum in (("item_id", "item", min_i), ("model_id", "model", min_m)):
            counts = df.group_by(key).len()
            few = counts.filter(pl.col("len") < minimum).sort(key)
            for r in few.iter_rows(named=True):
                dropped.append({"kind": kind, "id": r[key], "reason": f"fewer_than_{minimum}_responses", "detail": f"{r['len']} responses"})
            if few.height:
                df, changed = df.join(few.select(key), on=key, how="anti"), True
        if not changed:
            return df, dropped


def filter_hint(dropped: pl.DataFrame) -> str:
    """Which filter settings dropped the rows, so the hint names the ones to relax."""
    reasons = set(dropped["reason"].to_list())
    keys = []
    if "duplicate_model" in reasons:
        keys.append("dedupe_models")
    if reasons & {"all_correct", "all_wrong"}:
        keys.append("drop_constant_items")
    for kind, key in (("model", "min_responses_per_model"), ("item", "min_responses_per_item")):
        if dropped.filter((pl.col("kind") == kind) & pl.col("reason").str.starts_with("fewer_than_")).height:
            keys.append(key)
    names = " / ".join(f"filters.{k}" for k in keys) or "the filters"
    return f"relax {names} (or the dataset's own datasets.<name>.filters)"


def build(source: str, path, settings: dict, filters: dict, items_path=None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    match_on = settings.get("match_items_on")
    items = read_table(items_path, "item table") if items_path else None
    # IFEval: each sample's doc must be the prompt of the item with its doc id (crossdiff.items.ifeval)
    doc_check = doc_checker(items) if items is not None else None
    # the collector keeps per-row fields (choices, gold, full prompt) that tell twin items apart
    raw = read_keyed_rows(path) if match_on and source == "leaderboard" else read_source(source, path, settings, doc_check)
    if raw.height == 0:
        raise CrossdiffError(f"{path}: no responses found")
    if match_on and not items_path:
        raise CrossdiffError(f"responses.match_items_on = {match_on!r} needs an item table (datasets.<name>.items)")
    items = read_table(items_path, "item table") if items_path else None
    hash_join = {}
    if "doc_hash" in raw.columns:  # lm-eval samples: joined by content where the item table has lm-eval's hash too
        if items is not None and "doc_hash" in items.columns:
            raw, hash_join = key_by_doc_hash(raw, items, items_path)
        raw = raw.select("model_id", "item_id", "correct")
    matching, twin_dropped = None, []
    if match_on:
        raw, twin_dropped, matching = match_rows(raw, items, match_on, path, items_path,
                                                 settings.get("match_template") or "{text}",
                                                 settings.get("match_ids_on", "id"))
    df, n_dup_rows = resolve_duplicates(raw, path)
    if items is not None:
        require_columns(items, ["item_id"], items_path, "item table")
        df, subtask_dropped = check_items(df, items, path, items_path)
        twin_dropped = twin_dropped + subtask_dropped
        if df.height == 0:
            raise CrossdiffError(f"{path}: every response is to a subtask the item table {items_path} leaves out "
                                 f"({', '.join(d['id'] for d in subtask_dropped)}); "
                                 f"add them to datasets.<name>.items.subtasks")
    n_models0, n_items0 = df["model_id"].n_unique(), df["item_id"].n_unique()
    df, dropped = apply_filters(df, filters)
    dropped = twin_dropped + dropped
    dropped_df = pl.DataFrame(dropped, schema=DROPPED_SCHEMA)
    if df.height == 0:
        reasons = dropped_df.group_by("kind", "reason").len().sort("kind", "reason")
        summary = "; ".join(f"{r['len']} {r['kind']}(s) {r['reason']}" for r in reasons.iter_rows(named=True))
        raise CrossdiffError(f"{path}: the response matrix is empty after filtering ({summary}); "
                             f"{filter_hint(dropped_df)}")
    df = df.sort(["model_id", "item_id"]).with_columns(pl.col("correct").cast(pl.Int8))
    stats = {
        "source": source, "input": str(path), "rows_read": raw.height, "duplicate_rows_collapsed": n_dup_rows,
        "models_before": n_models0, "items_before": n_items0,
        "models": df["model_id"].n_unique(), "items": df["item_id"].n_unique(), "responses": df.height,
        "density": df.height / (df["model_id"].n_unique() * df["item_id"].n_unique()),
        "dropped": {f"{k}:{r}": n for k, r, n in dropped_df.group_by("kind", "reason").len().sort("kind", "reason").iter_rows()},
    }
    if matching is not None:
        stats["matching"] = matching
    if hash_join:
        stats["doc_hash_join"] = hash_join
    return df, dropped_df, stats


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, choices=["simulated", "leaderboard", "table", "lm_eval_samples"])
    p.add_argument("--input", required=True, help="source file or directory")
    p.add_argument("--settings", type=json_arg, default={}, help="JSON: the dataset's responses section")
    p.add_argument("--filters", type=json_arg, default={}, help="JSON: the filters section")
    p.add_argument("--items", help="item table to check item ids against")
    p.add_argument("--output", required=True, help="canonical long parquet")
    p.add_argument("--dropped", required=True, help="CSV of dropped models/items and why")
    p.add_argument("--stats", help="JSON summary of the import")


def run(args: argparse.Namespace) -> None:
    df, dropped, stats = build(args.source, args.input, args.settings, args.filters, args.items)
    if "matching" in stats:
        m = stats["matching"]
        print(f"rows matched to items: {m['rows_by_id']} by native id, {m['rows_by_text']} by text, "
              f"{m['rows_twin_resolved']} twins resolved ({m['twins_resolved_by']}), {m['rows_twin_dropped']} "
              f"twin rows dropped ({m['twin_items_dropped']} items; listed in {args.dropped})")
    if stats.get("doc_hash_join"):
        h = stats["doc_hash_join"]
        print(f"lm-eval samples joined to items by doc_hash: {h['by_doc_hash']} ({h['doc_id_differs']} logged under "
              f"another doc id than their doc's item), {h['without_hash']} without a hash joined by id")
    left_out = dropped.filter(pl.col("reason") == "subtask_not_in_items")
    if left_out.height:
        print(f"responses of {left_out.height} subtask(s) the item table leaves out dropped: "
              f"{', '.join(left_out['id'].to_list())} (listed in {args.dropped})")
    write_csv(dropped, args.dropped)
    if args.stats:
        with atomic_path(args.stats) as tmp:
            tmp.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    write_parquet(df, args.output)
    print(json.dumps(stats, indent=2, sort_keys=True))
