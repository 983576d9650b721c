"""items.source lm_eval_task, continued (issue 22): show-prompt of an item, a v1-leaderboard benchmark through
lm-eval's own registered task (Winogrande's partial scoring) with its details rows matched and collected, and
the chat-template setting."""

import json
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import leaderboard_layouts as L  # noqa: E402
from hub_server import FakeHub, FakeRepo  # noqa: E402

from crossdiff.errors import CrossdiffError  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "lm_eval_tasks"
NAMES = ["Ann", "Ben", "Cara", "Dan", "Eve", "Finn", "Gus", "Hana"]
THINGS = [("trophy", "suitcase", "large", "small"), ("ball", "window", "fast", "fragile"),
          ("cake", "plate", "heavy", "wide"), ("book", "shelf", "thick", "short")]


def wino_rows(n: int = 16) -> list[dict]:
    """Winogrande-style docs (sentence with a blank, two options, answer '1'/'2'); the last two are one sentence
    with its options in swapped order: the same text, told apart only by lm-eval's gold index."""
    rows = []
    for i in range(n - 2):
        a, b, big, small = THINGS[i % 4]
        word = big if i % 2 else small
        rows.append({"sentence": f"{NAMES[i % 8]}'s {a} did not fit in the {b} because the _ was too {word} (case {i}).",
                     "option1": a, "option2": b, "answer": "1" if word == big else "2"})
    twin = "The dog chased the cat until the _ got tired."
    rows += [{"sentence": twin, "option1": "dog", "option2": "cat", "answer": "1"},
             {"sentence": twin, "option1": "cat", "option2": "dog", "answer": "2"}]
    return rows


def wino_settings(data: Path) -> dict:
    # lm-eval's own registered `winogrande` task, pointed at a local copy of its dataset
    return {"source": "lm_eval_task", "task": "winogrande",
            "overrides": {"dataset_path": "json", "dataset_name": None,
                          "dataset_kwargs": {"data_files": {"train": str(data), "validation": str(data)}}}}


@pytest.fixture(scope="module")
def wino(tmp_path_factory):
    from crossdiff.items.adapters import prepare_items

    root = tmp_path_factory.mktemp("wino")
    data = root / "wino.jsonl"
    rows = wino_rows()
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = prepare_items(wino_settings(data), "wino")
    items.write_parquet(root / "items.parquet")
    return {"root": root, "data": data, "rows": rows, "items": items}


def test_winogrande_partial_scoring_items(wino):
    """The multiple-input task: item = lm-eval's doc; trained on the gold context + the shared continuation."""
    items, rows = wino["items"], wino["rows"]
    assert items["item_id"].to_list() == [str(i) for i in range(len(rows))]
    for r, it in zip(rows, items.to_dicts()):
        blank = r["sentence"].index("_")
        contexts = [r["sentence"][:blank] + r["option1"], r["sentence"][:blank] + r["option2"]]
        gold = int(r["answer"]) - 1
        assert json.loads(it["lm_eval_choices"]) == contexts and it["lm_eval_gold_index"] == gold
        assert it["lm_eval_prompt"] == contexts[gold]
        assert it["lm_eval_target"] == r["sentence"][blank + 1:].strip() and it["lm_eval_delimiter"] == " "
        assert it["answer"] == r["answer"] and it["sentence"] == r["sentence"]  # the doc's own fields kept


def v1_rows(items: list[dict], correct: list[int], order: list[int], full: bool) -> list[dict]:
    """One model's v1 details rows in the leaderboard's own order. ASSUMED layout (no real Winogrande v1 file
    can be read here): ``example`` holds the doc's sentence; ``choices`` the two partial contexts and
    ``gold_index`` the gold one where the file has them (``full``), else only ``gold_index``."""
    out = []
    for k in order:
        it = items[k]
        r = {"example": it["sentence"], "correct": correct[k], "gold_index": [it["lm_eval_gold_index"]]}
        if full:
            r["choices"] = json.loads(it["lm_eval_choices"])
        out.append(r)
    return out


