"""In-context learning cells (study.methods: [sft, icl]): demonstrations from bin b's training items only, never
the test item, seeded; one model load for every (k, b, t) cell; the results table, heatmaps and summary carry
the method."""

import json
import re

import polars as pl
import pytest

from conftest import make_workdir, snakemake
from crossdiff.errors import CrossdiffError
from crossdiff.evaluate.icl import eval_label, ks_of, make_icl_task, parse_result_label, rendered_contexts
from test_study_workflow import STUDY, planned_jobs

SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "warmup_problems": 100,
         "warmup_steps": 2, "batch_size": 16, "eval_items": 0}


def _setup(d, holdout: float):
    import crossdiff.evaluate.run as ev
    from crossdiff.bins.holdout import holdout_split
    from crossdiff.items.synthetic import generate_items

    items = generate_items(60, seed=5)
    items.write_parquet(d / "items.parquet")
    order = items["n_ops"].rank("ordinal").cast(pl.Int64) - 1
    bins = pl.DataFrame({"item_id": items["item_id"], "difficulty": order.cast(pl.Float64), "bin": order * 3 // 60})
    if holdout:
        bins = holdout_split(bins, holdout, seed=3)
    bins.write_parquet(d / "bins.parquet")
    for t in range(3):
        ev.make_task(d / "items.parquet", d / "bins.parquet", t, d / f"task{t}", "arith")
    return items, bins


def _demos(context: str, questions: dict[str, str]) -> list[str]:
    """item_ids whose question text appears as a demonstration (before the final question) of a context."""
    head = context[: context.rstrip().rfind("Question:")]
    return sorted(i for i, q in questions.items() if f"{q}\n" in head)


@pytest.mark.parametrize("holdout", [0.0, 0.5])
def test_demonstrations_come_from_bin_b_training_items_never_the_test_item_and_are_seeded(tmp_path, holdout):
    items, bins = _setup(tmp_path, holdout)
    questions = {r["item_id"]: f"Question: {r['question']}" for r in items.to_dicts()}
    assert len(set(questions.values())) == len(questions), "the check below needs distinct questions"
    train = {b: set(bins.filter((pl.col("bin") == b) & ~pl.col("heldout") if holdout else pl.col("bin") == b)["item_id"])
             for b in range(3)}
    k = 3
    for b in range(3):
        for t in range(3):
            meta = make_icl_task(tmp_path / f"task{t}", tmp_path / "items.parquet", tmp_path / "bins.parquet", b, k,
                                 tmp_path / f"icl-b{b}-t{t}")
            assert meta["icl"]["split"] == ("test" if (b == t and not holdout) else "fewshot")
            ctx = rendered_contexts(tmp_path / f"icl-b{b}-t{t}", seed=7)
            test_ids = {json.loads(x)["item_id"] for x in (tmp_path / f"task{t}" / "data.jsonl").read_text().splitlines()}
            assert set(ctx) == test_ids
            seen = set()
            for iid, text in ctx.items():
                demos = _demos(text, questions)
                assert len(demos) == k, (iid, text)
                assert set(demos) <= train[b], f"cell ({b}, {t}): a demonstration from outside bin {b}'s training items"
                assert iid not in demos, f"cell ({b}, {t}): the test item {iid} is its own demonstration"
                assert text.rstrip().endswith("Answer:") and questions[iid] in text[text.rstrip().rfind("Question:"):]
                seen.update(demos)
            assert len(seen) > k  # drawn per test item, not one fixed set
            if b == t == 1:
                assert rendered_contexts(tmp_path / f"icl-b{b}-t{t}", seed=7) == ctx  # same seed, same prompts
                assert rendered_contexts(tmp_path / f"icl-b{b}-t{t}", seed=8) != ctx
    # each demonstration is shown exactly as SFT trains on it: training prompt + training target
    from crossdiff.prompts.format import PromptFormat

    fmt = PromptFormat.from_config({})
    by_id = {r["item_id"]: r for r in items.to_dicts()}
    for text in rendered_contexts(tmp_path / "icl-b0-t1", seed=7).values():
        for d in _demos(text, questions):
            rec = fmt.sft_record(by_id[d])
            assert rec["prompt"] + rec["completion"] + "\n\n" in text


def test_too_few_training_items_and_bad_k_are_refused(tmp_path):
    _setup(tmp_path, 0.0)
    with pytest.raises(CrossdiffError, match="bin 0 has only 19 training item"):  # 20 items, minus the test item
        make_icl_task(tmp_path / "task0", tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, 20, tmp_path / "x")
    assert ks_of({"k": 8}) == [8] and ks_of({"k": [16, 4, 4]}) == [4, 16]
    with pytest.raises(CrossdiffError, match="k = 0 row"):
        ks_of({"k": [0, 2]})
    assert parse_result_label("icl-k8-3") == (8, 3) and parse_result_label(eval_label(8, 3)) == (8, 3)
    assert parse_result_label("3") is None and parse_result_label("set-easy") is None


def test_every_icl_cell_of_a_model_with_one_model_load(tmp_path):
    import crossdiff.evaluate.run as ev
    from crossdiff.cli import main
    from crossdiff.models.tiny import build_base_model

    _setup(tmp_path, 0.5)
    build_base_model(tmp_path / "base", tmp_path / "items.parquet", SMALL)
    loads = ev.MODEL_LOADS
    assert main(["evaluate-icl", "--model", str(tmp_path / "base"), "--model-name", "tiny",
                 "--tasks", *[str(tmp_path / f"task{t}") for t in range(3)], "--items", str(tmp_path / "items.parquet"),
                 "--bins", str(tmp_path / "bins.parquet"), "--k", "1", "2", "--train-bins", "0", "2",
                 "--seed", "5", "--outdir", str(tmp_path / "eval"), "--settings", '{"batch_size": 16, "device": "cpu"}']) == 0
    assert ev.MODEL_LOADS == loads + 1  # 2 k x 2 train bins x 3 test bins = 12 cells, one load
    files = sorted(p.relative_to(tmp_path / "eval").as_posix() for p in (tmp_path / "eval").rglob("*.json"))
    assert files == sorted(f"icl-k{k}-train{b}/bin{t}.json" for k in (1, 2) for b in (0, 2) for t in range(3))
    rec = json.loads((tmp_path / "eval/icl-k2-train0/bin1.json").read_text())
    assert rec["train_bin"] == "icl-k2-0" and rec["test_bin"] == 1 and rec["n_items"] == 10


ICL = STUDY.replace("gpu: 1", "gpu: 0") + "study: {methods: [sft, icl], icl: {k: [2], seed: 3}}\nbins: {n_bins: 3, holdout_fraction: 0.5}\n"
ICL = ICL.replace("bins: {n_bins: 3}\n", "")


def test_dag_plans_one_icl_job_per_model_and_dataset(tmp_path):
    wd = make_workdir(tmp_path, ICL.replace("LOCKS", str(tmp_path / "locks")))
    proc = snakemake(wd, "-n", "-p", "--cores", "1")
    jobs = planned_jobs(proc)
    assert jobs["evaluate_icl"] == 1 and jobs["finetune"] == 3 and jobs["plot_results_method"] == 1
    out = proc.stdout + proc.stderr
    assert "crossdiff evaluate-icl --model results/models/tiny --model-name tiny" in out
    assert "--k 2 --train-bins 0 1 2 --seed 3" in out
    only = make_workdir(tmp_path / "only", ICL.replace("methods: [sft, icl]", "methods: [icl]").replace("LOCKS", str(tmp_path / "l")))
    jobs = planned_jobs(snakemake(only, "-n", "--cores", "1"))
    assert "finetune" not in jobs and jobs["evaluate_icl"] == 1 and "plot_results" not in jobs


def test_dag_end_to_end_sft_and_icl_side_by_side(tmp_path):
    wd = make_workdir(tmp_path, ICL.replace("LOCKS", str(tmp_path / "locks")))
    snakemake(wd, "--cores", "2", timeout=600)
    table = pl.read_parquet(wd / "results/tables/results.parquet")
    assert sorted(set(table["method"])) == ["icl-k2", "sft", "zero-shot"]
    for m in ("sft", "icl-k2"):
        part = table.filter(pl.col("method") == m)
        assert part.height == 9 and sorted(set(part["train_bin"])) == ["0", "1", "2"]
        assert part["gain_lo"].null_count() == 0 and ((part["gain_lo"] <= part["gain"]) & (part["gain"] <= part["gain_hi"])).all()
    assert "icl.log" in {p.name for p in (wd / "logs/evaluate/tiny/mini").iterdir()}
    assert "loaded model 1 time(s) in this process" in (wd / "logs/evaluate/tiny/mini/icl.log").read_text()
    for name in ("tiny/gain.png", "icl-k2/tiny/gain.png", "icl-k2/tiny/accuracy.png"):
        assert (wd / "results/figures/mini" / name).stat().st_size > 10_000, name
    summary = pl.read_csv(wd / "results/tables/summary.csv")
    assert sorted(summary["method"].to_list()) == ["icl-k2", "sft"]
    text = (wd / "results/summary/summary.rst").read_text()
    assert text.index("(method=sft)") < text.index("(method=icl-k2)")  # SFT's paragraph, then ICL's
    assert text.count("data:image/png") == 2  # the front page: SFT's gain heatmap and ICL's, side by side


def test_chat_models_get_the_demonstrations_as_user_assistant_turns(tmp_path):
    from transformers import AutoTokenizer

    from conftest import REPO
    from crossdiff.models.tiny import build_base_model

    items, _ = _setup(tmp_path, 0.5)
    build_base_model(tmp_path / "base", tmp_path / "items.parquet", {**SMALL, "warmup_steps": 1})
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "base"))
    tok.chat_template = (REPO / "tests" / "fixtures" / "chat" / "qwen2.5.jinja").read_text()
    make_icl_task(tmp_path / "task2", tmp_path / "items.parquet", tmp_path / "bins.parquet", 0, 2, tmp_path / "icl")
    ctx = rendered_contexts(tmp_path / "icl", seed=1, tokenizer=tok)
    text = next(iter(ctx.values()))
    # two demonstrations as user/assistant turns of one conversation, then the question's user turn
    assert text.count("<|im_start|>user") == 3 and text.count("<|im_start|>assistant") == 3, text
    assert re.search(r"<\|im_start\|>assistant\n-?\d+<\|im_end\|>", text), text  # the demonstration's answer
    assert text.endswith("<|im_start|>assistant\n")
    assert ctx == rendered_contexts(tmp_path / "icl", seed=1, tokenizer=tok)
