"""study.icl.protocol: shared (Hase et al. 2024's ICL, crossdiff/evaluate/icl_shared.py): one demonstration set per
bootstrap for every test item, drawn from the train bin's training items, never the test item, seeded; their
prompt string; their answer-text scoring equal to a direct computation of summed option log-probabilities; one
model load for every cell; per-bootstrap values kept."""

import json

import numpy as np
import polars as pl
import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.evaluate.icl_shared import HasePrompt, draw, settings_problems, shared_prompts

SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "warmup_problems": 100,
         "warmup_steps": 2, "batch_size": 16, "eval_items": 0}


def _setup(d, holdout: float, prompt: dict | None = None, items=None):
    import crossdiff.evaluate.run as ev
    from crossdiff.bins.holdout import holdout_split
    from crossdiff.items.synthetic import generate_items

    items = generate_items(60, seed=5) if items is None else items
    items.write_parquet(d / "items.parquet")
    order = pl.Series(np.argsort(np.argsort(items["item_id"].to_numpy(), kind="stable"))).cast(pl.Int64)
    bins = pl.DataFrame({"item_id": items["item_id"], "difficulty": order.cast(pl.Float64), "bin": order * 3 // items.height})
    if holdout:
        bins = holdout_split(bins, holdout, seed=3)
    bins.write_parquet(d / "bins.parquet")
    for t in range(3):
        ev.make_task(d / "items.parquet", d / "bins.parquet", t, d / f"task{t}", "arith", prompt)
    return items, bins


ICL = {"protocol": "shared", "k": 3, "n_bootstrap": 4, "seed": 7, "prompt_id": "0040", "cot": False,
       "reasoning_field": "reasoning"}


@pytest.mark.parametrize("holdout", [0.0, 0.5])
def test_one_demonstration_set_per_bootstrap_for_every_test_item_never_the_test_item_seeded(tmp_path, holdout):
    items, bins = _setup(tmp_path, holdout)
    by_id = {r["item_id"]: r for r in items.to_dicts()}
    tasks = [tmp_path / f"task{t}" for t in range(3)]
    cells = shared_prompts(tasks, tmp_path / "items.parquet", tmp_path / "bins.parquet", ICL, [0, 1, 2])
    assert sorted({(k, b, r) for k, b, r, _ in cells}) == [(3, b, r) for b in range(3) for r in range(4)]
    train = {b: set(bins.filter((pl.col("bin") == b) & (~pl.col("heldout") if holdout else pl.lit(True)))["item_id"])
             for b in range(3)}
    test = {t: [json.loads(x)["item_id"] for x in (tmp_path / f"task{t}/data.jsonl").read_text().splitlines()]
            for t in range(3)}
    hp = HasePrompt("0040")
    for b in range(3):
        sets = []
        for r in range(4):
            demos = cells[(3, b, r, 0)]["demonstrations"]
            assert len(demos) == 3 and set(demos) <= train[b]
            head = "".join(f"Question: {by_id[i]['question']} \nAnswer: {by_id[i]['answer']}\n\n" for i in demos)
            for t in range(3):
                c = cells[(3, b, r, t)]
                assert c["demonstrations"] == demos  # one set for every test bin of the bootstrap ...
                expected = [i for i in test[t] if i not in demos]
                assert sorted(c["prompts"]) == sorted(expected)  # ... and every test item but the demonstrations
                if b != t or holdout:
                    assert len(expected) == len(test[t])  # bins and held-out parts never meet the training items
                else:
                    assert len(expected) == len(test[t]) - 3  # no held-out items: its own demonstrations leave
                for iid, text in c["prompts"].items():
                    assert iid not in demos
                    assert text == head + f"Question: {by_id[iid]['question']}\nAnswer:"  # ... shared verbatim
                    assert text == hp.prompt([{"question": by_id[i]["question"], "label": by_id[i]["answer"]}
                                              for i in demos], {"question": by_id[iid]["question"]})
            sets.append(tuple(demos))
        assert len(set(sets)) == 4  # a new set each bootstrap
    again = shared_prompts(tasks, tmp_path / "items.parquet", tmp_path / "bins.parquet", ICL, [0, 1, 2])
    assert again == cells  # same seed, same prompts
    other = shared_prompts(tasks, tmp_path / "items.parquet", tmp_path / "bins.parquet", {**ICL, "seed": 8}, [0, 1, 2])
    assert other != cells
    # a smaller k's demonstrations are the first of a larger k's (one permutation per bin and bootstrap)
    assert draw(sorted(train[1]), 2, 7, 1, 4) == [d[:2] for d in draw(sorted(train[1]), 3, 7, 1, 4)]


def test_their_prompt_strings_on_hand_written_items():
    demos = [{"question": "Which is a mammal?", "choices": ["shark", "whale", "trout", "eel"], "label": "whale"},
             {"question": "What melts ice?", "choices": ["heat", "cold"], "label": "heat"}]
    test = {"question": "What do plants need?", "choices": ["light", "sand", "salt"]}
    # their 0040 (prompt.py:193-270): a space before the options' newline and before "\nAnswer: <text>" in a
    # demonstration, demonstrations joined and followed by a blank line, the test item ends "\nAnswer:"
    assert HasePrompt("0040").prompt(demos, test) == (
        "Question: Which is a mammal? \nA) shark\nB) whale\nC) trout\nD) eel \nAnswer: whale\n\n"
        "Question: What melts ice? \nA) heat\nB) cold \nAnswer: heat\n\n"
        "Question: What do plants need? \nA) light\nB) sand\nC) salt\nAnswer:")
    assert HasePrompt("0040").prompt([], test) == "Question: What do plants need? \nA) light\nB) sand\nC) salt\nAnswer:"
    # 0306 (StrategyQA, GSM8K): no option lines, "\nA: yes" labels
    sqa = [{"question": "Is water wet?", "choices": ["yes", "no"], "label": "yes"}]
    assert HasePrompt("0306").prompt(sqa, {"question": "Can fish fly?", "choices": ["yes", "no"]}) == \
        "Q: Is water wet? \nA: yes\n\nQ: Can fish fly?\nA:"
    # 0305 with CoT (GSM8K): reasoning, then "So the answer is"; the test item ends "\nA:"
    cot = [{"question": "2 + 3?", "label": "5", "reasoning": "2 plus 3 is 5."}]
    assert HasePrompt("0305", cot=True).prompt(cot, {"question": "4 + 4?"}) == \
        "Q: 2 + 3?\nA: 2 plus 3 is 5. So the answer is 5\n\nQ: 4 + 4?\nA:"
    for bad in ("040", "1040", "0940", "0080"):
        with pytest.raises(CrossdiffError):
            HasePrompt(bad)
    assert settings_problems({"protocol": "shared", "prompt_id": "9040", "n_bootstrap": 0}, "study.icl") == [
        "study.icl.n_bootstrap: expected an integer >= 1, got 0",
        "study.icl.prompt_id: '9040': instruction template 9; only 0 (no instruction) is offered"]


def _mc_items():
    """Hand-written multiple-choice items over the tiny model's vocabulary (digits, '+', words it has seen)."""
    rows = []
    for i in range(30):
        a, b = i % 7 + 1, (i * 3) % 5 + 2
        right = a + b
        choices = [str(right + d) for d in (-1, 0, 2)] if i % 2 else [str(right), str(right + 3), str(right - 2)]
        rows.append({"item_id": f"mc{i:02d}", "question": f"{a} + {b}", "choices": choices, "answer": str(right),
                     "n_ops": 1})
    return pl.DataFrame(rows)


def _direct_option_logprob(model, tok, prompt: str, option: str) -> float:
    """Their scoring (LM_utils.py:194-234): prompt and option tokenized separately and concatenated, the summed
    log-probabilities of the option's tokens; the option as the text their Llama tokenizer scores (' ' + text)."""
    import torch

    ctx = tok(prompt)["input_ids"]
    cont = tok(" " + option, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    return float(sum(logp[len(ctx) + j - 1, t] for j, t in enumerate(cont)))


def test_answer_text_scoring_equals_a_direct_computation_one_load_per_bootstrap_values_kept(tmp_path):
    import transformers

    import crossdiff.evaluate.run as ev
    from crossdiff.cli import main
    from crossdiff.models.tiny import build_base_model

    prompt = {"scoring": "multiple_choice", "template": "Question: {question}\nAnswer:", "choice_template": " {choice}"}
    items, _ = _setup(tmp_path, 0.0, prompt=prompt, items=_mc_items())
    build_base_model(tmp_path / "base", tmp_path / "items.parquet", SMALL)
    icl = {**ICL, "k": 2, "n_bootstrap": 3, "seed": 3}
    loads = ev.MODEL_LOADS
    assert main(["evaluate-icl-shared", "--model", str(tmp_path / "base"), "--model-name", "tiny",
                 "--tasks", *[str(tmp_path / f"task{t}") for t in range(3)], "--items", str(tmp_path / "items.parquet"),
                 "--bins", str(tmp_path / "bins.parquet"), "--train-bins", "0", "2", "--icl", json.dumps(icl),
                 "--outdir", str(tmp_path / "eval"), "--settings", '{"batch_size": 8, "device": "cpu"}']) == 0
    assert ev.MODEL_LOADS == loads + 1  # 2 train bins x 3 bootstraps x 3 test bins, one load
    files = sorted(p.relative_to(tmp_path / "eval").as_posix() for p in (tmp_path / "eval").rglob("*.json"))
    assert files == [f"icl-k2-train{b}/bin{t}.json" for b in (0, 2) for t in range(3)]

    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "base")
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype="float32").eval()
    by_id = {r["item_id"]: r for r in items.to_dicts()}
    cells = shared_prompts([tmp_path / f"task{t}" for t in range(3)], tmp_path / "items.parquet",
                           tmp_path / "bins.parquet", icl, [0, 2])
    n_checked = 0
    for b in (0, 2):
        for t in range(3):
            rec = json.loads((tmp_path / f"eval/icl-k2-train{b}/bin{t}.json").read_text())
            rows = [json.loads(x) for x in (tmp_path / f"eval/icl-k2-train{b}/bin{t}.samples.jsonl").read_text().splitlines()]
            assert rec["train_bin"] == f"icl-k2-{b}" and rec["icl"]["protocol"] == "shared"
            assert rec["icl"]["demonstrations"] == [cells[(2, b, r, t)]["demonstrations"] for r in range(3)]
            assert len(rec["icl"]["bootstrap_values"]) == 3
            assert rec["value"] == pytest.approx(np.mean([r["correct"] for r in rows]))
            if b != t:  # every bootstrap tests the same items: the cell is the mean over bootstraps
                assert rec["value"] == pytest.approx(np.mean(rec["icl"]["bootstrap_values"]))
            for row in rows:
                assert len(row["correct_by_bootstrap"]) == 3
                for r in range(3):
                    prompt_text = cells[(2, b, r, t)]["prompts"].get(row["item_id"])
                    if prompt_text is None:  # a demonstration of this bootstrap (bin b's own test set)
                        assert b == t and row["correct_by_bootstrap"][r] is None
                        continue
                    item = by_id[row["item_id"]]
                    scores = [_direct_option_logprob(model, tok, prompt_text, c) for c in item["choices"]]
                    best = int(np.argmax(scores))  # ties to the lowest index, as torch.argmax and lm-eval's acc
                    assert row["prediction_by_bootstrap"][r] == best, (row, scores)
                    assert row["correct_by_bootstrap"][r] == int(item["choices"][best] == item["answer"])
                    n_checked += 1
    assert n_checked >= 100


def test_lm_eval_loglikelihood_equals_their_separate_tokenisation(tmp_path):
    """lm-eval encodes prompt + continuation together and splits; theirs encodes the two apart: same numbers."""
    import transformers
    from lm_eval.api.instance import Instance

    from crossdiff.evaluate.run import load_lm, resolve_settings
    from crossdiff.models.tiny import build_base_model

    _setup(tmp_path, 0.0, items=_mc_items())
    build_base_model(tmp_path / "base", tmp_path / "items.parquet", SMALL)
    lm = load_lm(tmp_path / "base", resolve_settings({"device": "cpu", "batch_size": 4}))
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "base")
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype="float32").eval()
    demos = [{"question": "3 + 4", "choices": ["7", "8"], "label": "7"}]
    pairs = [(HasePrompt("0040").prompt(demos, {"question": "5 + 6", "choices": ["11", "12", "9"]}), c)
             for c in ("11", "12", "9")]
    got = lm.loglikelihood([Instance("loglikelihood", {}, (p, " " + c), i) for i, (p, c) in enumerate(pairs)])
    for (p, c), (ll, _) in zip(pairs, got):
        assert ll == pytest.approx(_direct_option_logprob(model, tok, p, c), abs=1e-4)


