"""One stack for CPU and GPU (issue 18): every package pinned in both requirement files has the same pin,
the installed library versions are the pins (so this suite runs the GPU user's library code), and a real
SFTConfig is built by build_trainer's arguments under them (item 1: `activation_checkpointing=` crashed
every fine-tune under transformers 5.19)."""

import re
from importlib.metadata import version

import pytest

from conftest import REPO

PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*==\s*([^\s;#]+)")


def pins(path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip().startswith("-r "):
            out.update(pins(path.parent / line.split()[1]))
            continue
        m = PIN.match(line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(3)
    return out


def test_shared_pins_agree():
    cpu, gpu = pins(REPO / "envs/requirements.txt"), pins(REPO / "envs/requirements-gpu.txt")
    assert len(cpu) >= 10 and set(cpu) <= set(gpu), sorted(set(cpu) - set(gpu))
    mismatched = {k: (cpu[k], gpu[k]) for k in cpu if cpu[k] != gpu[k]}
    assert not mismatched, f"CPU and GPU requirement files pin different versions: {mismatched}"


@pytest.mark.parametrize("package", ["transformers", "trl", "peft", "accelerate", "lm-eval", "datasets", "huggingface-hub"])
def test_installed_version_is_the_gpu_pin(package):
    assert version(package) == pins(REPO / "envs/requirements-gpu.txt")[package]


def test_pin_parser_sees_a_mismatch(tmp_path):
    (tmp_path / "a.txt").write_text("transformers==5.19.0  # note\ntrl==1.16.0\n")
    (tmp_path / "b.txt").write_text("-r a.txt\nvllm==0.32.0\n")
    assert pins(tmp_path / "b.txt") == {"transformers": "5.19.0", "trl": "1.16.0", "vllm": "0.32.0"}
    (tmp_path / "c.txt").write_text("transformers==5.23.0\n")
    assert pins(tmp_path / "c.txt")["transformers"] != pins(tmp_path / "a.txt")["transformers"]
