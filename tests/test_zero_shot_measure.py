"""bins.by: zero_shot:<slug>: the base model's own zero-shot error as the difficulty measure."""

import polars as pl
import pytest

from conftest import make_workdir, snakemake
from crossdiff.bins.make import add_measure, make_bins
from crossdiff.cli import main
from crossdiff.errors import CrossdiffError
from crossdiff.evaluate.zero_shot import check_by, measure_table
from test_study_workflow import STUDY, planned_jobs


def _irt(n=10):
    # difficulty descends with the id, so IRT order and item_id order disagree
    return pl.DataFrame({"item_id": [f"i{k:02d}" for k in range(n)], "difficulty": [float(n - k) for k in range(n)]})


def test_measure_is_one_minus_correct_and_every_item_must_be_scored():
    samples = [{"item_id": f"i{k:02d}", "correct": k % 3 == 0} for k in range(10)]
    table = measure_table(samples, [f"i{k:02d}" for k in range(10)])
    assert table["measure"].to_list() == [0.0 if k % 3 == 0 else 1.0 for k in range(10)]
    with pytest.raises(CrossdiffError, match="1 item\\(s\\) of the IRT table were not scored.*i10"):
        measure_table(samples, [f"i{k:02d}" for k in range(11)])
    with pytest.raises(CrossdiffError, match="scored twice"):
        measure_table(samples + samples[:1], [f"i{k:02d}" for k in range(10)])


def test_zero_shot_bins_are_equal_size_with_ties_in_irt_order():
    irt = _irt(10)
    samples = [{"item_id": f"i{k:02d}", "correct": int(k < 4)} for k in range(10)]  # i00..i03 right
    items = add_measure(irt, measure_table(samples, irt["item_id"].to_list()), "measure")
    table, summary = make_bins(items, 3, key="measure", tiebreak=("difficulty",))
    assert summary["size"].to_list() == [4, 3, 3]
    # right items first (easiest IRT first: i03 has the lowest difficulty), then wrong ones in IRT order
    assert table["item_id"].to_list() == ["i03", "i02", "i01", "i00", "i09", "i08", "i07", "i06", "i05", "i04"]
    assert table["bin"].to_list() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    # equal IRT difficulty too: item_id decides, and the result does not depend on the input order
    flat = items.with_columns(pl.lit(1.0).alias("difficulty"))
    a, _ = make_bins(flat, 3, key="measure", tiebreak=("difficulty",))
    b, _ = make_bins(flat.reverse(), 3, key="measure", tiebreak=("difficulty",))
    assert a.equals(b) and a["item_id"].to_list()[:4] == ["i00", "i01", "i02", "i03"]


def test_make_bins_cli_by_zero_shot(tmp_path):
    irt = _irt(9)
    irt.write_parquet(tmp_path / "irt.parquet")
    measure_table([{"item_id": f"i{k:02d}", "correct": int(k % 2)} for k in range(9)],
                  irt["item_id"].to_list()).write_parquet(tmp_path / "zs.parquet")
    base = ["make-bins", "--items", str(tmp_path / "irt.parquet"), "--n-bins", "3", "--by", "zero_shot:tiny",
            "--output", str(tmp_path / "bins.parquet"), "--summary", str(tmp_path / "summary.csv")]
    assert main(base) == 2  # no measure table: loud error, nothing written
    assert not (tmp_path / "bins.parquet").exists()
    assert main(base + ["--measure-table", str(tmp_path / "zs.parquet")]) == 0
    bins = pl.read_parquet(tmp_path / "bins.parquet")
    assert bins.group_by("bin").len().sort("bin")["len"].to_list() == [3, 3, 3]
    assert bins.filter(pl.col("bin") == 0)["measure"].to_list() == [0.0, 0.0, 0.0]  # odd ids right = easy


def test_unknown_model_slug_is_refused():
    check_by("mini", "irt", {"tiny": {}})
    check_by("mini", "zero_shot:tiny", {"tiny": {}})
    with pytest.raises(CrossdiffError, match=r"datasets.mini.bins.by = 'zero_shot:huge'.*\['tiny'\]"):
        check_by("mini", "zero_shot:huge", {"tiny": {}})


ZS = STUDY.replace("    responses: {source: simulated, n_models: 60, missing_rate: 0.05, n_duplicates: 0, seed: 2}",
                   "    responses: {source: simulated, n_models: 60, missing_rate: 0.05, n_duplicates: 0, seed: 2}\n"
                   "    bins: {by: 'zero_shot:tiny'}").replace("gpu: 1", "gpu: 0")