def test_v1_winogrande_rows_matched_and_collected(wino, monkeypatch, tmp_path):
    """`source: leaderboard, version: v1, task: winogrande|5` against lm-eval's docs: every row lands on its doc,
    the twin sentence resolved by lm-eval's gold index."""
    import huggingface_hub.constants as c

    from crossdiff.responses import leaderboard as lb
    from crossdiff.responses.build import build

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    items = wino["items"].to_dicts()
    n = len(items)
    order = [(5 * k + 3) % n for k in range(n)]  # not the split's order
    rng = random.Random(1)
    models = ["org/full", "org/bare", "gpt2"]
    correct = {m: [rng.randint(0, 1) for _ in range(n)] for m in models}
    repos = {L.v1_repo_name(m): FakeRepo(L.v1_repo_files("2024-01-05T10:00:00.000000", "2024-01-05T10-00-00.000000", {
        "winogrande|5": L.v1_later(v1_rows(items, correct[m], order, full=(m != "org/bare")), "acc")})) for m in models}
    settings = {"source": "leaderboard", "version": "v1", "task": "winogrande|5", "metric": "acc", "item_key": "example",
                "match_items_on": "sentence", "concurrency": 2, "backoff_base": 0.05}
    with FakeHub(repos) as hub:
        s = lb.parse_settings({**settings, "endpoint": hub.url})
        report = lb.collect(s, models, tmp_path / "cache", tmp_path / "m.jsonl", tmp_path / "raw.parquet",
                            items_path=wino["root"] / "items.parquet", progress=False)
    assert report["models_done"] == 3, report
    matrix, dropped, stats = build("leaderboard", tmp_path / "raw.parquet", settings,
                                   {"dedupe_models": False, "drop_constant_items": False}, wino["root"] / "items.parquet")
    m = stats["matching"]
    assert (m["rows_by_text"], m["rows_twin_resolved"], m["rows_twin_dropped"]) == (3 * (n - 2), 6, 0)
    assert dropped.filter(pl.col("reason") == "ambiguous_twin").height == 0
    got = {(r["model_id"], r["item_id"]): r["correct"] for r in matrix.to_dicts()}
    assert got == {(mod, str(k)): correct[mod][k] for mod in models for k in range(n)}


def test_show_prompt_training_text_and_lm_eval_request(wino, tmp_path):
    """show-prompt of an lm_eval_task item: training text and lm-eval's own request for the doc."""
    from conftest import crossdiff_cli

    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i} + 1", "answer": str(i + 1), "options": [str(i), str(i + 1)],
                                        "label": 1}) + "\n" for i in range(5)))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(
        "datasets:\n  sums:\n    items:\n      source: lm_eval_task\n      task: sums_gen\n"
        f"      include_path: {FIXTURES}\n      overrides: {{dataset_kwargs: {{data_files: {{test: {data}}}}}}}\n"
        "    responses: {source: simulated}\n"
        "  wino:\n    items:\n      source: lm_eval_task\n      task: winogrande\n"
        f"      overrides: {json.dumps(wino_settings(wino['data'])['overrides'])}\n"
        "    responses: {source: simulated}\n"
        "models: []\n")
    proc = crossdiff_cli("show-prompt", "--directory", str(tmp_path), "--dataset", "sums", "--item", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["training"] == {"prompt": "Question: 3 + 1\nAnswer:", "completion": " 4"}
    ev = info["evaluation"]
    assert ev["request"] == "Question: 3 + 1\nAnswer:" and ev["output_type"] == "generate_until"
    assert ev["generation_kwargs"]["until"] == ["\n"] and ev["reference"] == "4"
    text = crossdiff_cli("show-prompt", "--directory", str(tmp_path), "--dataset", "sums", "--item", "3")
    assert "lm-eval task sums_gen, doc 3" in text.stdout and "reference: '4'" in text.stdout, text.stderr
    # Winogrande through lm-eval's registered task: two contexts, one continuation; training on the gold context
    twin = wino["rows"][-1]
    proc = crossdiff_cli("show-prompt", "--directory", str(tmp_path), "--dataset", "wino", "--item", str(len(wino["rows"]) - 1),
                         "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    blank = twin["sentence"].index("_")
    contexts = [twin["sentence"][:blank] + twin["option1"], twin["sentence"][:blank] + twin["option2"]]
    assert info["training"] == {"prompt": contexts[1], "completion": " " + twin["sentence"][blank + 1:].strip()}
    assert info["evaluation"]["request"] == contexts and info["evaluation"]["gold"] == 1
    assert info["evaluation"]["continuations"] == [" " + twin["sentence"][blank + 1:].strip()]
    bad = crossdiff_cli("show-prompt", "--directory", str(tmp_path), "--dataset", "sums", "--item", "3", "--output", "4")
    assert bad.returncode != 0 and "process_results" in bad.stderr
