"""``crossdiff show-prompt``: what the model sees for one item, in training and in evaluation.

Prints the exact training text (prompt, then the completion that carries the loss) and the exact
evaluation request (after the chat template when one applies), the generation settings or the
scored continuations, and, with ``--output TEXT``, what each lm-eval filter makes of that output and
the verdict (lm-eval's own filter and metric functions; see crossdiff.prompts.scoring).

Two ways to name the item:

* ``--dataset D --item ID`` reads the config the way the workflow does (``--configfile``, default
  ``config/config.yaml``, validated with defaults) and D's item table: ``results/items/D.parquet``
  when it exists, else prepared from ``datasets.D.items`` (hub or local path) on the fly;
* ``--items TABLE --item ID`` with ``--prompt JSON`` (the prompt section) and optionally
  ``--adapter NAME`` whose defaults the prompt overrides.

The chat template comes from ``--tokenizer`` (a model directory or hub id), else from the config's
first model when its tokenizer is available; without one the plain text is shown and said so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.prompts.format import PromptFormat


def _config_dataset(configfile: str, dataset: str) -> tuple[dict, dict]:
    from crossdiff.config import load

    config = load(configfile)
    if dataset not in config["datasets"]:
        raise CrossdiffError(f"{configfile}: no dataset {dataset!r}; datasets: {sorted(config['datasets'])}")
    return config, config["datasets"][dataset]


def _read_items(path):
    """An item table as the rules read it (CSV, TSV, parquet, JSONL), with an item_id column."""
    from crossdiff.io import read_table, require_columns

    items = read_table(path, "item table")
    require_columns(items, ["item_id"], path, "item table")
    return items


def _items_from_config(config: dict, dataset: str, workdir: Path):
    import polars as pl

    from crossdiff.items.adapters import prepare_items

    entry = config["datasets"][dataset]
    src = entry["items"]["source"]
    if src == "file":
        return _read_items(entry["items"]["path"])
    if src == "none":
        raise CrossdiffError(f"datasets.{dataset}.items.source is 'none': the dataset has no item texts to show")
    built = workdir / "results" / "items" / f"{dataset}.parquet"
    if built.exists():
        return pl.read_parquet(built)
    return prepare_items(entry["items"], dataset)


def _tokenizer_for(name: str | None, config: dict | None, workdir: Path):
    """(tokenizer or None, description)."""
    if name is None and config and config.get("models"):
        from crossdiff.slugs import slugify

        model = config["models"][0]
        if model.get("build"):
            path = workdir / "results" / "models" / slugify(model["id"])
            if not path.exists():
                return None, (f"none: the config's first model {model['id']!r} is built by the workflow and "
                              f"{path} does not exist yet (pass --tokenizer)")
            name = str(path)
        else:
            name = model["id"]
    if name is None:
        return None, "none (no --tokenizer and no model in the config)"
    from crossdiff.hub import offline_env

    offline_env(name)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise CrossdiffError(f"--tokenizer {name}: cannot load a tokenizer: {str(exc).splitlines()[0]}") from None
    return tok, name


def describe(fmt: PromptFormat, item: dict, tokenizer=None, output: str | None = None) -> dict:
    """Everything show-prompt prints, as a dict (the ``--json`` form)."""
    from crossdiff.prompts.scoring import score_output, task_config

    if fmt.lm_eval_task is not None:  # items.source lm_eval_task: the task's own config renders the request
        return describe_lm_eval_task(fmt, item, tokenizer, output)

    chat = fmt.use_chat(tokenizer)
    train_prompt, train_completion = fmt.render_training(item, tokenizer)
    info = {
        "item_id": str(item["item_id"]),
        "chat_template": chat,
        "scoring": fmt.scoring,
        "training": {"prompt": train_prompt, "completion": train_completion},
        "evaluation": {"request": fmt.render_prompt(item, tokenizer)},
    }
    cfg = task_config(fmt, "show", "/dev/null", chat)
    ev = fmt.eval_record(item)
    if fmt.scoring == "generation":
        from crossdiff.prompts.decoding import effective

        info["evaluation"].update({"generation_kwargs": cfg["generation_kwargs"], "decoding": effective(fmt),
                                   "reference": ev["gold"],
                                   "filters": [f["name"] for f in fmt.filter_list()], "primary_filter": fmt.filter_name,
                                   "metric_list": cfg["metric_list"]})
    else:
        info["evaluation"].update({"continuations": ev["choices_chat" if chat else "choices"], "gold_index": ev["gold"],
                                   "metrics": list(fmt.metric_names)})
    if output is not None:
        info["output"] = output
        info["verdict"] = score_output(fmt, item, output)
    return info


def describe_lm_eval_task(fmt: PromptFormat, item: dict, tokenizer=None, output: str | None = None) -> dict:
    """show-prompt of an item of items.source lm_eval_task: the training text (from the item table's
    rendering of the task config) and lm-eval's own request for the doc (crossdiff.items.lm_eval_task)."""
    from crossdiff.items.lm_eval_task import describe_evaluation

    if output is not None:
        raise CrossdiffError("--output: items.source lm_eval_task is scored by the task's own process_results "
                             "and filters at evaluation; show-prompt shows its request only")
    for col in ("subtask", "doc_id"):
        if item.get(col) is None:
            raise CrossdiffError(f"item {item['item_id']!r}: no {col!r} column; rebuild the item table of "
                                 f"items.source lm_eval_task")
    chat = fmt.use_chat(tokenizer)
    train_prompt, train_completion = fmt.render_training(item, tokenizer)
    from crossdiff.prompts.chat import lm_eval_renderer

    render = lm_eval_renderer(tokenizer) if tokenizer is not None else None
    evaluation = describe_evaluation(fmt.lm_eval_task, item, tokenizer, render)
    return {"item_id": str(item["item_id"]), "chat_template": chat, "scoring": "lm_eval_task",
            "training": {"prompt": train_prompt, "completion": train_completion}, "evaluation": evaluation}


