"""One resolver: every job's effective settings, computed once from the validated config.

Each settings section is the deep merge (:func:`crossdiff.config.deep_merge`: nested mappings key by key at
every depth, lists and scalars replaced, an explicit ``null`` replaces) of its layers, later layers winning:

=============  ===========================================================================================
section        layers (first = lowest)
=============  ===========================================================================================
finetune       crossdiff's defaults (:data:`crossdiff.finetune.settings.DEFAULTS`; LoRA's learning rate when
               the merged layers set ``lora`` and no ``learning_rate``) < the named preset the merged layers
               choose (``preset``: :mod:`crossdiff.finetune.presets`) < ``finetune`` < the dataset's
               ``prompt.max_length`` (a benchmark's own training length) < ``datasets.<d>.finetune`` <
               ``models[].finetune`` < the method's own settings (:mod:`crossdiff.study.methods`) < the run's
               design (``-seed<s>``: seed; curricula: ``shuffle: false``; :mod:`crossdiff.study.designs`)
evaluate       :data:`crossdiff.evaluate.run.DEFAULTS` < ``evaluate`` < ``datasets.<d>.evaluate`` <
               ``models[].evaluate``
icl            ``study.icl`` < ``datasets.<d>.icl`` (k, protocol, n_bootstrap, prompt_id per dataset)
probe          :data:`crossdiff.evaluate.probe.DEFAULTS` < ``study.probe`` < ``datasets.<d>.probe``
mdl            :data:`crossdiff.evaluate.mdl.DEFAULTS` < ``bins.mdl`` < ``datasets.<d>.bins.mdl``; ``models``
               resolved from ``bins.by`` (``mdl:<slug>``: that model; ``mdl:avg``: ``models``, null = all)
filters        ``filters`` < ``datasets.<d>.filters``
prompt         the benchmark adapter's format < ``datasets.<d>.prompt``
resources      ``resources.<stage>`` < ``models[].resources`` (fine-tuning)
grpo           the run's resolved finetune settings' shared keys < :data:`crossdiff.finetune.grpo_settings.DEFAULTS`
               (TRL's) < ``grpo`` < ``datasets.<d>.grpo`` < ``models[].grpo`` < the run's design (seed, shuffle)
pass_rate      :data:`crossdiff.evaluate.pass_rate.DEFAULTS` < ``bins.pass_rate`` < ``datasets.<d>.bins.pass_rate``
estimate       :data:`ESTIMATE_DEFAULTS` < ``resources.estimate`` (``crossdiff estimate``, the dry run's summary)
=============  ===========================================================================================

Rules pass a job the resolved section (``--settings JSON``); the job validates it and merges nothing. The
checks of :mod:`crossdiff.plan.checks` run on these values, so a setting given at any level is checked.
"""

from __future__ import annotations

import functools
import json
import os

from crossdiff.config import deep_merge
from crossdiff.errors import CrossdiffError
from crossdiff.slugs import slugify
from crossdiff.study import designs, methods


#: ``resources.estimate`` defaults (their sources: :mod:`crossdiff.plan.estimate`, config/README.md)
ESTIMATE_DEFAULTS = {
    "mfu": 0.33,
    "peak_tflops": 989.0,
    "eval_mfu": None,
    "decode_mfu": None,
    "decode_batch": 16,
    "hbm_tbps": 3.35,
    "chars_per_token": 4.0,
    "chat_overhead_tokens": 30,
    "generation": "max_gen_toks",
    "startup_s": 120,
    "io_gbps": 1.0,
    "measured": None,
}


