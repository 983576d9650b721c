"""The workflow through `snakemake --profile profiles/slurm` on a real single-node SLURM cluster.

tests/slurm/cluster.sh brings up SLURM (slurm-wlm 22.05 + munge, as root or through `sudo -n`) with two fake GPUs in a
temporary directory; the profile is profiles/slurm/config.yaml with its site values replaced by the
local cluster's (partition "debug", no account, squeue status checks, small memory). What each
SLURM job asked for is read from `scontrol show job` (finished jobs stay known for MinJobAge = 5
minutes; there is no accounting database, hence no sacct).

Skipped when SLURM is not installed, except in CI (CI=true), where a missing SLURM is a failure:
    apt-get install -y slurm-wlm munge
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, REPO, make_workdir

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
PARTITION = "debug"  # tests/slurm/cluster.sh's partition
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

# what the local cluster needs instead of the site values (profiles/slurm/README.md lists them all)
LOCAL_OPTIONS = {
    "jobs": 4,
    "local-cores": 2,
    "retries": 0,
    "latency-wait": 5,
    "slurm-status-command": "squeue",  # no accounting here: sacct would hang the run
    "slurm-no-account": True,
    "slurm-init-seconds-before-status-checks": 2,  # MinJobAge (300) must stay >= 3x this
    "slurm-keep-successful-logs": True,
}


def _passwordless_sudo() -> bool:
    """tests/slurm/cluster.sh re-runs itself through `sudo -n` for a user who may (a CI runner that is not root)."""
    if not shutil.which("sudo"):
        return False
    return subprocess.run(["sudo", "-n", "true"], capture_output=True, timeout=30).returncode == 0


def _missing_slurm() -> str | None:
    missing = [exe for exe in ("sbatch", "squeue", "scontrol", "slurmctld", "slurmd", "munged") if not shutil.which(exe, path=SBIN_PATH)]
    if missing:
        return f"SLURM not installed ({', '.join(missing)} missing): apt-get install -y slurm-wlm munge"
    if os.geteuid() != 0 and not _passwordless_sudo():
        return "the local SLURM test cluster must be started as root (or by a user with passwordless sudo)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    reason = _missing_slurm()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    # a fixed folder, so that `up` takes over (idempotently) a cluster left running by a killed session
    directory = Path(os.environ.get("CROSSDIFF_SLURM_DIR") or "/tmp/crossdiff-slurm-test")
    up = subprocess.run(["timeout", "120", "bash", str(CLUSTER_SH), "up", str(directory)], capture_output=True, text=True)
    if up.returncode != 0:
        subprocess.run(["bash", str(CLUSTER_SH), "down", str(directory)], capture_output=True, text=True)
        log = directory / "log" / "slurmctld.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        pytest.fail(f"cluster.sh up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}\n{tail}")
    yield directory
    down = subprocess.run(["timeout", "120", "bash", str(CLUSTER_SH), "down", str(directory)], capture_output=True, text=True)
    assert down.returncode == 0, down.stderr


# ---------------------------------------------------------------------------------------------
# profile and runs


def _localize(resources: dict) -> dict:
    """One rule's (or the default) resources with the local cluster's values."""
    out = {k: v for k, v in resources.items() if k != "slurm_account"}
    if "slurm_partition" in out:
        out["slurm_partition"] = PARTITION
    if "mem_mb" in out:
        out["mem_mb"] = "500 * attempt"
    if "runtime" in out:
        out["runtime"] = 10
    if "cpus_per_gpu" in out:
        out["cpus_per_gpu"] = 1
    if "gpu_model" in out:
        out["gpu_model"] = "fake"  # the gres type of tests/slurm/cluster.sh's GPUs
    return out


def local_profile(directory: Path, **options) -> Path:
    """profiles/slurm rendered (YTE) with the local cluster's values; returns the profile folder."""
    import yte

    with open(PROFILE) as fh:
        profile = yte.process_yaml(fh, require_use_yte=True)
    assert profile["executor"] == "slurm"
    profile.update(LOCAL_OPTIONS)
    profile["default-resources"] = _localize(profile["default-resources"])
    profile["set-resources"] = {rule: _localize(res) for rule, res in profile["set-resources"].items()}
    profile.update(options)
    profile = {k: v for k, v in profile.items() if v is not None}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return directory


