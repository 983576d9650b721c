"""Stage 4: difficulty report figures (seaborn, written atomically as PNG).

Figures (``--figure``):
- ``histogram``: IRT difficulty histogram with the bin edges;
- ``bin_accuracy``: observed accuracy per difficulty bin;
- ``calibration``: predicted vs observed accuracy on held-out cells;
- ``spearman``: Spearman correlations between IRT difficulty and every other difficulty feature of
  the items (as in the paper's Figure 2);
- ``truth``: estimated vs true difficulty (simulated data only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import seaborn as sns  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from crossdiff.errors import CrossdiffError  # noqa: E402
from crossdiff.irt.base import asymptotes  # noqa: E402
from crossdiff.io import read_table, require_columns, write_figure  # noqa: E402

FIGURES = ("histogram", "bin_accuracy", "calibration", "spearman", "truth")


def histogram(irt_items: pl.DataFrame, bins: pl.DataFrame, title: str):
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.histplot(irt_items["difficulty"].to_numpy(), bins=40, ax=ax, color="#4c72b0")
    if "measure" in bins.columns:  # bins by another measure (bins.by): IRT difficulty has no bin edges
        ax.set(xlabel="IRT difficulty (logits)", ylabel="items",
               title=f"{title}: difficulty (bins by another measure: see agreement.png)")
        return fig
    edges = bins.group_by("bin").agg(pl.col("difficulty").max()).sort("bin")["difficulty"].to_numpy()[:-1]
    for e in edges:
        ax.axvline(e, color="#c44e52", lw=0.8, ls="--")
    ax.set(xlabel="IRT difficulty (logits)", ylabel="items", title=f"{title}: difficulty and {len(edges) + 1} bins")
    return fig


def bin_accuracy(bins: pl.DataFrame, title: str):
    s = bins.group_by("bin").agg(pl.col("accuracy").mean(), pl.col("accuracy").std().alias("sd"), pl.len()).sort("bin")
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.barplot(x=s["bin"].to_numpy(), y=s["accuracy"].to_numpy(), ax=ax, color="#55a868")
    ax.set(xlabel="difficulty bin (0 = easiest)", ylabel="mean observed accuracy of the leaderboard",
           ylim=(0, 1), title=f"{title}: accuracy per bin")
    return fig


def calibration(held: pl.DataFrame, title: str, n_groups: int = 10, irt_items: pl.DataFrame | None = None,
                model: str | None = None):
    """Predicted vs observed accuracy on held-out cells; with ``irt_items`` and ``model`` also the fitted
    item characteristic curves of five items (difficulty quantiles 0.1 .. 0.9), 3PL floors, 4PL ceilings
    and the standard 4PL's floor and ceiling included."""
    if held.height == 0:
        raise CrossdiffError("no held-out cells: set irt.holdout_fraction > 0 for the calibration figure")
    df = held.with_columns(((pl.col("p") * n_groups).floor().clip(0, n_groups - 1)).alias("g"))
    s = df.group_by("g").agg(pl.col("p").mean(), pl.col("correct").mean(), pl.len()).sort("g")
    curves = irt_items is not None and model is not None
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(10 if curves else 5, 5), squeeze=False)
    ax = axes[0][0]
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    ax.scatter(s["p"], s["correct"], s=20 + 200 * s["len"] / s["len"].max(), color="#4c72b0")
    ax.plot(s["p"], s["correct"], color="#4c72b0")
    ax.set(xlabel="predicted P(correct)", ylabel="observed accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"{title}: held-out calibration ({held.height} cells)")
    if curves:
        item_curves(axes[0][1], irt_items, model)
    return fig


def item_curves(ax, irt_items: pl.DataFrame, model: str, quantiles=(0.1, 0.3, 0.5, 0.7, 0.9)):
    """The fitted P(correct | ability) of the items at these difficulty quantiles, under ``model``."""
    theta = np.linspace(-4, 4, 161)
    ranked = irt_items.sort("difficulty")
    for q in quantiles:
        row = ranked.row(min(ranked.height - 1, int(q * ranked.height)), named=True)
        a = row.get("discrimination") or 1.0
        lam, c, d = row.get("lambdas"), row.get("guess"), row.get("ceiling")
        p = asymptotes(1.0 / (1.0 + np.exp(-a * (theta - row["difficulty"]))), lam, model, c, d)
        label = f"b={row['difficulty']:.2f}"
        if model in ("3pl", "4pl") and lam is not None:
            label += f", λ={lam:.2f}"
        elif model == "4pl-standard":
            label += f", c={c:.2f}, d={d:.2f}"
        ax.plot(theta, p, label=label)
    ax.set(xlabel="ability θ", ylabel="P(correct)", ylim=(0, 1), title=f"fitted {model.upper()} curves (difficulty quantiles)")
    ax.legend(fontsize=8, loc="lower right")


def feature_table(irt_items: pl.DataFrame, items: pl.DataFrame | None) -> pl.DataFrame:
    df = irt_items.select("item_id", pl.col("difficulty").alias("IRT difficulty"), pl.col("accuracy").alias("observed accuracy"))
    if items is not None:
        numeric = [c for c, t in items.schema.items() if c != "item_id" and t.is_numeric()]
        df = df.join(items.select(pl.col("item_id").cast(pl.Utf8), *numeric), on="item_id", how="left")
    return df.drop("item_id")


def spearman(irt_items: pl.DataFrame, items: pl.DataFrame | None, title: str):
    """Pairwise Spearman correlations (pairwise-complete rows) of every measure that varies.

    A tiny table (fewer than 3 items, or fewer than two measures that vary) gets a figure that says
    so instead of failing the run after a successful IRT fit.
    """
    df = feature_table(irt_items, items)
    cols = [c for c in df.columns if df[c].drop_nulls().drop_nans().n_unique() > 1]
    if len(cols) < 2 or df.height < 3:
        fig, ax = plt.subplots(figsize=(6, 2.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{df.height} item(s); measures that vary: {', '.join(cols) or 'none'}\n"
                f"Spearman correlations need at least 3 items and 2 varying measures",
                ha="center", va="center", wrap=True)
        ax.set_title(f"{title}: difficulty measures")
        return fig
    # pandas' pairwise-complete rank correlation: always a len(cols) x len(cols) matrix
    rho = df.select(cols).to_pandas().astype(float).corr(method="spearman", min_periods=3).to_numpy()
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(cols), 0.8 + 0.7 * len(cols)))
    sns.heatmap(rho, annot=True, fmt=".2f", vmin=-1, vmax=1, cmap="vlag", xticklabels=cols, yticklabels=cols,
                square=True, ax=ax, cbar_kws={"label": "Spearman ρ"})
    ax.set_title(f"{title}: difficulty measures")
    return fig