class Plan:
    """The validated config, with each job's resolved settings (cached: a paper-scale dry run asks for the
    same ones thousands of times)."""

    def __init__(self, config: dict):
        self.config = config
        self.datasets = sorted(config["datasets"])
        self.models = {slugify(m["id"]): m for m in config["models"]}
        self.n_bins = int(config["bins"]["n_bins"])
        self.study = config["study"]
        for name in self.study["methods"]:
            methods.get(name)

    # ------------------------------------------------------------------------------------ config entries
    def dataset(self, name: str) -> dict:
        return self.config["datasets"][name]

    def model_key(self, slug: str) -> str:
        """How messages name a model's config entry: ``models[1] (org/name)``."""
        ids = [m["id"] for m in self.config["models"]]
        mid = self.models[slug]["id"]
        return f"models[{ids.index(mid)}] ({mid})"

    def items_table(self, name: str):
        """The dataset's item table path, or None (items.source: none)."""
        src = self.dataset(name)["items"]["source"]
        if src in ("synthetic", "hub", "lm_eval_task", "corpus"):
            return f"results/items/{name}.parquet"
        if src == "file":
            return self.dataset(name)["items"]["path"]
        return None

    def extra_measures(self, name: str) -> list[str]:
        """``datasets.<name>.bins.measures``: measures shown beside IRT difficulty and bins.by
        (crossdiff.bins.measure_set; checked by crossdiff.plan.checks.measure_list_problems)."""
        return list(self.dataset(name)["bins"].get("measures") or [])

    def own_solutions(self, slug: str, name: str):
        """The model's own solutions source for a dataset (models[].solutions.<name>), or None."""
        return (self.models[slug].get("solutions") or {}).get(name)

    def model_items_table(self, name: str, slug: str):
        """The items a model trains on (and takes ICL demonstrations from): its own solutions' table when it
        has them for this dataset, else the dataset's."""
        if self.own_solutions(slug, name):
            return f"results/items/{name}/solutions-{slug}.parquet"
        return self.items_table(name)

    def base_model_ref(self, slug: str) -> str:
        m = self.models[slug]
        return f"results/models/{slug}" if m["build"] else m["id"]

    # ------------------------------------------------------------------------------------- the design
    def study_datasets(self) -> list[str]:
        names = self.study["datasets"]
        if names is None:
            names = [d for d in self.datasets if self.dataset(d)["items"]["source"] != "none"]
        return list(names) if self.config["models"] else []

    def train_bins(self) -> list[int]:
        bins = self.study["train_bins"]
        return list(range(self.n_bins)) if bins is None else list(bins)

    @functools.cached_property
    def runs(self) -> tuple[str, ...]:
        """Every fine-tune of the design, without a method: (train bins + sets) x train_sizes x seeds."""
        return tuple(designs.design_runs(self.study, self.n_bins))

    def methods(self) -> list[methods.Method]:
        return [methods.get(n) for n in self.study["methods"]]

    def trained_methods(self) -> list[methods.Method]:
        return [m for m in self.methods() if m.trains]

    def finetune_runs(self) -> list[str]:
        """Every fine-tune folder label of the study: ``bin3`` (sft), ``<method>-bin3`` (other trainers)."""
        return [methods.run_label(m.name, r) for m in self.trained_methods() for r in self.runs]

    def method_labels(self, name: str) -> list[str]:
        """The results-table labels of the study's methods for one dataset (``sft``, ``icl-k8``, ...)."""
        return [lab for m in self.methods() for lab in methods.labels(m.name, self.icl(name))]

    @functools.cache
    def eval_labels(self, name: str) -> tuple[str, ...]:
        """Every evaluation folder of a model on a dataset: zero-shot, each method's cells."""
        out = ["zero-shot"]
        for m in self.methods():
            for label in methods.labels(m.name, self.icl(name)):
                if m.trains:
                    out += [methods.prefixed(label, designs.eval_label(r)) for r in self.runs]
                else:
                    out += [methods.prefixed(label, f"train{b}") for b in self.train_bins()]
        return tuple(out)

    def run_of_eval(self, label: str) -> str:
        """The fine-tune folder behind a trained method's evaluation label (``train3`` -> ``bin3``)."""
        method, rest = methods.split_label(label)
        return methods.prefixed(method, designs.run_of_eval(rest))

    # ------------------------------------------------------------------------------- resolved sections
    def prompt(self, name: str) -> dict:
        from crossdiff.items.adapters import prompt_for

        return prompt_for(self.dataset(name)["items"], self.dataset(name).get("prompt"))

    def filters(self, name: str) -> dict:
        return deep_merge(self.config["filters"], self.dataset(name).get("filters"))

    def icl(self, name: str) -> dict:
        return deep_merge(self.study["icl"], self.dataset(name).get("icl"))

    @functools.cache
    def resources(self, stage: str, slug: str | None = None) -> dict:
        per_model = (self.models[slug].get("resources") or {}) if (slug and stage == "finetune") else None
        return deep_merge(self.config["resources"][stage], per_model)

    def finetune_where(self, name: str, slug: str) -> str:
        return (f"fine-tune settings of dataset {name!r} x {self.model_key(slug)} (finetune < "
                f"datasets.{name}.finetune < {self.model_key(slug).split(' ')[0]}.finetune)")

    @functools.cache
    def finetune_layers(self, name: str, slug: str) -> dict:
        """The config's own finetune layers of a (dataset, model), merged, without defaults or design."""
        fmt_len = self.prompt(name).get("max_length")
        return deep_merge(self.config["finetune"], {"max_length": fmt_len} if fmt_len else None,
                          self.dataset(name).get("finetune"), self.models[slug].get("finetune"))

    @functools.cache
    def finetune(self, name: str, slug: str, run: str | None = None) -> dict:
        """The complete, validated settings of one fine-tune (``run``: its folder label; None = the settings
        every run of the pair shares, before the design's seed and order)."""
        from crossdiff.finetune.settings import defaults_for, validate_settings

        user = self.finetune_layers(name, slug)
        method_layer, design_layer = None, None
        if run is not None:
            method, base = methods.split_run(run)
            method_layer = methods.get(method).finetune
            design_layer = designs.design_layer(self.study, base, self.n_bins)
        from crossdiff.finetune.presets import preset_layer

        try:
            preset = preset_layer(user)
        except CrossdiffError as exc:
            raise CrossdiffError(f"{self.finetune_where(name, slug)}: {exc}") from None
        s = deep_merge(defaults_for(user), preset, user, method_layer, design_layer)
        try:
            return validate_settings(s)
        except CrossdiffError as exc:
            raise CrossdiffError(f"{self.finetune_where(name, slug)}: {exc}") from None

    @functools.cache
    def evaluate(self, name: str, slug: str | None = None) -> dict:
        """The complete, validated evaluation settings of a model on a dataset."""
        from crossdiff.evaluate.run import DEFAULTS, validate_settings

        per_model = (self.models[slug].get("evaluate") or None) if slug else None
        s = deep_merge(DEFAULTS, self.config["evaluate"], self.dataset(name).get("evaluate"), per_model)
        try:
            return validate_settings(s)
        except CrossdiffError as exc:
            where = f"datasets.{name}" + (f" x {self.model_key(slug)}" if slug else "")
            raise CrossdiffError(f"evaluation settings of {where} (evaluate < datasets.{name}.evaluate < "
                                 f"models[].evaluate): {exc}") from None

    # ------------------------------------------------------------------- GRPO and pass rates (issue 29)
    def max_gen_toks(self, name: str) -> int:
        """The tokens evaluation generates for the dataset's items: the prompt's max_gen_toks, or an lm-eval task's."""
        from crossdiff.prompts.format import PromptFormat

        fmt = PromptFormat.from_config(self.prompt(name), where=f"datasets.{name}.prompt")
        if fmt.lm_eval_task is not None:
            from crossdiff.items.lm_eval_task import DEFAULT_MAX_GEN_TOKS, declared_max_gen_toks

            return int(declared_max_gen_toks(self.dataset(name)["items"]) or DEFAULT_MAX_GEN_TOKS)
        return int(fmt.max_gen_toks)

    def grpo_where(self, name: str, slug: str) -> str:
        return (f"GRPO settings of dataset {name!r} x {self.model_key(slug)} (finetune's shared keys < grpo < "
                f"datasets.{name}.grpo < {self.model_key(slug).split(' ')[0]}.grpo)")

    @functools.cache
    def grpo(self, name: str, slug: str, run: str | None = None) -> dict:
        """The complete, validated settings of one GRPO job (:mod:`crossdiff.finetune.grpo_settings`): the run's
        resolved finetune settings' shared keys < GRPO defaults < ``grpo`` < ``datasets.<d>.grpo`` <
        ``models[].grpo`` < the run's design (seed, shuffle). ``run``: its folder label (``grpo-bin3``)."""
        from crossdiff.finetune.grpo_settings import DEFAULTS, SHARED, validate_settings

        ft = self.finetune(name, slug, run)
        design_layer, schedule = None, None
        if run is not None:
            base = methods.split_run(run)[1]
            design_layer = designs.design_layer(self.study, base, self.n_bins)
            schedule = designs.schedule_layer(self.study, base, self.n_bins)
        layers = (self.config.get("grpo"), self.dataset(name).get("grpo"), self.models[slug].get("grpo"))
        # schedule / schedule_args come from the run's train set only (the schema has no such grpo keys)
        s = deep_merge({k: ft[k] for k in SHARED}, DEFAULTS, *layers, design_layer, schedule)
        try:
            if s.get("max_completion_length") is None:
                s["max_completion_length"] = self.max_gen_toks(name)
            return validate_settings(s)
        except CrossdiffError as exc:
            raise CrossdiffError(f"{self.grpo_where(name, slug)}: {exc}") from None

    @functools.cache
    def pass_rate(self, name: str) -> dict:
        """``bins.pass_rate`` < ``datasets.<d>.bins.pass_rate`` over :data:`crossdiff.evaluate.pass_rate.DEFAULTS`,
        validated; ``max_new_tokens: null`` = the prompt's max_gen_toks."""
        from crossdiff.evaluate.pass_rate import DEFAULTS, validate_settings

        s = deep_merge(DEFAULTS, self.config["bins"].get("pass_rate"), self.dataset(name)["bins"].get("pass_rate"))
        try:
            if s.get("max_new_tokens") is None:
                s["max_new_tokens"] = self.max_gen_toks(name)
            return validate_settings(s)
        except CrossdiffError as exc:
            raise CrossdiffError(f"datasets.{name}.bins.pass_rate (bins.pass_rate < datasets.{name}.bins.pass_rate): "
                                 f"{exc}") from None

    # ---------------------------------------- corpora without responses, token lengths, test_on (crossdiff.plan.corpora)
    def has_irt(self, name: str) -> bool:
        from crossdiff.plan.corpora import has_irt

        return has_irt(self, name)

    def tokenizer(self, name: str) -> dict | None:
        """``datasets.<d>.bins.tokenizer`` resolved (the first model's by default): ref, model slug, input files."""
        from crossdiff.plan.corpora import tokenizer_of

        return tokenizer_of(self, name)

    def test_on(self, name: str) -> list[str]:
        from crossdiff.plan.corpora import test_on

        return test_on(self, name)
    @functools.cache
    def probe(self, name: str) -> dict:
        """The complete, validated probe settings of a dataset (study.methods probe; the mdl measure's probes)."""
        from crossdiff.evaluate.probe import DEFAULTS, validate_settings

        s = deep_merge(DEFAULTS, self.study.get("probe"), self.dataset(name).get("probe"))
        return validate_settings(s, f"probe settings of datasets.{name} (study.probe < datasets.{name}.probe)")

    @functools.cache
    def mdl(self, name: str, by: str | None = None) -> dict:
        """The complete, validated MDL settings of a dataset, ``models`` resolved to slugs (crossdiff.evaluate.mdl)
        from ``by`` (default: the dataset's bins.by; another ``mdl:<slug>`` / ``mdl:avg``: a measure listed beside it)."""
        from crossdiff.evaluate.mdl import AVG, DEFAULTS, PREFIX, validate_settings

        where = f"MDL settings of datasets.{name} (bins.mdl < datasets.{name}.bins.mdl)"
        s = deep_merge(DEFAULTS, self.config["bins"].get("mdl"), self.dataset(name)["bins"].get("mdl"))
        s = validate_settings(s, where)
        by = self.dataset(name)["bins"]["by"] if by is None else by
        if by.startswith(PREFIX) and by[len(PREFIX):] != AVG:
            s["models"] = [by[len(PREFIX):]]
        elif s["models"] is None:
            s["models"] = sorted(self.models)
        unknown = [m for m in s["models"] if m not in self.models]
        if unknown:
            raise CrossdiffError(f"{where}: bins.mdl.models: {unknown} are not model slugs; expected some of "
                                 f"{sorted(self.models)}")
        return s

    def estimate(self) -> dict:
        """``resources.estimate`` over :data:`ESTIMATE_DEFAULTS`: the cost model of ``crossdiff estimate`` and the
        dry run's summary (:mod:`crossdiff.plan.estimate`)."""
        return deep_merge(ESTIMATE_DEFAULTS, self.config["resources"].get("estimate"))

    def summary(self) -> dict:
        """``summary`` for the CLI: ``diagonal: auto`` resolved (include the diagonal only when each bin's
        held-out items are its test items, i.e. bins.holdout_fraction > 0)."""
        s = {k: v for k, v in self.config["summary"].items() if k not in ("front_figures", "sgr")}
        if s["diagonal"] == "auto":
            s["diagonal"] = "include" if (self.config["bins"].get("holdout_fraction") or 0) > 0 else "exclude"
        return s


    def sgr(self) -> dict | None:
        """``summary.sgr`` for ``crossdiff sgr`` (None: off): the easy and hard train bins as bin numbers (negative
        ones counted from the last bin), with the summary's seed and confidence."""
        spec = self.config["summary"].get("sgr")
        if spec is None:
            return None
        bins = {}
        for key in ("easy", "hard"):
            b = int(spec.get(key, 0 if key == "easy" else -1))
            resolved = b + self.n_bins if b < 0 else b
            if not 0 <= resolved < self.n_bins:
                raise CrossdiffError(f"summary.sgr.{key} = {b}: not a bin of bins.n_bins = {self.n_bins}")
            bins[key] = resolved
        if bins["easy"] == bins["hard"]:
            raise CrossdiffError(f"summary.sgr: easy and hard are the same bin ({bins['easy']})")
        return {**bins, "n_boot": int(spec.get("n_boot", 10000)), "seed": self.config["summary"]["seed"],
                "confidence": self.config["summary"]["confidence"]}


