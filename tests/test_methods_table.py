"""study.methods as one table (crossdiff.study.methods; issue 26): labels, folders and order come from it."""

import json

import pytest

from conftest import make_workdir, snakemake
from crossdiff.errors import CrossdiffError
from crossdiff.study import methods


def test_labels_folders_and_order_come_from_the_table():
    assert methods.labels("sft") == ["sft"]
    assert methods.labels("icl", {"k": [16, 4]}) == ["icl-k4", "icl-k16"]
    assert methods.split_label("icl-k8-train3") == ("icl-k8", "train3")
    assert methods.split_label("3-n100-seed1") == ("sft", "3-n100-seed1")
    assert methods.split_label("set-easy") == ("sft", "set-easy")
    assert methods.prefixed("icl-k8", "3") == "icl-k8-3" and methods.prefixed("sft", "3") == "3"
    assert methods.figure_dir("sft") == "" and methods.figure_dir("icl-k8") == "icl-k8/"
    assert sorted(["icl-k16", "icl-k4", "sft"], key=methods.sort_key) == ["sft", "icl-k4", "icl-k16"]
    assert methods.method_of_label("icl-k8").name == "icl"
    with pytest.raises(CrossdiffError, match="unknown method 'grpo0'"):
        methods.get("grpo0")


def test_a_models_own_solutions_are_its_icl_demonstrations(tmp_path):
    """ICL draws its demonstrations' targets from the table its fine-tunes train on (issue 26, section 3)."""
    (tmp_path / "items.csv").write_text("item_id,question,answer\n" + "".join(f"i{i},{i}+1,{i + 1}\n" for i in range(12)))
    (tmp_path / "resp.csv").write_text("model_id,item_id,correct\n" + "".join(
        f"m{m},i{i},{(m + i) % 2}\n" for m in range(6) for i in range(12)))
    (tmp_path / "sol.csv").write_text("item_id,model_solution\n" + "".join(f"i{i},x\n" for i in range(12)))
    cfg = {"datasets": {"d": {"items": {"source": "file", "path": str(tmp_path / "items.csv")},
                              "responses": {"source": "table", "path": str(tmp_path / "resp.csv")},
                              "prompt": {"target": " {model_solution}"}}},
           "models": [{"id": "tiny", "build": "tiny", "solutions": {"d": {"path": str(tmp_path / "sol.csv")}}}],
           "bins": {"n_bins": 2}, "irt": {"stability": {"seeds": []}},
           "study": {"methods": ["sft", "icl"], "icl": {"k": 1}},
           "resources": {"finetune": {"gpu": 0}, "evaluate": {"gpu": 0}}}
    wd = make_workdir(tmp_path / "wd", json.dumps(cfg))
    out = snakemake(wd, "-n", "-p", "--cores", "1", "results/eval/tiny/d/icl-k1-train0/bin0.json").stdout
    line = next(x for x in out.splitlines() if "crossdiff evaluate-icl" in x)
    assert "--items results/items/d/solutions-tiny.parquet" in line, line
