"""GPQA-Extended adapter on local copies in the real schemas (leaderboard details records; raw dataset rows)."""

import json
import random

import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.items.adapters import load_items, prompt_for
from crossdiff.prompts.format import PromptFormat

from conftest import REPO
from test_paper_formats import CannedLM, _run, _task

FIX = REPO / "tests" / "fixtures" / "datasets"
SAMPLES = FIX / "gpqa_extended_samples.jsonl"


def _authors_prompt(example: dict) -> str:
    """The authors' builder (train/utils.py process_gpqa_extended_example), written out."""
    options = "\n".join(f"{label}) {choice}" for choice, label in zip(example["options"], "ABCD"))
    return f"Question: {example['question']}\n{options}\nAnswer:\n"


def _load(path=SAMPLES, **extra):
    settings = {"source": "hub", "adapter": "gpqa_extended", "path": str(path), "allow_partial": True, **extra}
    items = {r["item_id"]: r for r in load_items("gpqa_extended", settings).to_dicts()}
    return items, PromptFormat.from_config(prompt_for(settings, None))


def test_items_are_the_scored_docs_in_doc_id_order():
    records = [json.loads(line) for line in SAMPLES.read_text().splitlines()]
    assert [r["doc_id"] for r in records] == [2, 0, 1]  # completion order, as the leaderboard writes
    items, fmt = _load()
    assert list(items) == ["0", "1", "2"]
    by_id = {str(r["doc_id"]): r["doc"] for r in records}
    for iid, item in items.items():
        doc = by_id[iid]
        assert json.loads(item["choices"]) == [doc[f"choice{i}"] for i in range(1, 5)]
        assert "ABCD"[int(item["answer"])] == doc["answer"].strip("()")
    assert items["1"]["subdomain"] == "Inorganic Chemistry" and items["1"]["domain"] == "Chemistry"
    assert items["0"]["writer_difficulty"].startswith("Easy") and items["2"].get("writer_difficulty") is None
    assert [items[k]["writer_difficulty_level"] for k in "012"] == [1, 2, None]  # numeric: a Spearman feature


def test_prompt_and_target_are_the_authors():
    items, fmt = _load()
    for item in items.values():
        example = {"question": item["question"], "options": json.loads(item["choices"])}
        rec, ev = fmt.sft_record(item), fmt.eval_record(item)
        assert rec["user"] == ev["user"] == _authors_prompt(example)
        assert ev["choices"] == [" (A)", " (B)", " (C)", " (D)"] and ev["gold"] == int(item["answer"])
    assert fmt.sft_record(items["1"])["user"] == ("Question: What is the oxidation state of Mn in KMnO4?\n"
                                                  "A) +4\nB) +6. \nC) +7\nD) +2\nAnswer:\n")
    assert fmt.sft_record(items["1"])["assistant"] == "(C)"
    assert fmt.metric_names == ("acc", "acc_norm")


def test_lm_eval_scores_the_scored_letters(tmp_path):
    settings = {"source": "hub", "adapter": "gpqa_extended", "path": str(SAMPLES), "allow_partial": True}
    prompt = prompt_for(settings, None)
    fmt = PromptFormat.from_config(prompt)
    items = {r["item_id"]: r for r in load_items("gpqa_extended", settings).to_dicts()}
    task = _task(tmp_path, "gpqa_extended", items, fmt, prompt)
    picks = {"0": 1, "1": 0, "2": 3}  # the stand-in prefers B, A, D: right, wrong, right
    loglik = {(fmt.prompt_text(items[k]), f" ({'ABCD'[i]})"): (-1.0 if i == picks[k] else -3.0)
              for k in items for i in range(4)}
    record, samples = _run(tmp_path, task, CannedLM({}, loglik))  # a KeyError would mean other continuations
    assert {k: s["correct"] for k, s in samples.items()} == {"0": 1, "1": 0, "2": 1}
    assert record["value"] == pytest.approx(2 / 3)


def test_raw_rows_need_an_explicit_order(tmp_path):
    raw = FIX / "gpqa_extended_raw.jsonl"
    with pytest.raises(CrossdiffError, match="raw GPQA rows carry no option order.*samples_leaderboard_gpqa_extended"):
        load_items("gpqa_extended", {"path": str(raw), "allow_partial": True})
    items, _ = _load(raw, option_order="seeded")
    again, _ = _load(raw, option_order="seeded")
    assert items == again  # deterministic
    rows = [json.loads(line) for line in raw.read_text().splitlines()]
    for i, row in enumerate(rows):
        choices = json.loads(items[str(i)]["choices"])
        expected = [row[f"Incorrect Answer {k}"] for k in (1, 2, 3)] + [row["Correct Answer"]]
        expected = [" ".join(e.strip().replace(" [title]", ". ").split("  ")) for e in expected]
        random.Random(f"gpqa/{i}").shuffle(expected)
        assert choices == expected
        assert choices[int(items[str(i)]["answer"])] == row["Correct Answer"].strip()


def test_details_with_repeated_doc_ids_is_an_error(tmp_path):
    lines = SAMPLES.read_text().splitlines()
    bad = tmp_path / "samples_leaderboard_gpqa_extended_x.jsonl"
    bad.write_text("\n".join(lines + lines[:1]) + "\n")
    with pytest.raises(CrossdiffError, match=r"x\.jsonl: gpqa details doc id\(s\) \[2\] occur more than once"):
        load_items("gpqa_extended", {"path": str(bad), "allow_partial": True})


