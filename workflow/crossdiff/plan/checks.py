"""The checks before any work: run once per snakemake invocation, on the settings the resolver gives each job.

Every settings check here reads :class:`crossdiff.plan.settings.Plan`'s resolved values, so a setting given
at any level (``finetune``, ``datasets.<d>.finetune``, ``models[].finetune``, the design) is checked the same
way; ``resources.memory_check`` switches only the GPU memory plan (:func:`memory_plan`), never these.
All problems are gathered and reported together (:func:`check`), each naming its config key.
"""

from __future__ import annotations

from crossdiff.errors import CrossdiffError
from crossdiff.plan import corpora, inputs
from crossdiff.study import designs, methods


def design_problems(plan) -> list[str]:
    study, problems = plan.study, []
    try:
        designs.check_design(study, plan.n_bins)
    except CrossdiffError as exc:
        problems.append(str(exc))
    if plan.study_datasets() and not any(m.design for m in plan.methods()):
        used = [k for k in ("train_sizes", "seeds") if study.get(k)] + (["train_sets"] if study.get("train_sets") else [])
        if used:
            names = ", ".join(m.name for m in plan.methods())
            problems.append(
                f"study.{'/'.join(used)}: set, but study.methods [{names}] has no method that follows the design "
                f"(train sets, sizes, seeds are fine-tunes: {', '.join(m.name for m in methods.METHODS.values() if m.design)}); "
                "they would be ignored. Add sft to study.methods or remove them")
    return problems


def bins_problems(plan) -> list[str]:
    """bins.by names: a configured model (zero_shot:/loss:), a published table, an item-table column."""
    from crossdiff.bins import measures, published

    problems = []
    for name in plan.datasets:
        bins = plan.dataset(name)["bins"]
        by = bins["by"]
        try:
            measures.check_by(name, by, plan.models)
        except CrossdiffError as exc:
            problems.append(str(exc))
        if by == "published":
            problems += published.spec_problems(name, plan.dataset(name))
            spec = bins.get("published") or {}
            if spec.get("rule") == "quantile" and (bins.get("cutoffs") or plan.config["bins"]["scheme"] != "equal"):
                problems.append(f"datasets.{name}.bins.published.rule = 'quantile' is the authors' own cut; it cannot be "
                                "combined with bins.cutoffs or bins.scheme quantiles (use rule: equal with them)")
        elif by != "irt" and measures.parse(by) is None and not plan.items_table(name):
            problems.append(f"datasets.{name}.bins.by = {by!r} bins by an item-table column, but items.source is "
                            "none; give the dataset an item table or use by: irt")
    return problems


def measure_list_problems(plan) -> list[str]:
    """datasets.<d>.bins.measures: known measures and model slugs, columns the item table has, no repeats."""
    from crossdiff.bins.measure_set import spec_problems

    return [p for name in plan.datasets for p in spec_problems(name, plan.dataset(name), plan.models)]


def solution_problems(plan) -> list[str]:
    from crossdiff.study.solutions import check_model_solutions

    datasets = {d: (plan.prompt(d), plan.dataset(d)["items"].get("solutions")) for d in plan.study_datasets()}
    return check_model_solutions(plan.models, datasets)


def finetune_problems(plan) -> list[str]:
    """Every (dataset, model) fine-tune's resolved settings: valid, launchable on its resources (ranks, batch
    split, QLoRA), and seeds that change the model."""
    from crossdiff.finetune.settings import launch_problems

    problems = []
    if not plan.trained_methods():
        return problems
    for name in plan.study_datasets():
        for slug in plan.models:
            try:
                shared = plan.finetune(name, slug)
                runs = {run: plan.finetune(name, slug, run) for run in plan.finetune_runs()}
            except CrossdiffError as exc:
                problems.append(str(exc))
                continue
            res = plan.resources("finetune", slug)
            problems += [f"{plan.finetune_where(name, slug)}: {p}"
                         for p in launch_problems(shared, res["gpu"] * int(res.get("nodes") or 1))]
            problems += _seed_problems(plan, name, slug, runs)
    return list(dict.fromkeys(problems))


