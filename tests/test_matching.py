"""Text-keyed rows to items (crossdiff.responses.matching): ids, texts, twins, never a silent guess."""

import json

import polars as pl
import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.responses.matching import match_rows

ITEMS = pl.DataFrame({
    "item_id": ["0", "1", "2", "3"], "id": ["Mercury_1", "Mercury_2", "Mercury_3", "TIMSS_4"],
    "question": ["What is 2+2?", "Which gas do plants absorb?", "Which gas do plants absorb?", "Name a planet."],
    "choices": [json.dumps(x) for x in (["3", "4"], ["oxygen", "carbon dioxide"], ["nitrogen", "carbon dioxide"], ["Mars", "Moon"])],
    "answer": ["1", "1", "1", "0"],
})
T = "Question: {text}\nAnswer:"


def rows(*r):
    cols = ["model_id", "item_id", "correct", "choices", "gold", "gold_index", "full_prompt"]
    return pl.DataFrame([x + (None,) * (len(cols) - len(x)) for x in r], schema=cols, orient="row")


def test_ids_texts_and_twins_by_choices():
    df = rows(("m", "Mercury_1", 1), ("m", "Question: Name a  planet.\nAnswer:", 0),
              ("m", "Question: Which gas do plants absorb?\nAnswer:", 1, json.dumps([" nitrogen", " carbon dioxide"])),
              ("m", "Question: Which gas do plants absorb?\nAnswer:", 0, json.dumps([" oxygen", " carbon dioxide"])))
    out, dropped, counts = match_rows(df, ITEMS, "question", "r", "i", T)
    assert sorted(out.rows()) == [("m", "0", 1), ("m", "1", 0), ("m", "2", 1), ("m", "3", 0)]
    assert (counts["rows_by_id"], counts["rows_by_text"], counts["rows_twin_resolved"]) == (1, 1, 2) and not dropped


def test_twins_landing_on_one_item_or_told_nothing_are_dropped():
    same = json.dumps([" oxygen", " carbon dioxide"])
    df = rows(("a", "Question: Which gas do plants absorb?\nAnswer:", 1, same),
              ("a", "Question: Which gas do plants absorb?\nAnswer:", 0, same),   # both say item 1: neither trusted
              ("b", "Question: Which gas do plants absorb?\nAnswer:", 1),          # nothing to tell them apart
              ("c", "Question: Which gas do plants absorb?\nAnswer:", 1, json.dumps(["x", "y"])))  # fits none
    out, dropped, counts = match_rows(df, ITEMS, "question", "r", "i", T)
    assert out.height == 0 and counts["rows_twin_dropped"] == 4 and counts["twin_items_dropped"] == 2
    assert [d["id"] for d in dropped] == ["1", "2"] and all(d["kind"] == "item" for d in dropped)
    assert "resolve to one item" in dropped[0]["detail"] and "no choices or gold in the row" in dropped[0]["detail"]
    assert "fit none of them" in dropped[0]["detail"] and "same question as 2" in dropped[0]["detail"]


def test_twins_by_gold_index():
    df = rows(("m", "Question: Which gas do plants absorb?\nAnswer:", 1, None, None, json.dumps([1])))
    items = ITEMS.with_columns(pl.when(pl.col("item_id") == "2").then(pl.lit("0")).otherwise("answer").alias("answer"))
    out, _, counts = match_rows(df, items, "question", "r", "i", T)
    assert out.rows() == [("m", "1", 1)] and counts["twins_resolved_by"] == {"gold": 1}


def test_unmatched_key_and_repeated_plain_row_stop_the_import():
    with pytest.raises(CrossdiffError, match=r"1 response item\(s\) contain no item's 'question'.*Who wrote Hamlet"):
        match_rows(rows(("m", "Question: Who wrote Hamlet?\nAnswer:", 1)), ITEMS, "question", "r", "i", T)
    with pytest.raises(CrossdiffError, match=r"2 response rows of model 'm' map to item '0'"):
        match_rows(rows(("m", "Mercury_1", 1), ("m", "Question: What is 2+2?\nAnswer:", 1)), ITEMS, "question", "r", "i", T)
    with pytest.raises(CrossdiffError, match="exactly one"):
        match_rows(rows(("m", "x", 1)), ITEMS, "question", "r", "i", "Question:")


def test_twins_are_never_matched_by_full_prompt():
    """issue 20, item 19: a v1 ARC full prompt holds few-shot answers, not the item's options; a short
    option text ('oxygen') appearing in a few-shot answer must not pick a twin (before: item 1)."""
    prompt = ("Question: What do we breathe in?\nAnswer: oxygen\n\n"
              "Question: What do we breathe out?\nAnswer: carbon dioxide\n\n"
              "Question: Which gas do plants absorb?\nAnswer:")
    df = rows(("m", "Question: Which gas do plants absorb?\nAnswer:", 1, None, None, None, prompt))
    out, dropped, counts = match_rows(df, ITEMS, "question", "r", "i", T)
    assert out.height == 0 and counts["rows_twin_dropped"] == 1
    assert "no choices or gold in the row" in dropped[0]["detail"]
