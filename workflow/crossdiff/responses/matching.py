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
   items' choices, its gold answer against the items' answers, its full prompt against the items'
   choices; a row still matching several items (or none of them), or two rows of one model landing
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


def _by_prompt(row: dict, cands: list[_Item]):
    prompt = row.get("full_prompt")
    if not prompt or not any(c.choices for c in cands):
        return None
    prompt = normalise(prompt)
    return [c for c in cands if c.choices and all(ch in prompt for ch in c.choices)] or None  # none: tells nothing


RESOLVERS = (("choices", _by_choices), ("gold", _by_gold), ("full_prompt", _by_prompt))


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
    return None, (f"equal {'/'.join(used)}" if used else "no choices, gold or full_prompt in the row")


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

    counts = {"rows_by_id": 0, "rows_by_text": 0, "rows_twin_resolved": 0, "rows_twin_dropped": 0}
    out_model, out_item, out_correct = [], [], []
    twin_rows: dict[str, list[tuple[int, str]]] = defaultdict(list)  # twin item -> (row index, why)
    resolved_by = defaultdict(int)
    rows = df.to_dicts()
    assigned: dict[tuple[str, str], list[int]] = defaultdict(list)
    target: list[str | None] = [None] * len(rows)
    for i, r in enumerate(rows):
        how, what = key_how[r["item_id"]]
        if how == "id":
            target[i] = what
            counts["rows_by_id"] += 1
        elif len(what) == 1:
            target[i] = what[0].item_id
            counts["rows_by_text"] += 1
        else:
            hit, why = resolve_twin(r, what)
            if hit is None:
                counts["rows_twin_dropped"] += 1
                for c in what:
                    twin_rows[c.item_id].append((i, why))
                continue
            target[i] = hit.item_id
            resolved_by[why] += 1
            counts["rows_twin_resolved"] += 1
        assigned[(r["model_id"], target[i])].append(i)
    # two rows of one model on one item: the mapping is wrong for them, drop both
    for (model, item), idx in assigned.items():
        if len(idx) > 1:
            for i in idx:
                how, what = key_how[rows[i]["item_id"]]
                if how == "text" and len(what) > 1:
                    counts["rows_twin_resolved"] -= 1
                    counts["rows_twin_dropped"] += 1
                    for c in what:
                        twin_rows[c.item_id].append((i, f"{len(idx)} rows of {model} resolve to one item"))
                    target[i] = None
    still = [(model, item, idx) for (model, item), idx in assigned.items() if len([i for i in idx if target[i]]) > 1]
    if still:
        model, item, idx = still[0]
        raise CrossdiffError(f"{path}: {len(idx)} response rows of model {model!r} map to item {item!r} through "
                             f"{column!r} (keys {sorted({rows[i]['item_id'][:60] for i in idx})}); expected one row per item")
    for i, r in enumerate(rows):
        if target[i] is not None:
            out_model.append(r["model_id"])
            out_item.append(target[i])
            out_correct.append(r["correct"])
    out = pl.DataFrame({"model_id": out_model, "item_id": out_item, "correct": out_correct},
                       schema={"model_id": pl.Utf8, "item_id": pl.Utf8, "correct": df.schema["correct"]})
    kept_items = set(out_item)
    dropped = []
    for item_id in sorted(twin_rows):
        entries = twin_rows[item_id]
        twins = sorted({c.item_id for i, _ in entries for c in key_how[rows[i]["item_id"]][1]} - {item_id})
        models = {rows[i]["model_id"] for i, _ in entries}
        reasons = sorted({why for _, why in entries})
        dropped.append({"kind": "responses" if item_id in kept_items else "item", "id": item_id, "reason": "ambiguous_twin",
                        "detail": f"same {column} as {', '.join(twins)}; {len(entries)} row(s) of {len(models)} model(s) "
                                  f"not told apart ({'; '.join(reasons)})"
                                  + ("; its other rows were resolved and kept" if item_id in kept_items else "")})
    counts["twin_items_dropped"] = sum(d["kind"] == "item" for d in dropped)
    counts["twins_resolved_by"] = dict(sorted(resolved_by.items()))
    return out, dropped, counts
