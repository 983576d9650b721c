import json

import polars as pl
import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.prompts.format import PromptFormat, load_format
from crossdiff.study.sft_data import make_sft_data

ITEM = {"item_id": "arith-1", "question": "What is 2 + 3?", "answer": "5", "n_ops": 1}


def test_defaults_render_arithmetic():
    fmt = PromptFormat()
    assert fmt.prompt_text(ITEM) == "Question: What is 2 + 3?\nAnswer:"
    assert fmt.completion_text(ITEM) == " 5"
    rec = fmt.sft_record(ITEM)
    assert rec["prompt"] + rec["completion"] == "Question: What is 2 + 3?\nAnswer: 5"
    assert rec["assistant"] == "5"
    ev = fmt.eval_record(ITEM)
    # training prompt and evaluation prompt are the same string
    assert ev["prompt"] == rec["prompt"] and ev["gold"] == "5"


def test_instruction_and_custom_template():
    fmt = PromptFormat.from_config({"instruction": "Answer with a number.\n", "template": "Q: {question} ({n_ops} ops)\nA:"})
    assert fmt.prompt_text(ITEM) == "Answer with a number.\nQ: What is 2 + 3? (1 ops)\nA:"
    assert fmt.user_text(ITEM) == "Q: What is 2 + 3? (1 ops)\nA:"


def test_bad_config_names_the_key():
    with pytest.raises(CrossdiffError, match="unknown prompt key"):
        PromptFormat.from_config({"tempalte": "x"})
    with pytest.raises(CrossdiffError, match="scoring"):
        PromptFormat.from_config({"scoring": "bleu"})
    with pytest.raises(CrossdiffError, match="answer_regex"):
        PromptFormat.from_config({"answer_regex": "("})
    with pytest.raises(CrossdiffError, match=r"\{nope\}"):
        PromptFormat.from_config({"template": "{nope}"}).prompt_text(ITEM)


def test_extract_answer_mirrors_filter():
    fmt = PromptFormat()
    assert fmt.extract_answer(" 161\nQuestion: 5") == "161"
    assert fmt.extract_answer(" -42 is it") == "-42"
    assert fmt.extract_answer(" no idea") == "[invalid]"
    assert fmt.extract_answer("\n 7") == "[invalid]"  # cut at the stop string first


def test_generation_task_config():
    cfg = PromptFormat().task_config("t", "/abs/data.jsonl")
    assert cfg["output_type"] == "generate_until"
    assert cfg["dataset_kwargs"] == {"data_files": {"test": "/abs/data.jsonl"}}
    assert cfg["generation_kwargs"]["until"] == ["\n"]
    assert cfg["filter_list"][0]["filter"][0]["regex_pattern"] == r"(-?\d+)"
    assert cfg["doc_to_text"] == "prompt"
    assert PromptFormat().task_config("t", "/x", chat=True)["doc_to_text"] == "user"


def test_multiple_choice():
    fmt = PromptFormat.from_config({"scoring": "multiple_choice", "template": "{question}\n{options}\nAnswer:"})
    item = {"item_id": "m1", "question": "Pick", "choices": json.dumps(["red", "green", "blue"]), "answer": "green"}
    assert fmt.gold(item) == 1
    assert fmt.user_text(item) == "Pick\nA. red\nB. green\nC. blue\nAnswer:"
    assert fmt.completion_text(item) == " green"
    assert fmt.eval_record(item)["choices"] == [" red", " green", " blue"]
    assert fmt.gold({**item, "answer": "2"}) == 2
    cfg = fmt.task_config("t", "/x")
    assert cfg["output_type"] == "multiple_choice" and cfg["doc_to_choice"] == "choices"
    assert {m["metric"] for m in cfg["metric_list"]} == {"acc", "acc_norm"}
    with pytest.raises(CrossdiffError, match="neither a choice"):
        fmt.gold({**item, "answer": "purple"})


class FakeChatTokenizer:
    chat_template = "{% for m in messages %}<{{m.role}}>{{m.content}}{% endfor %}"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True, **template_vars):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<assistant>" if add_generation_prompt else "")


def test_chat_template_decision():
    class NoChat:
        chat_template = None

    auto = PromptFormat(instruction="Be brief.\n")
    assert auto.use_chat(FakeChatTokenizer()) and not auto.use_chat(NoChat()) and not auto.use_chat(None)
    assert not PromptFormat(chat_template=False).use_chat(FakeChatTokenizer())
    with pytest.raises(CrossdiffError, match="no chat template"):
        PromptFormat(chat_template=True).use_chat(NoChat())
    assert auto.render_prompt(ITEM, FakeChatTokenizer()) == "<system>Be brief.<user>Question: What is 2 + 3?\nAnswer:<assistant>"
    ex = auto.training_example(auto.sft_record(ITEM), chat=True)
    assert ex["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert ex["completion"] == [{"role": "assistant", "content": "5"}]
    assert auto.training_example(auto.sft_record(ITEM), chat=False)["completion"] == " 5"


def test_load_format_accepts_section_or_wrapper():
    assert load_format({"prompt": {"target": "={answer}"}}).target == "={answer}"
    assert load_format({"target": "={answer}"}).target == "={answer}"


def test_make_sft_data(tmp_path):
    items = pl.DataFrame({"item_id": ["a", "b", "c"], "question": ["What is 1 + 1?", "What is 2 + 2?", "What is 3 * 3?"],
                          "answer": ["2", "4", "9"]})
    bins = pl.DataFrame({"item_id": ["a", "b", "c"], "difficulty": [0.1, 0.5, 0.9], "bin": [0, 1, 1]})
    items.write_parquet(tmp_path / "items.parquet")
    bins.write_parquet(tmp_path / "bins.parquet")
    out = tmp_path / "sft" / "bin1.jsonl"
    assert make_sft_data(tmp_path / "items.parquet", tmp_path / "bins.parquet", 1, out) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["item_id"] for r in rows] == ["b", "c"]
    assert rows[1]["prompt"] == "Question: What is 3 * 3?\nAnswer:" and rows[1]["completion"] == " 9"
    with pytest.raises(CrossdiffError, match="no items in bin 7"):
        make_sft_data(tmp_path / "items.parquet", tmp_path / "bins.parquet", 7, out)
    pl.DataFrame({"item_id": ["zz"], "bin": [0]}).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(CrossdiffError, match="not in item table"):
        make_sft_data(tmp_path / "items.parquet", tmp_path / "bad.parquet", 0, out)