def _details(tmp_path, records, name="samples_leaderboard_gpqa_extended_x.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _records():
    return [json.loads(line) for line in SAMPLES.read_text().splitlines()]


@pytest.mark.parametrize("case, pattern", [
    # a doc missing: was "not 0..2 once each (duplicated e.g. [])"
    ("missing", r"x\.jsonl: gpqa details doc ids are not 0\.\.2 once each: doc id\(s\) \[1\] missing"),
    # a record without doc: was a raw KeyError
    ("no_doc", r"x\.jsonl: 1 gpqa details record\(s\) unusable: record 2 has no 'doc' object \(doc_id 0\)"),
    ("bad_id", r"x\.jsonl: 1 gpqa details record\(s\) unusable: record 3 has doc_id 'one'; expected an integer"),
    # a null option: was the option text "None"
    ("null_option", r"x\.jsonl: record 2 \(doc_id 0\): option 3 \(C\) is null"),
    ("duplicate_option", r"x\.jsonl: record 3 \(doc_id 1\): option 1 \(A\) and option 4 \(D\) are the same text '\+4'"),
])
def test_unusable_details_name_the_file_and_record(tmp_path, case, pattern):
    """Issue 26: each fault of a details file is a clear error naming the file and the record."""
    records = _records()  # doc ids 2, 0, 1 in file order
    if case == "missing":
        records = [r for r in records if r["doc_id"] != 1] + [{**records[2], "doc_id": 3}]
    elif case == "no_doc":
        records[1] = {k: v for k, v in records[1].items() if k != "doc"}
    elif case == "bad_id":
        records[2]["doc_id"] = "one"
    elif case == "null_option":
        records[1]["doc"]["choice3"] = None
    else:
        records[2]["doc"]["choice4"] = records[2]["doc"]["choice1"]
    with pytest.raises(CrossdiffError, match=pattern):
        load_items("gpqa_extended", {"path": str(_details(tmp_path, records)), "allow_partial": True})


def test_a_partial_details_file_is_refused_unless_allowed(tmp_path):
    """12 records of the 546-doc benchmark (an lm-eval --limit 12 run): refused, naming the file and the count."""
    base = _records()[1]  # doc_id 0
    records = []
    for i in range(12):
        doc = {**base["doc"], **{f"choice{k}": f"{base['doc'][f'choice{k}']} #{i}" for k in range(1, 5)}}
        records.append({**base, "doc_id": i, "doc": doc})
    path = _details(tmp_path, records)
    with pytest.raises(CrossdiffError, match=r"x\.jsonl: 12 gpqa_extended doc\(s\), but leaderboard_gpqa_extended has 546.*"
                                             r"allow_partial"):
        load_items("gpqa_extended", {"path": str(path)})
    assert load_items("gpqa_extended", {"path": str(path), "allow_partial": True}).height == 12


def test_card_and_raw_rows_with_a_null_or_repeated_option_name_the_row(tmp_path):
    card = tmp_path / "card.jsonl"
    card.write_text(json.dumps({"question": "Q?", "options": ["a", None, "c", "d"], "answer": "A"}) + "\n")
    with pytest.raises(CrossdiffError, match=r"card\.jsonl: gpqa_extended row 0: ValueError option 2 \(B\) is null"):
        load_items("gpqa_extended", {"path": str(card), "allow_partial": True})
    raw = [json.loads(line) for line in (FIX / "gpqa_extended_raw.jsonl").read_text().splitlines()]
    raw[1]["Incorrect Answer 2"] = raw[1]["Correct Answer"]
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in raw))
    with pytest.raises(CrossdiffError, match=r"raw\.jsonl: row 1: Correct Answer and Incorrect Answer 2 are the same text"):
        load_items("gpqa_extended", {"path": str(path), "option_order": "seeded", "allow_partial": True})


def test_collector_takes_the_extended_file_only():
    from crossdiff.responses.details import select_files
    from crossdiff.responses.lb_settings import parse_settings

    s = parse_settings({"version": "v2", "task": "leaderboard_gpqa_extended"})
    files = [f"org__m/samples_leaderboard_gpqa_{sub}_2024-06-26T10-00-00.123.jsonl" for sub in ("diamond", "main")]
    files += ["org__m/samples_leaderboard_gpqa_extended_2024-06-26T10-00-00.123.jsonl",
              "org__m/samples_leaderboard_gpqa_extended_2024-07-01T09-00-00.5.jsonl"]
    assert {k: v[1] for k, v in select_files(files, s).items()} == {"": files[-1]}  # the newest run


def test_show_prompt_renders_a_gpqa_item(tmp_path):
    from conftest import crossdiff_cli

    load_items("gpqa_extended", {"path": str(SAMPLES), "allow_partial": True}).write_parquet(tmp_path / "i.parquet")
    proc = crossdiff_cli("show-prompt", "--items", str(tmp_path / "i.parquet"), "--adapter", "gpqa_extended",
                         "--item", "1", "--output", "C", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["training"]["prompt"].endswith("A) +4\nB) +6. \nC) +7\nD) +2\nAnswer:\n")
    assert info["verdict"]["correct"] == 1
