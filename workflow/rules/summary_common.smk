# Helpers of summary.smk: its settings, the front-page images and the targets.
def summary_settings():
    """config["summary"] for the CLI: `diagonal: auto` resolved (include the diagonal only when
    each bin's held-out items are its test items, i.e. bins.holdout_fraction > 0)."""
    s = {k: v for k, v in config["summary"].items() if k != "front_figures"}
    if s["diagonal"] == "auto":
        held_out = (config["bins"].get("holdout_fraction") or 0) > 0
        s["diagonal"] = "include" if held_out else "exclude"
    return s


def summary_images(wildcards=None):
    """The gain heatmaps shown on the report's front page (the first summary.front_figures)."""
    pairs = [(name, model) for name in study_datasets() for model in MODELS]
    return [
        f"results/figures/{name}/{model}/gain.png"
        for name, model in pairs[: config["summary"]["front_figures"]]
    ]


def summary_targets():
    if not study_datasets():
        return []
    return [
        "results/tables/summary.csv",
        "results/tables/best_train_bin.csv",
        "results/figures/summary.png",
        "results/summary/summary.rst",
    ]