def _format_lm_eval_task(info: dict, dataset: str, tokenizer_note: str, rule) -> str:
    ev = info["evaluation"]
    out = [f"dataset {dataset}, item {info['item_id']}: lm-eval task {ev['task']}, doc {ev['doc_id']} "
           f"({ev['output_type']}, {ev['num_fewshot']}-shot), chat template "
           f"{'applied' if info['chat_template'] else 'not applied'} (tokenizer: {tokenizer_note})"]
    out += [rule("training prompt (no loss)"), info["training"]["prompt"]]
    out += [rule("training completion (the loss)"), info["training"]["completion"]]
    requests = ev["request"] if isinstance(ev["request"], list) else [ev["request"]]
    for i, req in enumerate(requests):
        title = "evaluation request" + (f" (context {i}{', gold' if i == ev.get('gold') else ''})" if len(requests) > 1 else "")
        out += [rule(title), req]
    if ev["output_type"] == "multiple_choice":
        out += [rule("continuations scored"), *(f"[{i}] {c!r}" + ("   <- gold" if len(requests) == 1 and i == ev["gold"]
                                                                     else "") for i, c in enumerate(ev["continuations"]))]
    else:
        out += [rule("generation"), f"generation_kwargs: {json.dumps(ev['generation_kwargs'])}",
                f"reference: {ev['reference']!r}"]
    out.append(f"metrics: {ev['metrics']}" + (f"\nnote: {ev['note']}" if ev.get("note") else ""))
    return "\n".join(out) + "\n"


