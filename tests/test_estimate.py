"""``crossdiff estimate`` without running anything (issue 31, part B): config/paper.yaml from the per-benchmark
figures and the paper's config.json sizes, checked against a direct computation of the stated formulas; the
gpu_check figures read from both of its outputs; settings and schema. The estimate on a real study's data is
in tests/test_cost_and_progress.py."""

import importlib.util
import json
import math

import pytest

from conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "paper_models.json"


def paper_plan(edit=None):
    import yaml

    from crossdiff.config import validate
    from crossdiff.plan.settings import Plan

    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    if edit:
        edit(config)
    return Plan(validate(config))


def configs():
    from crossdiff.plan.estimate import load_model_configs

    return load_model_configs(FIXTURE)


def row(result, model, dataset, method):
    (r,) = [r for r in result["rows"] if (r["model"], r["dataset"], r["method"]) == (model, dataset, method)]
    return r


def test_paper_arc_row_is_the_stated_formulas(tmp_path, monkeypatch):
    """Nothing local: ARC from the per-benchmark figures (1172 items, 282 + 2 chars, 4 options), 4 characters a
    token + 30 chat-template tokens, 10 bins x 5 epochs, 6 x params x tokens at 0.33 x 989 TFLOP/s."""
    from crossdiff.finetune.memory_plan import param_count
    from crossdiff.plan.estimate import estimate

    monkeypatch.chdir(tmp_path)
    result = estimate(paper_plan(), model_configs=configs(), cache_path=None)
    mid = "Qwen/Qwen2.5-1.5B-Instruct"
    p = param_count(configs()[mid])
    sft, zero = row(result, mid, "arc", "sft"), row(result, mid, "arc", "zero-shot")
    per_example = (282 + 2) / 4 + 30 + 1  # prompt + target characters / 4, chat template, EOS
    tokens = 1172 * per_example * 5
    assert sft["tokens_from"] == "benchmark" and sft["fine_tunes"] == 10 and sft["train_examples"] == 1172
    assert sft["train_tokens"] == round(tokens)
    flops = 0.33 * 989e12
    assert sft["train_gpu_h"] == pytest.approx(6 * p * tokens / flops / 3600)
    prefill = 4 * ((282 / 4 + 30) + 2 / 4)  # multiple choice: a forward pass per option (prompt + option)
    assert zero["eval_tokens"] == round(1172 * prefill)
    assert zero["eval_gpu_h"] == pytest.approx(1172 * 2 * p * prefill / flops / 3600)
    assert sft["eval_gpu_h"] == pytest.approx(10 * zero["eval_gpu_h"])  # one pass per checkpoint
    # disk: bf16 model 2 bytes/parameter; ceil(117.2 / 8) x 5 = 75 steps, one checkpoint (save_steps 50) of 12
    assert sft["model_gb"] == pytest.approx(2 * p / 1e9)
    assert sft["peak_gb_per_job"] == pytest.approx(14 * p / 1e9)
    assert sft["kept_gb"] == 0  # storage.delete_finetuned_models: true
    # job overhead: 120 s + model read (2P bytes at 1 GB/s) per job, + the checkpoint and model written per fine-tune
    load = 120 + 2 * p / 1e9
    assert sft["overhead_gpu_h"] == pytest.approx(10 * (load + 14 * p / 1e9) / 3600 + 10 * load / 3600)
    t = result["totals"]
    assert t["fine_tunes"] == 420 and t["eval_passes"] == 420 + 42
    assert t["models_written_gb"] == pytest.approx(sum(60 * 2 * param_count(c) / 1e9 for c in configs().values()))
    assert t["gpu_h"] == pytest.approx(t["train_gpu_h"] + t["eval_gpu_h"] + t["overhead_gpu_h"])
    assert not result["missing"]


def test_generation_cost_up_to_max_gen_toks_or_the_target(tmp_path, monkeypatch):
    """GSM8K generates: prefill = the prompt, decoded = max_gen_toks (256) or the target (300 chars / 4 + EOS)."""
    from crossdiff.finetune.memory_plan import param_count
    from crossdiff.plan.estimate import estimate

    monkeypatch.chdir(tmp_path)
    mid = "meta-llama/Llama-3.2-1B-Instruct"
    p = param_count(configs()[mid])
    prompt = 250 / 4 + 30
    for generation, decoded in (("max_gen_toks", 256), ("target", 300 / 4 + 1)):
        result = estimate(paper_plan(), model_configs=configs(), cache_path=None, overrides={"generation": generation})
        zero = row(result, mid, "gsm8k", "zero-shot")
        assert zero["eval_tokens"] == round(1319 * (prompt + decoded))
        expect = 1319 * 2 * p * (prompt / (0.33 * 989e12) + decoded / (16 * 3.35e12)) / 3600
        assert zero["eval_gpu_h"] == pytest.approx(expect)


