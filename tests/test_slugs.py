import re

import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.slugs import read_slug_table, slugify, unslug, write_slug_table

SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
IDS = [
    "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen_Qwen2.5-1.5B-Instruct",
    "meta-llama/Llama-3.2-1B",
    "/abs/path/to/model",
    "../relative/model",
    ".hidden",
    "a/b",
    "a_b",
    "a b",
    "x" * 200,
    "tiny-llama",
    "ünïcode/model",
]


@pytest.mark.parametrize("model_id", IDS)
def test_slug_is_safe_and_stable(model_id):
    slug = slugify(model_id)
    assert SAFE.match(slug), slug
    assert "/" not in slug and ".." not in slug and not slug.startswith(".")
    assert len(slug) <= 80
    assert slugify(model_id) == slug


def test_safe_ids_are_their_own_slug_and_others_get_hash():
    assert slugify("tiny-llama") == "tiny-llama"
    assert slugify("Qwen/Qwen2.5-1.5B-Instruct").startswith("Qwen_Qwen2.5-1.5B-Instruct-")


def test_ids_differing_only_in_slash_vs_underscore_are_distinct():
    assert slugify("a/b") != slugify("a_b")
    assert slugify("Qwen/Qwen2.5-1.5B-Instruct") != slugify("Qwen_Qwen2.5-1.5B-Instruct")
    assert len({slugify(m) for m in IDS}) == len(IDS)


def test_slug_table_round_trip(tmp_path):
    path = tmp_path / "slugs.tsv"
    write_slug_table(IDS[:4], path)
    write_slug_table(IDS[4:], path)  # merges
    table = read_slug_table(path)
    assert len(table) == len(IDS)
    for model_id in IDS:
        assert unslug(slugify(model_id), path) == model_id
    with pytest.raises(CrossdiffError, match="no model id"):
        unslug("nope", path)


def test_tampered_table_is_rejected(tmp_path):
    path = tmp_path / "slugs.tsv"
    path.write_text("slug\tmodel_id\nwrong\tQwen/Qwen2.5-1.5B-Instruct\n")
    with pytest.raises(CrossdiffError, match="does not match"):
        read_slug_table(path)


def test_empty_id_rejected():
    with pytest.raises(CrossdiffError):
        slugify("")
