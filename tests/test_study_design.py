"""Study designs (crossdiff.study.designs): held-out split, train sets, subsamples, curricula, seeds, bins.by."""

import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import polars as pl
import pytest

from crossdiff.bins import holdout
from crossdiff.study import designs as study
from crossdiff.results.aggregate import aggregate, hierarchical_bootstrap, paired_bootstrap
from crossdiff.bins.make import add_measure, make_bins
from crossdiff.errors import CrossdiffError


def _bins(n_items=100, n_bins=5):
    items = pl.DataFrame({"item_id": [f"q{i:03d}" for i in range(n_items)],
                          "difficulty": np.linspace(-2, 2, n_items)[::-1].copy()})
    table, _ = make_bins(items, n_bins)
    return table


# ------------------------------------------------------------------------------ held-out split
def test_holdout_disjoint_sized_and_seeded():
    table = holdout.holdout_split(_bins(103, 5), 0.3, seed=7)
    for b, part in table.group_by("bin"):
        size = part.height
        held = part.filter(pl.col("heldout"))
        assert held.height == round(0.3 * size)  # sized as configured, per bin
    train_ids = set(holdout.training_part(table)["item_id"])
    test_ids = set(holdout.heldout_part(table)["item_id"])
    assert not train_ids & test_ids and len(train_ids | test_ids) == 103  # disjoint, nothing lost
    again = holdout.holdout_split(_bins(103, 5), 0.3, seed=7)
    assert again["heldout"].to_list() == table["heldout"].to_list()  # same for a seed
    other = holdout.holdout_split(_bins(103, 5), 0.3, seed=8)
    assert other["heldout"].to_list() != table["heldout"].to_list()


def test_holdout_needs_both_parts_in_every_bin():
    with pytest.raises(CrossdiffError, match="bin 0 has 4 items"):
        holdout.holdout_split(_bins(20, 5), 0.1)


def test_holdout_through_the_cli_keeps_default_table_unchanged(tmp_path):
    from crossdiff.cli import main

    items = pl.DataFrame({"item_id": [f"q{i}" for i in range(50)], "difficulty": np.arange(50.0),
                          "accuracy": np.linspace(1, 0, 50)})
    items.write_parquet(tmp_path / "irt.parquet")
    args = ["make-bins", "--items", str(tmp_path / "irt.parquet"), "--n-bins", "5"]
    assert main(args + ["--output", str(tmp_path / "a.parquet"), "--summary", str(tmp_path / "a.csv")]) == 0
    assert pl.read_parquet(tmp_path / "a.parquet").columns == ["item_id", "difficulty", "accuracy", "bin"]
    assert main(args + ["--output", str(tmp_path / "b.parquet"), "--summary", str(tmp_path / "b.csv"),
                        "--holdout-fraction", "0.2", "--holdout-seed", "3"]) == 0
    b = pl.read_parquet(tmp_path / "b.parquet")
    assert b.drop("heldout").equals(pl.read_parquet(tmp_path / "a.parquet"))  # same bins, one more column
    assert pl.read_csv(tmp_path / "b.csv")["n_heldout"].to_list() == [2] * 5


# ------------------------------------------------------------------------------ training sets
def test_train_set_of_bins_at_size_k_draws_k_items_from_those_bins():
    table = holdout.holdout_split(_bins(100, 5), 0.2, seed=0)
    chosen = study.select_training_items(table, [0, 1, 2], size=31, sample_seed=4)
    assert chosen.height == 31
    assert set(chosen["bin"].to_list()) == {0, 1, 2}
    assert chosen["item_id"].n_unique() == 31
    assert not chosen["heldout"].any()  # never a held-out item
    assert sorted(chosen.group_by("bin").len()["len"].to_list()) == [10, 10, 11]  # equal shares
    assert chosen["item_id"].to_list() == study.select_training_items(table, [0, 1, 2], 31, sample_seed=4)["item_id"].to_list()


