"""The study's methods in one table: what ``study.methods`` may name and how each method's cells are labelled.

A *method* produces the cells of one or more rows of the results table (``method`` column) from a train
bin (or train set) of a dataset: ``sft`` fine-tunes a model per run (the paper), ``icl`` scores the base
model with k demonstrations from the bin. Every place that needs to know the methods (the rules'
target lists and evaluation labels, the results table's ``method`` column, the summary's order, the
heatmaps' folders) reads this table; a new method is its module(s) plus one :data:`METHODS` entry.

Labels (``<label>`` is a method's results-table label: ``sft``, ``icl-k8``, ...):

==================  ==========================  =============================  ==================================
                    sft (the paper's paths)     any other method               example
==================  ==========================  =============================  ==================================
fine-tune folder    ``bin3``                    ``<name>-bin3`` (trained only) ``results/finetune/m/d/dft-bin3``
evaluation folder   ``train3``                  ``<label>-train3``             ``results/eval/m/d/icl-k8-train3``
result train_bin    ``3``                       ``<label>-3``                  ``icl-k8-3``
heatmap folder      ``results/figures/d/m/``    ``results/figures/d/<label>/m/``
==================  ==========================  =============================  ==================================

The rest of a label (``3``, ``3-n100-seed1``, ``set-easy``) is :mod:`crossdiff.study.designs`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from crossdiff.errors import CrossdiffError


@dataclass(frozen=True)
class Method:
    name: str         #: the value in ``study.methods``
    trains: bool      #: one fine-tune job per run of the design (a checkpoint), else cells of the base model
    label: str        #: regex of its results-table ``method`` labels (one per variant, e.g. ``icl-k\d+``)
    rule: str         #: the Snakemake rule that writes its evaluation cells
    design: bool      #: runs follow the whole design (train sets, sizes, seeds); else train bins only
    about: str        #: one line for the report and the docs
    #: settings the method puts over the config's finetune layers (a trainer variant, e.g. a loss type)
    finetune: dict | None = field(default=None, hash=False, compare=False)
    #: trained methods: the rule that trains a run (the ``finetune`` rule for TRL SFT and its loss variants; a
    #: trainer of its own gets its own rule, whose ``{run}`` wildcard :func:`trained_pattern` keeps apart)
    train_rule: str | None = None


METHODS: dict[str, Method] = {
    "sft": Method("sft", True, "sft", "evaluate_checkpoint", True,
                  "a fine-tune per train bin (TRL SFT; crossdiff.finetune), scored on every test bin",
                  train_rule="finetune"),
    "icl": Method("icl", False, r"icl-k\d+", "evaluate_icl", False,
                  "the base model with k demonstrations from the train bin (crossdiff.evaluate.icl)"),
    "grpo": Method("grpo", True, "grpo", "evaluate_checkpoint", True,
                   "reinforcement learning per train bin: GRPO with the evaluation score as verifiable reward "
                   "(TRL GRPOTrainer; crossdiff.finetune.grpo), scored on every test bin",
                   train_rule="finetune_grpo"),
    # Liu et al. 2026 put DFT beside SFT: the same bins, sizes and seeds, TRL's own loss (crossdiff.finetune.dft)
    "dft": Method("dft", True, "dft", "evaluate_checkpoint", True,
                  "a fine-tune per train bin with the Dynamic Fine-Tuning loss (Wu et al. 2025; TRL loss_type dft), "
                  "scored on every test bin", finetune={"loss": "dft"}, train_rule="finetune"),
    "probe": Method("probe", False, "probe", "evaluate_probe", False,
                    "a linear probe on the frozen base model's hidden states per train bin, Hase et al. 2024 "
                    "(crossdiff.evaluate.probe)"),
}


def get(name: str) -> Method:
    if name not in METHODS:
        raise CrossdiffError(f"study.methods: unknown method {name!r}; expected one of: {', '.join(METHODS)}")
    return METHODS[name]


def ks_of(icl: dict) -> list[int]:
    """``study.icl.k`` as a sorted list (one value or several)."""
    k = icl.get("k", [])
    ks = [k] if isinstance(k, int) else list(k)
    if not ks or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in ks):
        raise CrossdiffError(f"study.icl.k: expected an integer >= 1 or a list of them, got {k!r} "
                             "(the zero-shot cell is the k = 0 row)")
    return sorted(set(ks))


def labels(name: str, icl: dict | None = None) -> list[str]:
    """The results-table labels a method produces: ``["sft"]``, ``["icl-k4", "icl-k8"]``."""
    m = get(name)
    if m.name == "icl":
        return [f"icl-k{k}" for k in ks_of(icl or {})]
    return [m.name]


def method_of_label(label: str) -> Method:
    """The method behind a results-table label (``icl-k8`` -> icl)."""
    for m in METHODS.values():
        if re.fullmatch(m.label, label):
            return m
    raise CrossdiffError(f"method label {label!r}: not a label of any method ({', '.join(METHODS)})")


_PREFIX = None


def _prefix() -> re.Pattern:
    global _PREFIX
    if _PREFIX is None:
        alts = "|".join(f"(?:{m.label})" for m in METHODS.values() if m.name != "sft")
        _PREFIX = re.compile(rf"^(?P<label>{alts})-(?P<rest>.+)$")
    return _PREFIX


def split_label(train: str) -> tuple[str, str]:
    """(method label, the design's part) of an evaluation folder or result train_bin label:
    ``icl-k8-train3`` -> (``icl-k8``, ``train3``); ``3-n100`` -> (``sft``, ``3-n100``)."""
    m = _prefix().match(str(train))
    return (m["label"], m["rest"]) if m else ("sft", str(train))


def prefixed(label: str, rest: str) -> str:
    """A design label under a method label (nothing for sft): ``prefixed('icl-k8', 'train3')``."""
    return rest if label == "sft" else f"{label}-{rest}"


def run_label(name: str, run: str) -> str:
    """The fine-tune folder of a trained method's run: ``bin3`` (sft) or ``<name>-bin3``."""
    if not get(name).trains:
        raise CrossdiffError(f"method {name!r} trains no model")
    return prefixed(name, run)


def split_run(run: str) -> tuple[str, str]:
    """(method name, the design's run label) of a fine-tune folder: ``bin3`` -> (sft, bin3)."""
    for m in METHODS.values():
        if m.trains and m.name != "sft" and str(run).startswith(m.name + "-"):
            return m.name, str(run)[len(m.name) + 1:]
    return "sft", str(run)


def trained_pattern(pattern: str, train_rule: str | None = None) -> str:
    """A design label regex (:data:`crossdiff.study.designs.RUN_PATTERN`, ``EVAL_PATTERN``) with the optional
    ``<method>-`` prefix of the trained methods other than sft (the rules' wildcard constraints); with
    ``train_rule``, only the methods that rule trains (sft's own prefix is none, so it needs sft's rule)."""
    alts = [re.escape(m.name) for m in METHODS.values() if m.trains and m.name != "sft"
            and (train_rule is None or m.train_rule == train_rule)]
    return f"(?:(?:{'|'.join(alts)})-)?(?:{pattern})" if alts else pattern


def other_labels_pattern() -> str:
    """A regex of every results-table label but sft's (the heatmap rule of the other methods)."""
    return "|".join(f"(?:{m.label})" for m in METHODS.values() if m.name != "sft")


def figure_dir(label: str) -> str:
    """The heatmaps' sub-folder of a method label under ``results/figures/<dataset>/``: '' for sft."""
    return "" if label == "sft" else f"{label}/"


def sort_key(label: str) -> tuple:
    """Methods in table order, variants by their numbers (``icl-k4`` before ``icl-k16``)."""
    names = list(METHODS)
    try:
        i = names.index(method_of_label(label).name)
    except CrossdiffError:
        i = len(names)
    return (i, [int(x) for x in re.findall(r"\d+", label)], label)