def _seed_problems(plan, name, slug, runs: dict) -> list[str]:
    """Seeds that change nothing: a curriculum trains in a fixed order (sequential sampler) and a full
    fine-tune has no other seeded step, so every seed repeats the same model and the table would report
    their zero spread as seed variance."""
    if len(plan.study.get("seeds") or []) < 2:
        return []
    fixed = sorted({designs.parse_label(methods.split_run(run)[1])["set"] for run, s in runs.items()
                    if s["seed"] is not None and not s["shuffle"] and s["lora"] is None
                    and methods.get(methods.split_run(run)[0]).train_rule == "finetune"})  # GRPO samples: seeded
    if not fixed:
        return []
    return [f"study.seeds: {plan.study['seeds']} with the curriculum train set(s) {fixed} under full fine-tuning "
            f"({plan.finetune_where(name, slug)} has lora: null): a curriculum trains in a fixed order and a full "
            "fine-tune has no other seeded step, so every seed repeats the same model and its zero spread would be "
            "reported as seed variance; use one seed (study.seeds: null), order: shuffle, or lora (a seeded "
            "initialisation) at some level of the finetune settings"]


def evaluate_problems(plan) -> list[str]:
    problems = []
    for name in plan.study_datasets():
        for slug in plan.models:
            try:
                plan.evaluate(name, slug)
            except CrossdiffError as exc:
                problems.append(str(exc))
    return list(dict.fromkeys(problems))


def icl_problems(plan) -> list[str]:
    """ICL cells that cannot run: more demonstrations than a train bin can give (where the item count is
    known at parse: a generated benchmark; make_bins checks the real counts before any model loads)."""
    if "icl" not in plan.study["methods"]:
        return []
    problems = []
    for name in plan.study_datasets():
        try:
            ks = methods.ks_of(plan.icl(name))
        except CrossdiffError as exc:
            problems.append(f"datasets.{name}: {exc}")
            continue
        most = max_train_items(plan, name)
        if most is not None and max(ks) > most:
            problems.append(f"study.icl.k = {max(ks)} (datasets.{name}): a train bin of {name} holds at most {most} "
                            f"training item(s) ({plan.dataset(name)['items']['n_items']} items in "
                            f"{plan.n_bins} bins, bins.holdout_fraction {plan.config['bins']['holdout_fraction']}); "
                            "lower k or use fewer bins")
    return problems


def shared_icl_problems(plan) -> list[str]:
    """``study.icl.protocol: shared`` (Hase et al.'s ICL, crossdiff/evaluate/icl_shared.py): its settings at every
    level, a dataset it cannot render, and k + 1 training items per bin when each bin's items are its test items."""
    from crossdiff.evaluate.icl_shared import settings_problems

    if "icl" not in plan.study["methods"]:
        return []
    problems = []
    for name in plan.study_datasets():
        icl = plan.icl(name)
        problems += settings_problems(icl, f"study.icl (datasets.{name})")
        if icl.get("protocol") != "shared":
            continue
        if plan.dataset(name)["items"]["source"] == "lm_eval_task":
            problems.append(f"study.icl.protocol = shared (datasets.{name}): an items.source lm_eval_task dataset is "
                            "rendered by its task's own config; use protocol per_item for it")
        most = max_train_items(plan, name)
        try:
            k = max(methods.ks_of(icl))
        except CrossdiffError:
            continue
        if most is not None and not plan.config["bins"]["holdout_fraction"] and k + 1 > most:
            problems.append(f"study.icl.k = {k} (datasets.{name}, protocol shared, no bins.holdout_fraction): a bin's "
                            f"demonstrations leave its own test set, so a bin needs k + 1 items; {name}'s bins hold at "
                            f"most {most}")
    return list(dict.fromkeys(problems))


def sgr_problems(plan) -> list[str]:
    """``summary.sgr``: its easy and hard bins exist, differ and are train bins of the study."""
    try:
        spec = plan.sgr()
    except CrossdiffError as exc:
        return [str(exc)]
    if spec is None or not plan.study_datasets():
        return []
    missing = [f"{k} = {spec[k]}" for k in ("easy", "hard") if spec[k] not in plan.train_bins()]
    if missing:
        return [(f"summary.sgr: {', '.join(missing)} is not among study.train_bins {plan.train_bins()}: SGR needs "
                 "the cells trained on both")]
    return []


