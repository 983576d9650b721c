"""Several difficulty measures side by side (datasets.<name>.bins.measures, crossdiff.bins.measure_set), and a human
measure of Hase et al.'s data cutting the bins (bins.cutoffs) end to end through make_bins."""

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from conftest import REPO, make_workdir, snakemake
from crossdiff.cli import main
from crossdiff.config import deep_merge, validate
from crossdiff.plan.checks import problems
from crossdiff.plan.settings import Plan
from test_study_workflow import planned_jobs

HASE = REPO / "tests" / "fixtures" / "datasets" / "hase"


def config(bins, items=None, **over):
    base = {"datasets": {"d": {"items": items or {"source": "synthetic", "n_items": 60},
                               "responses": {"source": "simulated"}, "bins": bins}},
            "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3},
            "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}}}
    return validate(deep_merge(base, over))


def found(bins, items=None):
    return [p for p in problems(Plan(config(bins, items))) if "bins.measures" in p]


def test_parse_checks_name_each_bad_entry():
    assert not found({"measures": ["n_ops", "length:question", "answer_prob:m", "question_prob:m", "loss:m", "zero_shot:m"]})
    out = found({"by": "n_ops", "measures": ["answer_prob:huge", "nope", "length:nope", "n_ops", "irt", "published",
                                             "mdl2:m", "loss:m", "loss:m"]})
    assert len(out) == 8, out
    assert "measures[0] = 'answer_prob:huge': no model with slug 'huge'" in out[0] and "['m']" in out[0]
    assert "measures[1] = 'nope': the item table has no column 'nope'" in out[1] and "n_ops" in out[1]
    assert "measures[2] = 'length:nope': the item table has no column 'nope'" in out[2]
    assert "measures[3] = 'n_ops': that is bins.by" in out[3]
    assert "IRT difficulty is always shown" in out[4] and "published is a bins.by value only" in out[5]
    assert "measures[6] = 'mdl2:m': unknown measure 'mdl2'" in out[6] and "answer_prob:" in out[6]
    assert "measures[8] = 'loss:m': listed twice" in out[7]
    # an adapter that declares its columns: Hase et al.'s ARC columns are known before any job
    arc = {"source": "hub", "adapter": "arc_hase", "path": str(HASE / "arc"),
           "annotations": {"path": str(HASE / "arc-challenge-easy-annotations.json")}}
    assert not found({"measures": ["grade", "bloom", "depth_of_knowledge", "annotator_difficulty",
                                   "answer_num_words", "length:answer_text"]}, arc)
    assert "no column 'level'" in found({"measures": ["level"]}, arc)[0]
    # items whose columns are not known at parse: checked when the job reads the table
    assert not found({"measures": ["anything"]}, {"source": "hub", "adapter": "bbh", "path": "x"})


def test_agreement_rows_equal_a_direct_computation(tmp_path):
    rng = np.random.default_rng(3)
    n = 30
    ids = [f"i{k:02d}" for k in range(n)]
    diff = rng.normal(size=n)
    grade = np.clip(np.round(diff * 2 + 6), 3, 9)
    bins = pl.DataFrame({"item_id": ids, "difficulty": diff, "measure": grade,
                         "bin": np.where(grade <= 5, 0, np.where(grade >= 8, 2, 1)).astype(np.int32)})
    bins.write_parquet(tmp_path / "bins.parquet")
    other = rng.normal(size=n) + diff
    pl.DataFrame({"item_id": ids, "measure": other}).write_parquet(tmp_path / "m.parquet")
    pl.DataFrame({"item_id": ids, "question": ["x" * int(k) for k in rng.integers(1, 50, n)]}).write_parquet(tmp_path / "items.parquet")
    assert main(["bin-agreement", "--bins", str(tmp_path / "bins.parquet"), "--n-bins", "3", "--by", "grade",
                 "--column", "length:question", "--measure", f"answer_prob:m={tmp_path / 'm.parquet'}",
                 "--items", str(tmp_path / "items.parquet"), "--output", str(tmp_path / "a.csv"),
                 "--figure", str(tmp_path / "a.png")]) == 0
    rows = pl.read_csv(tmp_path / "a.csv")
    assert rows["by"].to_list() == ["grade", "length:question", "answer_prob:m"]  # bins.by, then the entries in order
    lengths = pl.read_parquet(tmp_path / "items.parquet")["question"].str.len_chars().to_numpy()
    for row, values in zip(rows.iter_rows(named=True), (grade, lengths, other)):
        assert row["spearman_measure_irt"] == pytest.approx(spearmanr(values, diff).statistic)
        assert row["spearman_measure_by"] == pytest.approx(spearmanr(values, grade).statistic)
        assert row["n_items"] == n
    # the entry's own bins: equal-size by its rank (ties of a table measure by IRT difficulty): 10 / 10 / 10
    order = np.lexsort((np.array(ids), diff, other))
    own = np.empty(n, int)
    own[order] = np.repeat([0, 1, 2], 10)
    irt = np.empty(n, int)
    irt[np.lexsort((np.array(ids), diff))] = np.repeat([0, 1, 2], 10)
    assert rows["same_bin_share"][2] == pytest.approx(np.mean(own == irt))
    assert (tmp_path / "a.png").stat().st_size > 10_000


def test_spearman_figure_joins_the_entries(tmp_path, monkeypatch):
    import crossdiff.bins.figures as figures

    ids = ["a", "b", "c", "d"]
    pl.DataFrame({"item_id": ids, "difficulty": [0.1, 0.5, 0.2, 0.9], "accuracy": [0.9, 0.5, 0.8, 0.1]}).write_parquet(tmp_path / "irt.parquet")
    pl.DataFrame({"item_id": ids, "question": ["q", "qqq", "qq", "qqqq"], "grade": [3, 5, 4, 8]}).write_parquet(tmp_path / "items.parquet")
    pl.DataFrame({"item_id": ids, "measure": [1.0, 3.0, 2.0, 4.0]}).write_parquet(tmp_path / "m.parquet")
    seen = {}
    real = figures.spearman
    monkeypatch.setattr(figures, "spearman", lambda irt, items, title: seen.update(cols=figures.feature_table(irt, items).columns) or real(irt, items, title))
    assert main(["plot-difficulty", "--figure", "spearman", "--irt-items", str(tmp_path / "irt.parquet"),
                 "--items", str(tmp_path / "items.parquet"), "--measure", f"question_prob:m={tmp_path / 'm.parquet'}",
                 "--column", "length:question", "--column", "grade", "--output", str(tmp_path / "s.png")]) == 0
    assert seen["cols"] == ["IRT difficulty", "observed accuracy", "grade", "question_prob:m", "length:question"]


ARC_BINS = """
datasets:
  arc:
    items: {source: hub, adapter: arc_hase, path: ARCDIR, annotations: {path: ANNFILE}}
    responses: {source: table, path: responses.csv}
    bins: {by: grade, cutoffs: [5, 8], measures: [bloom, 'length:question', 'answer_prob:tiny']}
irt: {engine: fast, holdout_fraction: 0, stability: {seeds: [], engines: []}}
bins: {n_bins: 3}
models:
  - id: tiny
    build: tiny
    build_settings: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, warmup_problems: 100,
                     warmup_steps: 2, batch_size: 16, eval_items: 0}
study: {datasets: []}
resources: {evaluate: {gpu: 0}, finetune: {gpu: 0}}
"""


def arc_workdir(path):
    from crossdiff.items.adapters import load_items

    text = ARC_BINS.replace("ARCDIR", str(HASE / "arc")).replace("ANNFILE", str(HASE / "arc-challenge-easy-annotations.json"))
    wd = make_workdir(path, text)
    items = load_items("arc_hase", {"path": str(HASE / "arc"), "annotations": {"path": str(HASE / "arc-challenge-easy-annotations.json")}})
    rng = np.random.default_rng(0)  # 40 simulated models, harder items at higher grades
    rows = [{"model_id": f"m{m:02d}", "item_id": iid, "correct": int(rng.random() < 1 / (1 + np.exp(-(th - (g - 5.5) / 1.5))))}
            for m, th in enumerate(rng.normal(size=40)) for iid, g in zip(items["item_id"], items["grade"])]
    pl.DataFrame(rows).write_csv(wd / "responses.csv")
    return wd, items


def test_dag_passes_the_entries_to_the_figure_and_agreement(tmp_path):
    wd, _ = arc_workdir(tmp_path)
    cfg = (wd / "config" / "config.yaml").read_text().replace("'answer_prob:tiny']", "'answer_prob:tiny', 'question_prob:tiny', 'loss:tiny']")
    (wd / "config" / "config.yaml").write_text(cfg)
    proc = snakemake(wd, "-n", "-p", "--cores", "1")
    jobs, out = planned_jobs(proc), proc.stdout + proc.stderr
    assert jobs["text_prob_measure"] == 1 and jobs["loss_measure_model"] == 1 and jobs["bin_agreement"] == 1
    tables = ("--measure answer_prob:tiny=results/bins/arc/measures/answer_prob/tiny.parquet "
              "--measure question_prob:tiny=results/bins/arc/measures/question_prob/tiny.parquet "
              "--measure loss:tiny=results/bins/arc/measures/loss/tiny.parquet")
    assert f"--items results/items/arc.parquet  --column bloom --column length:question {tables} --title arc" in out
    assert f"--by grade --column bloom --column length:question {tables} --items results/items/arc.parquet --title arc" in out
    assert "--by grade --item-table results/items/arc.parquet --cutoffs 5.0 8.0" in out  # bins.by still cuts the bins
    # answer_prob as bins.by: its per-model table orders the bins
    (wd / "config" / "config.yaml").write_text(cfg.replace("by: grade, cutoffs: [5, 8], measures: [bloom, 'length:question', 'answer_prob:tiny', ",
                                                           "by: 'answer_prob:tiny', measures: [bloom, 'length:question', "))
    out = snakemake(wd, "-n", "-p", "--cores", "1").stdout
    assert "--by answer_prob:tiny --measure-table results/bins/arc/measures/answer_prob/tiny.parquet" in out


def test_grade_cuts_the_bins_end_to_end_beside_the_other_measures(tmp_path):
    """Hase et al.'s ARC levels by grade (easy <= 5, hard >= 8) through make_bins, with bloom, question length and
    answer_prob computed and joined into the agreement table and Spearman figure."""
    wd, items = arc_workdir(tmp_path)
    snakemake(wd, "--cores", "2", "results/bins/arc/bins.parquet", "results/bins/arc/agreement.csv",
              "results/figures/arc/difficulty/spearman.png", timeout=600)
    bins = pl.read_parquet(wd / "results/bins/arc/bins.parquet").join(items.select("item_id", "grade"), on="item_id")
    assert bins.height == items.height == 9
    for row in bins.iter_rows(named=True):  # their rule on the item table's grade: <= 5 easy, >= 8 hard
        assert row["bin"] == (0 if row["grade"] <= 5 else 2 if row["grade"] >= 8 else 1), row
    assert sorted(bins.group_by("bin").len().sort("bin")["len"].to_list()) == [2, 3, 4]
    agreement = pl.read_csv(wd / "results/bins/arc/agreement.csv")
    assert agreement["by"].to_list() == ["grade", "bloom", "length:question", "answer_prob:tiny"]  # by, then the list
    assert agreement["spearman_measure_by"][0] == pytest.approx(1.0)
    answer = pl.read_parquet(wd / "results/bins/arc/measures/answer_prob/tiny.parquet")
    assert answer.height == 9 and (answer["measure"] > 0).all()
    assert agreement["n_items"].to_list() == [9] * 4
    assert (wd / "results/figures/arc/difficulty/spearman.png").stat().st_size > 10_000