def run_on_slurm(snakefile: Path, workdir: Path, profile: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """snakemake through the SLURM profile. Wrapped in `timeout`: a status-check problem hangs it."""
    cmd = [
        "timeout", "-k", "30", str(timeout),
        str(BIN / "snakemake"), "-s", str(snakefile), "-d", str(workdir), "--profile", str(profile), *args,
    ]  # fmt: skip
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{SBIN_PATH}"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    proc.seconds = time.monotonic() - t0  # type: ignore[attr-defined]
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted((workdir / "logs").rglob("*.log"))[-6:])
        raise AssertionError(
            f"snakemake on SLURM failed ({proc.returncode}{', timed out' if proc.returncode in (124, 137) else ''}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}\n{logs}"
        )
    return proc


# ---------------------------------------------------------------------------------------------
# what the jobs asked SLURM for (helpers meant for the fine-tuning tests as well)


def parse_scontrol_record(line: str) -> dict[str, str]:
    record = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep:
            record[key] = value
    return record


def slurm_jobs(workdir: Path | None = None) -> list[dict[str, str]]:
    """Every job slurmctld knows (finished ones for MinJobAge), as dicts; only those submitted from
    ``workdir`` when given. Each gets a "rule" key from the comment the snakemake plugin sets."""
    proc = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and "No jobs in the system" not in proc.stdout + proc.stderr:
        raise AssertionError(f"scontrol show job failed: {proc.stderr}")
    jobs = []
    for line in proc.stdout.splitlines():
        if not line.startswith("JobId="):
            continue
        job = parse_scontrol_record(line)
        if workdir is not None and Path(job.get("WorkDir", "")).resolve() != Path(workdir).resolve():
            continue
        m = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", job.get("Comment", ""))
        job["rule"] = m.group(1) if m else ""
        jobs.append(job)
    return jobs


def gpus_requested(job: dict[str, str]) -> int:
    """GPUs a job asked for: --gpus (TresPerJob), --gres (TresPerNode), --gpus-per-task/-socket.
    Formats: 'gres:gpu:1', 'gres:gpu:fake:1' (SLURM 22.05), 'gres/gpu=1', 'gres/gpu:fake=1' (newer)."""
    total = 0
    for key in ("TresPerJob", "TresPerNode", "TresPerSocket", "TresPerTask"):
        for m in re.finditer(r"gres[:/]gpu(?::[A-Za-z0-9_.-]+)?[:=](\d+)", job.get(key, "")):
            total += int(m.group(1))
    return total


def assert_gpu_requests(jobs: list[dict[str, str]], gpu_rules: dict[str, int]) -> dict[str, int]:
    """Jobs of the rules in ``gpu_rules`` asked for exactly that many GPUs, every other job for none.
    Returns rule -> number of jobs checked."""
    assert jobs, "no SLURM job found"
    seen: dict[str, int] = {}
    wrong = []
    for job in jobs:
        rule = job["rule"]
        want, got = gpu_rules.get(rule, 0), gpus_requested(job)
        if want != got:
            wrong.append(f"job {job['JobId']} ({rule}): asked for {got} GPU(s), expected {want}")
        seen[rule] = seen.get(rule, 0) + 1
    assert not wrong, "\n".join(wrong)
    missing = set(gpu_rules) - set(seen)
    assert not missing, f"no SLURM job of GPU rule(s) {sorted(missing)}; jobs seen: {seen}"
    return seen


