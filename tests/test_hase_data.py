"""Hase et al. 2024's data (crossdiff.items.hase): the adapters arc_hase, mmlu_stem5, strategyqa and GSM8K's columns on
local fixtures in the real schemas, against a direct re-typing of their code (allenai/easy-to-hard-generalization
@ ad8358e, utils/data_utils.py:297-516) in pandas."""

import json

import numpy as np
import pandas as pd
import polars as pl
import pytest

from conftest import REPO
from crossdiff.config import deep_merge, validate
from crossdiff.errors import CrossdiffError
from crossdiff.items.adapters import load_items
from crossdiff.plan.checks import problems
from crossdiff.plan.settings import Plan

FIX = REPO / "tests" / "fixtures" / "datasets"
HASE = FIX / "hase"
ANN = HASE / "arc-challenge-easy-annotations.json"


def arc(**extra):
    return load_items("arc_hase", {"path": str(HASE / "arc"), "annotations": {"path": str(ANN)}, **extra})


def their_arc(root, ann) -> pd.DataFrame:
    """data_utils.py:358-416 (merge, dropna), :240-242 (label_idx, answer_text), :487-490, :495-498, in pandas."""
    frames = [pd.read_json(root / cfg / f"{split}.jsonl", lines=True, dtype=False, convert_dates=False)
              for cfg in ("ARC-Easy", "ARC-Challenge") for split in ("train", "validation", "test")]
    combined = pd.concat(frames)
    records = [{"source": k[:5], "id": k[6:], **v} for k, v in json.loads(ann.read_text()).items()]
    meta = pd.DataFrame(records)

    def grade(x):
        parts = x.split()
        return int(parts[-1]) if parts[-1].isdigit() else None

    def level(levels):
        return lambda x: levels.index(x) + 1 if x in levels else None

    meta["human_grade"] = meta["grade"].apply(grade)
    meta["human_difficulty"] = meta["difficulty"].apply(level(["Low", "Medium", "High"]))
    meta["human_bloom"] = meta["bloom"].apply(level(["Remembering", "Understanding", "Applying", "Analyzing", "Evaluating"]))
    meta["human_depth_of_knowledge"] = meta["depth_of_knowledge"].apply(level(["I", "II", "III"]))
    combined = combined.merge(meta[["id", "human_grade", "human_difficulty", "human_bloom", "human_depth_of_knowledge"]],
                              left_on="id", right_on="id")
    df = combined.dropna().copy()
    df["label_idx"] = df["answerKey"].apply(lambda x: ["A", "B", "C", "D", "E"].index(x) if x not in ["1", "2", "3", "4", "5"]
                                            else ["1", "2", "3", "4", "5"].index(x))
    df["answer_text"] = [list(c["text"])[i] for c, i in zip(df["choices"], df["label_idx"])]
    df["question_num_words"] = df["question"].apply(lambda x: len(x.split()))
    df["answer_num_words"] = df["answer_text"].apply(lambda x: len(x.split()))
    df["answer_num_chars"] = df["answer_text"].apply(len)
    return df.drop_duplicates(subset="id")


def test_arc_hase_equals_their_join_dropna_and_conversions():
    df = arc()
    theirs = their_arc(HASE / "arc", ANN)
    assert df["id"].to_list() == theirs["id"].tolist()  # same rows, same order
    # ids keep the set the row came from; the id both sets hold is kept once, from ARC-Easy (first)
    assert df["item_id"].to_list() == [
        "ARCEZ_Mercury_0001", "ARCEZ_NYSEDREGENTS_2010_4_3", "ARCEZ_DUP_0006", "ARCCH_Mercury_1001",
        "ARCCH_Mercury_1003", "ARCCH_Mercury_1005", "ARCCH_Mercury_1006", "ARCCH_Mercury_1007", "ARCCH_Mercury_1008"]
    assert df["item_id"].n_unique() == df.height
    for ours, their in (("grade", "human_grade"), ("bloom", "human_bloom"), ("depth_of_knowledge", "human_depth_of_knowledge"),
                        ("annotator_difficulty", "human_difficulty"), ("question_num_words", "question_num_words"),
                        ("answer_num_words", "answer_num_words"), ("answer_num_chars", "answer_num_chars")):
        assert df[ours].dtype == pl.Int64, ours
        assert df[ours].to_list() == [int(v) for v in theirs[their]], ours
    assert df["answer_text"].to_list() == theirs["answer_text"].tolist()
    assert df["answer"].to_list() == [str(i) for i in theirs["label_idx"]]
    # hand-checked values: "Grade 03" -> 3, Remembering -> 1, I -> 1, Low -> 1; Evaluating -> 5, III -> 3, High -> 3
    row = df.filter(pl.col("item_id") == "ARCEZ_Mercury_0001").row(0, named=True)
    assert (row["grade"], row["bloom"], row["depth_of_knowledge"], row["annotator_difficulty"]) == (3, 1, 1, 1)
    row = df.filter(pl.col("item_id") == "ARCCH_Mercury_1003").row(0, named=True)
    assert (row["grade"], row["bloom"], row["depth_of_knowledge"], row["annotator_difficulty"]) == (7, 5, 3, 3)
    assert row["answer_text"] == "matching fossils on distant coasts" and row["n_choices"] == 5 and row["challenge"] == 1
    # numeric labels: their label_idx = the key's place in 1-5
    row = df.filter(pl.col("id") == "NYSEDREGENTS_2010_4_3").row(0, named=True)
    assert row["answer"] == "1" and row["answer_text"] == "chemical" and json.loads(row["labels"]) == ["1", "2", "3", "4"]
    # dropped: 'Biology' and 'Earth and Space Sciences' grades, an unknown Bloom level, no annotation
    for gone in ("MCAS_2001_5_2", "Mercury_1004", "Mercury_0005", "Mercury_0004"):
        assert gone not in df["id"].to_list()
    assert df["hase_split"].null_count() == df.height  # 9 items: no 1000-item hardness split