def max_train_items(plan, name: str) -> int | None:
    """An upper bound on a train bin's training items known before any job (generated items only)."""
    items = plan.dataset(name)["items"]
    if items["source"] != "synthetic":
        return None
    per_bin = -(-int(items["n_items"]) // plan.n_bins)
    held = plan.config["bins"]["holdout_fraction"]
    return per_bin - int(round(held * per_bin)) if held else per_bin


def icl_min_train_items(plan, name: str) -> int | None:
    """The fewest training items every train bin must hold for the study's ICL cells (make_bins checks it)."""
    if "icl" not in plan.study["methods"] or name not in plan.study_datasets():
        return None
    icl = plan.icl(name)
    own = icl.get("protocol") == "shared" and not plan.config["bins"]["holdout_fraction"]  # demonstrations leave the test set
    return max(methods.ks_of(icl)) + own


def item_problems(plan) -> list[str]:
    """What the benchmarks' own checks can tell before any job: an lm-eval task's section (its overrides, shots,
    splits, ICL), a generation longer than a model's context (where its config.json is on disk), IFEval's
    checkers and nltk's punkt_tab."""
    from crossdiff.items import hase, ifeval, lm_eval_task

    problems = ifeval.study_problems(plan.config)
    configs = {}
    for slug in plan.models if plan.study_datasets() else []:
        cfg, bad = local_model_config(plan, slug)  # a broken one is named whatever resources.memory_check says
        problems += [bad] if bad else []
        configs[slug] = cfg
    for name in plan.datasets:
        items = plan.dataset(name)["items"]
        problems += lm_eval_task.parse_problems(name, items, plan.study["methods"])
        problems += hase.parse_problems(name, items)
        if items["source"] != "lm_eval_task" or name not in plan.study_datasets():
            continue
        for slug, cfg in configs.items():
            if cfg is not None:
                problems += lm_eval_task.context_problems(
                    cfg, lm_eval_task.declared_max_gen_toks(items), model=plan.models[slug]["id"], dataset=name,
                    max_length=plan.evaluate(name, slug)["max_length"])
    return list(dict.fromkeys(problems))


def local_model_config(plan, slug: str) -> tuple[dict | None, str | None]:
    """(A model's config.json when it is on disk: a local directory, or the memory plan's cache; no download,
    or None) and the problem of an unreadable one (named whatever resources.memory_check says)."""
    import json
    from pathlib import Path

    m = plan.models[slug]
    if m["build"]:
        return None, None
    for p in (Path(m["id"]) / "config.json",
              Path(plan.config["resources"]["model_config_cache"]) / (m["id"].replace("/", "--") + ".json")):
        if p.is_file():
            try:
                cfg = json.loads(p.read_text())
            except (OSError, ValueError) as exc:
                return None, (f"model {m['id']}: {p} is not readable JSON ({exc}); expected the model's config.json "
                              f"({plan.model_key(slug).split(' ')[0]}.id)")
            if not isinstance(cfg, dict):
                return None, f"model {m['id']}: {p} holds {type(cfg).__name__}, expected a JSON object (the model's config.json)"
            return cfg, None
    return None, None


def problems(plan) -> list[str]:
    """Every problem of the configuration that can be found before any job runs."""
    out = inputs.brace_problems(plan.config)
    out += design_problems(plan)
    out += bins_problems(plan)
    out += measure_list_problems(plan)
    out += solution_problems(plan)
    out += finetune_problems(plan)
    out += evaluate_problems(plan)
    out += icl_problems(plan)
    out += shared_icl_problems(plan)
    out += sgr_problems(plan)
    out += item_problems(plan)
    from crossdiff.plan.grpo_checks import problems as grpo_problems  # issue 29: GRPO jobs, pass-rate measures

    out += grpo_problems(plan)
    out += corpora.problems(plan)  # responses none, length_tokens, test_on (issue 28)
    from crossdiff.plan import probe_checks  # probes, MDL, the multiple-choice objective (Hase et al., issue 27)

    out += probe_checks.problems(plan, max_train_items)
    out += nodes_problems(plan)
    return out


def check(plan) -> None:
    found = problems(plan)
    if found:
        raise CrossdiffError("the configuration cannot run as it stands:\n  - " + "\n  - ".join(found))


def memory_plan(plan) -> dict:
    """The GPU memory and host RAM plan of every GPU fine-tune (``resources.memory_check``: error / warn /
    off); one check per distinct resolved setting. Returns {model slug: planned host mem_mb}."""
    from crossdiff.finetune.plan_check import check_models

    mode = plan.config["resources"]["memory_check"]
    if mode == "off" or not any(m.train_rule == "finetune" for m in plan.trained_methods()):  # GRPO: grpo_memory
        return {}
    by_setting = {}
    for name in plan.study_datasets():
        for slug in plan.models:
            s = plan.finetune(name, slug)
            key = repr(sorted(s.items()))
            entry = by_setting.setdefault(key, (s, {}, []))
            entry[1][slug] = plan.models[slug]
            entry[2].append(name)
    planned = {}
    for s, models, names in by_setting.values():
        try:
            mem = check_models(models, s, lambda slug: plan.resources("finetune", slug),
                               plan.config["resources"]["model_config_cache"], mode)
        except CrossdiffError as exc:
            raise CrossdiffError(f"fine-tune settings of datasets {', '.join(sorted(set(names)))}:\n{exc}") from None
        for slug, mb in mem.items():
            planned[slug] = max(planned.get(slug, 0), mb)
    return planned


# ------------------------------------------------------------------------------ several nodes per fine-tune
def nodes_where(plan, slug: str) -> str:
    """The config key that sets a model's node count (its own, else resources.finetune)."""
    own = (plan.models[slug].get("resources") or {}).get("nodes")
    return f"{plan.model_key(slug).split(' ')[0]}.resources.nodes" if own is not None else "resources.finetune.nodes"


def multinode_models(plan) -> dict[str, int]:
    """{model slug: nodes} of the models whose fine-tunes span several nodes (none when nothing trains)."""
    if not (plan.trained_methods() and plan.study_datasets()):
        return {}
    return {slug: int(plan.resources("finetune", slug).get("nodes") or 1) for slug in plan.models
            if int(plan.resources("finetune", slug).get("nodes") or 1) > 1}


def nodes_problems(plan) -> list[str]:
    """Multi-node fine-tunes (resources nodes > 1) that cannot run: settings that do not split over N x G ranks
    (crossdiff.finetune.multinode.topology_problems), and evaluation asked to span nodes (it runs on one)."""
    from crossdiff.finetune.multinode import topology_problems

    problems = []
    if int(plan.config["resources"]["evaluate"].get("nodes") or 1) > 1:
        problems.append("resources.evaluate.nodes: evaluation runs on one node (one model per job); only "
                        "fine-tuning spans nodes (resources.finetune.nodes, models[].resources.nodes)")
    for slug, nodes in multinode_models(plan).items():
        res = plan.resources("finetune", slug)
        for name in plan.study_datasets():
            try:
                s = plan.finetune(name, slug)
            except CrossdiffError:
                continue  # named by finetune_problems
            problems += [f"{nodes_where(plan, slug)} = {nodes} ({plan.finetune_where(name, slug)}): {p}"
                         for p in topology_problems(s, res["gpu"], nodes)]
    return list(dict.fromkeys(problems))


def executor_problems(plan, executor: str | None) -> list[str]:
    """A fine-tune on several nodes runs as one SLURM job of N nodes (snakemake's SLURM executor); any other
    executor (a workstation's local one) is refused. ``executor`` None (not known: snakemake's Python API): no
    refusal here, the job refuses at start outside a SLURM allocation (crossdiff.finetune.multinode)."""
    from crossdiff.runtime.executor import SLURM

    many = multinode_models(plan)
    if not many or executor is None or executor in SLURM:
        return []
    return [f"{nodes_where(plan, slug)} = {nodes} ({plan.models[slug]['id']}): a fine-tune on several nodes runs "
            f"only as one SLURM job (snakemake --profile profiles/slurm), but this run's executor is {executor!r} "
            "(a workstation); set nodes: 1 here, or run on SLURM" for slug, nodes in many.items()]


def check_executor(plan, executor: str | None) -> None:
    found = executor_problems(plan, executor)
    if found:
        raise CrossdiffError("the configuration cannot run as it stands:\n  - " + "\n  - ".join(found))
