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
    settings = {"source": "hub", "adapter": "gpqa_extended", "path": str(path), **extra}
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
    settings = {"source": "hub", "adapter": "gpqa_extended", "path": str(SAMPLES)}
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
        load_items("gpqa_extended", {"path": str(raw)})
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
    with pytest.raises(CrossdiffError, match=r"doc ids are not 0\.\.3 once each \(duplicated e\.g\. \[2\]"):
        load_items("gpqa_extended", {"path": str(bad)})


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

    load_items("gpqa_extended", {"path": str(SAMPLES)}).write_parquet(tmp_path / "i.parquet")
    proc = crossdiff_cli("show-prompt", "--items", str(tmp_path / "i.parquet"), "--adapter", "gpqa_extended",
                         "--item", "1", "--output", "C", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["training"]["prompt"].endswith("A) +4\nB) +6. \nC) +7\nD) +2\nAnswer:\n")
    assert info["verdict"]["correct"] == 1
