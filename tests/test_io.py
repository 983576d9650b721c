import os
import shlex
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import pytest

from crossdiff.io import atomic_path, write_json, write_parquet


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


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_file_outputs_get_the_umask_permissions(tmp_path, umask):
    write_parquet(pl.DataFrame({"a": [1]}), tmp_path / "out.parquet")
    write_json({"a": 1}, tmp_path / "sub" / "out.json")
    assert _mode(tmp_path / "out.parquet") == 0o666 & ~umask  # 0o644 / 0o664, not mkstemp's 0o600
    assert _mode(tmp_path / "sub" / "out.json") == 0o666 & ~umask
    assert _mode(tmp_path / "sub") == 0o777 & ~umask


def test_directory_outputs_get_the_umask_permissions_recursively(tmp_path, umask):
    dest = tmp_path / "model"
    with atomic_path(dest, directory=True) as tmp:
        (tmp / "weights").write_text("w")
        nested = Path(tempfile.mkdtemp(dir=tmp))  # private 0o700, as a library's own temp dir would be
        fd, name = tempfile.mkstemp(dir=nested)  # private 0o600
        os.close(fd)
        script = tmp / "run.sh"
        script.write_text("#!/bin/sh\n")
        script.chmod(0o700)
        (tmp / "link").symlink_to("weights")
    assert _mode(dest) == 0o777 & ~umask  # not mkdtemp's 0o700
    assert _mode(dest / "weights") == 0o666 & ~umask
    assert _mode(dest / nested.name) == 0o777 & ~umask
    assert _mode(dest / nested.name / Path(name).name) == 0o666 & ~umask
    assert _mode(dest / "run.sh") == 0o777 & ~umask  # executables stay executable
    assert (dest / "link").is_symlink() and (dest / "link").read_text() == "w"


def test_cli_output_follows_the_callers_umask(tmp_path):
    out = tmp_path / "models.tsv"
    proc = subprocess.run(["bash", "-c", f'umask 002 && "$0" register-models --output {shlex.quote(str(out))} org/m',
                           str(Path(sys.executable).parent / "crossdiff")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _mode(out) == 0o664
