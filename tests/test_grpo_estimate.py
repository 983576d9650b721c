"""``crossdiff estimate`` rows of GRPO jobs (crossdiff.plan.grpo_estimate): config/grpo_math.yaml from the
per-benchmark figures and the fixture's config.json sizes, against a direct computation of the stated formulas
(completions = epochs x prompts x G, each prompt + max_completion_length tokens; 6/4 x params x tokens training,
2 x params x tokens generation and reference passes; one GPU per job)."""

import pytest
import yaml

from conftest import REPO


def test_grpo_rows_are_the_stated_formulas_not_sfts(tmp_path, monkeypatch):
    from crossdiff.config import validate
    from crossdiff.finetune.memory_plan import param_count
    from crossdiff.plan.estimate import Context, dataset_profile, effective, estimate, load_model_configs
    from crossdiff.plan.settings import Plan
    from crossdiff.study import methods

    monkeypatch.chdir(tmp_path)
    configs = load_model_configs(REPO / "tests/fixtures/paper_models.json")
    plan = Plan(validate(yaml.safe_load((REPO / "config/grpo_math.yaml").read_text())))
    result = estimate(plan, model_configs=configs, cache_path=None)
    speed = effective(Context(plan, tokenize=False, lookup=False, model_configs=configs, cache_path=None).s, None)
    for mid, lora in (("Qwen/Qwen2.5-1.5B-Instruct", False), ("Qwen/Qwen2.5-7B-Instruct", True)):
        (slug,) = [k for k, m in plan.models.items() if m["id"] == mid]
        (grpo,) = [r for r in result["rows"] if (r["model"], r["dataset"], r["method"]) == (mid, "math", "grpo")]
        (sft,) = [r for r in result["rows"] if (r["model"], r["dataset"], r["method"]) == (mid, "math", "sft")]
        ctx = Context(plan, tokenize=False, lookup=False, model_configs=configs, cache_path=None)
        prompt = dataset_profile(ctx, "math", slug)["prefill"]
        p = param_count(configs[mid])
        tokens = seconds = 0.0
        for run in plan.runs:
            g = plan.grpo("math", slug, methods.run_label("grpo", run))
            assert g["num_generations"] == 8 and g["max_completion_length"] == 1024 and g["beta"] == 0.001
            assert bool(g["lora"]) is lora
            n = sft["train_examples"] / len(plan.runs)  # the same runs' items as SFT's
            completions = g["num_train_epochs"] * n * 8
            run_tokens = completions * (prompt + 1024)
            tokens += run_tokens
            seconds += ((4 if lora else 6) * p * run_tokens / speed["train"]
                        + 2 * p * completions * (prompt / speed["prefill"] + 1024 / speed["decode"])
                        + (0 if lora else 2 * p * run_tokens / speed["prefill"]))
        assert grpo["train_tokens"] == round(tokens) and grpo["tokens_from"] == "grpo"
        assert grpo["train_gpu_h"] == pytest.approx(seconds / 3600)
        assert grpo["gpus_per_job"] == 1 and grpo["fine_tunes"] == sft["fine_tunes"] == len(plan.runs)
        assert grpo["train_tokens"] > 4 * sft["train_tokens"]  # 8 sampled completions of 1024 tokens per prompt
    (big,) = [r for r in result["rows"] if r["model"] == "Qwen/Qwen2.5-7B-Instruct" and r["method"] == "sft"
              and r["dataset"] == "math"]
    assert big["gpus_per_job"] == 4  # SFT's 7B row keeps its GPUs; GRPO's is one process
