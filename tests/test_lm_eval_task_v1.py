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


# ------------------------------------------------------------------ items.chat_template (lm-eval's --apply_chat_template)
SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128, "warmup_problems": 300,
         "warmup_steps": 30, "batch_size": 32, "eval_items": 0}
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_chat_template_setting(tmp_path):
    """Off by default; on, the item table keeps lm-eval's system/user turns, training renders them through the
    tokenizer's template, and each bin scores as simple_evaluate(apply_chat_template=True) on its docs."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    from crossdiff.config import validate
    from crossdiff.evaluate.run import evaluate_model, load_lm, make_task, resolve_settings
    from crossdiff.items.adapters import prepare_items, prompt_for
    from crossdiff.items.lm_eval_task import chat_settings
    from crossdiff.items.synthetic import generate_items
    from crossdiff.models.tiny import build_base_model
    from crossdiff.prompts.format import PromptFormat
    from crossdiff.study.sft_data import make_sft_data

    data = tmp_path / "sums.jsonl"
    rng = random.Random(4)
    rows = []
    for i in range(24):
        terms = [rng.randint(1, 9) for _ in range(2 + i % 3)]
        opts = sorted({sum(terms), sum(terms) + 1, sum(terms) - 1})
        rows.append({"question": " + ".join(map(str, terms)), "answer": str(sum(terms)), "options": [str(o) for o in opts],
                     "label": opts.index(sum(terms))})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = {"source": "lm_eval_task", "task": "sums_mc", "include_path": str(FIXTURES),
            "overrides": {"dataset_kwargs": {"data_files": {"test": str(data)}}, "description": "Add the numbers."}}
    assert chat_settings(base) == (False, False, None)  # as lm-eval's CLI: off
    with pytest.raises(CrossdiffError, match="needs items.chat_template"):
        chat_settings({**base, "fewshot_as_multiturn": True})
    config = {"datasets": {"s": {"items": dict(base), "responses": {"source": "simulated"}}}, "models": []}
    filled = validate(json.loads(json.dumps(config)))["datasets"]["s"]["items"]
    assert (filled["chat_template"], filled["fewshot_as_multiturn"], filled["system_instruction"]) == (False, None, None)
    with pytest.raises(CrossdiffError, match="chat_template"):
        validate({**config, "datasets": {"s": {**config["datasets"]["s"], "items": {**base, "chat_template": "yes"}}}})

    settings = {**base, "chat_template": True, "system_instruction": "Be brief."}
    items = prepare_items(settings, "sums")
    assert items["lm_eval_system"][0] == "Be brief.\n\nAdd the numbers." and items["lm_eval_user"][0] == \
        f"Question: {rows[0]['question']}\nAnswer:"
    generate_items(40, seed=5).write_parquet(tmp_path / "arith.parquet")
    build_base_model(tmp_path / "base", tmp_path / "arith.parquet", SMALL)
    tok = AutoTokenizer.from_pretrained(tmp_path / "base")
    tok.chat_template = CHAT
    tok.save_pretrained(tmp_path / "base")
    fmt = PromptFormat.from_config(prompt_for(settings, None))
    prompt, completion = fmt.render_training(items.to_dicts()[0], tok)
    assert prompt == f"<|system|>Be brief.\n\nAdd the numbers.\n<|user|>Question: {rows[0]['question']}\nAnswer:\n<|assistant|>"
    assert completion == rows[0]["answer"] + "\n"  # the gold choice, no target delimiter (lm-eval drops it in chat)
    items.write_parquet(tmp_path / "items.parquet")
    order = list(range(items.height))
    bins = pl.DataFrame({"item_id": items["item_id"], "difficulty": [float(i) for i in order], "bin": [i % 2 for i in order]})
    bins.write_parquet(tmp_path / "bins.parquet")
    make_sft_data(tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, tmp_path / "sft.jsonl", prompt_for(settings, None))
    sft = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert sft and all(r["system"] == "Be brief.\n\nAdd the numbers." and r["user"].startswith("Question: ") for r in sft)
    dirs = [tmp_path / f"bin{b}" for b in range(2)]
    for b, d in enumerate(dirs):
        make_task(tmp_path / "items.parquet", tmp_path / "bins.parquet", b, d, "sums", prompt_for(settings, None))
    lm = load_lm(tmp_path / "base", resolve_settings({"batch_size": 8}))
    records = evaluate_model(tmp_path / "base", dirs, [tmp_path / f"e{b}.json" for b in range(2)], {"batch_size": 8},
                             "tiny", "zero-shot", lm=lm)
    ref_tasks = tmp_path / "ref"
    ref_tasks.mkdir()
    (ref_tasks / "sums_mc.yaml").write_text((FIXTURES / "sums_mc.yaml").read_text().replace("test: sums.jsonl", f"test: {data}")
                                            + 'description: "Add the numbers."\n')
    manager = TaskManager(include_path=str(ref_tasks), include_defaults=False)
    for b, record in enumerate(records):
        ids = [i for i in order if i % 2 == b]
        ref = simple_evaluate(model=lm, tasks=["sums_mc"], task_manager=manager, samples={"sums_mc": ids},
                              bootstrap_iters=0, apply_chat_template=True, fewshot_as_multiturn=True,
                              system_instruction="Be brief.", log_samples=True)
        assert record["chat_template"] is True and record["n_items"] == len(ids)
        assert record["value"] == pytest.approx(ref["results"]["sums_mc"]["acc,none"], abs=1e-12)
        ctx, cont = ref["samples"]["sums_mc"][0]["arguments"][0][:2]  # the chat-rendered request, no delimiter
        assert ctx.startswith("<|system|>Be brief.\n\nAdd the numbers.\n<|user|>Question: ") and not cont.startswith(" ")


# ------------------------------------------------------------------ the README's config runs
README_EXTRA = """
models:
  - id: tiny
    build: tiny
    warmup_dataset: mytask
    build_settings: {hidden_size: 64, num_layers: 2, warmup_problems: 200, warmup_steps: 20, eval_items: 0}