def wait_for_job(rule: str, workdir: Path, states=("RUNNING",), timeout: float = 120) -> dict[str, str]:
    """The first job of ``rule`` (submitted from workdir) reaching one of ``states``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for job in slurm_jobs(workdir):
            if job["rule"] == rule and job.get("JobState") in states:
                return job
        time.sleep(1)
    raise AssertionError(f"no {rule} job in state {states} within {timeout} s: {slurm_jobs(workdir)}")


def scancel(job_id: str, signal_name: str | None = None) -> None:
    """Cancel a job (or send it a signal, e.g. 'TERM' for a graceful stop): for the resume test."""
    cmd = ["scancel", *(["--signal", signal_name, "--full"] if signal_name else []), str(job_id)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def requeue(job_id: str) -> None:
    """Put a running job back in the queue as a preemption would (the profile sets --requeue)."""
    subprocess.run(["scontrol", "requeue", str(job_id)], check=True, capture_output=True, timeout=30)


# ---------------------------------------------------------------------------------------------
# tests


def test_parsers():
    line = (
        "JobId=7 JobName=abc JobState=COMPLETED Comment=rule_fit_irt_wildcards_dataset=tiny "
        "WorkDir=/x TresPerJob=gres:gpu:fake:2"
    )
    job = parse_scontrol_record(line)
    assert job["Comment"] == "rule_fit_irt_wildcards_dataset=tiny" and job["WorkDir"] == "/x"
    assert gpus_requested(job) == 2
    assert gpus_requested({"TresPerNode": "gres/gpu=1"}) == 1
    assert gpus_requested({"TresPerJob": "gres:gpu:1"}) == 1
    assert gpus_requested({"TRES": "cpu=1,mem=500M"}) == 0
    jobs = [{"JobId": "1", "rule": "finetune", "TresPerJob": "gres:gpu:1"}, {"JobId": "2", "rule": "fit_irt"}]
    assert assert_gpu_requests(jobs, {"finetune": 1}) == {"finetune": 1, "fit_irt": 1}
    with pytest.raises(AssertionError, match="asked for 1 GPU"):
        assert_gpu_requests(jobs, {})


class _Res(dict):
    def __getattr__(self, name):
        return self[name]


def test_multi_gpu_finetune_is_one_slurm_task():
    """The plugin's own sbatch/srun strings for a `gpu: 2` fine-tune (resources as the rule declares
    them, plus a profile-wide `tasks: 1`): no --ntasks-per-gpu (which would start one task per GPU,
    i.e. the training script twice), and the job step is `srun -n1 ... --gpus=2`."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm_jobstep import get_cpu_setting, get_gpu_setting

    res = _Res(gpu=2, tasks_per_gpu=0, tasks=1, mem_mb=1000, runtime=10, cpus_per_gpu=4, slurm_partition="gpu")
    job = SimpleNamespace(resources=res, threads=1, is_group=lambda: False, name="finetune")
    params = {"run_uuid": "x", "slurm_logfile": "l", "comment_str": "c", "account": "", "partition": "-p gpu",
              "workdir": ".", "runtime": 10}
    call = get_submit_command(job, params)
    assert "--ntasks-per-gpu" not in call and "--cpus-per-gpu=4" in call, call
    # without the rule's tasks_per_gpu=0 a profile's `tasks: 1` becomes one task per GPU
    unguarded = SimpleNamespace(resources=_Res({**res, "tasks_per_gpu": None}), threads=1, is_group=lambda: False, name="finetune")
    assert "--ntasks-per-gpu=1" in get_submit_command(unguarded, params)
    step = f"srun -n1 {get_cpu_setting(job, True)} {get_gpu_setting(job)}"
    assert "--gpus=2" in step and "--cpus-per-gpu=4" in step
    # what the rule declares
    smk = (REPO / "workflow" / "rules" / "finetune.smk").read_text()
    assert "tasks_per_gpu=0" in smk


def test_profile_renders_and_names_known_options():
    """Every key of profiles/slurm is a snakemake option (an unknown key stops snakemake)."""
    import yte

    with open(PROFILE) as fh:
        profile = yte.process_yaml(fh, require_use_yte=True)
    helptext = subprocess.run([str(BIN / "snakemake"), "--help"], capture_output=True, text=True).stdout
    for key in profile:
        assert f"--{key}" in helptext, f"profiles/slurm: '{key}' is not a snakemake option"
    for rule in ("finetune", "evaluate_zero_shot", "evaluate_checkpoint", "zero_shot_measure"):
        assert profile["set-resources"][rule]["slurm_partition"] == "gpu", rule
        # the GPU partition; gpu/mem_mb/runtime stay with the rules (workflow config `resources`)
        assert set(profile["set-resources"][rule]) <= {"slurm_partition", "gpu_model", "cpus_per_gpu"}
    assert all("attempt" in str(res["mem_mb"]) for res in [profile["default-resources"], profile["set-resources"]["fit_irt"]])
    assert profile["slurm-requeue"] is True
    assert "cpus_per_task" not in profile["default-resources"]  # would override cpus_per_gpu


