"""bins.by: loss:<slug>: the base model's mean NLL of each item's training target as the difficulty measure."""

import polars as pl
import pytest

from conftest import make_workdir, snakemake
from crossdiff.cli import main
from crossdiff.errors import CrossdiffError
from crossdiff.evaluate.loss_measure import check_by
from test_study_workflow import STUDY, planned_jobs

SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "warmup_problems": 100,
         "warmup_steps": 2, "batch_size": 16, "eval_items": 0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from crossdiff.items.synthetic import generate_items
    from crossdiff.models.tiny import build_base_model

    d = tmp_path_factory.mktemp("loss")
    items = generate_items(30, seed=5)
    items.write_parquet(d / "items.parquet")
    irt = items.select("item_id", pl.col("question_length").cast(pl.Float64).alias("difficulty")).head(24)
    irt.write_parquet(d / "irt.parquet")
    build_base_model(d / "base", d / "items.parquet", SMALL)
    return d


def _direct_nll(model_dir, prompt: str, completion: str) -> float:
    """Mean NLL of the completion (+ EOS, as SFTTrainer trains it) given the prompt, one item at a time,
    with transformers' own loss (labels -100 on the prompt)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    p = tok(prompt)["input_ids"]
    full = tok(prompt + completion + tok.eos_token)["input_ids"]
    assert full[:len(p)] == p
    labels = torch.tensor([[-100] * len(p) + full[len(p):]])
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([full]), labels=labels).loss)


def test_measure_equals_a_direct_transformers_computation_with_one_load(tiny):
    import crossdiff.evaluate.loss_measure as lm
    from crossdiff.prompts.format import PromptFormat

    loads = lm.MODEL_LOADS
    out = tiny / "loss.parquet"
    # batch 5 over 24 items of different lengths: padding within batches must not change a value
    assert main(["loss-measure", "--items", str(tiny / "items.parquet"), "--irt", str(tiny / "irt.parquet"),
                 "--model", str(tiny / "base"), "--model-name", "tiny",
                 "--settings", '{"batch_size": 5, "device": "cpu"}', "--output", str(out)]) == 0
    assert lm.MODEL_LOADS == loads + 1
    table = pl.read_parquet(out)
    irt = pl.read_parquet(tiny / "irt.parquet")
    assert sorted(table["item_id"].to_list()) == sorted(irt["item_id"].to_list())
    assert table["measure"].n_unique() > 10 and (table["measure"] > 0).all()
    items = {r["item_id"]: r for r in pl.read_parquet(tiny / "items.parquet").to_dicts()}
    fmt = PromptFormat.from_config({})
    by_id = dict(zip(table["item_id"], table["measure"]))
    for iid in sorted(by_id)[:3]:
        rec = fmt.sft_record(items[iid])
        assert by_id[iid] == pytest.approx(_direct_nll(tiny / "base", rec["prompt"], rec["completion"]), abs=1e-4)
    # every item must be scored: a limit is refused before the model loads
    assert main(["loss-measure", "--items", str(tiny / "items.parquet"), "--irt", str(tiny / "irt.parquet"),
                 "--model", str(tiny / "base"), "--settings", '{"limit": 5}', "--output", str(tiny / "x.parquet")]) == 2
    assert lm.MODEL_LOADS == loads + 1


def test_chat_tokenization_targets_the_assistant_turn(tiny):
    """With a chat template, the target tokens are the assistant turn's (TRL's common-prefix rule)."""
    from transformers import AutoTokenizer

    from crossdiff.evaluate.loss_measure import tokenize_example
    from crossdiff.prompts.format import PromptFormat
    from conftest import REPO

    tok = AutoTokenizer.from_pretrained(str(tiny / "base"))
    tok.chat_template = (REPO / "tests" / "fixtures" / "chat" / "qwen2.5.jinja").read_text()
    fmt = PromptFormat.from_config({"instruction": "Add the numbers.\n"})
    item = pl.read_parquet(tiny / "items.parquet").to_dicts()[0]
    rec = fmt.sft_record(item)
    ids, n = tokenize_example(tok, rec, fmt)
    assert tok.decode(ids[:n]).endswith("<|im_start|>assistant\n")
    assert tok.decode(ids[n:]).startswith(rec["assistant"]) and "<|im_end|>" in tok.decode(ids[n:])


def test_loss_bins_are_equal_size_and_reproducible(tiny, tmp_path):
    out = tiny / "loss.parquet"
    if not out.exists():
        pytest.skip("needs the measure of the first test")
    irt = pl.read_parquet(tiny / "irt.parquet")
    args = ["make-bins", "--items", str(tiny / "irt.parquet"), "--n-bins", "4", "--by", "loss:tiny",
            "--summary", str(tmp_path / "s.csv")]
    assert main(args + ["--output", str(tmp_path / "b0.parquet")]) == 2  # no measure table: refused
    for k in (1, 2):
        assert main(args + ["--measure-table", str(out), "--output", str(tmp_path / f"b{k}.parquet")]) == 0
    a, b = pl.read_parquet(tmp_path / "b1.parquet"), pl.read_parquet(tmp_path / "b2.parquet")
    assert a.equals(b)
    assert a.group_by("bin").len()["len"].sort().to_list() == [irt.height // 4] * 4
    per_bin = a.group_by("bin").agg(pl.col("measure").min().alias("lo"), pl.col("measure").max().alias("hi")).sort("bin")
    assert (per_bin["hi"].head(3) <= per_bin["lo"].tail(3)).all()  # ordered by the loss


def test_unknown_model_slug_is_refused():
    check_by("mini", "irt", {"tiny": {}})
    check_by("mini", "loss:tiny", {"tiny": {}})
    with pytest.raises(CrossdiffError, match=r"datasets.mini.bins.by = 'loss:huge'.*\['tiny'\]"):
        check_by("mini", "loss:huge", {"tiny": {}})


LOSS = STUDY.replace("    responses: {source: simulated, n_models: 60, missing_rate: 0.05, n_duplicates: 0, seed: 2}",
                     "    responses: {source: simulated, n_models: 60, missing_rate: 0.05, n_duplicates: 0, seed: 2}\n"
                     "    bins: {by: 'loss:tiny'}").replace("gpu: 1", "gpu: 0")


def test_dag_scores_the_loss_before_binning(tmp_path):
    assert "loss:tiny" in LOSS
    wd = make_workdir(tmp_path, LOSS.replace("LOCKS", str(tmp_path / "locks")))
    proc = snakemake(wd, "-n", "-p", "--cores", "1")
    jobs = planned_jobs(proc)
    assert jobs["loss_measure"] == 1 and jobs["make_bins"] == 1 and jobs["bin_agreement"] == 1
    out = proc.stdout + proc.stderr
    assert "crossdiff loss-measure --items results/items/mini.parquet --irt results/irt/mini/items.parquet" in out
    assert "--by loss:tiny --measure-table results/bins/mini/loss_measure.parquet" in out
    assert "--measure loss:tiny=results/bins/mini/loss_measure.parquet" in out  # joins the Spearman figure
    bad = make_workdir(tmp_path / "bad", LOSS.replace("loss:tiny", "loss:nope").replace("LOCKS", str(tmp_path / "l")))
    proc = snakemake(bad, "-n", "--cores", "1", check=False)
    assert proc.returncode != 0 and "no model with slug 'nope'" in proc.stdout + proc.stderr


def test_dag_bins_by_loss_end_to_end(tmp_path):
    """The real jobs up to the bins: base model built, its loss on every item, bins by it, agreement and Spearman."""
    wd = make_workdir(tmp_path, LOSS.replace("LOCKS", str(tmp_path / "locks")))
    snakemake(wd, "--cores", "2", "results/bins/mini/bins.parquet", "results/bins/mini/agreement.csv",
              "results/figures/mini/difficulty/spearman.png", timeout=300)
    measure = pl.read_parquet(wd / "results/bins/mini/loss_measure.parquet")
    bins = pl.read_parquet(wd / "results/bins/mini/bins.parquet")
    irt = pl.read_parquet(wd / "results/irt/mini/items.parquet")
    assert measure.height == irt.height == bins.height
    assert sorted(bins.group_by("bin").len()["len"].to_list()) == [irt.height // 3] * 3
    joined = bins.join(measure.select("item_id", pl.col("measure").alias("m")), on="item_id")
    assert (joined["measure"] == joined["m"]).all()
    per_bin = joined.group_by("bin").agg(pl.col("m").min().alias("lo"), pl.col("m").max().alias("hi")).sort("bin")
    assert (per_bin["hi"].head(2) <= per_bin["lo"].tail(2)).all()
    agreement = pl.read_csv(wd / "results/bins/mini/agreement.csv")
    assert -1 <= agreement["spearman_measure_irt"][0] <= 1
    assert (wd / "results/figures/mini/difficulty/spearman.png").stat().st_size > 10_000  # with the loss column (dry-run test)
