"""items.source lm_eval_task, issue 26: what a user of lm-eval trips on. Responses joined by lm-eval's doc hash,
ICL through lm-eval's own few-shot path, corpus-level metrics, context vs max_gen_toks, splits (missing, empty,
the few-shot pool's), group subtasks (colliding ids, one data override for all), per-doc few-shot draws, k-shot
evaluation vs 0-shot training, deep-merged overrides; lm-eval's own registered `arc_easy` and `gsm8k` tasks on
local files in their real schema (tests/fixtures/lm_eval_tasks/{arc_easy,gsm8k})."""

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
from test_lm_eval_task import FIXTURES, SMALL, _bins, settings_for, sums_rows  # noqa: E402

from crossdiff.errors import CrossdiffError  # noqa: E402

ARC = FIXTURES / "arc_easy"
GSM = FIXTURES / "gsm8k"


def arc_settings(splits=("train", "validation", "test"), **files) -> dict:
    data = {s: str(ARC / f"{s}.jsonl") for s in splits}
    data.update({k: str(v) for k, v in files.items()})
    return {"source": "lm_eval_task", "task": "arc_easy",
            "overrides": {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": data}}}


def gsm_settings(**overrides) -> dict:
    return {"source": "lm_eval_task", "task": "gsm8k",
            "overrides": {"dataset_path": "json", "dataset_name": None,
                          "dataset_kwargs": {"data_files": {s: str(GSM / f"{s}.jsonl") for s in ("train", "test")}},
                          **overrides}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from crossdiff.items.synthetic import generate_items
    from crossdiff.models.tiny import build_base_model

    root = tmp_path_factory.mktemp("lmchecks")
    data = root / "sums.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sums_rows()))
    generate_items(60, seed=5).write_parquet(root / "arith.parquet")
    build_base_model(root / "base", root / "arith.parquet", SMALL)  # 256 positions
    return {"root": root, "data": data, "model": root / "base"}


def _lm_eval_docs(data: Path) -> list[dict]:
    """lm-eval's own view of sums_mc's docs (its TaskManager over a copy of the fixture YAML)."""
    from lm_eval.tasks import TaskManager

    ref = data.parent / "ref_tasks"
    ref.mkdir(exist_ok=True)
    (ref / "sums_mc.yaml").write_text((FIXTURES / "sums_mc.yaml").read_text().replace("test: sums.jsonl", f"test: {data}"))
    task = TaskManager(include_path=str(ref), include_defaults=False).load("sums_mc")["tasks"]["sums_mc"]
    return [dict(d) for d in task.eval_docs]


# ------------------------------------------------------------------ 1. lm_eval_samples joined by doc_hash
def test_lm_eval_samples_join_by_doc_hash(env, tmp_path):
    """Samples logged under other doc ids (another order) land on their doc's item by lm-eval's content hash;
    a sample of a doc the items do not have stops the import naming its file."""
    from lm_eval.utils import handle_non_serializable, hash_string

    from crossdiff.items.adapters import prepare_items
    from crossdiff.responses.build import build

    items = prepare_items(settings_for("sums_mc", env["data"]), "sums")
    items.write_parquet(tmp_path / "items.parquet")
    docs = _lm_eval_docs(env["data"])
    hashes = [hash_string(json.dumps(d, indent=2, default=handle_non_serializable, ensure_ascii=False)) for d in docs]
    assert items["doc_hash"].to_list() == hashes  # the item table keeps lm-eval's hash (lm_eval/evaluator.py:655)
    rng = random.Random(5)
    truth = {m: [rng.randint(0, 1) for _ in docs] for m in ("org__a", "org__b")}
    perm = list(range(len(docs)))
    random.Random(1).shuffle(perm)
    for model, ids in (("org__a", list(range(len(docs)))), ("org__b", perm)):  # b: its docs under other doc ids
        (tmp_path / "logs" / model).mkdir(parents=True)
        (tmp_path / "logs" / model / "samples_sums_mc_2025-01-01T00-00-00.jsonl").write_text("".join(
            json.dumps({"doc_id": ids[i], "doc_hash": hashes[i], "acc": float(truth[model][i]), "filter": "none"}) + "\n"
            for i in range(len(docs))))
    filters = {"min_responses_per_model": 1, "min_responses_per_item": 1, "drop_constant_items": False,
               "dedupe_models": False}
    df, _, stats = build("lm_eval_samples", tmp_path / "logs", {"task": "sums_mc", "metric": "acc"}, filters,
                         tmp_path / "items.parquet")
    got = {(r["model_id"], r["item_id"]): r["correct"] for r in df.to_dicts()}
    assert got == {(m, str(i)): truth[m][i] for m in truth for i in range(len(docs))}
    moved = sum(1 for i, j in enumerate(perm) if i != j)
    assert stats["doc_hash_join"] == {"by_doc_hash": 2 * len(docs), "doc_id_differs": moved, "without_hash": 0}
    # a doc the item table does not hold (other data): refused, naming the file
    bad = tmp_path / "logs" / "org__a" / "samples_sums_mc_2025-01-01T00-00-00.jsonl"
    lines = bad.read_text().splitlines()
    lines[3] = json.dumps({**json.loads(lines[3]), "doc_hash": hash_string("another doc")})
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(CrossdiffError, match=rf"{bad}: the sample logged as item '3' has doc_hash .* no item of"):
        build("lm_eval_samples", tmp_path / "logs", {"task": "sums_mc", "metric": "acc"}, filters, tmp_path / "items.parquet")


# ------------------------------------------------------------------ 2. ICL through lm-eval's few-shot path
def test_icl_on_lm_eval_task(env, tmp_path):
    """study.methods icl on an lm-eval task: demonstrations are bin b's training docs rendered by the task (their
    SFT text), never the test doc; a k the bin cannot give is refused before the model loads; the cells run."""
    from crossdiff.evaluate.icl import evaluate_icl
    from crossdiff.evaluate.run import make_task, read_task
    from crossdiff.items.adapters import prepare_items, prompt_for
    from crossdiff.items.lm_eval_task import load_tasks
    from crossdiff.study.sft_data import make_sft_data

    settings = settings_for("sums_mc", env["data"])
    items = prepare_items(settings, "sums")
    items.write_parquet(tmp_path / "items.parquet")
    bins = _bins(items)
    bins.write_parquet(tmp_path / "bins.parquet")
    dirs = [tmp_path / f"bin{t}" for t in range(3)]
    for t, d in enumerate(dirs):
        make_task(tmp_path / "items.parquet", tmp_path / "bins.parquet", t, d, "sums", prompt_for(settings, None))
    records = evaluate_icl(env["model"], dirs, tmp_path / "items.parquet", tmp_path / "bins.parquet", [2], [0, 1],
                           tmp_path / "out", {"batch_size": 8}, "tiny", seed=7)
    assert sorted((r["train_bin"], r["test_bin"]) for r in records) == [(f"icl-k2-{b}", t) for b in (0, 1) for t in range(3)]
    for b in (0, 1):
        for t in range(3):
            rec = json.loads((tmp_path / "out" / f"icl-k2-train{b}" / f"bin{t}.json").read_text())
            assert rec["n_items"] == int((bins["bin"] == t).sum()) and 0 <= rec["value"] <= 1
    from crossdiff.evaluate.lm_eval_task import icl_hook, icl_pools

    metas = [read_task(d) for d in dirs]
    make_sft_data(tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, tmp_path / "sft0.jsonl", prompt_for(settings, None))
    sft0 = {r["prompt"] + r["completion"]: r["item_id"] for r in map(json.loads, (tmp_path / "sft0.jsonl").read_text().splitlines())}
    pools = icl_pools(metas, tmp_path / "items.parquet", tmp_path / "bins.parquet", [3], [0])
    task = load_tasks(settings, hook=icl_hook(3, pools[0]))["sums_mc"]
    task.set_fewshot_seed(7)
    by_bin = {int(r["item_id"]): r["bin"] for r in bins.to_dicts()}
    for doc_id in range(items.height):
        doc = dict(task.eval_docs[doc_id])
        *demos, question = task.fewshot_context(doc, 3).split("\n\n")
        assert question == items["lm_eval_prompt"][doc_id]
        assert len(demos) == 3 and all(d in sft0 for d in demos)  # bin 0's training text, as SFT on bin 0 sees it
        if by_bin[doc_id] == 0:
            assert str(doc_id) not in {sft0[d] for d in demos}  # never the test doc itself
    n0 = int((bins["bin"] == 0).sum())
    with pytest.raises(CrossdiffError, match=rf"study.icl.k = {n0}: bin 0 has only {n0 - 1} training item"):
        icl_pools(metas, tmp_path / "items.parquet", tmp_path / "bins.parquet", [n0], [0])


# ------------------------------------------------------------------ 3. corpus-level metric with a threshold
def test_corpus_metric_refused_at_items_threshold_or_not(env):
    from crossdiff.items.lm_eval_task import load_task_items

    bleu = settings_for("sums_gen", env["data"])
    bleu["overrides"]["metric_list"] = [{"metric": "bleu", "aggregation": "bleu", "higher_is_better": True}]
    for threshold in (0.5, None):
        with pytest.raises(CrossdiffError, match=r"datasets\.s\.items\.metric = 'bleu' is a corpus-level score"):
            load_task_items({**bleu, "threshold": threshold}, "s")
    from crossdiff.items.lm_eval_task import parse_problems

    assert any("datasets.s.items.metric = 'bleu'" in p and "threshold" in p
               for p in parse_problems("s", {**bleu, "metric": "bleu", "threshold": 0.5}))
    assert parse_problems("s", settings_for("sums_gen", env["data"])) == []


# ------------------------------------------------------------------ 4. context shorter than max_gen_toks
def test_generation_context_checked_before_generating(env, tmp_path, monkeypatch):
    """gsm8k (lm-eval's default max_gen_toks 256) on a model with 256 positions: a clear error naming the key
    before lm-eval generates; the parse-time function says the same from config.json alone."""
    from crossdiff.evaluate.run import evaluate_model, load_lm, make_task, resolve_settings
    from crossdiff.items.adapters import prepare_items, prompt_for

    settings = gsm_settings(num_fewshot=0)
    items = prepare_items(settings, "gsm")
    items.write_parquet(tmp_path / "items.parquet")
    pl.DataFrame({"item_id": items["item_id"], "difficulty": [0.0] * items.height, "bin": [0] * items.height}) \
        .write_parquet(tmp_path / "bins.parquet")
    make_task(tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, tmp_path / "bin0", "gsm", prompt_for(settings, None))
    lm = load_lm(env["model"], resolve_settings({"batch_size": 4}))

    def generate(*args, **kwargs):
        raise AssertionError("lm-eval started generating")
    monkeypatch.setattr(type(lm), "generate_until", generate)
    with pytest.raises(CrossdiffError, match=r"context of 256 tokens and the task generates up to max_gen_toks = 256.*"
                                             r"datasets\.gsm\.items\.overrides\.generation_kwargs\.max_gen_toks below 256"):
        evaluate_model(env["model"], [tmp_path / "bin0"], [tmp_path / "e.json"], {"batch_size": 4}, lm=lm)
    from crossdiff.items.lm_eval_task import context_problems, declared_max_gen_toks

    config = json.loads((env["model"] / "config.json").read_text())
    assert context_problems(config, 256, model="tiny", dataset="gsm") and "tiny" in context_problems(config, 256, model="tiny")[0]
    assert context_problems(config, 64) == [] and context_problems(config, None) == []
    assert context_problems({"text_config": {"max_position_embeddings": 4096}}, 256) == []
    assert "evaluate.max_length" in context_problems({"n_positions": 1024}, 256, max_length=200)[0]
    assert declared_max_gen_toks({"overrides": {"generation_kwargs": {"max_new_tokens": 64}}}) == 64
    assert declared_max_gen_toks(settings) is None


# ------------------------------------------------------------------ 5, 11. splits: missing, empty, the few-shot pool's
def test_splits_named_with_the_key_that_supplies_them(tmp_path):
    from crossdiff.items.lm_eval_task import load_task_items

    items = load_task_items(arc_settings(), "arc")  # lm-eval's registered arc_easy on local files
    assert items.height == 40 and items["lm_eval_prompt"][0] == "Question: What is 4 + 9?\nAnswer:"
    with pytest.raises(CrossdiffError, match=r"datasets\.arc\.items: lm-eval task 'arc_easy': its training_split 'train' "
                                             r"is not a split of its data \(splits: test\); lm-eval builds its few-shot "
                                             r"pool from it .*items\.overrides\.dataset_kwargs\.data_files\.train"):
        load_task_items(arc_settings(("test",)), "arc")
    with pytest.raises(CrossdiffError, match=r"its test_split 'dev' is not a split of its data \(splits: test, train, "
                                             r"validation\).*set items\.split to one of"):
        load_task_items({**arc_settings(), "split": "dev"}, "arc")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(CrossdiffError, match=r"data_files\.test = '.*empty\.jsonl' is empty"):
        load_task_items(arc_settings(test=tmp_path / "empty.jsonl"), "arc")
    with pytest.raises(CrossdiffError, match=r"no docs are left of the evaluation split 'test' after the task's process_docs"):
        load_task_items({**arc_settings(), "overrides": {**arc_settings()["overrides"],
                                                        "process_docs": lambda ds: ds.filter(lambda d: False)}}, "arc")
    with pytest.raises(CrossdiffError, match=r"data_files\.test = 'nope\.jsonl'.*no such file \(a relative path resolves"):
        load_task_items(arc_settings(test="nope.jsonl"), "arc")


# ------------------------------------------------------------------ 6, 7. group subtasks
def _group_dir(tmp_path: Path, group: str, leaves: dict[str, Path]) -> Path:
    d = tmp_path / "tasks"
    d.mkdir(exist_ok=True)
    base = (FIXTURES / "sums_mc.yaml").read_text()
    for leaf, data in leaves.items():
        (d / f"{leaf}.yaml").write_text(base.replace("task: sums_mc", f"task: {leaf}").replace("test: sums.jsonl", f"test: {data}"))
    (d / f"{group}.yaml").write_text(f"group: {group}\ntask:\n" + "".join(f"  - {leaf}\n" for leaf in leaves))
    return d


def test_group_leaves_with_one_item_id_prefix_refused(env, tmp_path):
    from crossdiff.items.lm_eval_task import load_task_items

    tasks = _group_dir(tmp_path, "sg", {"sg_a": env["data"], "a": env["data"]})  # both would be 'a/<doc_id>'
    with pytest.raises(CrossdiffError, match=r"datasets\.sg\.items: lm-eval group 'sg' has the subtasks 'sg_a' and 'a', "
                                             r"which both get item ids 'a/<doc_id>'"):
        load_task_items({"task": "sg", "include_path": str(tasks)}, "sg")


def test_group_data_override_per_subtask(env, tmp_path):
    """One data override for a group whose subtasks read different data is refused; {task} gives each its file."""
    from crossdiff.items.lm_eval_task import load_task_items

    rows = sums_rows(30)
    for leaf, part in (("pg_x", rows[:10]), ("pg_y", rows[10:30])):
        (tmp_path / f"{leaf}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    tasks = _group_dir(tmp_path, "pg", {"pg_x": tmp_path / "pg_x.jsonl", "pg_y": tmp_path / "pg_y.jsonl"})
    one = {"task": "pg", "include_path": str(tasks), "overrides": {"dataset_kwargs": {"data_files": {"test": str(env["data"])}}}}
    with pytest.raises(CrossdiffError, match=r"datasets\.pg\.items\.overrides: .* 2 of the 2 subtasks of 'pg' \(pg_x, pg_y\), "
                                             r"whose own configs read different data, read the same data.*Write \{task\}"):
        load_task_items(one, "pg")
    (tmp_path / "copy").mkdir()
    for leaf in ("pg_x", "pg_y"):
        (tmp_path / "copy" / f"{leaf}.jsonl").write_text((tmp_path / f"{leaf}.jsonl").read_text())
    per = {**one, "overrides": {"dataset_kwargs": {"data_files": {"test": str(tmp_path / "copy" / "{task}.jsonl")}}}}
    items = load_task_items(per, "pg")
    assert items.group_by("subtask").len().sort("subtask").rows() == [("pg_x", 10), ("pg_y", 20)]
    assert items.filter(pl.col("subtask") == "pg_y")["question"].to_list() == [r["question"] for r in rows[10:30]]


# ------------------------------------------------------------------ 8. few-shot prompts independent of the grouping
def test_fewshot_prompt_independent_of_the_docs_scored_with_it(env):
    """A 3-shot task: a doc's request is the same whether its bin is built alone or with every doc, show-prompt
    shows it, and it is what lm-eval scored."""
    from crossdiff.evaluate.lm_eval_task import run_lm_eval
    from crossdiff.evaluate.run import load_lm, resolve_settings
    from crossdiff.items.adapters import prepare_items
    from crossdiff.items.lm_eval_task import describe_evaluation, load_tasks

    settings = settings_for("sums_mc", env["data"])
    settings["overrides"].update({"num_fewshot": 3, "fewshot_split": "test"})
    items = prepare_items(settings, "sums")

    def requests(ids: list[int]) -> dict[int, str]:
        task = load_tasks(settings)["sums_mc"]
        task.set_fewshot_seed(1234)  # what simple_evaluate sets by default (lm_eval/evaluator.py:84, 347)
        task.build_all_requests(samples=ids)
        out = {}
        for inst in task.instances:  # with samples=, lm-eval numbers the chosen docs 0.. in order
            out.setdefault(sorted(ids)[inst.doc_id], inst.args[0])
        return out

    every = requests(list(range(items.height)))
    alone = requests(list(range(10, 20)))
    assert all(alone[i] == every[i] for i in range(10, 20))
    assert len({every[i].split("\n\n")[0] for i in every}) > 5  # drawn per doc, not one fixed set
    assert all(items["lm_eval_prompt"][i] not in every[i].split("\n\n")[:-1] for i in every)  # never the doc itself
    item = items.row(12, named=True)
    shown = describe_evaluation(settings, item)
    assert shown["request"] == every[12] and shown["num_fewshot"] == 3
    lm = load_lm(env["model"], resolve_settings({"batch_size": 8}))
    _, results = run_lm_eval(lm, settings, {"sums_mc": [12, 30]})
    scored = {s["doc_id"]: s["arguments"][0][0] for s in results["samples"]["sums_mc"]}
    assert scored[12] == shown["request"]


# ------------------------------------------------------------------ 9. k-shot evaluation vs 0-shot training text
def test_kshot_task_needs_the_shots_stated(tmp_path):
    from crossdiff.items.lm_eval_task import load_task_items

    with pytest.raises(CrossdiffError, match=r"datasets\.gsm\.items: lm-eval task 'gsm8k': the task's own config evaluates "
                                             r"5-shot .* Set datasets\.gsm\.items\.overrides\.num_fewshot: 0 .* or "
                                             r"num_fewshot: 5"):
        load_task_items(gsm_settings(), "gsm")
    zero = load_task_items(gsm_settings(num_fewshot=0), "gsm")
    five = load_task_items(gsm_settings(num_fewshot=5), "gsm")  # stated: lm-eval's 5-shot, knowingly
    assert zero.height == five.height == 12 and zero["lm_eval_target"][0].endswith("#### 7")


# ------------------------------------------------------------------ 10. overrides merged deep
def test_overrides_are_merged_deep(env):
    from crossdiff.items.lm_eval_task import load_tasks

    settings = settings_for("sums_gen", env["data"])
    settings["overrides"]["generation_kwargs"] = {"max_gen_toks": 4}
    task = load_tasks(settings)["sums_gen"]
    assert task.config.generation_kwargs == {"until": ["\n"], "max_gen_toks": 4, "do_sample": False}
    assert task.config.dataset_kwargs == {"data_files": {"test": str(env["data"])}}
    from crossdiff.items.lm_eval_task import deep_merge

    assert deep_merge({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}, "e": {"f": 1}}) == \
        {"a": {"b": 1, "c": [3]}, "d": 1, "e": {"f": 1}}


# ------------------------------------------------------------------ the parse-time functions
def test_parse_time_functions_import_no_lm_eval():
    """parse_problems / context_problems / declared_max_gen_toks are for the workflow's parse: importing their module
    loads neither lm-eval nor torch, and they answer from the config alone."""
    import subprocess

    code = ("import sys; from crossdiff.items.lm_eval_task import parse_problems, context_problems; "
            "print(sorted(m for m in ('lm_eval', 'torch', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
    from crossdiff.items.lm_eval_task import parse_problems

    icl = parse_problems("m", {"source": "lm_eval_task", "task": "x", "solutions": {"path": "s.jsonl"}}, ["sft", "icl"])
    assert len(icl) == 1 and "study.methods has icl and items.solutions" in icl[0]
    assert parse_problems("m", {"source": "lm_eval_task", "task": "x", "overrides": {"task": "y"}})[0] == \
        "datasets.m.items.overrides: ['task'] cannot be overridden (they name the task)"
    assert parse_problems("m", {"source": "lm_eval_task"})[0].startswith("datasets.m.items: source lm_eval_task needs task")
    assert parse_problems("m", {"source": "hub", "adapter": "arc"}) == []
