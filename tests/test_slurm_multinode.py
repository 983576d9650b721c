"""One fine-tune on 2 nodes x 2 GPUs as ONE SLURM job, through `snakemake --profile profiles/slurm` on a real
two-node SLURM (issue 31).

tests/slurm/cluster.sh brings up two slurmd (n1, n2) on this host (Debian's multiple-slurmd build; each node
2 fake GPUs), in the folder test_slurm.py uses (a running one-node cluster there is switched to two nodes and
back). The base model and training data are built locally first (a workstation cannot run `nodes: 2`: the
config without it); then the fine-tune goes through the profile and the product's own launch path: the
plugin's sbatch (`--nodes=2 --ntasks=2 --gpus=fake:4 --gpus-per-node=fake:2`), its jobstep running the rule
once on n1, `crossdiff finetune --nodes 2` reading the allocation from scontrol and starting one `accelerate
launch` per node through srun (static rendezvous on n1), 4 gloo CPU ranks training with FSDP2 hybrid sharding
(the test-only switch tests/fsdp_cpu keeps accelerate's FSDP on CPU: the GPUs are fake). Once a sharded
checkpoint is complete the job is preempted (`scontrol requeue`: SIGTERM to every process on both nodes, then
back to the queue); the requeued job resumes from the checkpoint in the same snakemake run and saves one model.

Skipped without SLURM, except in CI (CI=true), where a missing SLURM fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, REPO, make_workdir, snakemake
from test_slurm import CLUSTER_SH, IN_CI, SBIN_PATH, _missing_slurm, local_profile, parse_scontrol_record, slurm_jobs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STUDY = """
datasets:
  tiny:
    items: {source: synthetic, n_items: 40, max_ops: 2, max_digits: 2, seed: 1}
    responses: {source: simulated, n_models: 30, seed: 2}
    bins: {by: n_ops}
irt: {engine: fast, stability: {seeds: [], engines: []}}
bins: {n_bins: 2}
study: {train_bins: [0]}
models:
  - id: tiny-model
    build: tiny
    warmup_dataset: tiny
    build_settings: {hidden_size: 64, num_layers: 2, warmup_problems: 100, warmup_steps: 5, eval_items: 0}
    resources: {gpu: 2, nodes: 2, mem_mb: 3000}
finetune: {max_steps: 12, save_steps: 4, per_device_train_batch_size: 2, learning_rate: 1.0e-3, sharding: hybrid}
resources:
  finetune: {gpu: 1, mem_mb: 1000, runtime: 10, threads: 1}
  evaluate: {gpu: 0, threads: 1}
"""
TARGET = "results/finetune/tiny-model/tiny/bin0"


def _cluster(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["timeout", "120", "bash", str(CLUSTER_SH), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def two_node_cluster():
    """Two slurmd on this host for this module; stopped (or switched back to the one node test_slurm.py's
    session cluster had) afterwards, by pid files only."""
    reason = _missing_slurm()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    directory = Path(os.environ.get("CROSSDIFF_SLURM_DIR") or "/tmp/crossdiff-slurm-test")
    conf = directory / "etc" / "slurm.conf"
    had_one_node = _cluster("status", str(directory)).returncode == 0 and conf.read_text().count("\nNodeName=") == 1
    up = _cluster("up", str(directory), "2")
    if up.returncode != 0:
        _cluster("down", str(directory))
        log = directory / "log" / "slurmctld.log"
        pytest.fail(f"cluster.sh up (2 nodes) failed ({up.returncode}):\n{up.stdout}\n{up.stderr}\n"
                    f"{log.read_text(errors='replace')[-3000:] if log.exists() else ''}")
    yield directory
    back = _cluster("up", str(directory), "1") if had_one_node else _cluster("down", str(directory))
    assert back.returncode == 0, back.stderr


def _job_record(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30).stdout
    return parse_scontrol_record(out.strip())


def _stray_ranks(workdir: Path) -> list[str]:
    """Processes still running a rank or launcher of this test's fine-tune (from /proc: a fresh Debian has no ps)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if "crossdiff.cli finetune" in args and str(workdir) in args:
            found.append(f"{cmdline.parent.name} {args}")
    return found