def test_subsamples_are_nested_and_too_large_sizes_fail_loudly():
    table = _bins(100, 5)
    small = set(study.select_training_items(table, [3], size=5, sample_seed=1)["item_id"])
    large = set(study.select_training_items(table, [3], size=15, sample_seed=1)["item_id"])
    assert len(small) == 5 and len(large) == 15 and small < large
    with pytest.raises(CrossdiffError, match="bin 3, which has only 20 training items"):
        study.select_training_items(table, [3], size=21)


def test_curricula_are_ordered_by_difficulty():
    table = _bins(100, 5)
    up = study.select_training_items(table, [0, 1, 2, 3, 4], size=25, order="easy_to_hard")
    down = study.select_training_items(table, [0, 1, 2, 3, 4], size=25, order="hard_to_easy")
    assert np.all(np.diff(up["difficulty"].to_numpy()) >= 0)
    assert down["item_id"].to_list() == up["item_id"].to_list()[::-1]
    assert up["bin"].to_list() == sorted(up["bin"].to_list())


def test_labels_and_design_grid():
    cfg = {"train_bins": [0, 2], "train_sets": {"easy": {"bins": [0, 1]}, "up": {"bins": "all", "order": "easy_to_hard"}},
           "train_sizes": [10, None], "seeds": [1, 2]}
    runs = study.design_runs(cfg, 3)
    assert len(runs) == 4 * 2 * 2 and len(set(runs)) == 16
    assert "bin2-n10-seed1" in runs and "set-up-seed2" in runs
    assert study.design_runs({}, 3) == ["bin0", "bin1", "bin2"]  # today's runs
    assert study.eval_label("bin2-n10-seed1") == "train2-n10-seed1" and study.run_of_eval("train2-n10-seed1") == "bin2-n10-seed1"
    assert study.sft_label("set-up-n10-seed2") == "set-up-n10"
    assert study.result_train_bin("bin3") == "3"
    assert study.parse_label("3-n10-seed1") == {"bin": 3, "set": None, "n": 10, "seed": 1, "cell": "3-n10"}
    assert study.design_layer(cfg, "set-up-seed2", 3) == {"seed": 2, "shuffle": False}
    assert study.design_layer(cfg, "bin0", 3) is None  # plain run: the config's settings
    with pytest.raises(CrossdiffError, match="outside 0..2"):
        study.design_runs({"train_sets": {"x": {"bins": [1, 5]}}}, 3)


# ------------------------------------------------------------------------------ seeds
def test_seed_and_item_interval_wider_than_item_only_when_seeds_disagree():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 200).astype(float)
    runs = []
    for shift in (-25, 0, 25, 50):  # four seeds with clearly different gains
        r = base.copy()
        idx = np.flatnonzero(base == 0 if shift > 0 else base == 1)[: abs(shift)]
        r[idx] = 1.0 if shift > 0 else 0.0
        runs.append(r)
    runs = np.array(runs)
    lo_h, hi_h = hierarchical_bootstrap(runs, base, n_boot=2000, seed=1)
    lo_i, hi_i = paired_bootstrap(runs.mean(axis=0), base, n_boot=2000, seed=1)
    gain = runs.mean() - base.mean()
    assert lo_h <= gain <= hi_h and lo_i <= gain <= hi_i
    assert hi_h - lo_h > 1.5 * (hi_i - lo_i)
    # seeds that agree: the two intervals are about as wide
    same = np.array([runs[2]] * 4)
    lo_s, hi_s = hierarchical_bootstrap(same, base, n_boot=2000, seed=1)
    lo_p, hi_p = paired_bootstrap(runs[2], base, n_boot=2000, seed=1)
    assert abs((hi_s - lo_s) - (hi_p - lo_p)) < 0.25 * (hi_p - lo_p)


def _write(d, train, test, correct):
    name = f"{train}_bin{test}"
    (d / f"{name}.samples.jsonl").write_text("".join(json.dumps({"item_id": f"i{k}", "correct": int(c)}) + "\n"
                                                     for k, c in enumerate(correct)))
    p = d / f"{name}.json"
    p.write_text(json.dumps({"model": "m", "dataset": "d", "train_bin": train, "test_bin": test, "metric": "acc",
                             "value": float(np.mean(correct)), "n_items": len(correct), "samples": f"{name}.samples.jsonl"}))
    return p