def test_nodes_times_gpus_per_fine_tune(tmp_path, monkeypatch):
    """resources.finetune.nodes (multi-node fine-tuning, where present): a job holds nodes x gpu GPUs; the
    compute's GPU-hours stay, its wall time and the job overhead's GPU-hours follow the GPUs."""
    from crossdiff.plan.estimate import estimate
    from crossdiff.plan.settings import Plan

    monkeypatch.chdir(tmp_path)
    plan = paper_plan()
    one = estimate(plan, model_configs=configs(), cache_path=None)
    original = Plan.resources

    def with_nodes(self, stage, slug=None):
        r = dict(original(self, stage, slug))
        return {**r, "nodes": 4} if stage == "finetune" else r

    monkeypatch.setattr(Plan, "resources", with_nodes)
    four = estimate(paper_plan(), model_configs=configs(), cache_path=None)
    mid = "Qwen/Qwen2.5-14B-Instruct"
    a, b = row(one, mid, "bbh", "sft"), row(four, mid, "bbh", "sft")
    assert (a["gpus_per_job"], b["gpus_per_job"]) == (8, 32)
    assert b["train_gpu_h"] == pytest.approx(a["train_gpu_h"])
    compute_wall = a["train_gpu_h"] / 10
    assert b["wall_h_per_job"] - a["wall_h_per_job"] == pytest.approx(compute_wall / 32 - compute_wall / 8)


def test_kept_disk_follows_the_storage_policy(tmp_path, monkeypatch):
    from crossdiff.finetune.memory_plan import param_count
    from crossdiff.plan.estimate import estimate

    monkeypatch.chdir(tmp_path)

    def keep(config):
        config["storage"]["delete_finetuned_models"] = False
        config["finetune"]["keep_checkpoints"] = True

    result = estimate(paper_plan(keep), model_configs=configs(), cache_path=None)
    mid = "Qwen/Qwen2.5-7B-Instruct"
    p = param_count(configs()[mid])
    # ARC: one checkpoint per run (75 steps, save_steps 50) kept beside each of the 10 models
    assert row(result, mid, "arc", "sft")["kept_gb"] == pytest.approx(10 * (2 + 12) * p / 1e9)


def test_a_missing_config_json_is_listed_not_guessed(tmp_path, monkeypatch):
    from crossdiff.plan.estimate import estimate, format_summary

    monkeypatch.chdir(tmp_path)
    known = {k: v for k, v in configs().items() if not k.startswith("meta-llama/Llama-3.1")}
    result = estimate(paper_plan(), model_configs=known, cache_path=None)
    assert any("params of meta-llama/Llama-3.1-8B-Instruct" in m for m in result["missing"])
    r = row(result, "meta-llama/Llama-3.1-8B-Instruct", "arc", "sft")
    assert r["train_gpu_h"] is None and r["eval_gpu_h"] is None and r["train_tokens"] > 0
    assert ">= " in format_summary(result)


GPU_CHECK_MD = """# gpu_check on NVIDIA H200, 312 s

| check | ok | wall_s | engine | share_changed | peak_gb | plan_gb | tokens_per_s | mfu | items_per_s | note | error |
|---|---|---|---|---|---|---|---|---|---|---|---|
| tiny-qwen2 single | True | 3.1 | single x1 | 1 | 0.1 | 1.6 | 900 | 0.0001 |  |  |  |
| llama-1.5b single | True | 40.2 | single x1 | 1 | 30.1 | 33 | 3.1e+04 | 0.31 |  |  |  |
| llama-1.5b fsdp2 world 1 | True | 44 | fsdp2 x1 | 1 | 28 | 33 | 2.9e+04 | 0.29 |  |  |  |
| llama-1.5b lora | True | 20 | single x1 | 1 | 10 | 12 | 5e+04 | 0.5 |  |  |  |
| llama-1.5b qlora nf4 |  |  |  |  |  |  |  |  |  | bitsandbytes not importable: skipped |  |
| hf eval qwen2-0.5b | True | 20 |  |  |  |  |  |  | 12.5 |  |  |
"""


