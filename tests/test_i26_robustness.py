"""Issue 26, robustness and determinism cases: each test fails on the code before the fix."""

import pytest

from crossdiff.errors import CrossdiffError  # noqa: F401


# ------------------------------------------------------------------ a failed job's console line
TQDM_AFTER_TRACEBACK = (
    "loading model\n"
    "Traceback (most recent call last):\n"
    '  File "train.py", line 3, in <module>\n'
    "    main()\n"
    "ValueError: results/sft/arith/bin0.jsonl: line 4: 'completion' is empty\n"
    "Map:   0%|          | 0/200 [00:00<?, ? examples/s]\r"
    "Map:  50%|#####     | 100/200 [00:00<00:00, 4012.3 examples/s]\r"
    "Map: 100%|##########| 200/200 [00:00<00:00, 4102.7 examples/s]\n"
    "Generating train split: 200 examples [00:00, 12034.55 examples/s]\n"
    " 40%|####      | 2/5 [00:01<00:02,  1.21it/s]\r 60%|######    | 3/5 [00:02<00:01,  1.19s/it]\n"
)


def test_error_line_skips_tqdm_output_after_a_traceback(tmp_path):
    from crossdiff.runtime.failures import error_line

    log = tmp_path / "bin0.log"
    log.write_text(TQDM_AFTER_TRACEBACK)
    assert error_line(log) == "ValueError: results/sft/arith/bin0.jsonl: line 4: 'completion' is empty"


def test_error_line_of_a_traceback_glued_to_an_unfinished_bar(tmp_path):
    """A crash mid-bar: the traceback starts on the bar's line (no newline after the last update)."""
    from crossdiff.runtime.failures import error_line

    log = tmp_path / "x.log"
    log.write_text("Map:  50%|#####     | 5/10 [00:00<00:00, 123.4 examples/s]Traceback (most recent call last):\n"
                   '  File "x.py", line 1, in <module>\nKeyError: \'answer\'\n'
                   "\r 10%|#         | 1/10 [00:00<00:05,  1.7it/s]")
    assert error_line(log) == "KeyError: 'answer'"


def test_error_line_without_a_traceback_is_the_last_line_that_is_not_a_bar(tmp_path):
    from crossdiff.runtime.failures import error_line

    log = tmp_path / "x.log"
    log.write_text("step 1\nKilled: out of memory at step 3\n"
                   "100%|##########| 5/5 [00:03<00:00,  1.52it/s]\n"
                   "Loading checkpoint shards: 100%|##########| 2/2\n")
    assert error_line(log) == "Killed: out of memory at step 3"
    log.write_text("only progress\r 50%|#####     | 1/2 [00:01<00:01,  1.00s/it]")
    assert error_line(log) == "only progress"
    log.write_text("[00:05] a line that merely starts with a time\n")
    assert error_line(log) == "[00:05] a line that merely starts with a time"


# ------------------------------------------------------------------ a broken config.json at the dry run
QWEN_SMALL = {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_attention_heads": 12,
              "num_hidden_layers": 28, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}


@pytest.mark.parametrize("text,expected", [
    ('{"hidden_size": 1536, "num_attention_he', r"config\.json is not readable JSON"),
    ('{"hidden_size": "big", "num_attention_heads": 12, "num_hidden_layers": 28, "vocab_size": 10}',
     r"'hidden_size' is 'big': not a positive integer"),
    ('{"hidden_size": 1536, "num_attention_heads": 12, "num_hidden_layers": 28}', r"'vocab_size' is not set"),
    ('{"hidden_size": 1536, "num_attention_heads": 0, "num_hidden_layers": 28, "vocab_size": 10}',
     r"'num_attention_heads' is 0: not a positive integer"),
    ('[1, 2]', r"holds list, expected a JSON object"),
])
def test_dry_run_model_configs_name_the_model_the_file_and_the_field(tmp_path, text, expected):
    """plan_check.model_configs (what the dry run calls): a local model directory's config.json."""
    from crossdiff.finetune.plan_check import check_models, model_configs
    from crossdiff.finetune.settings import resolve_settings

    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text(text)
    with pytest.raises(CrossdiffError, match=expected) as info:
        model_configs([str(model)], tmp_path / "cache")
    assert f"model {model}: {model / 'config.json'}" in str(info.value)
    s = resolve_settings({"per_device_train_batch_size": 1, "max_length": 512})
    with pytest.raises(CrossdiffError, match=expected):
        check_models({"m": {"id": str(model)}}, s, lambda m: {"gpu": 1, "mem_mb": 64000, "gpu_mem_gb": 80},
                     tmp_path / "cache")


