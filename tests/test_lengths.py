"""Training examples beyond max_length are counted in train_metrics.json; one whose completion is cut away
entirely is an error or a drop (prompt.on_no_completion), never a silent zero-loss row."""

import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.prompts.format import PromptFormat

SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "warmup_problems": 50,
         "warmup_steps": 2, "batch_size": 16, "eval_items": 0}
FT = {"num_train_epochs": 1, "max_steps": 1, "per_device_train_batch_size": 4, "save_steps": 100}
MUSR_LIKE = {"scoring": "multiple_choice", "template": "{question}\n\n{options}\nAnswer:",
             "option_template": "{number} - {choice}", "choice_template": " {choice}", "max_length": 160}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from crossdiff.models.tiny import build_base_model
    from crossdiff.items.synthetic import generate_items

    root = tmp_path_factory.mktemp("len")
    generate_items(20, seed=3).write_parquet(root / "items.parquet")
    build_base_model(root / "base", root / "items.parquet", SMALL)
    return root


def _rows(fmt):
    story = " ".join(["The butler walked past the library at nine and heard a noise"] * 40)  # far beyond 160
    items = [
        {"item_id": "murder_mysteries/0", "question": f"{story}\n\nWho is the most likely murderer?",
         "choices": json.dumps(["Mackenzie", "Ana"]), "answer": "0"},
        {"item_id": "short/0", "question": "Who did it?", "choices": json.dumps(["Ana", "Bob"]), "answer": "1"},
        {"item_id": "short/1", "question": "Which one?", "choices": json.dumps(["Ana", "Bob"]), "answer": "0"},
    ]
    return [fmt.sft_record(i) for i in items]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_beyond_max_length_is_an_error_naming_the_item(base):
    from crossdiff.finetune.run import finetune

    train = _write(base / "train.jsonl", _rows(PromptFormat.from_config(MUSR_LIKE)))
    with pytest.raises(CrossdiffError, match=r"1 of 3 training example\(s\) have no completion token left within "
                                             r"max_length 160.*murder_mysteries/0.*on_no_completion: drop"):
        finetune(base / "base", train, base / "out_error", settings=FT, prompt=MUSR_LIKE)


def test_drop_and_counts_in_train_metrics(base):
    from crossdiff.finetune.run import finetune

    prompt = {**MUSR_LIKE, "on_no_completion": "drop"}
    fmt = PromptFormat.from_config(prompt)
    rows = _rows(fmt)
    # a completion that is cut but not emptied: a long answer after a short prompt
    rows.append({**rows[1], "item_id": "long_answer/0", "completion": " " + "Bob " * 300, "assistant": "Bob " * 300})
    train = _write(base / "train_drop.jsonl", rows)
    metrics = finetune(base / "base", train, base / "out_drop", settings=FT, prompt=prompt)
    lengths = json.loads((base / "out_drop" / "train_metrics.json").read_text())["lengths"]
    assert lengths == metrics["lengths"]
    assert lengths["max_length"] == 160 and metrics["settings"]["max_length"] == 160  # prompt.max_length wins
    assert lengths["n_examples"] == 4 and lengths["n_truncated"] == 2
    assert lengths["n_completion_cut"] == 1 and lengths["n_no_completion_left"] == 1
    assert lengths["no_completion_item_ids"] == ["murder_mysteries/0"] and lengths["n_trained"] == 3
    assert lengths["count_matches_trainer"] is True  # SFTTrainer left out the same example
    assert lengths["longest_example_tokens"] > 160


def test_nothing_cut_reports_zero(base):
    from crossdiff.finetune.run import build_trainer, resolve_settings
    from crossdiff.study.sft_data import check_lengths

    fmt = PromptFormat.from_config({**MUSR_LIKE, "max_length": None})
    rows = _rows(fmt)[1:]
    trainer, _, _ = build_trainer(base / "base", rows, base / "w", resolve_settings(FT), fmt)
    report = check_lengths(trainer, rows, fmt, 1024)
    assert report["n_truncated"] == report["n_no_completion_left"] == 0 and report["n_trained"] == 2