def test_gpu_check_outputs_read(tmp_path):
    from crossdiff.finetune.memory_plan import param_count
    from crossdiff.plan.estimate import effective, read_measured, resolve_settings

    md = tmp_path / "gpu_check.md"
    md.write_text(GPU_CHECK_MD)
    got = read_measured(md)
    assert got["device"] == "NVIDIA H200"
    assert got["flops"] == pytest.approx(0.30 * 989e12)  # median of the two full fine-tuning rows, not tiny, not LoRA
    p = param_count({"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
                     "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936})
    assert got["decode_flops"] == pytest.approx(2 * p * (7 + 256) * 12.5)
    js = tmp_path / "gpu_check.json"
    js.write_text(json.dumps({"device": "NVIDIA H200", "rows": [
        {"check": "llama-1.5b single", "ok": True, "mfu": 0.31}, {"check": "llama-1.5b fsdp2 world 1", "ok": True, "mfu": 0.29},
        {"check": "hf eval qwen2-0.5b", "ok": True, "items_per_s": 12.5}]}))
    assert read_measured(js) == {**got, "notes": read_measured(js)["notes"]}
    # the measured FLOP/s per GPU are kept whatever peak_tflops says (gpu_check divides by 989)
    speed = effective(resolve_settings({"peak_tflops": 2250}), got)
    assert speed["train"] == pytest.approx(0.30 * 989e12) and speed["decode"] == pytest.approx(got["decode_flops"])
    smoke = tmp_path / "smoke.json"
    smoke.write_text(json.dumps({"device": "cpu (smoke)", "rows": [{"check": "tiny-qwen2 single", "ok": True, "mfu": None}]}))
    with pytest.raises(Exception, match="no usable gpu_check row"):
        read_measured(smoke)


def test_gpu_check_figures_match_the_benchmark_script():
    from crossdiff.plan.estimate import GPU_CHECK_PEAK_TFLOPS, GPU_CHECK_SIZES

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.SIZES == GPU_CHECK_SIZES
    assert mod.H200_BF16_FLOPS == GPU_CHECK_PEAK_TFLOPS * 1e12
    text = (REPO / "benchmarks" / "gpu_check.py").read_text()
    assert '"max_gen_toks": 8 if smoke else 256' in text  # the 256 decoded tokens per item of its hf eval row


def test_settings_are_checked_and_resolved():
    from crossdiff.config import validate
    from crossdiff.errors import CrossdiffError
    from crossdiff.plan.estimate import DEFAULTS, resolve_settings

    with pytest.raises(CrossdiffError, match=r"resources.estimate.mfu = 1.5"):
        resolve_settings({"mfu": 1.5})
    with pytest.raises(CrossdiffError, match="unknown key"):
        resolve_settings({"mfu_": 0.3})
    plan = paper_plan(lambda c: c["resources"].update(estimate={"mfu": 0.2, "generation": "target"}))
    assert plan.estimate() == {**DEFAULTS, "mfu": 0.2, "generation": "target"}
    with pytest.raises(Exception, match="bogus"):
        validate({"resources": {"estimate": {"bogus": 1}}})
    assert math.isclose(resolve_settings(None)["mfu"], 0.33)


def test_planned_cells_of_every_method():
    from crossdiff.results.partial import planned_cells

    cells = planned_cells({"n_bins": 2, "models": ["m"], "datasets": {"d": ["zero-shot", "train0-seed1", "icl-k2-train1"]}})
    got = {(c["method"], c["train_bin"], c["train_bin_index"], c["test_bin"]) for c in cells}
    assert got == {("zero-shot", "zero-shot", None, 0), ("zero-shot", "zero-shot", None, 1), ("sft", "0", 0, 0),
                   ("sft", "0", 0, 1), ("icl-k2", "1", 1, 0), ("icl-k2", "1", 1, 1)}
    assert cells[2]["path"] == "results/eval/m/d/train0-seed1/bin0.json"


@pytest.mark.parametrize("argv, dry", [(["snakemake", "-n"], True), (["snakemake", "-np", "--cores", "1"], True),
                                       (["snakemake", "--dry-run"], True), (["snakemake", "-c", "1"], False),
                                       (["snakemake", "--configfile", "-n.yaml"], False), (["snakemake", "-j8"], False)])
def test_dry_run_detection(argv, dry):
    from crossdiff.plan.estimate import is_dry_run

    assert is_dry_run(argv) is dry