def test_dag_scores_the_base_model_before_binning_then_runs_the_study(tmp_path):
    assert "zero_shot:tiny" in ZS
    wd = make_workdir(tmp_path, ZS.replace("LOCKS", str(tmp_path / "locks")))
    proc = snakemake(wd, "-n", "-p", "--cores", "1")
    jobs = planned_jobs(proc)
    assert jobs["zero_shot_measure"] == 1 and jobs["make_bins"] == 1 and jobs["build_base_model"] == 1
    assert jobs["finetune"] == 3 and jobs["evaluate_zero_shot"] == 1 and jobs["bin_agreement"] == 1
    out = proc.stdout + proc.stderr
    assert "crossdiff zero-shot-measure --items results/items/mini.parquet --irt results/irt/mini/items.parquet" in out
    assert "--model results/models/tiny" in out
    assert "--by zero_shot:tiny --measure-table results/bins/mini/zero_shot_measure.parquet" in out
    # order: the scoring job comes after the base model and IRT fit, before make_bins and every study job
    order = [m for m in __import__("re").findall(r"^rule (\w+):", out, __import__("re").M)]
    for before, after in [("build_base_model", "zero_shot_measure"), ("fit_irt", "zero_shot_measure"),
                          ("zero_shot_measure", "make_bins"), ("make_bins", "make_task"), ("make_bins", "make_sft_data")]:
        assert order.index(before) < order.index(after), (before, after, order)


def test_unknown_slug_fails_at_parse_time(tmp_path):
    wd = make_workdir(tmp_path, ZS.replace("zero_shot:tiny", "zero_shot:nope").replace("LOCKS", str(tmp_path / "l")))
    proc = snakemake(wd, "-n", "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "datasets.mini.bins.by = 'zero_shot:nope': no model with slug 'nope'" in proc.stdout + proc.stderr


def test_zero_shot_measure_scores_every_item_with_one_model_load(tmp_path):
    """Real lm-eval run of a tiny built model over all items; the table agrees with its per-sample log."""
    import json

    import crossdiff.evaluate.run as ev
    from crossdiff.models.tiny import build_base_model
    from crossdiff.items.synthetic import generate_items

    items = generate_items(30, seed=5)
    items.write_parquet(tmp_path / "items.parquet")
    irt = items.select("item_id", pl.col("question_length").cast(pl.Float64).alias("difficulty")).head(24)
    irt.write_parquet(tmp_path / "irt.parquet")  # items filtered out before IRT are not scored
    small = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "warmup_problems": 100,
             "warmup_steps": 2, "batch_size": 16, "eval_items": 0}
    build_base_model(tmp_path / "base", tmp_path / "items.parquet", small)
    loads = ev.MODEL_LOADS
    out = tmp_path / "zs" / "zero_shot_measure.parquet"
    assert main(["zero-shot-measure", "--items", str(tmp_path / "items.parquet"), "--irt", str(tmp_path / "irt.parquet"),
                 "--model", str(tmp_path / "base"), "--model-name", "tiny", "--dataset", "mini",
                 "--settings", '{"batch_size": 8, "device": "cpu"}', "--output", str(out)]) == 0
    assert ev.MODEL_LOADS == loads + 1
    table = pl.read_parquet(out)
    assert sorted(table["item_id"].to_list()) == sorted(irt["item_id"].cast(pl.Utf8).to_list())
    samples = {r["item_id"]: r["correct"] for r in map(json.loads, (tmp_path / "zs" / "zero_shot_measure.samples.jsonl").open())}
    assert {r["item_id"]: 1 - r["measure"] for r in table.to_dicts()} == samples
    # a limit would leave items unscored: refused before the model loads
    assert main(["zero-shot-measure", "--items", str(tmp_path / "items.parquet"), "--irt", str(tmp_path / "irt.parquet"),
                 "--model", str(tmp_path / "base"), "--dataset", "mini", "--settings", '{"limit": 5}',
                 "--output", str(tmp_path / "x.parquet")]) == 2
    assert ev.MODEL_LOADS == loads + 1


def test_dag_bins_by_zero_shot_end_to_end(tmp_path):
    """The real jobs up to the bins: base model built, scored on every item, then binned by its error."""
    cfg = ZS  # the study test's tiny model: it gets part of the items right
    wd = make_workdir(tmp_path, cfg.replace("LOCKS", str(tmp_path / "locks")))
    snakemake(wd, "--cores", "2", "results/bins/mini/bins.parquet", "results/bins/mini/agreement.csv", timeout=300)
    measure = pl.read_parquet(wd / "results/bins/mini/zero_shot_measure.parquet")
    bins = pl.read_parquet(wd / "results/bins/mini/bins.parquet")
    irt = pl.read_parquet(wd / "results/irt/mini/items.parquet")
    assert measure.height == irt.height == bins.height
    assert sorted(bins.group_by("bin").len()["len"].to_list()) == [irt.height // 3] * 3
    joined = bins.join(measure.select("item_id", pl.col("measure").alias("m")), on="item_id")
    assert (joined["measure"] == joined["m"]).all()
    assert 0 < measure["measure"].sum() < measure.height, "the tiny model should get some, not all, items right"
    # bins ordered by the measure: no wrong item in a lower bin than a right one
    assert joined.filter(pl.col("m") == 1)["bin"].min() >= joined.filter(pl.col("m") == 0)["bin"].max()
    assert "zero-shot on" in (wd / "logs/zero_shot_measure/mini.log").read_text()
