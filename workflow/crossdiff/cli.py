"""The ``crossdiff`` command line: one subcommand per workflow stage.

Each stage module defines ``add_arguments(parser)`` and ``run(args)``; a module is imported only
when its subcommand runs, so ``crossdiff --help`` stays fast and heavy libraries (torch, lm-eval)
load only for the stages that need them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from crossdiff.errors import CrossdiffError

# subcommand -> (module, one-line help). Add new stages here.
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-items": ("crossdiff.items.adapters", "item table: generated benchmark, or a real one (hub or local file)"),
    "simulate-leaderboard": ("crossdiff.responses.simulate", "sample a leaderboard from a known 2PL"),
    "collect-leaderboard": ("crossdiff.responses.leaderboard", "collect a response matrix from Open LLM Leaderboard details"),
    "import-responses": ("crossdiff.responses.build", "build the canonical response matrix"),
    "fit-irt": ("crossdiff.irt.fit", "fit a 1PL/2PL IRT model to a response matrix"),
    "make-bins": ("crossdiff.bins.make", "split items into equal-size difficulty bins"),
    "published-difficulty": ("crossdiff.bins.published", "match the authors' published difficulties to the items (bins.by: published)"),
    "bin-stability": ("crossdiff.bins.stability", "share of items whose bin changes between two fits"),
    "plot-difficulty": ("crossdiff.bins.figures", "difficulty report figures"),
    "register-models": ("crossdiff.slugs", "table of model ids and their path-safe slugs"),
    "build-base-model": ("crossdiff.models.tiny", "build the tiny local base model of the embedded default"),
    "make-sft-data": ("crossdiff.study.sft_data", "prompt/completion training data of one bin"),
    "attach-solutions": ("crossdiff.study.solutions", "one model's training solutions joined into a dataset's items"),
    "make-train-set": ("crossdiff.study.designs", "training data of a study design: train set, subsample, curriculum"),
    "make-task": ("crossdiff.evaluate.run", "lm-eval task (YAML + JSONL) of one bin"),
    "finetune": ("crossdiff.finetune.run", "fine-tune a model on one bin (TRL SFT, resumable)"),
    "evaluate": ("crossdiff.evaluate.run", "score one model on several bins in one lm-eval call"),
    "aggregate": ("crossdiff.results.aggregate", "tidy results table with gains and bootstrap intervals"),
    "plot-results": ("crossdiff.results.heatmaps", "accuracy and gain heatmaps, gain vs bin gap"),
    "show-prompt": ("crossdiff.prompts.show", "one item's exact training text, evaluation request and scored output"),
    "size-difficulty": ("crossdiff.results.sizes", "accuracy over (train bin, train size) and the best train bin per size"),
    "zero-shot-measure": ("crossdiff.evaluate.zero_shot", "a base model's zero-shot error on every item (bins.by: zero_shot:<slug>)"),
    "evaluate-icl": ("crossdiff.evaluate.icl", "score a base model with k demonstrations from each train bin on every test bin (one load)"),
    "loss-measure": ("crossdiff.evaluate.loss_measure", "a base model's mean NLL of every item's training target (bins.by: loss:<slug>)"),
    "text-prob-measure": ("crossdiff.evaluate.text_prob", "a base model's summed NLL of every item's answer and question text, empty prompt (bins.by: answer_prob:<slug>, question_prob:<slug>)"),
    "bin-agreement": ("crossdiff.bins.agreement", "agreement of a dataset's measure bins with its IRT bins"),
    "summarize": ("crossdiff.results.summary", "the answer in numbers: slope of gain on |gap|, asymmetry, best train bin"),
    "gpu-run": ("crossdiff.runtime.gpus", "run a command on its own GPU(s) (locks locally; pass-through under SLURM)"),
    "grpo": ("crossdiff.finetune.grpo", "reinforcement learning on one bin: GRPO with verifiable rewards (TRL, resumable)"),
    "pass-rate-measure": ("crossdiff.evaluate.pass_rate", "a base model's pass rate over k samples of every item (bins.by: pass_rate:<slug>)"),
    "grpo-diagnostics": ("crossdiff.results.grpo_diagnostics", "GRPO jobs' reward curves and learnable shares: table and figure"),
    "resolve": ("crossdiff.plan.settings", "print each (dataset, model) fine-tune's and evaluation's resolved settings"),
    "evaluate-icl-shared": ("crossdiff.evaluate.icl_shared", "ICL as Hase et al. 2024: one demonstration set per bootstrap for every test item (one load)"),
    "sgr": ("crossdiff.results.sgr", "Supervision Gap Recovered (Hase et al. 2024) per model x dataset x method x test bin, with a figure"),
    "length-tokens-measure": ("crossdiff.bins.token_length", "a text column's length in tokens per item (bins.by: length_tokens:COLUMN)"),
    "plot-transfer": ("crossdiff.results.transfer", "heatmaps of checkpoints of one dataset scored on another's bins (test_on)"),
    "optimum-by-n": ("crossdiff.results.optimum", "the best train bin per training size n and its shift with n"),
    "probe-states": ("crossdiff.evaluate.hidden", "a base model's hidden states of every (item, option) sequence (probes, MDL)"),
    "evaluate-probe": ("crossdiff.evaluate.probe", "linear probes per train bin on a model's hidden states, scored on every test bin"),
    "mdl-measure": ("crossdiff.evaluate.mdl", "Hase et al.'s MDL of every item from models' hidden states (bins.by: mdl:<slug>)"),
    "partial-results": ("crossdiff.results.partial", "results so far: progress, heatmaps with missing cells marked, the summary on what exists"),
    "estimate": ("crossdiff.plan.estimate", "the study's cost before it runs: tokens, GPU-hours and disk per model x dataset x method"),
}


def json_arg(text: str):
    """argparse type for options that take a JSON object (the rules pass config sections this way)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at char {exc.pos}): {text[:80]}")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: crossdiff <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'crossdiff <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from crossdiff import __version__

        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"crossdiff: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    from crossdiff.compute import fixed_threads

    fixed_threads()  # before torch/numpy load: threads from OMP_NUM_THREADS or a fixed default, never the core count
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"crossdiff {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        module.run(args)
    except CrossdiffError as exc:
        print(f"crossdiff {name}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
