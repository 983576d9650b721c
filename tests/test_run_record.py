"""A report built with another config than the run's is refused (issue 26, section 6: after an ICL run,
`snakemake --report` without the run's --configfile dropped the ICL figures while the front page described ICL)."""

import json

import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.results.run_record import check_report_config, write_record


def test_a_report_with_another_config_names_the_runs_configfile(tmp_path):
    path = tmp_path / "run.json"
    check_report_config({"study": {"methods": ["sft"]}}, [], path)  # no record yet: nothing to check
    write_record({"study": {"methods": ["sft", "icl"]}, "bins": {"n_bins": 10}}, ["config/designs/icl.yaml"], path)
    check_report_config({"bins": {"n_bins": 10}, "study": {"methods": ["sft", "icl"]}}, ["config/designs/icl.yaml"], path)
    with pytest.raises(CrossdiffError, match=r"differs in: study.*--configfile config/designs/icl.yaml"):
        check_report_config({"study": {"methods": ["sft"]}, "bins": {"n_bins": 10}}, [], path)
    path.write_text("{not json")
    with pytest.raises(CrossdiffError, match="unreadable run record"):
        check_report_config({}, [], path)


def test_the_record_holds_config_and_files(tmp_path):
    write_record({"a": 1}, ["x.yaml"], tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"configfiles": ["x.yaml"], "config": {"a": 1}}
