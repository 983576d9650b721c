"""The GRPO jobs' diagnostics in one table and one figure (``crossdiff grpo-diagnostics``; the report's Results).

One row per GRPO job (its ``train_metrics.json``, :func:`crossdiff.finetune.grpo.diagnostics`): model, dataset, run
(``grpo-bin3``...), train label, steps, the mean reward of the first and of the last logged step, the mean over
the run, the learnable share (share of prompt groups whose rewards differ; TRL's 1 - frac_reward_zero_std beside
it), the mean completion length, the mean KL (beta > 0) and the share of weights changed; for a run of a set with
E2H's schedule, the schedule and the mean drawn level (0 = the set's easiest bin) over the first and the last quarter
of its steps (1 to 10 steps, as the rewards). The figure draws every
job's reward curve (mean reward per logged step, and a 5-step running mean), one panel per dataset x model.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import polars as pl

from crossdiff.errors import CrossdiffError
from crossdiff.io import write_csv, write_figure


def read_metrics(path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "train_metrics.json"
    if not p.is_file():
        raise CrossdiffError(f"{p}: no train_metrics.json of a GRPO job")
    m = json.loads(p.read_text())
    if m.get("method") != "grpo":
        raise CrossdiffError(f"{p}: not a GRPO job's metrics (method {m.get('method')!r})")
    parts = p.parent.parts if p.name == "train_metrics.json" else p.with_name(p.name.removesuffix(".train_metrics.json")).parts
    m["_model"], m["_dataset"], m["_run"] = parts[-3], parts[-2], parts[-1]
    return m


def table(metrics: list[dict]) -> pl.DataFrame:
    rows = []
    for m in metrics:
        rows.append({
            "model": m["_model"], "dataset": m["_dataset"], "run": m["_run"],
            "train": m["_run"].removeprefix("grpo-"),
            "steps": m.get("global_step"), "n_prompts": m.get("n_examples"),
            "num_generations": (m.get("settings") or {}).get("num_generations"),
            "reward_first": m.get("reward_first"), "reward_last": m.get("reward_last"),
            "reward_mean": m.get("reward_mean"), "reward_start": m.get("reward_start"), "reward_end": m.get("reward_end"),
            "learnable_share": m.get("learnable_share"), "learnable_share_trl": m.get("learnable_share_trl"),
            "completion_length": m.get("completion_length"), "kl": m.get("kl"),
            "share_changed": m.get("share_changed"), "generation": m.get("generation"),
            "wall_seconds": m.get("wall_seconds"),
            "schedule": (m.get("schedule") or {}).get("name"),
            "level_start": m.get("level_start"), "level_end": m.get("level_end"),
        })
    schema = {"model": pl.Utf8, "dataset": pl.Utf8, "run": pl.Utf8, "train": pl.Utf8, "steps": pl.Int64,
              "n_prompts": pl.Int64, "num_generations": pl.Int64, "reward_first": pl.Float64, "reward_last": pl.Float64,
              "reward_mean": pl.Float64, "reward_start": pl.Float64, "reward_end": pl.Float64,
              "learnable_share": pl.Float64, "learnable_share_trl": pl.Float64,
              "completion_length": pl.Float64, "kl": pl.Float64, "share_changed": pl.Float64, "generation": pl.Utf8,
              "wall_seconds": pl.Float64, "schedule": pl.Utf8, "level_start": pl.Float64, "level_end": pl.Float64}
    return pl.DataFrame(rows, schema=schema).sort(["dataset", "model", "run"])


def running_mean(values: list[float], width: int = 5) -> list[float]:
    out = []
    for i in range(len(values)):
        window = values[max(0, i - width + 1): i + 1]
        out.append(sum(window) / len(window))
    return out


def figure(metrics: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(m["_dataset"], m["_model"]) for m in metrics})
    n = max(1, len(panels))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (d, model) in zip(axes.flat, panels):
        for m in sorted((m for m in metrics if (m["_dataset"], m["_model"]) == (d, model)), key=lambda m: m["_run"]):
            curve = m.get("reward_curve") or []
            steps, rewards = [c["step"] for c in curve], [c["reward"] for c in curve]
            line, = ax.plot(steps, running_mean(rewards), lw=1.8, label=f"{m['_run'].removeprefix('grpo-')} "
                            f"(learnable {m.get('learnable_share') or 0:.2f})")
            ax.plot(steps, rewards, lw=0.6, alpha=0.35, color=line.get_color())
        ax.set_title(f"{d} / {model}")
        ax.set_xlabel("step")
        ax.set_ylabel("mean reward (5-step running mean)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("GRPO reward per step, by train bin")
    fig.tight_layout()
    write_figure(fig, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", nargs="+", required=True,
                   help="GRPO job folders (results/finetune/<model>/<dataset>/grpo-<run>) or their train_metrics.json copies")
    p.add_argument("--table", required=True, help="CSV to write")
    p.add_argument("--figure", required=True, help="PNG of the reward curves")


def run(args: argparse.Namespace) -> None:
    metrics = [read_metrics(p) for p in args.metrics]
    df = table(metrics)
    write_csv(df, args.table)
    figure(metrics, args.figure)
    for r in df.iter_rows(named=True):
        print(f"{r['dataset']} {r['model']} {r['run']}: reward {r['reward_first']} -> {r['reward_last']} (first/last "
              f"quarter {r['reward_start']} -> {r['reward_end']}), "
              f"learnable share {r['learnable_share']}")