def test_arc_hase_hardness_split_as_their_seeded_draw(tmp_path):
    """1003 annotated items: their 1000-item hardness split, np.random.default_rng(0).choice (data_utils.py:505-516)."""
    for cfg in ("ARC-Easy", "ARC-Challenge"):
        (tmp_path / cfg).mkdir()
    rows = [{"id": f"Q_{i:04d}", "question": f"Question number {i}?", "answerKey": "A",
             "choices": {"text": ["x", "y"], "label": ["A", "B"]}} for i in range(1003)]
    splits = {("ARC-Easy", "train"): rows[:500], ("ARC-Easy", "validation"): rows[500:600], ("ARC-Easy", "test"): [],
              ("ARC-Challenge", "train"): rows[600:900], ("ARC-Challenge", "validation"): [],
              ("ARC-Challenge", "test"): rows[900:]}
    for (cfg, split), part in splits.items():
        (tmp_path / cfg / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    ann = {f"{'ARCEZ' if i < 600 else 'ARCCH'}_Q_{i:04d}": {"grade": "Grade 05", "bloom": "Applying",
                                                             "depth_of_knowledge": "II", "difficulty": "Low"}
           for i in range(1003)}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    settings = {"path": str(tmp_path), "annotations": {"path": str(tmp_path / "ann.json")}}
    df = load_items("arc_hase", settings)
    hard = set(np.random.default_rng(0).choice(np.arange(1003), size=1000, replace=False).tolist())
    assert df["hase_split"].to_list() == ["hardness" if i in hard else "probing" for i in range(1003)]
    probing = load_items("arc_hase", {**settings, "hase_split": "probing"})
    assert probing["item_id"].to_list() == [iid for iid, s in zip(df["item_id"], df["hase_split"]) if s == "probing"]
    assert probing.height == 3
    with pytest.raises(CrossdiffError, match="cannot hold Hase et al.'s 1000-item hardness split"):
        arc(hase_split="probing")


def test_arc_hase_reads_a_hub_snapshot_layout_and_refuses_bad_annotations(tmp_path):
    import shutil

    shutil.copytree(HASE / "arc", tmp_path / "arc")
    src = tmp_path / "arc" / "ARC-Challenge" / "test.jsonl"
    pl.read_ndjson(src).write_parquet(tmp_path / "arc" / "ARC-Challenge" / "test-00000-of-00001.parquet")
    src.unlink()
    got = load_items("arc_hase", {"path": str(tmp_path / "arc"), "annotations": {"path": str(ANN)}})
    assert got["item_id"].to_list() == arc()["item_id"].to_list()
    (tmp_path / "arc" / "ARC-Easy" / "validation.jsonl").unlink()
    with pytest.raises(CrossdiffError, match=r"ARC-Easy: no file of split 'validation'"):
        load_items("arc_hase", {"path": str(tmp_path / "arc"), "annotations": {"path": str(ANN)}})
    bad = tmp_path / "bad.json"
    for content, message in (({"ARC_x": {}}, r"key 'ARC_x' is not ARCCH_<id> or ARCEZ_<id>"),
                             ({"ARCCH_x": {"grade": 5, "bloom": "Applying", "depth_of_knowledge": "I", "difficulty": "Low"}},
                              r"ARCCH_x: grade not text"),
                             ({"ARCEZ_x": {"grade": "Grade 05"}}, r"ARCEZ_x: no bloom, depth_of_knowledge, difficulty")):
        bad.write_text(json.dumps(content))
        with pytest.raises(CrossdiffError, match=message):
            load_items("arc_hase", {"path": str(HASE / "arc"), "annotations": {"path": str(bad)}})
    with pytest.raises(CrossdiffError, match="annotations file not found"):
        load_items("arc_hase", {"path": str(HASE / "arc"), "annotations": {"path": str(tmp_path / "none.json")}})


def test_mmlu_stem5_levels_subjects_and_splits():
    df = load_items("mmlu_stem5", {"path": str(HASE / "mmlu")})
    assert df.height == 20  # 5 subjects x 2 levels x (validation + test), one row each; no dropna
    assert df["item_id"][:4].to_list() == ["high_school_computer_science/validation/0", "high_school_computer_science/test/0",
                                           "college_computer_science/validation/0", "college_computer_science/test/0"]
    assert df["subject"].unique(maintain_order=True).to_list() == ["computer_science", "physics", "mathematics",
                                                                   "chemistry", "biology"]
    assert df["education_level"].to_list() == [0, 0, 1, 1] * 5
    assert df["split"].to_list() == ["validation", "test"] * 10
    for r in df.iter_rows(named=True):
        choices = json.loads(r["choices"])
        assert r["answer_text"] == choices[int(r["answer"])]
        assert r["question_num_words"] == len(r["question"].split()) and r["answer_num_chars"] == len(r["answer_text"])


def test_strategyqa_steps_reasoning_and_yes_no():
    rows = [json.loads(line) for line in (HASE / "strategyqa" / "test.jsonl").read_text().splitlines()]
    for path in (HASE / "strategyqa", HASE / "strategyqa" / "test.jsonl"):
        df = load_items("strategyqa", {"path": str(path)})
        assert df["item_id"].to_list() == [r["qid"] for r in rows]
        assert df["num_steps"].to_list() == [len(r["decomposition"]) for r in rows] == [3, 2, 4]
        assert df["reasoning_num_words"].to_list() == [len(" ".join(r["facts"]).split()) for r in rows]
        assert df["answer"].to_list() == ["1", "0", "1"] and df["answer_text"].to_list() == ["no", "yes", "no"]
        assert json.loads(df["choices"][0]) == ["yes", "no"]
        assert df["question_num_words"].to_list() == [len(r["question"].split()) for r in rows]


def test_gsm8k_gains_their_columns_and_keeps_its_own(tmp_path):
    df = load_items("gsm8k", {"path": str(FIX / "gsm8k.jsonl")})
    assert df["answer"].to_list() == ["18", "3", "70000"] and df["n_steps"].to_list() == [2, 2, 4]  # unchanged
    assert df["num_steps"].to_list() == [2, 2, 4]
    rows = [json.loads(line) for line in (FIX / "gsm8k.jsonl").read_text().splitlines()]
    reasoning = [r["answer"].split("####")[0].strip("\n") for r in rows]
    assert df["reasoning_num_words"].to_list() == [len(x.replace("\n", " ").split()) for x in reasoning]
    # their rules: blank lines count as steps, capped at 10; the answer text keeps its commas
    long = "\n".join(f"Step {i}: 1 + 1 = <<1+1=2>>2" for i in range(12))
    f = tmp_path / "gsm8k.jsonl"
    f.write_text(json.dumps({"question": "How many  apples?", "answer": "First 3.\n\nThen 4.\n#### 1,200"}) + "\n"
                 + json.dumps({"question": "q", "answer": long + "\n#### 5"}) + "\n")
    df = load_items("gsm8k", {"path": str(f)})
    assert df["num_steps"].to_list() == [3, 10] and df["n_steps"].to_list() == [2, 12]
    assert df["answer"].to_list() == ["1200", "5"] and df["answer_text"].to_list() == ["1,200", "5"]
    assert df["answer_num_chars"].to_list() == [5, 1] and df["question_num_words"].to_list() == [3, 1]


# ------------------------------------------------------------------ parse time: refused before any job
def config(items, **over):
    base = {"datasets": {"d": {"items": items, "responses": {"source": "simulated"}}},
            "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3},
            "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}}}
    return validate(deep_merge(base, over))


def test_parse_refuses_what_needs_no_file(tmp_path):
    def found(items):
        return [p for p in problems(Plan(config(items))) if "items" in p]

    assert any("items.annotations.path: the arc_hase adapter needs" in p
               for p in found({"source": "hub", "adapter": "arc_hase", "path": "x"}))
    assert any("only the arc_hase adapter reads an annotations file, not gsm8k" in p
               for p in found({"source": "hub", "adapter": "gsm8k", "annotations": {"path": str(ANN)}}))
    assert any("is a folder" in p for p in found({"source": "hub", "adapter": "arc_hase", "annotations": {"path": str(HASE)}}))
    assert any("items.subtasks" in p and "fixed configs" in p
               for p in found({"source": "hub", "adapter": "mmlu_stem5", "subtasks": ["college_physics"]}))
    assert any("hase_split: only arc_hase" in p for p in found({"source": "hub", "adapter": "strategyqa", "hase_split": "probing"}))
    assert any("holds '{'" in p for p in found({"source": "hub", "adapter": "arc_hase", "annotations": {"path": "a{b}.json"}}))
    assert not found({"source": "hub", "adapter": "arc_hase", "path": "x", "annotations": {"path": str(ANN)}})
    with pytest.raises(CrossdiffError, match="hase_split"):
        config({"source": "hub", "adapter": "arc_hase", "hase_split": "all"})  # schema: probing, hardness or null


def test_annotations_file_is_a_rule_input():
    from crossdiff.plan.inputs import item_files

    d = config({"source": "hub", "adapter": "arc_hase", "path": str(HASE / "arc"), "annotations": {"path": str(ANN)}})
    files = item_files(d["datasets"]["d"])
    assert str(ANN) in files and str(HASE / "arc" / "ARC-Easy" / "train.jsonl") in files
