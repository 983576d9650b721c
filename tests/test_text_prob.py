"""Hase et al.'s answer_prob / question_prob (crossdiff.evaluate.text_prob) against transformers' own NLL."""

import polars as pl
import pytest

from conftest import REPO
from crossdiff.cli import main

FIX = REPO / "tests" / "fixtures" / "datasets" / "hase"
SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "warmup_problems": 100,
         "warmup_steps": 2, "batch_size": 16, "eval_items": 0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny local Llama (crossdiff.models.tiny) and the ARC fixture's items (arc_hase) with an IRT table."""
    from crossdiff.items.adapters import load_items
    from crossdiff.items.synthetic import generate_items
    from crossdiff.models.tiny import build_base_model

    d = tmp_path_factory.mktemp("textprob")
    generate_items(30, seed=5).write_parquet(d / "warmup.parquet")
    build_base_model(d / "base", d / "warmup.parquet", SMALL)
    items = load_items("arc_hase", {"path": str(FIX / "arc"),
                                    "annotations": {"path": str(FIX / "arc-challenge-easy-annotations.json")}})
    items.write_parquet(d / "items.parquet")
    items.select("item_id", pl.lit(0.0).alias("difficulty")).write_parquet(d / "irt.parquet")
    return d


def _transformers_nll(model_dir, text: str, bos: bool = True) -> float:
    """Summed NLL of the text alone, from transformers' own loss (the mean over the shifted targets) times the
    number of targets: [BOS] + tokens, every text token a target (no BOS: the first token has no context)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ids = tok.encode(text, add_special_tokens=False)
    seq = ([tok.bos_token_id] if bos else []) + ids
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([seq]), labels=torch.tensor([seq])).loss) * (len(seq) - 1)


def test_answer_and_question_prob_equal_transformers_nll_with_one_load(tiny):
    import crossdiff.evaluate.loss_measure as lm

    loads = lm.MODEL_LOADS
    a, q = tiny / "answer.parquet", tiny / "question.parquet"
    # batch 4 over 9 items of different lengths: padding within a batch must not change a value
    assert main(["text-prob-measure", "--items", str(tiny / "items.parquet"), "--irt", str(tiny / "irt.parquet"),
                 "--model", str(tiny / "base"), "--model-name", "tiny", "--settings", '{"batch_size": 4, "device": "cpu"}',
                 "--answer-output", str(a), "--question-output", str(q)]) == 0
    assert lm.MODEL_LOADS == loads + 1  # both measures from one model load
    items = {r["item_id"]: r for r in pl.read_parquet(tiny / "items.parquet").to_dicts()}
    for path, column in ((a, "answer_text"), (q, "question")):
        table = pl.read_parquet(path)
        assert sorted(table["item_id"]) == sorted(items) and (table["measure"] > 0).all()  # NLL: higher = harder
        got = dict(zip(table["item_id"], table["measure"]))
        for iid in ("ARCEZ_Mercury_0001", "ARCCH_Mercury_1003", "ARCCH_Mercury_1008"):
            assert got[iid] == pytest.approx(_transformers_nll(tiny / "base", items[iid][column]), rel=1e-5, abs=1e-4)
    assert items["ARCCH_Mercury_1003"]["answer_text"] == "matching fossils on distant coasts"  # the gold option's text
    # summed, not averaged: a longer answer text has a larger NLL here
    ans = dict(zip(*pl.read_parquet(a).select("item_id", "measure").to_dict(as_series=False).values()))
    assert ans["ARCCH_Mercury_1003"] > ans["ARCEZ_Mercury_0001"]
    # every item must be scored: a limit is refused before the model loads
    assert main(["text-prob-measure", "--items", str(tiny / "items.parquet"), "--irt", str(tiny / "irt.parquet"),
                 "--model", str(tiny / "base"), "--settings", '{"limit": 3}', "--answer-output", str(tiny / "x.parquet")]) == 2
    assert lm.MODEL_LOADS == loads + 1


def test_without_bos_the_first_token_is_not_scored(tiny):
    """A tokenizer without BOS: their sequence is the text alone, and the shift leaves its first token unscored."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crossdiff.evaluate.text_prob import sequence, summed_nll

    tok = AutoTokenizer.from_pretrained(str(tiny / "base"))
    model = AutoModelForCausalLM.from_pretrained(str(tiny / "base"), dtype=torch.float32).eval()
    texts = ["balance", "It doubles.", "kilometers per hour", ""]
    with_bos = [sequence(tok, t) for t in texts]
    assert all(s[0] == tok.bos_token_id for s in with_bos)
    tok.bos_token = None
    assert tok.bos_token_id is None
    seqs = [sequence(tok, t) for t in texts]
    assert [s for s in seqs] == [s[1:] for s in with_bos]
    got = summed_nll(model, tok, seqs, batch_size=3)
    assert got[3] == 0.0  # an empty text scores 0
    for text, value in zip(texts[:3], got[:3]):
        assert value == pytest.approx(_transformers_nll(tiny / "base", text, bos=False), rel=1e-5, abs=1e-4)


def test_answer_text_of_items_without_the_column():
    from crossdiff.evaluate.text_prob import answer_text
    from crossdiff.prompts.format import PromptFormat

    mc = PromptFormat.from_config({"scoring": "multiple_choice"})
    assert answer_text({"choices": '["a b", "c"]', "answer": "0"}, mc) == "a b"  # the gold choice's text
    assert answer_text({"answer": "42"}, PromptFormat.from_config({})) == "42"
    assert answer_text({"answer": "42", "answer_text": "4,2"}, PromptFormat.from_config({})) == "4,2"