def test_too_few_training_items_are_refused_before_the_model_loads(tmp_path):
    (tmp_path / "mc").mkdir()
    _setup(tmp_path / "mc", 0.0, items=_mc_items())
    mc = [tmp_path / "mc" / f"task{t}" for t in range(3)]
    # 10 items a bin, k 2, 3 bootstraps, seed 7: mc08 is a demonstration of every bootstrap of its own bin
    with pytest.raises(CrossdiffError, match=r"item\(s\) \['mc08'\] of bin 0 would be a demonstration in every one"):
        shared_prompts(mc, tmp_path / "mc/items.parquet", tmp_path / "mc/bins.parquet",
                       {**ICL, "k": 2, "n_bootstrap": 3, "seed": 7}, [0])
    _setup(tmp_path, 0.0)
    tasks = [tmp_path / f"task{t}" for t in range(3)]
    with pytest.raises(CrossdiffError, match=r"k = 20: bin 0 has only 20 training item\(s\); the shared protocol needs k \+ 1"):
        shared_prompts(tasks, tmp_path / "items.parquet", tmp_path / "bins.parquet", {**ICL, "k": 20}, [0])
    with pytest.raises(CrossdiffError, match="per-item protocol is `crossdiff evaluate-icl`"):
        shared_prompts(tasks, tmp_path / "items.parquet", tmp_path / "bins.parquet", {**ICL, "protocol": "per_item"}, [0])
