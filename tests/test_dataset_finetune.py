"""datasets.<name>.finetune: per-dataset training settings over `finetune`, read from the commands the
finetune rule would run (a dry run of config/paper.yaml with local data)."""

import json
import re
import shlex

import yaml

from conftest import REPO, make_workdir, snakemake

from test_paper_config import LOCAL_ITEMS


def paper_workdir(tmp_path, edit=None):
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    responses = tmp_path / "responses.csv"
    responses.write_text("model_id,item_id,correct\nm,0,1\n")
    for name, ds in config["datasets"].items():
        ds["items"]["path"] = str(LOCAL_ITEMS[name])
        ds["responses"] = {"source": "table", "path": str(responses)}
    if edit:
        edit(config)
    return make_workdir(tmp_path / "wd", yaml.safe_dump(config))


def planned_settings(wd, *targets):
    """{(model slug, dataset, run): the --settings JSON of its finetune command} from `snakemake -n -p`."""
    proc = snakemake(wd, *targets, "-n", "-p", "--cores", "8")
    out = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        if "crossdiff finetune " not in line:
            continue
        args = shlex.split(line[line.index("crossdiff finetune "):].split(" > ")[0])
        path = args[args.index("--output") + 1]
        model, dataset, run = re.match(r"results/finetune/([^/]+)/([^/]+)/([^/]+)$", path).groups()
        out[(model, dataset, run)] = json.loads(args[args.index("--settings") + 1])
    return out


def test_paper_trains_mmlu_pro_as_the_authors(tmp_path):
    settings = planned_settings(paper_workdir(tmp_path))
    assert len(settings) == 7 * 6 * 10
    for (model, dataset, run), s in settings.items():
        if dataset == "mmlu_pro":  # the authors' LARGE_DATASETS loop: 3 epochs, 1 x 4 processes, checkpointing
            # except the 14B, whose 8 GPUs cannot make 4 (models[].finetune wins over the dataset's)
            batch = 8 if model.startswith("Qwen_Qwen2.5-14B-Instruct") else 4
            assert (s["num_train_epochs"], s["global_batch_size"], s["per_device_train_batch_size"],
                    s["gradient_checkpointing"]) == (3, batch, 1, True), (model, run)
        else:
            assert (s["num_train_epochs"], s["global_batch_size"], s["per_device_train_batch_size"]) == (5, 8, 1)
        assert s["learning_rate"] == 5e-6 and s["max_length"] == 4096  # the rest from `finetune`


def test_dataset_settings_merge_under_the_run_design(tmp_path):
    """Order: `finetune` < datasets.<name>.finetune < the study design's seed of a run."""
    def edit(config):
        config["models"] = config["models"][:1]
        config["datasets"]["arc"]["finetune"] = {"seed": 7, "max_length": 512, "learning_rate": 1e-5}
        config["study"] = {"datasets": ["arc", "gsm8k"], "train_bins": [0], "seeds": [1, 2]}

    settings = planned_settings(paper_workdir(tmp_path, edit))
    arc = {run: s for (_, d, run), s in settings.items() if d == "arc"}
    gsm = {run: s for (_, d, run), s in settings.items() if d == "gsm8k"}
    assert sorted(arc) == sorted(gsm) == ["bin0-seed1", "bin0-seed2"]
    assert [arc[r]["seed"] for r in sorted(arc)] == [1, 2]  # the run's seed wins over the dataset's
    assert all(s["max_length"] == 512 and s["learning_rate"] == 1e-5 for s in arc.values())
    assert all(s["max_length"] == 4096 and s["learning_rate"] == 5e-6 for s in gsm.values())