STUDY_FOR_SLURM = """
datasets:
  tiny:
    items: {source: synthetic, n_items: 60, max_ops: 3, max_digits: 2, seed: 1}
    responses: {source: simulated, n_models: 50, missing_rate: 0.1, n_duplicates: 2, seed: 2}
irt: {engine: fast, seed: 3, stability: {seeds: [4], engines: []}}
bins: {n_bins: 2}
models:
  - id: tiny-model
    build: tiny
    warmup_dataset: tiny
    build_settings: {hidden_size: 64, num_layers: 2, warmup_problems: 500, warmup_steps: 40, eval_items: 0}
finetune: {num_train_epochs: 1, learning_rate: 5.0e-4, per_device_train_batch_size: 8, save_steps: 2}
evaluate: {batch_size: 32}
aggregate: {n_boot: 200}
resources:
  finetune: {gpu: 1, mem_mb: 1000, runtime: 10, threads: 1}
  evaluate: {gpu: 1, mem_mb: 1000, runtime: 10, threads: 1}
"""

EXPECTED = [
    "results/responses/tiny.parquet",
    "results/irt/tiny/fit.json",
    "results/bins/tiny/bins.parquet",
    "results/bins/tiny/stability.csv",
    "results/finetune/tiny-model/tiny/bin0/train_metrics.json",
    "results/finetune/tiny-model/tiny/bin1/train_metrics.json",
    "results/eval/tiny-model/tiny/zero-shot/bin1.json",
    "results/eval/tiny-model/tiny/train0/bin1.json",
    "results/tables/results.parquet",
    "results/figures/tiny/tiny-model/gain.png",
] + [f"results/figures/tiny/difficulty/{f}.png" for f in ("histogram", "bin_accuracy", "calibration", "spearman", "truth")]

# rules submitted as SLURM jobs (the Snakefile keeps the small ones local)
SUBMITTED_RULES = {"import_responses", "fit_irt", "fit_irt_replicate", "finetune", "evaluate_zero_shot", "evaluate_checkpoint"}
GPU_RULES = {"finetune": 1, "evaluate_zero_shot": 1, "evaluate_checkpoint": 1}


def test_study_runs_on_slurm_with_gpus_only_where_declared(slurm_cluster, tmp_path):
    workdir = make_workdir(tmp_path / "wf", STUDY_FOR_SLURM)
    profile = local_profile(tmp_path / "profile")
    proc = run_on_slurm(REPO / "Snakefile", workdir, profile, timeout=480)
    for rel in EXPECTED:
        path = workdir / rel
        assert path.exists() and path.stat().st_size > 0, f"{rel} missing after the SLURM run"
    jobs = slurm_jobs(workdir)
    assert all(job.get("JobState") == "COMPLETED" for job in jobs), [(j["JobId"], j["rule"], j.get("JobState")) for j in jobs]
    seen = assert_gpu_requests(jobs, gpu_rules=GPU_RULES)  # GPU rules ask for one; every other rule for none
    assert SUBMITTED_RULES == set(seen), f"rules run as SLURM jobs: {seen}"
    assert seen["finetune"] == 2 and seen["evaluate_checkpoint"] == 2 and seen["evaluate_zero_shot"] == 1
    assert all(job.get("Partition") == PARTITION for job in jobs)
    fit = next(job for job in jobs if job["rule"] == "fit_irt")
    assert fit.get("NumCPUs") == "2", "fit_irt's threads (2) should become --cpus-per-task=2"
    for b in (0, 1):
        metrics = json.loads((workdir / f"results/finetune/tiny-model/tiny/bin{b}/train_metrics.json").read_text())
        assert metrics["cuda_visible_devices"] in ("0", "1"), "the fine-tuning job saw no GPU"
        job = next(j for j in jobs if j["JobId"] == metrics["slurm_job_id"])
        assert job["rule"] == "finetune" and job.get("Requeue") == "1", "profiles/slurm sets slurm-requeue"
    log = (workdir / "logs/finetune/tiny-model/tiny/bin0.log").read_text(errors="replace")
    assert "pass-through: SLURM job" in log
    print(f"SLURM run: {len(jobs)} jobs in {proc.seconds:.0f} s")  # type: ignore[attr-defined]


RESUME_STUDY = STUDY_FOR_SLURM.replace(
    "finetune: {num_train_epochs: 1, learning_rate: 5.0e-4, per_device_train_batch_size: 8, save_steps: 2}",
    "finetune: {num_train_epochs: 60, learning_rate: 1.0e-4, per_device_train_batch_size: 8, save_steps: 10}",
)