def test_two_node_finetune_is_one_slurm_job_and_resumes_after_preemption(two_node_cluster, tmp_path):
    t0 = time.monotonic()
    workdir = make_workdir(tmp_path / "wf", STUDY.replace("resources: {gpu: 2, nodes: 2, mem_mb: 3000}",
                                                          "resources: {gpu: 2, mem_mb: 3000}"))
    snakemake(workdir, "-j2", "results/sft/tiny/bin0.jsonl", "results/models/tiny-model", timeout=600)
    (workdir / "config/config.yaml").write_text(STUDY)  # (a workstation refuses it: tests/test_multinode.py)
    t_prep = time.monotonic() - t0

    profile = local_profile(tmp_path / "profile")
    cfg = yaml.safe_load((profile / "config.yaml").read_text())
    cfg["set-resources"]["finetune"]["gpu_model"] = "fake"  # a site's GPU_MODEL: typed --gpus and --gpus-per-node
    (profile / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{SBIN_PATH}", "ACCELERATE_USE_FSDP": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests/fsdp_cpu"), str(REPO / "workflow"), os.environ.get("PYTHONPATH", "")])}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = ["timeout", "-k", "30", "540", str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--profile", str(profile), "--verbose", TARGET]
    work = workdir / f"{TARGET}.work"
    t1 = time.monotonic()
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir)
    try:
        job_id, script = None, ""
        end = time.monotonic() + 300
        while time.monotonic() < end and run.poll() is None:
            if job_id is None:
                job_id = next((j["JobId"] for j in slurm_jobs(workdir) if j["rule"] == "finetune" and j.get("JobState") == "RUNNING"), None)
                if job_id:  # the plugin's real submission, as SLURM holds it
                    script = subprocess.run(["scontrol", "write", "batch_script", job_id, "-"], capture_output=True,
                                            text=True, timeout=30).stdout
            if job_id and list(work.glob("checkpoint-*/crossdiff_checkpoint.json")):
                break
            time.sleep(0.5)
        assert job_id and list(work.glob("checkpoint-*/crossdiff_checkpoint.json")), "no complete checkpoint in time"
        t_preempt = time.monotonic() - t1
        # preemption: SIGTERM to every process of the job on both nodes, KILL after KillWait, back to the queue
        subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, timeout=30)
        # SLURM holds a requeued job about two minutes (Reason=BeginTime, measured 164 s): release it at once
        end = time.monotonic() + 60
        while _job_record(job_id).get("JobState") != "PENDING" and time.monotonic() < end:
            time.sleep(0.5)
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, capture_output=True, timeout=30)
        out, _ = run.communicate(timeout=400)
    finally:
        if run.poll() is None:
            run.kill()
    t_slurm = time.monotonic() - t1
    logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
    assert run.returncode == 0, f"{out[-6000:]}\n{logs}"

    # ONE job: the plugin's sbatch options, requeued once, on both nodes
    sbatch = [line for line in out.splitlines() if "sbatch call:" in line and "rule_finetune" in line]
    assert len(sbatch) == 1, "one submission (the requeued job is the same job)"
    for opt in ("--nodes=2", "--ntasks=2", "--gpus=fake:4", "--gpus-per-node=fake:2", "--requeue", "-p debug"):
        assert opt in sbatch[0], (opt, sbatch[0])
    assert "--ntasks-per-gpu" not in sbatch[0]
    assert "--executor slurm-jobstep" in script and "finetune" in script, script[-2000:]
    job = _job_record(job_id)
    assert job["JobState"] == "COMPLETED" and job["NumNodes"] == "2" and job["NumTasks"] == "2", job
    assert job["Restarts"] == "1" and job["Requeue"] == "1" and job["BatchHost"] == "n1", job
    assert job["TresPerJob"] == "gres:gpu:fake:4" and job["TresPerNode"] == "gres:gpu:fake:2", job

    # the launch: the shell ran once on n1 (no srun around it), which started one launcher per node
    log = (workdir / "logs/finetune/tiny-model/tiny/bin0.log").read_text(errors="replace")
    assert log.count("launching 4 ranks on 2 nodes (n1, n2; 2 per node, sharding hybrid)") == 1, log[-3000:]
    seen = re.search(r"this process sees (.*); nodes", log).group(1).split(", ")
    assert "SLURM_JOB_ID" in seen and "SLURM_JOB_NODELIST" not in seen and "SLURM_NTASKS" not in seen, seen
    srun = next(line for line in log.splitlines() if line.startswith("srun line: "))
    for part in ("srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --kill-on-bad-exit=1", "--nodelist=n1,n2",
                 "--num_processes 4 --num_machines 2 --machine_rank \"$SLURM_NODEID\" --rdzv_backend static",
                 "--main_process_ip 127.0.0.1"):
        assert part in srun, (part, srun)
    assert "resuming from" in log

    # trained, checkpointed, resumed after the SIGTERM, one model saved
    metrics = json.loads((workdir / TARGET / "train_metrics.json").read_text())
    assert metrics["engine"] == "fsdp2" and metrics["world_size"] == 4 and metrics["nodes"] == 2
    assert metrics["sharding"] == "hybrid" and metrics["device_mesh"] == {"dp_replicate": 2, "dp_shard": 2}
    assert metrics["slurm_job_id"] == job_id and metrics["cuda_visible_devices"] == "0,1"
    assert metrics["resumed_from"] and metrics["resumed_from_step"] >= 4 and metrics["global_step"] == 12
    assert metrics["share_changed"] > 0.9
    assert sorted(p.name for p in (workdir / TARGET).glob("*.safetensors")) == ["model.safetensors"]
    assert not work.exists(), "the work directory (sharded checkpoints) is removed after success"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(workdir / TARGET)  # a plain HF model
    assert not _stray_ranks(workdir), _stray_ranks(workdir)
    print(f"two-node test: local prep {t_prep:.0f} s; SLURM run {t_slurm:.0f} s (checkpoint after {t_preempt:.0f} s, "
          f"then requeue + resume); total {time.monotonic() - t0:.0f} s")