def test_aggregate_averages_seeds_and_labels_designs(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2, 80)
    paths = [_write(tmp_path, "zero-shot", 0, base)]
    for seed, k in ((1, 5), (2, 25)):
        c = base.copy()
        c[np.flatnonzero(base == 0)[:k]] = 1
        paths.append(_write(tmp_path, f"1-n20-seed{seed}", 0, c))
    paths.append(_write(tmp_path, "set-easy", 0, base))
    df = aggregate(paths, {"n_boot": 300})
    cell = df.filter(pl.col("train_bin") == "1-n20").row(0, named=True)
    assert cell["n_seeds"] == 2 and cell["train_size"] == 20 and cell["train_bin_index"] == 1 and cell["bin_gap"] == 1
    assert cell["gain"] == pytest.approx(15 / 80)
    assert cell["seed_sd"] == pytest.approx(np.std([5 / 80, 25 / 80], ddof=1))
    s = df.filter(pl.col("train_bin") == "set-easy").row(0, named=True)
    assert s["train_set"] == "easy" and s["train_bin_index"] is None and s["n_seeds"] == 1 and s["gain"] == 0
    assert df["train_bin"].to_list() == ["zero-shot", "set-easy", "1-n20"]


# ------------------------------------------------------------------------------ bins.by
def test_bins_by_an_item_column_and_its_agreement_with_irt():
    from crossdiff.bins.agreement import agreement

    irt = pl.DataFrame({"item_id": [f"q{i}" for i in range(60)], "difficulty": np.arange(60.0)})
    items = pl.DataFrame({"item_id": [f"q{i}" for i in range(60)], "n_ops": [i // 12 for i in range(60)],
                          "question": ["x" * (60 - i) for i in range(60)]})
    table, summary = make_bins(add_measure(irt, items, "n_ops"), 5, key="measure")
    assert table["bin"].to_list() == [i // 12 for i in range(60)]
    assert table.columns == ["item_id", "difficulty", "measure", "bin"]
    row, cross = agreement(table, 5, "n_ops")
    assert row["same_bin_share"] == 1.0 and 0.97 < row["spearman_measure_irt"] < 1  # ties: 5 values
    # length of the question is the reverse of IRT difficulty here: only the middle bin agrees
    table, _ = make_bins(add_measure(irt, items, "length:question"), 5, key="measure")
    row, cross = agreement(table, 5, "length:question")
    assert row["spearman_measure_irt"] == pytest.approx(-1.0) and row["same_bin_share"] == pytest.approx(0.2)
    assert cross.sum() == 60 and np.trace(cross[::-1]) == 60
    with pytest.raises(CrossdiffError, match="column 'question' is String, expected numbers"):
        add_measure(irt, items, "question")
    with pytest.raises(CrossdiffError, match="1 item.s. have no value"):
        add_measure(irt, items.head(59), "n_ops")


# ------------------------------------------------------------------------------ the trainer's order
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from crossdiff.models.tiny import build_base_model
    from crossdiff.items.synthetic import generate_items

    root = tmp_path_factory.mktemp("tiny_order")
    items = generate_items(40, seed=5)
    items.write_parquet(root / "items.parquet")
    bins = pl.DataFrame({"item_id": items["item_id"], "difficulty": items["question_length"].cast(pl.Float64),
                         "bin": (items["question_length"].rank("ordinal").cast(pl.Int64) - 1) * 2 // 40})
    bins.write_parquet(root / "bins.parquet")
    small = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "warmup_problems": 100,
             "warmup_steps": 2, "batch_size": 16, "eval_items": 0}
    build_base_model(root / "base", root / "items.parquet", small)
    return root


@pytest.mark.parametrize("order", ["easy_to_hard", "hard_to_easy"])
def test_curriculum_trains_in_order(tiny, order):
    """The trainer's own dataloader yields the curriculum's examples in file order (sequential sampler)."""
    from crossdiff.finetune.run import build_trainer, read_sft_jsonl, resolve_settings
    from crossdiff.prompts.format import PromptFormat

    out = tiny / f"{order}.jsonl"
    study.make_train_set(tiny / "items.parquet", tiny / "bins.parquet", [0, 1], out, size=24, order=order)
    rows = read_sft_jsonl(out)
    assert len(rows) == 24
    diffs = pl.read_parquet(tiny / "bins.parquet").select("item_id", "difficulty")
    d = dict(zip(diffs["item_id"], diffs["difficulty"]))
    seq = [d[r["item_id"]] for r in rows]
    assert seq == sorted(seq, reverse=order == "hard_to_easy")

    def loader_prompts(shuffle):
        s = resolve_settings({"per_device_train_batch_size": 4, "shuffle": shuffle, "num_train_epochs": 1})
        trainer, tok, _ = build_trainer(tiny / "base", rows, tiny / f"w_{order}_{shuffle}", s, PromptFormat())
        seen = []
        for batch in trainer.get_train_dataloader():
            for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
                n_prompt = next(i for i, x in enumerate(labels) if x != -100)
                seen.append(tok.decode(ids[:n_prompt]))
        return seen

    prompts = [r["prompt"] for r in rows]
    assert loader_prompts(False) == prompts  # trained in curriculum order
    shuffled = loader_prompts(True)
    assert sorted(shuffled) == sorted(prompts) and shuffled != prompts  # the default shuffles


# ------------------------------------------------------------------------------ size x difficulty
def test_best_train_bin_per_size_with_interval(tmp_path):
    """Constructed: at n=10 bin 0 is clearly best, at n=40 bin 2 is; the figure and table follow."""
    from crossdiff.results.sizes import best_bins, plot

    rng = np.random.default_rng(0)
    bins = pl.DataFrame({"item_id": [f"t{i}" for i in range(90)], "difficulty": np.arange(90.0), "bin": [i // 30 for i in range(90)]})
    bins.write_parquet(tmp_path / "bins.parquet")
    base = {t: rng.integers(0, 2, 50) for t in range(3)}

    def run(label, t, extra, d):
        c = base[t].copy()
        zeros = np.flatnonzero(c == 0)
        c[zeros[:extra]] = 1
        d.mkdir(exist_ok=True)
        return _write(d, label, t, c)

    paths = [run("zero-shot", t, 0, tmp_path / "zs") for t in range(3)]
    gains = {10: {0: 12, 1: 4, 2: 0}, 40: {0: 2, 1: 5, 2: 14}, None: {0: 1, 1: 6, 2: 16}}
    for n, per_bin in gains.items():
        for b, g in per_bin.items():
            for seed in (1, 2):
                label = f"{b}" + (f"-n{n}" if n else "") + f"-seed{seed}"
                paths += [run(label, t, g + seed, tmp_path / label) for t in range(3)]
    best, acc = best_bins(paths, tmp_path / "bins.parquet", {"n_boot": 300})
    rows = {r["train_size"]: r for r in best.iter_rows(named=True)}
    assert sorted(rows) == [10, 30, 40]  # the full-size run's n is its bin's training count
    assert rows[10]["best_train_bin"] == 0 and rows[40]["best_train_bin"] == 2 and rows[30]["best_train_bin"] == 2
    assert rows[10]["best_lo"] <= 0 <= rows[10]["best_hi"] and rows[10]["best_share"] > 0.8
    overall = acc.filter((pl.col("test") == "overall") & (pl.col("train_size") == 10) & (pl.col("train_bin") == 0))
    expected = np.mean([np.concatenate([np.r_[base[t]] for t in range(3)]).mean() + 3 * (12 + s) / 150 for s in (1, 2)])  # +12+seed per test bin
    assert overall["accuracy"][0] == pytest.approx(expected)
    written = plot(best, acc, tmp_path / "fig", "d")
    assert [p.split("fig/")[1] for p in written] == ["m/size_difficulty.png", "best_train_bin.png"]
    assert all((tmp_path / "fig" / p.split("fig/")[1]).stat().st_size > 10_000 for p in written)


def test_heatmap_rows_and_diagonal():
    from crossdiff.results.heatmaps import _diagonal, _row_order

    assert _row_order(["set-hard", "10", "2", "2-n50", "set-easy", "2-n10"]) == ["2-n10", "2-n50", "2", "10", "set-easy", "set-hard"]
    assert _diagonal("2", 2) and _diagonal("2-n50", 2) and not _diagonal("2", 1) and not _diagonal("set-easy", 0)


def test_plot_results_shows_the_diagonal_only_when_asked(tmp_path, monkeypatch):
    import seaborn as sns

    from crossdiff.results import heatmaps

    rows = [{"model": "m", "dataset": "d", "train_bin": tb, "test_bin": t, "value": 0.5, "gain": 0.1 * (t + 1),
             "significant": False} for tb in ("zero-shot", "0", "1", "set-all") for t in (0, 1)]
    masks = []
    real = sns.heatmap
    monkeypatch.setattr(sns, "heatmap", lambda data, **kw: masks.append(kw.get("mask")) or real(data, **kw))
    heatmaps.plot_all(pl.DataFrame(rows), tmp_path / "a", "d")
    heatmaps.plot_all(pl.DataFrame(rows), tmp_path / "b", "d", show_diagonal=True)
    gain_masks = [m for m in masks if m is not None]
    assert gain_masks[0].tolist() == [[True, False], [False, True], [False, False]]  # rows 0, 1, set-all
    assert not gain_masks[1].any()


def test_make_bins_by_a_column_and_bin_agreement_through_the_cli(tmp_path):
    from crossdiff.cli import main

    n = 60
    irt = pl.DataFrame({"item_id": [f"q{i}" for i in range(n)], "difficulty": np.arange(n, dtype=float),
                        "accuracy": np.linspace(1, 0, n)})
    irt.write_parquet(tmp_path / "irt.parquet")
    items = pl.DataFrame({"item_id": [f"q{i}" for i in range(n)], "level": [(i * 7) % 5 + 1 for i in range(n)],
                          "question": ["?"] * n, "answer": ["1"] * n})
    items.write_parquet(tmp_path / "items.parquet")
    args = ["make-bins", "--items", str(tmp_path / "irt.parquet"), "--n-bins", "5", "--by", "level",
            "--item-table", str(tmp_path / "items.parquet"), "--output", str(tmp_path / "bins.parquet"),
            "--summary", str(tmp_path / "summary.csv"), "--holdout-fraction", "0.25"]
    assert main(args) == 0
    bins = pl.read_parquet(tmp_path / "bins.parquet")
    assert bins.group_by("bin").agg(pl.col("measure").n_unique())["measure"].to_list() == [1] * 5  # 12 per level
    assert bins.filter(pl.col("heldout")).height == 15
    assert main(["bin-agreement", "--bins", str(tmp_path / "bins.parquet"), "--n-bins", "5", "--by", "level",
                 "--output", str(tmp_path / "agreement.csv"), "--figure", str(tmp_path / "agreement.png")]) == 0
    row = pl.read_csv(tmp_path / "agreement.csv").row(0, named=True)
    assert row["n_items"] == n and row["distinct_measure_values"] == 5 and 0 <= row["same_bin_share"] <= 1
    assert abs(row["spearman_measure_irt"]) < 0.3  # level is unrelated to difficulty here
    assert (tmp_path / "agreement.png").stat().st_size > 10_000
    # binning by a column of a dataset without it fails with the column's name
    assert main(args[:6] + ["nope"] + args[7:]) == 2


def test_plot_results_with_only_train_sets_writes_every_declared_figure(tmp_path):
    from crossdiff.results import heatmaps

    rows = [{"model": "m", "dataset": "d", "train_bin": tb, "test_bin": t, "value": 0.5, "gain": 0.1 * t,
             "significant": False} for tb in ("zero-shot", "set-easy", "set-hard") for t in (0, 1)]
    written = heatmaps.plot_all(pl.DataFrame(rows), tmp_path, "d")
    assert sorted(p.split(str(tmp_path) + "/")[1] for p in written) == [
        "gain_vs_gap.png", "m/accuracy.png", "m/gain.png", "zero_shot.png"]
