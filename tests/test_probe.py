"""Linear probes as Hase et al. 2024 (crossdiff.evaluate.probe): their fit against a direct computation of its
definition (models/probes.py), perfect accuracy on separable states, the option sets of generation items
(crossdiff.prompts.options) and the hidden states of the tiny model (crossdiff.evaluate.hidden)."""

import math

import numpy as np
import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.evaluate import probe
from crossdiff.evaluate.hidden import layer_indices
from crossdiff.prompts.format import PromptFormat
from crossdiff.prompts.options import candidate_values, option_sequences, options


def separable(n_items=120, n_opt=4, dim=16, seed=0):
    """States whose gold option is the one with the largest projection on a hidden direction."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_items, n_opt, dim)).astype(np.float32)
    direction = rng.normal(size=dim)
    gold = rng.integers(0, n_opt, size=n_items)
    X[np.arange(n_items), gold] += 3.0 * direction / np.linalg.norm(direction) * 4  # a clear margin
    return X, np.ones((n_items, n_opt), dtype=bool), gold


def test_probe_is_perfect_on_linearly_separable_states():
    X, mask, gold = separable()
    s = probe.resolve_settings({})
    fitted = probe.fit_probe(X[:80], mask[:80], gold[:80], s, seed=1)
    p = probe.predict(fitted, X[80:], mask[80:])
    assert (p.argmax(axis=1) == gold[80:]).mean() == 1.0
    assert np.allclose(p.sum(axis=1), 1.0)


def direct_fit(X, mask, gold, s, w0):
    """Their loop in numpy (probes.py:183-322 with MultipleChoiceClassifier and the supervised loss): z-scores,
    scores = Z w, softmax over options, loss -mean log p(gold) + l2 ||w||_2, clip the gradient norm, SGD, and the
    linear schedule over epochs / 0.9 steps."""
    rows = X[mask].astype(np.float64)
    mean, std = rows.mean(0), rows.std(0, ddof=1)
    Z = (X - mean) / std
    w = w0.astype(np.float64).copy()
    T = s["epochs"] / 0.9
    n = len(gold)
    for step in range(s["epochs"]):
        sc = Z @ w
        sc = sc - sc.max(1, keepdims=True)
        p = np.exp(sc) / np.exp(sc).sum(1, keepdims=True)
        onehot = np.eye(X.shape[1])[gold]
        g = np.einsum("io,iof->f", p - onehot, Z) / n + s["l2"] * w / np.linalg.norm(w)
        norm = np.linalg.norm(g)
        if norm > s["max_grad_norm"]:
            g = g * s["max_grad_norm"] / (norm + 1e-6)
        w = w - s["lr"] * max(0.0, (T - step) / T) * g
    return w


def test_fit_equals_a_direct_computation_of_their_definition():
    import torch

    X, mask, gold = separable(n_items=40, n_opt=3, dim=6, seed=3)
    X = X + np.random.default_rng(4).normal(scale=2.0, size=X.shape).astype(np.float32)  # not separable: loss moves
    s = probe.resolve_settings({"epochs": 7})
    fitted = probe.fit_probe(X, mask, gold, s, seed=11)
    gen = torch.Generator().manual_seed(11)
    bound = 1 / math.sqrt(X.shape[-1])
    w0 = (torch.rand((1, X.shape[-1]), generator=gen) * 2 * bound - bound).numpy().reshape(-1)
    expect = direct_fit(X, mask, gold, s, w0)
    assert np.allclose(fitted["weight"], expect, atol=2e-6), (fitted["weight"], expect)
    # the lr schedule's last step is 10% + one step of the original (theirs: T = epochs / 0.9)
    assert probe._lr_factor("10-percent", 100)(100) == pytest.approx(0.1)


def test_masked_options_never_win_and_settings_are_checked():
    X, mask, gold = separable(n_items=30, n_opt=4, dim=8, seed=5)
    mask[:, 3] = False
    gold = np.minimum(gold, 2)
    fitted = probe.fit_probe(X, mask, gold, probe.resolve_settings({"epochs": 5}), seed=0)
    p = probe.predict(fitted, X, mask)
    assert (p[:, 3] == 0).all() and np.allclose(p.sum(1), 1)
    with pytest.raises(CrossdiffError, match="study.probe.lr_decay"):
        probe.resolve_settings({"lr_decay": "cosine"})
    with pytest.raises(CrossdiffError, match="study.probe: unknown key"):
        probe.resolve_settings({"epoch": 3})
    with pytest.raises(CrossdiffError, match=r"study.probe.n_train = 50: train bin 2 has only 3"):
        probe.draw(["a", "b", "c"], 50, np.random.default_rng(0), "train bin 2")


def test_layers_as_theirs():
    # Llama-2-7B: 33 hidden states (embeddings + 32 layers) -> 17 and 32 (their LM_utils.py:162-166)
    assert layer_indices("middle_and_last", 33) == [17, 32]
    assert layer_indices("middle_and_last", 81) == [41, 80]  # 70B
    assert layer_indices("last", 5) == [4] and layer_indices([0, 2], 5) == [0, 2]
    with pytest.raises(CrossdiffError, match=r"layer\(s\) \[9\] out of range"):
        layer_indices([9], 5)


def test_generation_items_get_a_seeded_candidate_set():
    fmt = PromptFormat.from_config({})  # the embedded default's: generation, target " {answer}"
    item = {"item_id": "x1", "question": "What is 2 + 3?", "answer": "5"}
    texts, gold = options(fmt, item)
    assert len(texts) == 4 and texts[gold] == " 5" and texts == sorted(texts, key=lambda t: int(t))
    assert options(fmt, item) == (texts, gold)  # the same options in every job
    values = [candidate_values(f"i{k}", 10, {"n": 4, "max_offset": 5}) for k in range(200)]
    assert all(len(set(v)) == 4 and 10 in v and all(abs(x - 10) <= 5 for x in v) for v in values)
    assert len({v.index(10) for v in values}) == 4  # the gold is not always at the same position
    with pytest.raises(CrossdiffError, match="is not an integer"):
        options(fmt, {**item, "answer": "five"})
    with pytest.raises(CrossdiffError, match="prompt.candidates"):
        PromptFormat.from_config({"candidates": {"n": 12, "max_offset": 2}})
    mc = PromptFormat.from_config({"scoring": "multiple_choice"})
    ctx, conts, g, chat = option_sequences(mc, {"item_id": "m", "question": "q?", "choices": ["a", "b"], "answer": "b"})
    assert conts == [" a", " b"] and g == 1 and not chat and ctx.startswith("Question: q?")


# ------------------------------------------------------------------ settings through the resolver, checks at parse
def _config(**over):
    from crossdiff.config import deep_merge, validate

    base = {"datasets": {"d": {"items": {"source": "synthetic", "n_items": 60},
                               "responses": {"source": "simulated"}}},
            "models": [{"id": "m", "build": "tiny"}, {"id": "n", "build": "tiny"}], "bins": {"n_bins": 3},
            "study": {"methods": ["probe"], "probe": {"n_train": 10}},
            "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}}}
    return validate(deep_merge(base, over))


def _found(**over):
    from crossdiff.plan.checks import problems
    from crossdiff.plan.settings import Plan

    return problems(Plan(_config(**over)))


def test_probe_and_mdl_settings_resolve_per_dataset():
    from crossdiff.plan.settings import Plan

    plan = Plan(_config(datasets={"d": {"probe": {"epochs": 7, "layers": [1]},
                                        "bins": {"by": "mdl:avg", "mdl": {"n_grid": [5]}}}},
                        bins={"mdl": {"n_bootstrap": 2, "variant": "decoding"}}))
    s = plan.probe("d")
    assert (s["epochs"], s["layers"], s["n_train"], s["lr"], s["l2"]) == (7, [1], 10, 0.05, 1.0)
    m = plan.mdl("d")
    assert m == {"variant": "decoding", "n_grid": [5], "n_bootstrap": 2, "folds": 5, "models": ["m", "n"], "seed": 0}
    one = Plan(_config(datasets={"d": {"bins": {"by": "mdl:n"}}}))
    assert one.mdl("d")["models"] == ["n"] and one.mdl("d")["n_grid"] == [5, 20, 80, 340, 900]


def test_probe_and_mdl_problems_are_found_at_parse():
    assert not _found()
    out = _found(study={"probe": {"n_train": 50}})  # 60 items in 3 bins: 20 training items per bin
    assert any("study.probe.n_train = 50 (datasets.d)" in p and "at most 20" in p for p in out), out
    out = _found(datasets={"d": {"bins": {"by": "mdl:zz"}}})
    assert any("no model with slug 'zz'" in p for p in out), out
    out = _found(datasets={"d": {"bins": {"by": "mdl:avg", "mdl": {"models": ["m", "q"]}}}})
    assert any("bins.mdl.models: ['q'] are not model slugs" in p for p in out), out
    out = _found(datasets={"e": {"items": {"source": "none"}, "responses": {"source": "simulated"},
                                 "bins": {"by": "mdl:m"}}})
    assert any("datasets.e.bins.by = 'mdl:m': items.source 'none'" in p for p in out), out
    out = _found(finetune={"objective": "multiple_choice"}, study={"methods": ["sft"]},
                 datasets={"e": {"items": {"source": "lm_eval_task", "task": "arc_easy"},
                                 "responses": {"source": "simulated"}}})
    assert any("objective 'multiple_choice' needs each item's answer options" in p for p in out), out


def test_cells_without_held_out_items_never_score_a_training_item(tmp_path):
    """bins.holdout_fraction 0: a bin's training items are its test items, so its diagonal cell is cross-fitted
    (each fold scored by probes drawn from the other folds); off-diagonal cells use one probe per bootstrap."""
    import json

    import polars as pl

    from crossdiff.evaluate.hidden import write_states

    X, mask, gold = separable(n_items=60, n_opt=3, dim=8, seed=7)
    ids = [f"i{k:02d}" for k in range(60)]
    write_states(tmp_path / "hidden.npz", ids, [3] * 60, gold, X[:, :, None, :], np.zeros((60, 3)), [1], {"model": "t"})
    pl.DataFrame({"item_id": ids, "question": ids, "answer": ["1"] * 60}).write_parquet(tmp_path / "items.parquet")
    pl.DataFrame({"item_id": ids, "bin": [k // 20 for k in range(60)]}).write_parquet(tmp_path / "bins.parquet")
    tasks = []
    for t in range(3):
        d = tmp_path / f"task{t}"
        d.mkdir()
        (d / "task.json").write_text(json.dumps({"dataset": "d", "bin": t, "task": f"x_bin{t}"}))
        (d / "data.jsonl").write_text("".join(json.dumps({"item_id": i}) + "\n" for i in ids[20 * t:20 * t + 20]))
        tasks.append(d)
    s = probe.resolve_settings({"n_train": 12, "n_bootstrap": 2})
    out = probe.probe_cells(tmp_path / "hidden.npz", tmp_path / "items.parquet", tmp_path / "bins.parquet", tasks,
                            [0, 1, 2], tmp_path / "eval", s, "t")
    assert len(out) == 9 and all(r["value"] == 1.0 for r in out)  # separable: every cell perfect
    with pytest.raises(CrossdiffError, match="a fold's probe draws from 16 items; lower n_train"):
        probe.probe_cells(tmp_path / "hidden.npz", tmp_path / "items.parquet", tmp_path / "bins.parquet", tasks,
                          [0], tmp_path / "eval2", {**s, "n_train": 17}, "t")
    # the draws: a diagonal fold's training items are never its own test items
    from crossdiff.evaluate import probe as P

    seen = []
    real = P._fit

    def spy(X_, mask_, gold_, rows, s_, key):
        seen.append((tuple(key), set(rows.tolist())))
        return real(X_, mask_, gold_, rows, s_, key)

    P._fit = spy
    try:
        probe.probe_cells(tmp_path / "hidden.npz", tmp_path / "items.parquet", tmp_path / "bins.parquet", tasks[:1],
                          [0], tmp_path / "eval3", {**s, "n_bootstrap": 1}, "t")
    finally:
        P._fit = real
    assert len(seen) == 5  # five folds of bin 0's 20 test items
    order = np.random.default_rng([0, 0, 0, 1]).permutation(20)  # the fold assignment (seed, bin, bootstrap, 1)
    for key, rows in seen:
        fold = set(order[key[3] - 2::5].tolist())
        assert len(rows) == 12 and rows <= set(range(20)) and not rows & fold, (key, rows, fold)