irt: {engine: fast, stability: {seeds: [], engines: []}}
bins: {n_bins: 3}
"""


def test_readme_config_runs(tmp_path):
    """The README's 'Your own lm-eval task' block, as written, from a directory laid out like the repository:
    items, simulated responses, IRT, bins, training data of a bin, and show-prompt on it."""
    import re

    from conftest import REPO, crossdiff_cli, make_workdir, snakemake

    text = (REPO / "README.md").read_text()
    section = text[text.index("### Your own lm-eval task"):]
    block = re.search(r"```yaml\n(datasets:\n  mytask:.*?)```", section, re.S).group(1)
    wd = make_workdir(tmp_path / "wd", block + README_EXTRA)
    (wd / "tests").symlink_to(REPO / "tests")  # the README's relative paths, from the repository root
    snakemake(wd, "--cores", "2", "results/sft/mytask/bin0.jsonl", "results/bins/mytask/bins.parquet", timeout=300)
    items = pl.read_parquet(wd / "results/items/mytask.parquet")
    bins = pl.read_parquet(wd / "results/bins/mytask/bins.parquet")
    test = [json.loads(x) for x in (REPO / "tests/fixtures/lm_eval_tasks/arc_easy/test.jsonl").read_text().splitlines()]
    assert items.height == 40 and items["item_id"].to_list() == [str(i) for i in range(40)]
    assert items["id"].to_list() == [r["id"] for r in test]  # lm-eval's own arc_easy, on the local copy
    assert set(bins["item_id"]) == set(items["item_id"]) and bins["bin"].n_unique() == 3
    sft = [json.loads(x) for x in (wd / "results/sft/mytask/bin0.jsonl").read_text().splitlines()]
    assert sft and all(r["prompt"].startswith("Question: What is ") for r in sft)
    proc = crossdiff_cli("show-prompt", "--directory", str(wd), "--dataset", "mytask", "--item", "3")
    assert proc.returncode == 0 and "lm-eval task arc_easy, doc 3" in proc.stdout, proc.stderr
