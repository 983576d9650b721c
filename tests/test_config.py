import pytest
import yaml

from crossdiff.config import load, validate
from crossdiff.errors import CrossdiffError

MINIMAL = {"datasets": {"d": {"items": {"source": "synthetic"}, "responses": {"source": "simulated"}}}}


def test_defaults_are_filled_everywhere():
    c = validate(MINIMAL)
    assert c["irt"]["engine"] == "fast" and c["irt"]["epochs"] == 2000 and c["irt"]["holdout_fraction"] == 0.05
    assert c["bins"]["n_bins"] == 10
    assert c["filters"]["drop_constant_items"] is True
    # defaults inside the per-dataset entry and inside the oneOf branch that matched
    assert c["datasets"]["d"]["items"]["n_items"] == 1000
    assert c["datasets"]["d"]["responses"]["n_models"] == 300
    assert MINIMAL["datasets"]["d"]["items"] == {"source": "synthetic"}, "input must not be mutated"


def test_table_source_defaults():
    c = validate({"datasets": {"d": {"items": {"source": "none"}, "responses": {"source": "table", "path": "x.csv"}}}})
    assert c["datasets"]["d"]["responses"]["format"] == "auto"
    assert c["datasets"]["d"]["responses"]["correct_column"] == "correct"


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"irt": {"epoch": 5}}, "irt.epoch"),
        ({"bogus": 1}, "bogus"),
        ({"bins": {"n_bins": "ten"}}, "bins.n_bins"),
        ({"irt": {"engine": "mirt"}}, "irt.engine"),
    ],
)
def test_bad_keys_and_types_are_named(patch, expected):
    with pytest.raises(CrossdiffError) as exc:
        validate({**MINIMAL, **patch})
    assert expected in str(exc.value)


def test_bad_key_inside_dataset_branch_is_named():
    bad = {"datasets": {"d": {"items": {"source": "synthetic"}, "responses": {"source": "simulated", "n_model": 3}}}}
    with pytest.raises(CrossdiffError, match=r"datasets\.d\.responses\.n_model.*expected one of: .*n_models"):
        validate(bad)


def test_missing_required_path_is_named():
    bad = {"datasets": {"d": {"items": {"source": "synthetic"}, "responses": {"source": "table"}}}}
    with pytest.raises(CrossdiffError, match=r"datasets\.d\.responses: 'path' is a required property"):
        validate(bad)


def test_shipped_config_is_valid(repo):
    c = load(repo / "config" / "config.yaml")
    assert c["datasets"]["arith"]["responses"]["source"] == "simulated"


def test_load_names_missing_and_broken_files(tmp_path):
    with pytest.raises(CrossdiffError, match="nope.yaml: config file not found"):
        load(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("datasets: [unclosed\n")
    with pytest.raises(CrossdiffError, match="broken.yaml: not valid YAML"):
        load(broken)
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(MINIMAL))
    assert load(tmp_path / "ok.yaml")["bins"]["n_bins"] == 10


def test_defaults_filled_inside_list_entries():
    c = validate({**MINIMAL, "models": [{"id": "tiny", "build": "tiny"}, {"id": "org/model"}]})
    assert c["models"][0]["build_settings"] == {} and c["models"][1]["build"] is None
    with pytest.raises(CrossdiffError, match=r"models\.1\.revision"):
        validate({**MINIMAL, "models": [{"id": "a"}, {"id": "b", "revision": "x"}]})


def test_dataset_filters_override_only_the_keys_given():
    c = validate({**MINIMAL, "filters": {"min_responses_per_model": 50, "drop_constant_items": False},
                  "datasets": {"d": {**MINIMAL["datasets"]["d"], "filters": {"min_responses_per_item": 10}}}})
    assert c["datasets"]["d"]["filters"] == {"min_responses_per_item": 10}
    merged = {**c["filters"], **c["datasets"]["d"]["filters"]}  # as workflow/rules/common.smk merges them
    assert merged["min_responses_per_model"] == 50 and merged["drop_constant_items"] is False
    assert merged["min_responses_per_item"] == 10


@pytest.mark.parametrize("patch, expected", [
    ({"study": {"datasets": ["nope"]}, "models": [{"id": "m"}]}, r"study\.datasets: unknown dataset 'nope'"),
    ({"study": {"train_bins": [3]}, "bins": {"n_bins": 3}}, r"study\.train_bins: bin 3 does not exist; expected 0\.\.2"),
    ({"models": [{"id": "t", "build": "tiny", "warmup_dataset": "x"}]}, r"models\.0\.warmup_dataset: unknown dataset 'x'"),
])
def test_cross_references_are_checked(patch, expected):
    with pytest.raises(CrossdiffError, match=expected):
        validate({**MINIMAL, **patch})


def test_study_dataset_without_items_is_rejected():
    cfg = {"datasets": {"d": {"items": {"source": "none"}, "responses": {"source": "table", "path": "r.csv"}}},
           "study": {"datasets": ["d"]}, "models": [{"id": "m"}]}
    with pytest.raises(CrossdiffError, match="dataset 'd' has items.source none; fine-tuning needs its items"):
        validate(cfg)