def format_text(info: dict, dataset: str, tokenizer_note: str) -> str:
    rule = lambda title: f"\n----- {title} " + "-" * max(3, 60 - len(title))  # noqa: E731
    if info["scoring"] == "lm_eval_task":
        return _format_lm_eval_task(info, dataset, tokenizer_note, rule)
    ev = info["evaluation"]
    out = [f"dataset {dataset}, item {info['item_id']}: scoring {info['scoring']}, "
           f"chat template {'applied' if info['chat_template'] else 'not applied'} (tokenizer: {tokenizer_note})"]
    out += [rule("training prompt (no loss)"), info["training"]["prompt"]]
    out += [rule("training completion (the loss)"), info["training"]["completion"]]
    out += [rule("evaluation request"), ev["request"]]
    if info["scoring"] == "generation":
        out += [rule("generation"), f"generation_kwargs: {json.dumps(ev['generation_kwargs'])}",
                "decoding (the whole of it, hf and vLLM alike): " + ", ".join(f"{k}={v}" for k, v in ev["decoding"].items()),
                f"filters: {ev['filters']} (primary: {ev['primary_filter']})",
                f"metric: {json.dumps(ev['metric_list'])}", f"reference: {ev['reference']!r}"]
    else:
        out += [rule("continuations scored"), *(f"[{i}] {c!r}" + ("   <- gold" if i == ev["gold_index"] else "")
                                                 for i, c in enumerate(ev["continuations"])),
                f"metrics: {ev['metrics']} (the first is the result)"]
    if "verdict" in info:
        v = info["verdict"]
        out += [rule("output"), info["output"], rule("verdict")]
        if info["scoring"] == "generation":
            for name, f in v["filters"].items():
                mark = " (primary)" if name == v["primary_filter"] else ""
                out.append(f"{name}{mark}: prediction {f['prediction']!r} -> {'correct' if f['correct'] else 'wrong'}")
        else:
            out.append(f"names choice {v['prediction']} (gold {v['gold']}): {'correct' if v['correct'] else 'wrong'}; "
                       f"{v['note']}")
        out.append(f"verdict: {'CORRECT' if v['correct'] else 'WRONG'}")
    return "\n".join(out) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="dataset name in the config (reads its items and prompt like the rules do)")
    p.add_argument("--item", required=True, help="item id")
    p.add_argument("--output", help="a model output to parse and score (generation: the generated text; "
                                    "multiple choice: a choice's text or label)")
    p.add_argument("--configfile", default="config/config.yaml", help="config file (default: config/config.yaml)")
    p.add_argument("--directory", default=".", help="workflow directory holding results/ (default: .)")
    p.add_argument("--items", help="item table instead of the config's (parquet, CSV, TSV or JSONL)")
    p.add_argument("--prompt", type=json_arg, help="JSON prompt section (with --items; over --adapter's defaults)")
    p.add_argument("--adapter", help="benchmark adapter whose default format --prompt overrides (with --items)")
    p.add_argument("--tokenizer", help="model directory or hub id whose chat template applies")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> None:
    import polars as pl

    from crossdiff.items.adapters import prompt_for

    workdir = Path(args.directory)
    config = None
    if args.items:
        items = _read_items(args.items)
        if args.adapter is not None:
            from crossdiff.items.adapters import ADAPTERS

            if args.adapter not in ADAPTERS:
                raise CrossdiffError(f"--adapter {args.adapter!r}: no such benchmark adapter; expected one of: "
                                     f"{', '.join(ADAPTERS)}")
        settings = {"source": "hub", "adapter": args.adapter} if args.adapter else {}
        prompt = prompt_for(settings, args.prompt) if args.adapter else dict(args.prompt or {})
        dataset = args.dataset or Path(args.items).stem
    elif args.dataset:
        config, entry = _config_dataset(str(workdir / args.configfile) if not Path(args.configfile).is_absolute()
                                        else args.configfile, args.dataset)
        items = _items_from_config(config, args.dataset, workdir)
        prompt = prompt_for(entry["items"], entry.get("prompt"))
        dataset = args.dataset
    else:
        raise CrossdiffError("name the item's dataset: --dataset D (from the config) or --items TABLE [--prompt JSON]")
    fmt = PromptFormat.from_config(prompt, where=f"datasets.{dataset}.prompt")
    ids = items["item_id"].cast(pl.Utf8)
    match = items.filter(ids == args.item)
    if match.height == 0:
        hint = ""
        if "/" in args.item and ids.str.contains("/", literal=True).all():
            sub = args.item.split("/", 1)[0]
            subs = sorted(set(ids.str.split("/").list.first().to_list()))
            if sub not in subs:  # e.g. BBH's snarks, which the authors' 21 (the default) leave out
                hint = f"; subtask {sub!r} is not in the item table (its subtasks: {', '.join(subs)}; see items.subtasks)"
        raise CrossdiffError(f"{dataset}: no item {args.item!r}; {items.height} items, e.g. {ids.head(5).to_list()}{hint}")
    item = match.to_dicts()[0]
    tokenizer, note = _tokenizer_for(args.tokenizer, config, workdir)
    info = describe(fmt, item, tokenizer, args.output)
    print(json.dumps(info, indent=2, ensure_ascii=False) if args.json else format_text(info, dataset, note), end="")
