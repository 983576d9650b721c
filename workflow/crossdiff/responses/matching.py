"""Map text-keyed response rows (the v1 leaderboard's details rows) to the item table, never silently.

The v1 details files have no doc_id and a row order of their own. What a row does carry (see the
collector, ``crossdiff.responses.leaderboard``): ``example`` (the collector's ``item_id`` under
``item_key: example``), which is the rendered query (ARC: ``Question: {question}\\nAnswer:``, GSM8K:
the question) in later files and the dataset's native id (``Mercury_7175875``) in July-2023 ARC
files; and, when the file has them, ``choices``, ``gold``/``gold_index`` and ``full_prompt``, which
the collector keeps as JSON text columns.

Each distinct key is matched, in this order:

1. **by id**: the key equals a value of the item table's native-id column (``match_ids_on``,
   default ``id``: the ARC adapter keeps the dataset's ``id``);
2. **by text**: the text the template (``match_template``, e.g. ``Question: {text}\\nAnswer:``)
   extracts from the key, whitespace-normalised, equals one item's ``match_items_on`` column; failing
   that, exactly one longest item text contained in the key;
3. **twins**: when that text belongs to several items (ARC-Challenge has stems that occur twice
   under different ids), each row is resolved by the fields it carries: its choices against the
   items' choices (lm-eval's choices and gold index, ``lm_eval_choices``/``lm_eval_gold_index``, for an
   item table of items.source lm_eval_task), its gold answer against the items' answers (never its
   full prompt: the v1 ARC prompt holds the 25 few-shot examples and the stem, not the item's
   options); a row still matching several items (or none of them), or two rows of one model landing
   on one item, is dropped, and every twin item concerned is listed in ``dropped.csv`` with the reason.

A key that matches no item stops the import with examples (a wrong template or item table, not a
detail to skip). The counts (rows by id, by text, twins resolved, twins dropped) go to the import's
``.stats.json`` and log.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import polars as pl

from crossdiff.errors import CrossdiffError
from crossdiff.io import read_table, require_columns

# per-row fields the collector keeps for twin resolution (JSON text; null when the file lacks them)
ROW_FIELDS = ("choices", "gold", "gold_index", "full_prompt")


def normalise(text) -> str:
    return " ".join(str(text).split())


def template_regex(template: str) -> re.Pattern:
    if template.count("{text}") != 1:
        raise CrossdiffError(f"responses.match_template {template!r}: expected exactly one '{{text}}' placeholder")
    before, after = (normalise(x) for x in template.split("{text}"))
    return re.compile(rf"^{re.escape(before)}\s*(.*?)\s*{re.escape(after)}$", re.S)


def read_keyed_rows(path) -> pl.DataFrame:
    """The collector's long table with the per-row fields it kept for matching (absent ones as null)."""
    df = read_table(path, "response table")
    require_columns(df, ["model_id", "item_id", "correct"], path, "long response table")
    extras = [pl.col(c).cast(pl.Utf8) if c in df.columns else pl.lit(None, pl.Utf8).alias(c) for c in ROW_FIELDS]
    return df.select(pl.col("model_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8), "correct", *extras)


def _loads(text):
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return text


def _texts(value) -> list[str] | None:
    """A list of non-empty normalised strings, or None when the value tells nothing."""
    value = _loads(value) if isinstance(value, str) else value
    if value is None or value == [] or value == "":
        return None
    if not isinstance(value, list):
        value = [value]
    out = [normalise(v) for v in value if v is not None and normalise(v)]
    return out or None


def _index(value) -> int | None:
    value = _loads(value) if isinstance(value, str) else value
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class _Item:
    def __init__(self, row: dict):
        self.item_id = str(row["item_id"])
        choices = _loads(row.get("choices"))
        self.choices = [normalise(c) for c in choices] if isinstance(choices, list) else None
        self.answer = None if row.get("answer") is None else str(row["answer"])
        try:
            self.answer_index = int(self.answer) if self.answer is not None and self.choices else None
        except ValueError:
            self.answer_index = None
        self.answer_texts = {normalise(x) for x in (row.get("answer"), row.get("solution")) if x is not None}
        if row.get("lm_eval_choices") is not None:  # items.source lm_eval_task: lm-eval's own choices and gold
            self.choices = [normalise(c) for c in json.loads(row["lm_eval_choices"])]
            self.answer_index = None if row.get("lm_eval_gold_index") is None else int(row["lm_eval_gold_index"])
            self.answer_texts.add(normalise(row.get("lm_eval_target") or ""))
            self.answer_texts.discard("")
        if self.choices and self.answer_index is not None and 0 <= self.answer_index < len(self.choices):
            self.answer_texts.add(self.choices[self.answer_index])


def _by_choices(row: dict, cands: list[_Item]):
    choices = _texts(row.get("choices"))
    if not choices or not any(c.choices for c in cands):
        return None
    return [c for c in cands if c.choices and (c.choices == choices or sorted(c.choices) == sorted(choices))]


def _by_gold(row: dict, cands: list[_Item]):
    idx = _index(row.get("gold_index"))
    gold = _loads(row.get("gold"))
    if idx is None and isinstance(gold, (int, list)) and not isinstance(gold, bool):
        idx = _index(gold) if not _texts(gold) or all(t.lstrip("-").isdigit() for t in _texts(gold)) else None
    if idx is not None and any(c.answer_index is not None for c in cands):
        return [c for c in cands if c.answer_index == idx]
    texts = _texts(gold)
    if texts and len(texts) == 1 and any(c.answer_texts for c in cands):
        return [c for c in cands if texts[0] in c.answer_texts]
    return None


# No resolver by ``full_prompt`` (issue 20, item 19): the real v1 ARC full prompt holds 25 solved
# examples and the test stem, never the test item's options, so matching options against it can only
# be silent (no fit) or wrong (a short option text found in a few-shot answer).
RESOLVERS = (("choices", _by_choices), ("gold", _by_gold))


def resolve_twin(row: dict, cands: list[_Item]) -> tuple[_Item | None, str]:
    """The one candidate the row's fields point to, or (None, why not)."""
    used = []
    for name, fn in RESOLVERS:
        kept = fn(row, cands)
        if kept is None:
            continue
        used.append(name)
        if len(kept) == 1:
            return kept[0], name
        if not kept:
            return None, f"its {name} fit none of them"
        cands = kept
    return None, (f"equal {'/'.join(used)}" if used else "no choices or gold in the row (its full_prompt is not used: "
                                                         "it holds the few-shot examples, not the item's options)")


def match_rows(df: pl.DataFrame, items: pl.DataFrame, column: str, path, items_path, template: str = "{text}",
               id_column: str | None = "id") -> tuple[pl.DataFrame, list[dict], dict]:
    """(model_id, item_id, correct) with item ids from the item table, the dropped twins, the counts."""
    require_columns(items, ["item_id", column], items_path, "item table")
    rx = template_regex(template)
    records = items.to_dicts()
    by_id: dict[str, str] = {}
    if id_column and id_column in items.columns:
        by_id = {str(r[id_column]): str(r["item_id"]) for r in records if r.get(id_column) is not None}
    texts: dict[str, list[_Item]] = defaultdict(list)
    for r in records:
        if r.get(column) is not None and normalise(r[column]):
            texts[normalise(r[column])].append(_Item(r))
    longest = sorted(texts, key=len, reverse=True)

    key_how: dict[str, tuple[str, object]] = {}  # key -> ("id", item_id) | ("text", [items])
    unmatched = []
    for key in df["item_id"].unique().sort().to_list():
        if key in by_id:
            key_how[key] = ("id", by_id[key])
            continue
        k = normalise(key)
        m = rx.match(k)
        text = m.group(1) if m else k
        if text in texts:
            key_how[key] = ("text", texts[text])
            continue
        hits = [t for t in longest if t in k]
        if hits and (len(hits) == 1 or len(hits[0]) > len(hits[1])):
            key_how[key] = ("text", texts[hits[0]])
        elif hits:
            key_how[key] = ("text", [c for t in hits if len(t) == len(hits[0]) for c in texts[t]])
        else:
            unmatched.append(key)
    if unmatched:
        raise CrossdiffError(
            f"{path}: {len(unmatched)} response item(s) contain no item's {column!r} (e.g. {unmatched[0][:120]!r}) "
            f"and match no native id ({id_column!r} column{'' if by_id else ' absent'}); text read through "
            f"responses.match_template {template!r}; matched against {items_path} with responses.match_items_on = {column!r}")

    # rows of keys with one item: a join (millions of rows at full scale); rows of twin keys: one by one
    direct = {k: (how, what if how == "id" else what[0].item_id) for k, (how, what) in key_how.items()
              if how == "id" or len(what) == 1}
    keymap = pl.DataFrame({"item_id": list(direct), "_how": [h for h, _ in direct.values()],
                           "_target": [t for _, t in direct.values()]},
                          schema={"item_id": pl.Utf8, "_how": pl.Utf8, "_target": pl.Utf8})
    joined = df.with_row_index("_row").join(keymap, on="item_id", how="left")
    simple = joined.filter(pl.col("_target").is_not_null())
    counts = {"rows_by_id": int((simple["_how"] == "id").sum()), "rows_by_text": int((simple["_how"] == "text").sum()),
              "rows_twin_resolved": 0, "rows_twin_dropped": 0}
    twin_rows: dict[str, list[tuple[str, str]]] = defaultdict(list)  # twin item -> (model, why)
    resolved_by: dict[str, int] = defaultdict(int)
    twin_targets, twin_idx, twin_why = [], [], {}
    twin_df = joined.filter(pl.col("_target").is_null())
    for r in twin_df.iter_rows(named=True):
        cands = key_how[r["item_id"]][1]
        hit, why = resolve_twin(r, cands)
        if hit is None:
            counts["rows_twin_dropped"] += 1
            for c in cands:
                twin_rows[c.item_id].append((r["model_id"], why))
            continue
        twin_idx.append(r["_row"])
        twin_targets.append(hit.item_id)
        twin_why[r["_row"]] = why
    resolved = twin_df.join(pl.DataFrame({"_row": twin_idx, "_hit": twin_targets},
                                         schema={"_row": twin_df.schema["_row"], "_hit": pl.Utf8}), on="_row")
    resolved = resolved.with_columns(pl.col("_hit").alias("_target"), pl.lit("twin").alias("_how")).drop("_hit")
    out = pl.concat([simple.select("_row", "model_id", "_target", "correct", "_how"),
                     resolved.select("_row", "model_id", "_target", "correct", "_how")])
    # two rows of one model on one item: a twin row among them is the wrong one (drop it); else stop
    clash = out.filter(pl.len().over("model_id", "_target") > 1)
    bad_twins = clash.filter(pl.col("_how") == "twin")
    for r in bad_twins.iter_rows(named=True):
        src = joined.row(r["_row"], named=True)["item_id"]
        for c in key_how[src][1]:
            twin_rows[c.item_id].append((r["model_id"], "two rows of the model resolve to one item"))
    out = out.join(bad_twins.select("_row"), on="_row", how="anti")
    still = out.filter(pl.len().over("model_id", "_target") > 1)
    if still.height:
        r = still.row(0, named=True)
        keys = sorted({joined.row(i, named=True)["item_id"][:60] for i in still.filter(
            (pl.col("model_id") == r["model_id"]) & (pl.col("_target") == r["_target"]))["_row"].to_list()})
        raise CrossdiffError(f"{path}: {still.height} response rows of model {r['model_id']!r} map to item "
                             f"{r['_target']!r} through {column!r} (keys {keys}); expected one row per item")
    for i in set(twin_why) - set(bad_twins["_row"].to_list()):
        resolved_by[twin_why[i]] += 1
    counts["rows_twin_resolved"] = len(twin_idx) - bad_twins.height
    counts["rows_twin_dropped"] += bad_twins.height
    out = out.sort("_row").select("model_id", pl.col("_target").alias("item_id"), "correct")
    kept_items = set(out["item_id"].unique().to_list())
    dropped = []
    for item_id in sorted(twin_rows):
        entries = twin_rows[item_id]
        twins = sorted({c.item_id for cs in texts.values() if any(c.item_id == item_id for c in cs) for c in cs} - {item_id})
        models = {m for m, _ in entries}
        reasons = sorted({why for _, why in entries})
        dropped.append({"kind": "responses" if item_id in kept_items else "item", "id": item_id, "reason": "ambiguous_twin",
                        "detail": f"same {column} as {', '.join(twins)}; {len(entries)} row(s) of {len(models)} model(s) "
                                  f"not told apart ({'; '.join(reasons)})"
                                  + ("; its other rows were resolved and kept" if item_id in kept_items else "")})
    counts["twin_items_dropped"] = sum(d["kind"] == "item" for d in dropped)
    counts["twins_resolved_by"] = dict(sorted(resolved_by.items()))
    return out, dropped, counts