def test_broken_cached_config_names_the_cache_file_and_how_to_refresh_it(tmp_path):
    import json

    from crossdiff.finetune.plan_check import model_configs

    (tmp_path / "org--good.json").write_text(json.dumps(QWEN_SMALL))
    (tmp_path / "org--bad.json").write_text(json.dumps({k: v for k, v in QWEN_SMALL.items() if k != "vocab_size"}))
    with pytest.raises(CrossdiffError) as info:
        model_configs(["org/good", "org/bad"], tmp_path)
    msg = str(info.value)
    assert f"model org/bad: {tmp_path / 'org--bad.json'}: 'vocab_size' is not set" in msg
    assert f"delete {tmp_path / 'org--bad.json'}" in msg and "org/good" not in msg


def test_broken_config_in_the_hf_cache_is_named(tmp_path, monkeypatch):
    import huggingface_hub

    from crossdiff.finetune.plan_check import model_configs

    broken = tmp_path / "hf" / "config.json"
    broken.parent.mkdir()
    broken.write_text('{"hidden_size": 15')
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: str(broken))
    with pytest.raises(CrossdiffError, match=rf"model org/m: {broken} is not readable JSON"):
        model_configs(["org/m"], tmp_path / "cache", timeout=5)
    assert not (tmp_path / "cache").exists()  # nothing broken is cached


def test_check_model_names_the_model_of_a_config_without_vocab_size():
    from crossdiff.finetune.plan_check import check_model
    from crossdiff.finetune.settings import resolve_settings

    s = resolve_settings({"per_device_train_batch_size": 1, "max_length": 512})
    cfg = {k: v for k, v in QWEN_SMALL.items() if k != "vocab_size"}
    problems, mem = check_model("org/m", cfg, s, {"gpu": 1, "mem_mb": 64000, "gpu_mem_gb": 80})
    assert problems == ["model org/m: config.json: 'vocab_size' is not set (config.json needs it for the memory plan)"]
    assert mem is None