def cli_json(obj) -> str:
    """A settings section as one JSON string (rules shell-quote it)."""
    return json.dumps(obj, sort_keys=True)


# ------------------------------------------------------------------------------------------- the CLI
def add_arguments(p) -> None:
    p.add_argument("--configfile", required=True, help="the config file (as snakemake --configfile)")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--model", help="only this model (its slug or id)")
    p.add_argument("--run", help="a fine-tune folder label (bin3, set-easy-n50-seed2, ...); default: the pair's shared settings")


def run(args) -> None:
    from crossdiff.config import load

    if not os.path.isfile(args.configfile):
        raise CrossdiffError(f"{args.configfile}: config file not found")
    plan = Plan(load(args.configfile))
    out = {}
    for name in plan.study_datasets() or plan.datasets:
        if args.dataset and name != args.dataset:
            continue
        for slug, m in plan.models.items():
            if args.model and args.model not in (slug, m["id"]):
                continue
            out[f"{name} x {m['id']}"] = {"finetune": plan.finetune(name, slug, args.run),
                                          "evaluate": plan.evaluate(name, slug),
                                          "resources.finetune": plan.resources("finetune", slug),
                                          **({"icl": plan.icl(name)} if "icl" in plan.study["methods"] else {})}
            if "grpo" in plan.study["methods"]:  # issue 29: the GRPO job's settings
                out[f"{name} x {m['id']}"]["grpo"] = plan.grpo(name, slug, args.run)
            if "probe" in plan.study["methods"] or plan.dataset(name)["bins"]["by"].startswith("mdl:"):
                out[f"{name} x {m['id']}"]["probe"] = plan.probe(name)
            if plan.dataset(name)["bins"]["by"].startswith("mdl:"):
                out[f"{name} x {m['id']}"]["bins.mdl"] = plan.mdl(name)
    if not out:
        raise CrossdiffError("no (dataset, model) pair matches --dataset/--model")
    print(json.dumps(out, indent=2, sort_keys=True))
