"""Parse-time checks of Hase et al.'s parts (issue 27): the probe method, the MDL measure and the multiple-choice
fine-tuning objective, on the resolved settings of every dataset (:class:`crossdiff.plan.settings.Plan`).
Called from :func:`crossdiff.plan.checks.problems`; each problem names its config key."""

from __future__ import annotations

from crossdiff.errors import CrossdiffError

NO_OPTIONS = ("lm_eval_task", "none")


def probe_problems(plan, max_train_items) -> list[str]:
    """``max_train_items(plan, name)``: crossdiff.plan.checks' bound on a train bin's training items."""
    if "probe" not in plan.study["methods"]:
        return []
    problems = []
    for name in plan.study_datasets():
        src = plan.dataset(name)["items"]["source"]
        if src in NO_OPTIONS:
            problems.append(f"study.methods probe (datasets.{name}): items.source {src!r} has no crossdiff prompt "
                            "format to build (question, option) sequences from; leave the dataset out of "
                            "study.datasets or use another method")
            continue
        try:
            s = plan.probe(name)
        except CrossdiffError as exc:
            problems.append(str(exc))
            continue
        most = max_train_items(plan, name)
        if most is not None and s["n_train"] is not None and s["n_train"] > most:
            problems.append(f"study.probe.n_train = {s['n_train']} (datasets.{name}): a train bin of {name} holds at "
                            f"most {most} training item(s) ({plan.dataset(name)['items']['n_items']} items in "
                            f"{plan.n_bins} bins, bins.holdout_fraction {plan.config['bins']['holdout_fraction']}); "
                            "lower n_train (null = every training item) or use fewer bins")
    return problems


def mdl_problems(plan) -> list[str]:
    from crossdiff.evaluate.mdl import AVG, PREFIX

    problems = []
    if AVG in plan.models:
        problems.append(f"models: a model with slug {AVG!r} cannot be told apart from bins.by mdl:avg; rename it")
    for name in plan.datasets:
        by = plan.dataset(name)["bins"]["by"]
        if not by.startswith(PREFIX):
            continue
        src = plan.dataset(name)["items"]["source"]
        if src in NO_OPTIONS:
            problems.append(f"datasets.{name}.bins.by = {by!r}: items.source {src!r} has no crossdiff prompt format to "
                            "build (question, option) sequences from")
            continue
        if not plan.models:
            problems.append(f"datasets.{name}.bins.by = {by!r}: no models configured")
            continue
        for get in (plan.mdl, plan.probe):
            try:
                get(name)
            except CrossdiffError as exc:
                problems.append(str(exc))
    return problems


def objective_problems(plan) -> list[str]:
    """finetune.objective multiple_choice needs each item's options: not an lm_eval_task dataset's."""
    if not plan.trained_methods():
        return []
    problems = []
    for name in plan.study_datasets():
        if plan.dataset(name)["items"]["source"] not in NO_OPTIONS:
            continue
        for slug in plan.models:
            try:
                s = plan.finetune(name, slug)
            except CrossdiffError:
                continue  # reported by finetune_problems
            if s["objective"] == "multiple_choice":
                problems.append(f"{plan.finetune_where(name, slug)}: objective 'multiple_choice' needs each item's "
                                f"answer options, which an items.source "
                                f"{plan.dataset(name)['items']['source']!r} dataset does not render; use objective: sft")
    return list(dict.fromkeys(problems))


def problems(plan, max_train_items) -> list[str]:
    return probe_problems(plan, max_train_items) + mdl_problems(plan) + objective_problems(plan)