def test_snakemake_dry_run_with_a_truncated_config_json_names_the_file(tmp_path):
    from conftest import make_workdir, snakemake

    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"hidden_size": 1536, "num_hid')
    wf = make_workdir(tmp_path / "wf", f"""
datasets:
  tiny:
    items: {{source: synthetic, n_items: 40, max_ops: 2, max_digits: 2, seed: 1}}
    responses: {{source: simulated, n_models: 30, seed: 2}}
irt: {{engine: fast, stability: {{seeds: [], engines: []}}}}
bins: {{n_bins: 2}}
models:
  - id: {model}
    resources: {{gpu: 1}}
resources:
  finetune: {{gpu: 0, gpu_mem_gb: 80}}
""")
    proc = snakemake(wf, "-n", check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"model {model}: {model / 'config.json'} is not readable JSON" in text, text[-3000:]
    assert "JSONDecodeError" not in text


# ------------------------------------------------------------------ device: cuda on a host without CUDA
@pytest.fixture
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _no_cuda_message(key):
    return rf"{key} is 'cuda' but this host has no CUDA device.*set {key}: auto .* or cpu"


def test_finetune_device_cuda_without_cuda_stops_before_reading_or_loading(tmp_path, no_cuda):
    """The paths do not exist: the device error comes first, before the data or the model is touched."""
    from crossdiff.finetune.run import finetune

    with pytest.raises(CrossdiffError, match=_no_cuda_message("finetune.device")):
        finetune(tmp_path / "no-model", tmp_path / "no.jsonl", tmp_path / "out", settings={"device": "cuda"})
    assert not (tmp_path / "out.work").exists()


@pytest.mark.parametrize("entry", ["evaluate", "icl", "zero_shot", "loss"])
def test_evaluate_device_cuda_without_cuda_stops_before_any_model_loads(tmp_path, no_cuda, entry):
    from crossdiff.evaluate import loss_measure, run

    loads = (run.MODEL_LOADS, loss_measure.MODEL_LOADS)
    s = {"device": "cuda"}
    with pytest.raises(CrossdiffError, match=_no_cuda_message("evaluate.device")):
        if entry == "evaluate":
            run.evaluate_model(tmp_path / "m", [tmp_path / "task"], [tmp_path / "o.json"], s)
        elif entry == "icl":
            from crossdiff.evaluate.icl import evaluate_icl

            evaluate_icl(tmp_path / "m", [tmp_path / "task"], tmp_path / "i.parquet", tmp_path / "b.parquet", [1], [0],
                         tmp_path / "out", s)
        elif entry == "zero_shot":
            from crossdiff.evaluate.zero_shot import score_all_items

            score_all_items(tmp_path / "i.parquet", tmp_path / "irt.parquet", tmp_path / "m", tmp_path / "o.parquet",
                            "d", settings=s)
        else:
            loss_measure.loss_table(tmp_path / "i.parquet", tmp_path / "irt.parquet", tmp_path / "m",
                                    tmp_path / "o.parquet", settings=s)
    assert (run.MODEL_LOADS, loss_measure.MODEL_LOADS) == loads


def test_irt_device_cuda_without_cuda_names_the_key(no_cuda):
    import numpy as np

    from crossdiff.irt.base import IrtSettings
    from crossdiff.irt.engines import fit_engine

    Y = (np.random.default_rng(0).random((20, 10)) < 0.5).astype(float)
    for engine in ("fast", "py-irt-compatible"):
        with pytest.raises(CrossdiffError, match=_no_cuda_message("irt.device")):
            fit_engine(Y, np.ones_like(Y, dtype=bool), IrtSettings(engine=engine, device="cuda"))
    assert fit_engine(Y, np.ones_like(Y, dtype=bool), IrtSettings(engine="fast", device="auto")).difficulty.shape == (10,)


def test_fit_irt_command_with_device_cuda_fails_at_start(tmp_path, no_cuda):
    import argparse

    from crossdiff.irt.fit import run

    args = argparse.Namespace(responses=str(tmp_path / "missing.parquet"), settings={"device": "cuda"},
                              items_out="a", models_out="b", heldout_out="c", summary_out="d", progress=False)
    with pytest.raises(CrossdiffError, match=_no_cuda_message("irt.device")):
        run(args)


def test_device_values():
    from crossdiff.compute import device_for

    assert device_for("cpu", "k") == "cpu"
    with pytest.raises(CrossdiffError, match=r"k is 'tpu'; expected one of auto, cpu, cuda"):
        device_for("tpu", "k")


# ------------------------------------------------------------------ a refused second trainer and the survivor's log
TRAINER = """
import sys
from crossdiff.finetune.owner import owned
with owned(sys.argv[1]):
    print("survivor: step 1", flush=True)
    sys.stdin.readline()                      # the test says when to go on
    print("survivor: step 2, saved", flush=True)
"""


def _start_trainer(work, log):
    import os
    import subprocess
    import sys
    import time

    from conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    with open(log, "w") as out:  # the rule's "> {log} 2>&1"
        proc = subprocess.Popen([sys.executable, "-c", TRAINER, str(work)], stdin=subprocess.PIPE, stdout=out,
                                stderr=subprocess.STDOUT, env=env, text=True)
    deadline = time.monotonic() + 60
    while "step 1" not in (log.read_text() if log.exists() else ""):  # waits for the trainer's own line
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return proc


def test_refused_second_trainer_leaves_the_survivors_log(tmp_path):
    """The rerun's job: Snakemake deletes logs/.../bin0.log before the command (as it does for every log:
    file), the refused trainer writes its error to a new bin0.log. The survivor's whole log stays readable
    under <work>.log, which the refusal names."""
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO

    work = tmp_path / "bin0.work"
    log = tmp_path / "logs" / "bin0.log"
    log.parent.mkdir()
    survivor = _start_trainer(work, log)
    kept = tmp_path / "bin0.work.log"
    assert kept.is_file() and os.path.samefile(kept, log)
    log.unlink()  # what Snakemake does before the rerun's job
    train = tmp_path / "bin0.jsonl"
    train.write_text(json.dumps({"prompt": "1+1=", "completion": "2"}) + "\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow"), "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        refused = subprocess.run([sys.executable, "-m", "crossdiff.cli", "finetune", "--model", "no-model", "--train",
                                  str(train), "--output", str(tmp_path / "bin0"), "--settings", '{"max_steps": 1}'],
                                 stdout=out, stderr=subprocess.STDOUT, env=env, timeout=120)
    assert refused.returncode != 0
    from crossdiff.runtime.failures import error_line

    line = error_line(log)
    assert "in use by a running trainer" in line and f"its output goes on in {kept}" in line, line
    survivor.communicate("go\n", timeout=60)
    assert survivor.returncode == 0
    assert kept.read_text() == "survivor: step 1\nsurvivor: step 2, saved\n"
    # the next owner finds the survivor's log and keeps it as the previous one
    log2 = tmp_path / "logs" / "bin0.next.log"
    nxt = _start_trainer(work, log2)
    nxt.communicate("go\n", timeout=60)
    previous = tmp_path / "bin0.work.previous.log"
    assert previous.read_text() == "survivor: step 1\nsurvivor: step 2, saved\n"
    assert f"{previous}: the log of an earlier trainer" in log2.read_text()
    # a trainer whose job log kept its name leaves no second name behind
    assert not kept.exists() and log2.read_text().endswith("survivor: step 2, saved\n")


