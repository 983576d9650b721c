import polars as pl
import pytest

from crossdiff.io import atomic_path, write_parquet


def test_failed_write_leaves_nothing(tmp_path):
    dest = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not dest.exists() and list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_output(tmp_path):
    dest = tmp_path / "out.parquet"
    write_parquet(pl.DataFrame({"a": [1]}), dest)
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert pl.read_parquet(dest)["a"].to_list() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_directory_output_is_replaced_whole(tmp_path):
    dest = tmp_path / "model"
    for version in ("v1", "v2"):
        with atomic_path(dest, directory=True) as tmp:
            (tmp / "weights").write_text(version)
    assert (dest / "weights").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
