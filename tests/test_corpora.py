"""Training corpora and test benchmarks without leaderboard responses (items.source: corpus, responses.source:
none), the token-length measure (bins.by: length_tokens:COLUMN) and their checks at parse (issue 28)."""

from __future__ import annotations

import json
import os

import polars as pl
import pytest

from conftest import crossdiff_cli, make_workdir, snakemake
from crossdiff.config import deep_merge, validate
from crossdiff.errors import CrossdiffError
from crossdiff.items.corpus import corpus_items, load_corpus
from crossdiff.plan.checks import problems
from crossdiff.plan.settings import Plan

# rows in the layout of open-r1/OpenR1-Math-220k (default config): a list of R1 traces with math-verify flags
OPENR1 = [
    {"problem": "1+1?", "solution": "Two.", "answer": "2", "uuid": "u0",
     "generations": ["<think>wrong</think> \\boxed{3}", "<think>one plus one</think> \\boxed{2}"],
     "correctness_math_verify": [False, True], "source": "olympiads"},
    {"problem": "2+2?", "solution": "Four.", "answer": "4", "uuid": "u1",
     "generations": ["<think>two and two</think> \\boxed{4}"], "correctness_math_verify": [True], "source": "amc"},
    {"problem": "  ", "solution": "x", "answer": "5", "uuid": "u2", "generations": ["a"],
     "correctness_math_verify": [True], "source": "amc"},  # blank question: dropped
    {"problem": "3+3?", "solution": "Six.", "answer": "6", "uuid": "u3", "generations": ["no flag \\boxed{6}"],
     "correctness_math_verify": [False], "source": "amc"},  # no trace flagged: the first
]


def settings(**over):
    base = {"source": "corpus", "hub_id": None, "path": None, "config": None, "split": "train", "revision": None,
            "data_files": None, "columns": {"question": "problem", "solution": "generations", "answer": "answer",
                                            "choices": None, "id": "uuid"},
            "pick": "correctness_math_verify", "keep": ["source"], "sample": None, "seed": 0}
    return deep_merge(base, over)


def test_openr1_layout_picks_the_first_verified_trace_and_drops_blank_rows(tmp_path):
    path = tmp_path / "openr1.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in OPENR1))
    items = load_corpus(settings(path=str(path)), "openr1")
    assert items["item_id"].to_list() == ["u0", "u1", "u3"]
    assert items["solution"].to_list() == [OPENR1[0]["generations"][1], OPENR1[1]["generations"][0],
                                           OPENR1[3]["generations"][0]]
    assert items["answer"].to_list() == ["2", "4", "6"]
    assert items["source"].to_list() == ["olympiads", "amc", "amc"]
    assert set(items.columns) >= {"item_id", "question", "answer", "solution", "question_length"}


def test_answer_from_the_boxed_solution_and_multiple_choice_columns():
    # nvidia/OpenScience layout: input / output, the answer letter boxed in the output
    df = pl.DataFrame({"input": ["Which? A: x B: y", "What? A: p B: q"],
                       "output": ["<think>...</think> The answer is \\boxed{B}", "no box here"]})
    s = settings(columns={"question": "input", "solution": "output", "answer": None, "id": None}, pick=None, keep=[])
    items = corpus_items(df, s, "os")
    assert items["item_id"].to_list() == ["0"] and items["answer"].to_list() == ["B"]  # the unboxed row is dropped
    # cais/mmlu layout: a list of options and an integer answer index
    mmlu = pl.DataFrame({"question": ["Q1", "Q2"], "subject": ["law", "math"], "choices": [["a", "b", "c", "d"]] * 2,
                         "answer": [2, 0]})
    s = settings(columns={"question": "question", "solution": None, "answer": "answer", "choices": "choices", "id": None},
                 pick=None, keep=["subject"])
    items = corpus_items(mmlu, s, "mmlu")
    assert items["answer"].to_list() == ["2", "0"] and json.loads(items["choices"][0]) == ["a", "b", "c", "d"]


def test_sample_is_seeded_nested_free_and_keeps_source_order():
    df = pl.DataFrame({"q": [f"q{i}" for i in range(50)], "a": [str(i) for i in range(50)]})
    s = settings(columns={"question": "q", "answer": "a", "solution": None, "id": None}, pick=None, keep=[], sample=10, seed=3)
    one, two = corpus_items(df, s), corpus_items(df, s)
    assert one.equals(two) and one.height == 10
    ids = [int(i) for i in one["item_id"]]
    assert ids == sorted(ids)  # source order; ids are the source rows
    import numpy as np

    assert ids == sorted(np.random.default_rng(3).choice(50, size=10, replace=False).tolist())
    assert not corpus_items(df, {**s, "seed": 4})["item_id"].equals(one["item_id"])
    with pytest.raises(CrossdiffError, match="items.sample = 60 but only 50"):
        corpus_items(df, {**s, "sample": 60})