def test_snakemake_deletes_a_jobs_log_before_its_command(tmp_path):
    """The premise of the second name: even an appending rule could not keep the old log."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("the running trainer's lines\n")
    (tmp_path / "Snakefile").write_text('rule a:\n    output: "out.txt"\n    log: "logs/a.log"\n'
                                        '    shell: "echo refused >> {log}; touch {output}"\n')
    snakemake = Path(sys.executable).parent / "snakemake"
    subprocess.run([str(snakemake), "--cores", "1", "-q"], cwd=tmp_path, capture_output=True, timeout=120, check=True)
    assert (tmp_path / "logs" / "a.log").read_text() == "refused\n"


# ------------------------------------------------------------------ the summary paragraph's wording
def _summary_row(**values):
    row = {"model": "m", "dataset": "d", "diagonal": "included", "resample": "items", "n_cells": 9, "n_boot": 100,
           "best_within_near_gap": 2, "n_test_bins": 3}
    for k, v in values.items():
        row.update({k: v, f"{k}_lo": v - 0.01, f"{k}_hi": v + 0.01})  # intervals that exclude 0
    return row


def test_icl_paragraph_speaks_of_in_context_cells_and_of_losses_that_deepen():
    from crossdiff.results.summary_report import paragraph

    row = _summary_row(slope=-0.05, near_gain=-0.02, far_gain=-0.09, easy_to_hard=-0.03, hard_to_easy=-0.08,
                       asymmetry=0.05)
    text = paragraph({**row, "method": "icl-k2"}, 0.95, 1, ["method"])
    assert "(method=icl-k2)" in text
    assert "fine-tuned" not in text and "fade" not in text and "transfers better" not in text
    assert "over 9 in-context cells (2 demonstrations from the train bin in each prompt, no fine-tuning)" in text
    assert "losses deepen as the gap grows." in text
    assert "within 1 bin(s) of the demonstrations' bin" in text and "Demonstrations from easier bins" in text
    assert "easy-to-hard hurts less." in text and "The best demonstration bin lies" in text
    # the same numbers for fine-tuning: the method's words, the same sign-true verbs
    sft = paragraph({**row, "method": "sft"}, 0.95, 1, ["method"])
    assert "over 9 fine-tuned cells" in sft and "losses deepen as the gap grows." in sft
    assert "Training on easier bins than the test bin (easy-to-hard) gains" in sft


@pytest.mark.parametrize("slope,near,far,expected", [
    (-0.04, 0.10, 0.02, "gains fade as the gap grows."),
    (-0.04, 0.10, -0.02, "gains near the diagonal fade and turn into losses as the gap grows."),
    (-0.04, -0.01, -0.10, "losses deepen as the gap grows."),
    (0.04, 0.01, 0.10, "gains grow with the gap."),
    (0.04, -0.10, -0.01, "losses shrink as the gap grows."),
    (0.04, -0.05, 0.03, "losses near the diagonal turn into gains as the gap grows."),
])
def test_trend_words_follow_the_signs(slope, near, far, expected):
    from crossdiff.results.summary_report import paragraph

    row = _summary_row(slope=slope, near_gain=near, far_gain=far, easy_to_hard=0.05, hard_to_easy=0.01, asymmetry=0.04)
    text = paragraph({**row, "method": "icl-k1"}, 0.95, 1)
    assert expected in text and "1 demonstration from the train bin" in text
    assert "easy-to-hard transfers better." in text


# ------------------------------------------------------------------ the same seed gives the same bytes
PIPELINE = """
import json, sys
from pathlib import Path
from crossdiff.models.tiny import build_base_model
from crossdiff.finetune.run import finetune
out = Path(sys.argv[1])
build_base_model(out / "base", None, {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                                      "warmup_problems": 300, "warmup_steps": 4, "batch_size": 16, "eval_items": 0})
(out / "train.jsonl").write_text("".join(json.dumps({"prompt": f"{i}+{i}=", "completion": str(2 * i)}) + "\\n"
                                         for i in range(24)))
