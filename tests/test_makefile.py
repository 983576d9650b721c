"""The README's demo command works as a newcomer types it: `make demo` without an activated venv."""

import os
import subprocess

from conftest import REPO


def test_make_puts_the_venv_on_path_for_the_rules(tmp_path):
    # a PATH without the venv, as in a fresh shell; `make -n` would not run the rules, so ask make
    # for the PATH its recipes see
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    out = subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "-f", "-", "show-path"],
                         input="show-path:\n\t@echo $$PATH\n", capture_output=True, text=True, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr
    first = out.stdout.strip().split(":")[0]
    assert first == str(REPO / ".venv" / "bin")
    assert os.access(os.path.join(first, "crossdiff"), os.X_OK), "make venv installs the crossdiff command there"