def test_duplicate_ids_and_missing_columns_are_named(tmp_path):
    df = pl.DataFrame({"q": ["a", "b"], "a": ["1", "2"], "id": ["x", "x"]})
    with pytest.raises(CrossdiffError, match="duplicate ids"):
        corpus_items(df, settings(columns={"question": "q", "answer": "a", "solution": None, "id": "id"}, pick=None, keep=[]))
    path = tmp_path / "t.parquet"
    df.write_parquet(path)
    with pytest.raises(CrossdiffError, match=r"no column\(s\) \['problem', 'answer'\]"):
        load_corpus(settings(path=str(path), columns={"question": "problem", "solution": None, "id": None}, pick=None,
                             keep=[]))


# ------------------------------------------------------------------ the token-length measure
@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from crossdiff.models.tiny import build_tokenizer

    root = tmp_path_factory.mktemp("tok")
    texts = ["Let x = 12. Then 2x = 24, so the answer is \\boxed{24}.", "What is 3 + 4?", "The sum of 7 and 8 is 15."] * 20
    build_tokenizer(texts, 400).save_pretrained(root / "tok")
    return root / "tok"


def test_token_length_equals_the_tokenizers_count_for_three_items(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    texts = ["Let x = 12. Then 2x = 24.", "We add 3 and 4 to get 7, so \\boxed{7}.", "The sum of 7 and 8 is 15. " * 4]
    pl.DataFrame({"item_id": ["a", "b", "c"], "question": ["q"] * 3, "answer": ["1"] * 3,
                  "solution": texts}).write_parquet(tmp_path / "items.parquet")
    proc = crossdiff_cli("length-tokens-measure", "--items", str(tmp_path / "items.parquet"), "--column", "solution",
                         "--tokenizer", str(tokenizer_dir), "--output", str(tmp_path / "m.parquet"))
    assert proc.returncode == 0, proc.stderr
    got = dict(pl.read_parquet(tmp_path / "m.parquet").iter_rows())
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    for iid, text in zip("abc", texts):
        assert got[iid] == len(tok.tokenize(text)) == len(tok(text, add_special_tokens=False)["input_ids"])
    assert got["c"] > got["b"] > got["a"] > 0
    assert got["c"] != len(texts[2])  # tokens, not characters


def test_token_length_of_a_missing_text_is_refused(tmp_path, tokenizer_dir):
    from crossdiff.bins.token_length import load_tokenizer, token_lengths

    df = pl.DataFrame({"item_id": ["a", "b"], "solution": ["x y", None]})
    with pytest.raises(CrossdiffError, match=r"1 item\(s\) have no solution text, e\.g\. \['b'\]"):
        token_lengths(df, "solution", load_tokenizer(str(tokenizer_dir)))


# ------------------------------------------------------------------ checks at parse
def config(**over):
    base = {"datasets": {"c": {"items": {"source": "corpus", "path": "c.jsonl", "columns": {"question": "q", "answer": "a"}},
                               "responses": {"source": "none"}, "bins": {"by": "length:question"}}},
            "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3},
            "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}}}
    return validate(deep_merge(base, over))


def found(**over) -> list[str]:
    return problems(Plan(config(**over)))


@pytest.mark.parametrize("over, needle", [
    ({"datasets": {"c": {"bins": {"by": "irt"}}}}, "datasets.c.bins.by = 'irt' needs an IRT fit, but responses.source is none"),
    ({"datasets": {"c": {"bins": {"by": "loss:m"}}}}, "datasets.c.bins.by = 'loss:m' needs the IRT items"),
    ({"datasets": {"c": {"items": {"hub_id": "org/x"}}}}, "needs exactly one of hub_id and path"),
    ({"datasets": {"c": {"items": {"columns": {"answer": None}}}}}, "name an answer or a solution column"),
    ({"datasets": {"c": {"bins": {"tokenizer": "m"}}}}, "bins.tokenizer = 'm' is set but bins.by = 'length:question'"),
    ({"datasets": {"c": {"bins": {"by": "length_tokens:question", "tokenizer": "not a model"}}}},
     "neither a model slug of models[]"),
    ({"datasets": {"c": {"test_on": ["nope"]}}}, "datasets.c.test_on: 'nope' is not a dataset of this config"),
    ({"datasets": {"c": {"test_on": ["c"]}}}, "lists the dataset itself"),
    ({"datasets": {"c": {"test_on": ["e"]}, "e": {"items": {"source": "synthetic"}, "responses": {"source": "simulated"}}},
      "study": {"datasets": ["e"]}}, "'c' is not in study.datasets"),
    ({"datasets": {"c": {"bins": {"measures": ["length_tokens:question"]}}}},
     "datasets.c.bins.measures[0] = 'length_tokens:question': length_tokens:<column> is a bins.by value only"),
])
def test_parse_checks_name_the_key(over, needle):
    out = found(**over)
    assert any(needle in p for p in out), out


def test_a_valid_corpus_study_has_no_problems_and_resolves_the_tokenizer():
    cfg = {"datasets": {"c": {"bins": {"by": "length_tokens:question"}, "test_on": ["e"]},
                        "e": {"items": {"source": "synthetic"}, "responses": {"source": "none"}, "bins": {"by": "n_ops"}}},
           "study": {"datasets": ["c"]}}
    assert found(**cfg) == []
    plan = Plan(config(**cfg))
    assert plan.tokenizer("c") == {"ref": "results/models/m", "model": "m", "files": ["results/models/m"]}
    assert plan.tokenizer("e") is None and not plan.has_irt("c")
    assert plan.test_on("c") == ["e"] and plan.test_on("e") == []
    hub = Plan(config(datasets={"c": {"bins": {"by": "length_tokens:question", "tokenizer": "Qwen/Qwen2.5-Math-1.5B"}}}))
    assert hub.tokenizer("c") == {"ref": "Qwen/Qwen2.5-Math-1.5B", "model": None, "files": []}
    assert not problems(hub)


def test_corpus_dataset_plans_without_responses_or_irt(tmp_path):
    """The DAG of a corpus binned by token length: no responses, no IRT, the built model's tokenizer an input."""
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"q": f"What is {i}?", "a": str(i)}) + "\n" for i in range(30)))
    text = json.dumps({
        "datasets": {"c": {"items": {"source": "corpus", "path": str(tmp_path / "c.jsonl"),
                                     "columns": {"question": "q", "answer": "a"}},
                           "responses": {"source": "none"}, "bins": {"by": "length_tokens:question"}}},
        "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3}})
    wd = make_workdir(tmp_path / "wd", text)
    proc = snakemake(wd, "-n", "--cores", "1", "results/bins/c/bins.parquet")
    jobs = proc.stdout + proc.stderr
    for rule in ("prepare_items", "build_base_model", "length_tokens_measure", "make_bins_measure"):
        assert rule in jobs, jobs[-3000:]
    for rule in ("import_responses", "fit_irt", "simulate_leaderboard"):
        assert rule not in jobs


def test_token_length_bins_a_dataset_with_responses_too(tmp_path):
    """On a dataset with responses the measure table joins the IRT items (make_bins, ties by IRT difficulty)."""
    text = json.dumps({
        "datasets": {"d": {"items": {"source": "synthetic", "n_items": 60}, "responses": {"source": "simulated"},
                           "bins": {"by": "length_tokens:question", "tokenizer": "m"}}},
        "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3}})
    wd = make_workdir(tmp_path, text)
    proc = snakemake(wd, "-n", "--cores", "1", "results/bins/d/bins.parquet")
    jobs = proc.stdout + proc.stderr
    for rule in ("fit_irt", "build_base_model", "length_tokens_measure", "rule make_bins:"):
        assert rule in jobs, jobs[-3000:]
    assert "make_bins_measure" not in jobs


def test_liu2026_config_plans_offline(tmp_path):
    """config/liu2026.yaml plans from an empty folder with HF_HUB_OFFLINE=1: hub-only sources download nothing."""
    import re

    import yaml

    from conftest import REPO

    cfg = yaml.safe_load((REPO / "config" / "liu2026.yaml").read_text())
    wd = make_workdir(tmp_path, yaml.safe_dump(cfg))
    proc = snakemake(wd, "-n", "--cores", "8", "--quiet", "rules", env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, re.M)}
    runs = 2 * 3 * 3 * 5 * 2  # models x corpora x buckets x n x {sft, dft}
    assert counts["finetune"] == counts["evaluate_checkpoint"] == counts["evaluate_transfer"] == runs
    assert counts["evaluate_zero_shot"] == 2 * 5  # the corpora's and MATH500's / MMLU's own
    assert counts["prepare_items"] == counts["length_tokens_measure"] == counts["make_bins_measure"] == 5
    assert counts["plot_transfer"] == 3 and counts["optimum_by_n"] == 1
    assert not {"fit_irt", "import_responses", "build_base_model"} & set(counts)


def test_estimate_counts_the_test_on_cells(tmp_path, monkeypatch):
    """crossdiff estimate: every run's passes over the other dataset's test items, and its zero-shot pass."""
    from crossdiff.plan.estimate import estimate

    monkeypatch.chdir(tmp_path)
    cfg = {"datasets": {"e": {"items": {"source": "synthetic", "n_items": 120, "seed": 1}, "responses": {"source": "none"},
                              "bins": {"by": "n_ops"}, "test_on": ["f"]},
                        "f": {"items": {"source": "synthetic", "n_items": 90, "seed": 2}, "responses": {"source": "none"},
                              "bins": {"by": "n_ops"}}},
           "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3, "holdout_fraction": 0.25},
           "study": {"datasets": ["e"], "methods": ["sft", "dft"]},
           "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}}}
    plan = Plan(validate(cfg))
    rows = {(r["dataset"], r["method"]): r for r in estimate(plan, cache_path=None)["rows"]}
    assert set(rows) == {("e", "zero-shot"), ("e", "sft"), ("e", "dft"), ("e on f", "sft"), ("e on f", "dft"),
                         ("f", "zero-shot")}
    base = rows[("f", "zero-shot")]
    for method in ("sft", "dft"):
        on = rows[("e on f", method)]
        assert on["eval_passes"] == len(plan.runs) == 3 and on["fine_tunes"] == 0
        assert abs(on["eval_tokens"] - 3 * base["eval_tokens"]) <= 3  # the same items, once per run