finetune(out / "base", out / "train.jsonl", out / "ft", settings={"max_steps": 1, "per_device_train_batch_size": 8,
                                                                 "device": "cpu", "learning_rate": 1e-3,
                                                                 "warmup_ratio": 0.0})
import torch
print("threads", torch.get_num_threads(), "deterministic", torch.are_deterministic_algorithms_enabled())
"""


def test_two_builds_and_a_fine_tune_step_are_byte_identical(tmp_path):
    """Two processes (different hash seeds, no OMP_NUM_THREADS: the fixed default, not the core count)
    build the tiny model and fine-tune it one step: the same weights, byte for byte."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    outs = []
    for i, hash_seed in enumerate(("1", "2")):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        env.update(PYTHONPATH=str(REPO / "workflow"), PYTHONHASHSEED=hash_seed, HF_HUB_OFFLINE="1")
        out = tmp_path / f"run{i}"
        proc = subprocess.run([sys.executable, "-c", PIPELINE, str(out)], env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "threads 2 deterministic True" in proc.stdout, proc.stdout[-2000:]
        outs.append(out)
    for name in ("base/model.safetensors", "base/tokenizer.json", "ft/model.safetensors"):
        a, b = ((o / name).read_bytes() for o in outs)
        assert a == b, f"{name} differs between two runs of the same seed"
    base = (outs[0] / "base/model.safetensors").read_bytes()
    assert (outs[0] / "ft/model.safetensors").read_bytes() != base  # the step changed the weights


def test_job_threads_never_come_from_the_core_count(monkeypatch):
    from crossdiff import compute

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os_module(), "cpu_count", lambda: 64)
    assert compute.job_threads() == compute.DEFAULT_THREADS == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert compute.job_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert compute.job_threads() == 2


def os_module():
    import os

    return os


def test_cli_fixes_the_threads_of_every_job(tmp_path):
    """`crossdiff <command>` with no OMP_NUM_THREADS: the job and what it starts get 2 threads, tokenizers none."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM")}
    env["PYTHONPATH"] = str(REPO / "workflow")
    code = ("import os, sys; from crossdiff.cli import COMMANDS, main; "
            "COMMANDS['probe'] = ('crossdiff_probe', 'x'); sys.exit(main(['probe']))")
    (tmp_path / "crossdiff_probe.py").write_text(
        "import os\ndef add_arguments(p): pass\n"
        "def run(a):\n    import torch\n    print(os.environ['OMP_NUM_THREADS'], os.environ['TOKENIZERS_PARALLELISM'], "
        "torch.get_num_threads())\n")
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "false", "2"], proc.stderr[-2000:]