def truth(irt_items: pl.DataFrame, truth_items: pl.DataFrame, title: str):
    df = irt_items.join(truth_items.select("item_id", pl.col("difficulty").alias("true")), on="item_id")
    rho = spearmanr(df["difficulty"], df["true"]).statistic
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(df["true"], df["difficulty"], s=6, alpha=0.5, color="#4c72b0")
    lo, hi = float(min(df["true"].min(), df["difficulty"].min())), float(max(df["true"].max(), df["difficulty"].max()))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    ax.set(xlabel="true difficulty (simulation)", ylabel="estimated difficulty",
           title=f"{title}: recovery, Spearman {rho:.3f}")
    return fig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--figure", required=True, choices=FIGURES)
    p.add_argument("--irt-items", required=True)
    p.add_argument("--bins")
    p.add_argument("--heldout")
    p.add_argument("--fit", help="calibration: the fit summary (fit.json); its model draws the fitted item curves")
    p.add_argument("--items", help="item table with difficulty features")
    p.add_argument("--truth", help="true item parameters (simulated data)")
    p.add_argument("--measure", action="append", default=[], metavar="NAME=TABLE",
                   help="spearman: a per-item measure table (item_id, measure), e.g. loss:tiny=loss_measure.parquet")
    p.add_argument("--column", action="append", default=[], metavar="SPEC",
                   help="spearman: an item-table measure (bins.measures), e.g. length:solution")
    p.add_argument("--title", default="")
    p.add_argument("--output", required=True)


def _need(args, name):
    value = getattr(args, name)
    if not value:
        raise CrossdiffError(f"figure {args.figure!r} needs --{name.replace('_', '-')}")
    return read_table(value, name)


def run(args: argparse.Namespace) -> None:
    sns.set_theme(style="whitegrid", context="notebook")
    irt_items = read_table(args.irt_items, "IRT item table")
    require_columns(irt_items, ["item_id", "difficulty", "accuracy"], args.irt_items, "IRT item table")
    t = args.title
    if args.figure == "histogram":
        fig = histogram(irt_items, _need(args, "bins"), t)
    elif args.figure == "bin_accuracy":
        fig = bin_accuracy(_need(args, "bins"), t)
    elif args.figure == "calibration":
        model = None
        if args.fit:
            import json

            model = json.loads(Path(args.fit).read_text()).get("model", "1pl")
        fig = calibration(_need(args, "heldout"), t, irt_items=irt_items if model else None, model=model)
    elif args.figure == "spearman":
        items = read_table(args.items, "item table") if args.items else None
        for spec in args.measure:  # model-based measures (bins.by: loss:/zero_shot:) join as their own column
            name, _, path = spec.partition("=")
            if not path:
                raise CrossdiffError(f"--measure {spec!r}: expected NAME=TABLE")
            m = read_table(path, "measure table")
            require_columns(m, ["item_id", "measure"], path, "measure table")
            m = m.select(pl.col("item_id").cast(pl.Utf8), pl.col("measure").cast(pl.Float64).alias(name))
            items = m if items is None else items.with_columns(pl.col("item_id").cast(pl.Utf8)).join(m, on="item_id", how="left")
        for spec in args.column:  # bins.measures read from the item table (crossdiff.bins.measure_set)
            from crossdiff.bins.measure_set import column_values

            if items is None:
                raise CrossdiffError(f"--column {spec!r} needs the item table (--items)")
            if spec not in items.columns:
                m = column_values(items, spec, args.items).rename({"measure": spec})
                items = items.with_columns(pl.col("item_id").cast(pl.Utf8)).join(m, on="item_id", how="left")
        fig = spearman(irt_items, items, t)
    else:
        fig = truth(irt_items, _need(args, "truth"), t)
    write_figure(fig, args.output)
