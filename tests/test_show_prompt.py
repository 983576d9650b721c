"""crossdiff show-prompt: the exact training text, evaluation request and verdict of one item."""

import json

import pytest

from conftest import REPO, crossdiff_cli

FIX = REPO / "tests" / "fixtures" / "datasets"


@pytest.fixture(scope="module")
def qwen_like_tokenizer(tmp_path_factory):
    """A small tokenizer carrying Qwen2.5's chat template (tool-calling branches left out)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "<|im_end|>": 1, "<|im_start|>": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<|im_end|>")
    fast.chat_template = (REPO / "tests" / "fixtures" / "chat" / "qwen2.5.jinja").read_text()
    path = tmp_path_factory.mktemp("tok") / "qwen-like"
    fast.save_pretrained(path)
    return path


@pytest.fixture()
def config(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(
        "datasets:\n"
        f"  bbh:\n    items: {{source: hub, adapter: bbh, path: {FIX / 'bbh'}, subtasks: [boolean_expressions, date_understanding]}}\n"
        "    responses: {source: simulated}\n"
        f"  arc:\n    items: {{source: hub, adapter: arc, path: {FIX / 'arc.jsonl'}}}\n"
        "    responses: {source: simulated}\n"
        "models: []\n")
    return tmp_path


def test_bbh_chat_rendering_and_verdict(config, qwen_like_tokenizer):
    proc = crossdiff_cli("show-prompt", "--directory", str(config), "--dataset", "bbh", "--item", "boolean_expressions/0",
                         "--tokenizer", str(qwen_like_tokenizer), "--output", "False.", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    system = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    assert info["chat_template"] is True
    assert info["training"]["prompt"] == (system + "<|im_start|>user\nQuestion: not ( ( not not True ) ) is\nAnswer:\n"
                                          "<|im_end|>\n<|im_start|>assistant\n")
    assert info["training"]["completion"] == "False<|im_end|>\n"
    assert info["evaluation"]["request"] == (system + "<|im_start|>user\nQ: not ( ( not not True ) ) is\nA:<|im_end|>\n"
                                             "<|im_start|>assistant\n")
    assert info["verdict"]["filters"]["strict-match"] == {"prediction": "False.", "correct": 1}
    assert info["verdict"]["correct"] == 1
    # the effective decoding: greedy, no penalty, the format's stops and length, nothing from the model
    dec = info["evaluation"]["decoding"]
    assert dec["do_sample"] is False and dec["temperature"] == 0.0 and dec["repetition_penalty"] == 1.0
    assert dec["max_new_tokens"] == 256 and sorted(dec["stop"][:3]) == ["</s>", "<|im_end|>", "Q:"]
    assert info["evaluation"]["generation_kwargs"]["repetition_penalty"] == 1.0
    text = crossdiff_cli("show-prompt", "--directory", str(config), "--dataset", "bbh", "--item", "boolean_expressions/0",
                         "--tokenizer", str(qwen_like_tokenizer)).stdout
    assert "decoding (the whole of it, hf and vLLM alike): do_sample=False, temperature=0.0, repetition_penalty=1.0" in text


def test_text_form_for_multiple_choice(config):
    proc = crossdiff_cli("show-prompt", "--directory", str(config), "--dataset", "arc", "--item", "3", "--output", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "chat template not applied (tokenizer: none (no --tokenizer and no model in the config))" in out
    assert "Question: Which characteristic is inherited?\n1) eye color\n2) scar\n3) hair length\n4) language\nAnswer:\n" in out
    assert "[0] ' 1'   <- gold" in out and "verdict: CORRECT" in out


def test_items_table_and_prompt(tmp_path):
    import polars as pl

    pl.DataFrame({"item_id": ["a"], "question": ["What is 2 + 3?"], "answer": ["5"]}).write_parquet(tmp_path / "i.parquet")
    proc = crossdiff_cli("show-prompt", "--items", str(tmp_path / "i.parquet"), "--item", "a",
                         "--prompt", json.dumps({"answer_regex": r"(-?\d+)"}), "--output", " 5\nQuestion", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["training"] == {"prompt": "Question: What is 2 + 3?\nAnswer:", "completion": " 5"}
    assert info["verdict"]["filters"]["extract"] == {"prediction": "5", "correct": 1}


def test_unknown_item_and_dataset_are_named(config):
    proc = crossdiff_cli("show-prompt", "--directory", str(config), "--dataset", "arc", "--item", "99")
    assert proc.returncode == 2 and "arc: no item '99'; 4 items, e.g. ['0', '1', '2', '3']" in proc.stderr
    proc = crossdiff_cli("show-prompt", "--directory", str(config), "--dataset", "bbh", "--item", "snarks/0")
    assert proc.returncode == 2 and ("subtask 'snarks' is not in the item table (its subtasks: boolean_expressions, "
                                     "date_understanding; see items.subtasks)") in proc.stderr
    proc = crossdiff_cli("show-prompt", "--directory", str(config), "--dataset", "nope", "--item", "0")
    assert proc.returncode == 2 and "no dataset 'nope'; datasets: ['arc', 'bbh']" in proc.stderr


def test_embedded_default_config_after_its_items_rule(tmp_path):
    """The embedded demo (config/config.yaml, unchanged): build its item table with the workflow, then
    show-prompt reads it the way the rules do, before the tiny model exists."""
    import polars as pl

    from conftest import make_workdir, snakemake

    wd = make_workdir(tmp_path / "wd", (REPO / "config" / "config.yaml").read_text())
    snakemake(wd, "--cores", "1", "results/items/arith.parquet")
    item = pl.read_parquet(wd / "results/items/arith.parquet").row(0, named=True)
    proc = crossdiff_cli("show-prompt", "--directory", str(wd), "--dataset", "arith", "--item", item["item_id"],
                         "--output", f"{item['answer']}\nQuestion: next", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["training"] == {"prompt": f"Question: {item['question']}\nAnswer:", "completion": f" {item['answer']}"}
    assert info["verdict"]["correct"] == 1
    wrong = crossdiff_cli("show-prompt", "--directory", str(wd), "--dataset", "arith", "--item", item["item_id"],
                          "--output", f"{int(item['answer']) + 1}", "--json")
    assert json.loads(wrong.stdout)["verdict"]["correct"] == 0


def test_bad_inputs_are_clear_errors(tmp_path):
    """issue 20, item 16: a CSV, a missing file, an unknown adapter, a JSONL item file of a dataset."""
    import json as _json

    import polars as pl

    pl.DataFrame({"item_id": ["a"], "question": ["2+2?"], "answer": ["4"]}).write_csv(tmp_path / "x.csv")
    ok = crossdiff_cli("show-prompt", "--items", str(tmp_path / "x.csv"), "--item", "a")
    assert ok.returncode == 0 and "2+2?" in ok.stdout, ok.stderr
    for args, expected in (
        (["--items", str(tmp_path / "missing.parquet")], "item table not found"),
        (["--items", str(tmp_path / "x.csv"), "--adapter", "nope"], "--adapter 'nope': no such benchmark adapter"),
    ):
        proc = crossdiff_cli("show-prompt", *args, "--item", "a")
        assert proc.returncode != 0 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    (tmp_path / "items.jsonl").write_text(_json.dumps({"item_id": "a", "question": "3+3?", "answer": "6"}) + "\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(_json.dumps({"datasets": {"j": {
        "items": {"source": "file", "path": str(tmp_path / "items.jsonl")},
        "responses": {"source": "table", "path": "r.csv"}}}}))
    proc = crossdiff_cli("show-prompt", "--directory", str(tmp_path), "--dataset", "j", "--item", "a")
    assert proc.returncode == 0 and "3+3?" in proc.stdout, proc.stderr