def test_cancelled_finetune_resumes_from_its_checkpoint(slurm_cluster, tmp_path):
    """scancel a running fine-tuning job once it has written a checkpoint; the rerun continues from it."""
    workdir = make_workdir(tmp_path / "wf", RESUME_STUDY)
    profile = local_profile(tmp_path / "profile", retries=0)
    target = "results/finetune/tiny-model/tiny/bin0"
    work = workdir / f"{target}.work"
    cmd = ["timeout", "-k", "30", "400", str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--profile", str(profile), target]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{SBIN_PATH}"}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir)
    try:
        job = wait_for_job("finetune", workdir, timeout=300)
        end = time.monotonic() + 240
        while not list(work.glob("checkpoint-*")) and time.monotonic() < end:
            time.sleep(0.2)
        assert list(work.glob("checkpoint-*")), "no checkpoint written before the deadline"
        scancel(job["JobId"])
        out, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode != 0, out[-3000:]
    assert not (workdir / target).exists(), "a cancelled job must leave no finished-looking model"
    kept = sorted(int(p.name.split("-")[1]) for p in work.glob("checkpoint-*"))
    assert kept, "the checkpoint must survive the cancelled job"
    run_on_slurm(REPO / "Snakefile", workdir, profile, target, timeout=400)
    metrics = json.loads((workdir / target / "train_metrics.json").read_text())
    assert metrics["resumed_from"] and metrics["resumed_from_step"] in kept
    assert metrics["global_step"] > metrics["resumed_from_step"] >= 10


TWO_GPU_STUDY = STUDY_FOR_SLURM.replace(
    "    warmup_dataset: tiny\n",
    "    warmup_dataset: tiny\n    resources: {gpu: 2, mem_mb: 2000}\n",
).replace(
    "finetune: {num_train_epochs: 1, learning_rate: 5.0e-4, per_device_train_batch_size: 8, save_steps: 2}",
    "finetune: {num_train_epochs: 40, learning_rate: 1.0e-4, per_device_train_batch_size: 4, save_steps: 10}",
)


def test_two_gpu_finetune_is_one_job_of_two_ranks_and_resumes_after_scancel(slurm_cluster, tmp_path):
    """models[].resources.gpu: 2 -> ONE SLURM job asking for 2 GPUs whose single task starts 2 ranks
    (CPU ranks over gloo: the GPUs are fake); scancel it after a checkpoint, the rerun resumes."""
    workdir = make_workdir(tmp_path / "wf", TWO_GPU_STUDY)
    profile = local_profile(tmp_path / "profile", retries=0)
    target = "results/finetune/tiny-model/tiny/bin0"
    work = workdir / f"{target}.work"
    cmd = ["timeout", "-k", "30", "400", str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--profile", str(profile), target]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{SBIN_PATH}"}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir)
    try:
        job = wait_for_job("finetune", workdir, timeout=300)
        end = time.monotonic() + 240
        while not list(work.glob("checkpoint-*/crossdiff_checkpoint.json")) and time.monotonic() < end:
            time.sleep(0.2)
        assert list(work.glob("checkpoint-*/crossdiff_checkpoint.json")), "no complete checkpoint before the deadline"
        scancel(job["JobId"])
        out, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode != 0, out[-3000:]
    assert not (workdir / target).exists()
    run_on_slurm(REPO / "Snakefile", workdir, profile, target, timeout=400)
    metrics = json.loads((workdir / target / "train_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["engine"] == "ddp"
    assert metrics["cuda_visible_devices"] in ("0,1", "1,0")
    assert metrics["resumed_from"] and metrics["global_step"] > metrics["resumed_from_step"] >= 10
    finetunes = [j for j in slurm_jobs(workdir) if j["rule"] == "finetune"]
    assert len(finetunes) == 2, "one SLURM job per run (the cancelled one and the rerun)"
    assert all(gpus_requested(j) == 2 for j in finetunes)
    assert all(j.get("NumTasks", "1") == "1" for j in finetunes), [j.get("NumTasks") for j in finetunes]
    log = (workdir / "logs/finetune/tiny-model/tiny/bin0.log").read_text(errors="replace")
    assert log.count("launching 2 ranks") == 1  # the rerun's log: the command ran once, not once per GPU
