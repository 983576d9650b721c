"""Multi-node fine-tuning without a cluster (issue 31): the memory plan over N x G ranks (70B: refused on 1 x 8,
fits 4 x 8), host RAM per node, the checks at parse (a workstation refuses `nodes > 1`; SLURM gets the plugin's
multi-node resources, a one-node job none of them), the allocation read from scontrol, the srun line and
hybrid sharding's ParallelismConfig. The run on a real two-node SLURM is tests/test_slurm_multinode.py."""

from __future__ import annotations

import json
import math
import os
import re
import stat
import subprocess

import pytest

from conftest import make_workdir, snakemake
from crossdiff.config import deep_merge, validate
from crossdiff.errors import CrossdiffError
from crossdiff.finetune import multinode
from crossdiff.finetune.memory_plan import LOAD_FACTOR, RANK_HOST_BYTES, param_count
from crossdiff.finetune.plan_check import check_model
from crossdiff.finetune.settings import resolve_settings
from crossdiff.plan.checks import executor_problems, problems
from crossdiff.plan.settings import Plan

# meta-llama/Llama-3.3-70B-Instruct config.json (the fields the plan reads; the 3.1-70B architecture)
LLAMA_70B = {"model_type": "llama", "hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64,
             "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 28672, "vocab_size": 128256,
             "tie_word_embeddings": False, "attention_bias": False, "max_position_embeddings": 131072}
# the paper's shape: fp32 master weights + AdamW (the default), per-device batch 1 x 4096 tokens, activation
# checkpointing (on with CUDA)
PAPER_SHAPE = {"per_device_train_batch_size": 1, "max_length": 4096}


# ------------------------------------------------------------------------------------------ memory plan
def test_70b_full_finetune_fits_4_nodes_of_8_and_is_refused_on_one_node_of_8():
    s = resolve_settings(PAPER_SHAPE)
    p = param_count(LLAMA_70B)
    refused, _ = check_model("meta-llama/Llama-3.3-70B-Instruct", LLAMA_70B, s, {"gpu": 8, "nodes": 1, "mem_mb": 1, "gpu_mem_gb": 80})
    assert len(refused) == 1 and "per GPU on 8 GPU(s)" in refused[0], refused
    assert "spread it over more nodes (models[].resources.nodes: 4 with gpu: 8" in refused[0], refused
    fits, host_mb = check_model("meta-llama/Llama-3.3-70B-Instruct", LLAMA_70B, s, {"gpu": 8, "nodes": 4, "mem_mb": 1, "gpu_mem_gb": 80})
    assert fits == [], fits
    # the sharded state by hand: 16 bytes/parameter (fp32 weights 4 + gradients 4 + AdamW moments 8) over 32 ranks
    from crossdiff.finetune.memory_plan import settings_plan

    four, one = settings_plan(LLAMA_70B, s, 32, nodes=4), settings_plan(LLAMA_70B, s, 8)
    assert four["weights_grads_optimizer_gb"] * 1e9 == pytest.approx(16 * p / 32)
    assert one["weights_grads_optimizer_gb"] * 1e9 == pytest.approx(16 * p / 8)
    assert four["total_gb"] <= 80 < one["total_gb"]
    # host RAM per node (sbatch --mem is per node): node 0 = rank 0 loading fp32 x 1.4, plus 4 GB for each of its 8 ranks
    assert host_mb == math.ceil((LOAD_FACTOR * 4 * p + 8 * RANK_HOST_BYTES) / 1e6)
    print(f"70B fp32-master full fine-tune: {one['total_gb']:.0f} GB/GPU on 1 x 8 (refused), "
          f"{four['total_gb']:.0f} GB/GPU on 4 x 8 (fits); host RAM per node {host_mb / 1000:.0f} GB")


def test_hybrid_sharding_plans_one_nodes_shard_and_points_to_fsdp():
    s = resolve_settings({**PAPER_SHAPE, "sharding": "hybrid"})
    problems_, _ = check_model("llama-70b", LLAMA_70B, s, {"gpu": 8, "nodes": 4, "mem_mb": 1, "gpu_mem_gb": 80})
    assert len(problems_) == 1 and "on 4 nodes x 8 GPU(s)" in problems_[0]
    assert re.search(r"To fit: use finetune.sharding: fsdp \(about 6\d GB per GPU: sharded over all 32 GPUs", problems_[0]), problems_
    assert "more GPUs alone" not in problems_[0]
    # 7B hybrid on 2 x 4: the state sharded over 4 (one node), not 8
    from crossdiff.finetune.memory_plan import settings_plan

    q7 = {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
          "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064}
    hybrid, full = settings_plan(q7, s, 8, nodes=2), settings_plan(q7, {**s, "sharding": "fsdp"}, 8, nodes=2)
    assert hybrid["shard_over"] == 4 and full["shard_over"] == 8
    assert hybrid["weights_grads_optimizer_gb"] == pytest.approx(2 * full["weights_grads_optimizer_gb"])


# ------------------------------------------------------------------------------------- checks at parse
def config(**over):
    base = {"datasets": {"d": {"items": {"source": "synthetic", "n_items": 60}, "responses": {"source": "simulated"}}},
            "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3},
            "resources": {"finetune": {"gpu": 2, "nodes": 2}, "evaluate": {"gpu": 0}}}
    return validate(deep_merge(base, over))


@pytest.mark.parametrize("over, key, message", [
    ({"resources": {"finetune": {"gpu": 0}}}, "resources.finetune.nodes = 2", "nodes 2 needs GPUs"),
    ({"resources": {"finetune": {"gpu": 1}}, "finetune": {"sharding": "hybrid"}}, "resources.finetune.nodes = 2",
     "each of the 2 nodes has one GPU"),
    ({"finetune": {"num_processes": 3}}, "resources.finetune.nodes = 2", "num_processes 3 cannot be split evenly over nodes 2"),
    ({"resources": {"evaluate": {"nodes": 2}}}, "resources.evaluate.nodes", "evaluation runs on one node"),
    # the batch split counts every node's ranks: 1 per device x 2 nodes x 2 GPUs
    ({"finetune": {"global_batch_size": 6, "per_device_train_batch_size": 1}}, "fine-tune settings", "x processes (4) = 4"),
])
def test_settings_that_do_not_split_over_the_nodes_are_refused(over, key, message):
    found = problems(Plan(config(**over)))
    assert any(p.startswith(key) and message in p for p in found), found
    assert not problems(Plan(config()))


def test_nodes_resolve_per_model_and_only_slurm_runs_them():
    plan = Plan(config(resources={"finetune": {"nodes": 1}},
                       models=[{"id": "m", "build": "tiny", "resources": {"nodes": 4, "gpu": 8}}]))
    assert plan.resources("finetune", "m")["nodes"] == 4 and plan.resources("finetune", "m")["gpu"] == 8
    assert plan.resources("evaluate")["nodes"] == 1
    (msg,) = executor_problems(plan, "local")
    assert msg.startswith("models[0].resources.nodes = 4 (m)") and "'local' (a workstation)" in msg
    assert executor_problems(plan, "slurm") == executor_problems(plan, "slurm-jobstep") == []
    assert executor_problems(plan, None) == []  # not known (Python API): the job refuses outside SLURM
    assert executor_problems(Plan(config(resources={"finetune": {"nodes": 1}})), "local") == []


STUDY = {
    "datasets": {"tiny": {"items": {"source": "synthetic", "n_items": 40, "max_ops": 2, "max_digits": 2, "seed": 1},
                          "responses": {"source": "simulated", "n_models": 30, "seed": 2}}},
    "irt": {"engine": "fast", "stability": {"seeds": [], "engines": []}},
    "bins": {"n_bins": 2}, "study": {"train_bins": [0]},
    "models": [{"id": "big", "build": "tiny", "resources": {"gpu": 2, "nodes": 2}},
               {"id": "small", "build": "tiny", "resources": {"gpu": 1}}],
    "resources": {"finetune": {"gpu": 1, "threads": 1}, "evaluate": {"gpu": 0}},
}


def _job_resources(out: str, model: str) -> dict:
    """The resources line snakemake -n prints for the finetune job of ``model``."""
    for block in out.split("\n\n"):
        if "rule finetune:" in block and f"model={model}," in block:
            line = next(x for x in block.splitlines() if x.strip().startswith("resources:"))
            return dict(kv.split("=", 1) for kv in line.split("resources:", 1)[1].strip().split(", "))
    raise AssertionError(f"no finetune job of {model} in:\n{out[-3000:]}")


def test_workstation_refuses_nodes_at_parse_and_slurm_gets_one_job_of_n_nodes(tmp_path):
    wd = make_workdir(tmp_path / "wd", json.dumps(STUDY))
    target = ["results/finetune/big/tiny/bin0", "results/finetune/small/tiny/bin0"]
    local = snakemake(wd, "-n", "--cores", "1", *target, check=False)
    out = local.stdout + local.stderr
    assert local.returncode != 0 and "models[0].resources.nodes = 2 (big): a fine-tune on several nodes runs only as one " \
        "SLURM job" in out and "executor is 'local' (a workstation)" in out, out[-3000:]
    # commands that run no job (here: --list-rules; --report, --lint, --dag ...) are not refused
    assert snakemake(wd, "--list-rules", check=False).returncode == 0
    slurm = snakemake(wd, *target, "-n", "-p", "--executor", "slurm", "--jobs", "1", "--set-resources", "finetune:gpu_model=a100")
    big, small = _job_resources(slurm.stdout, "big"), _job_resources(slurm.stdout, "small")
    # 2 nodes x 2 GPUs: the plugin's mpi path (sbatch --nodes=2 --ntasks=2, the shell once on the first node)
    assert (big["nodes"], big["tasks"], big["mpi"], big["gpu"]) == ("2", "2", "srun", "4"), big
    assert big["slurm_extra"] == "--gpus-per-node=a100:2" and big["tasks_per_gpu"] == "0", big  # typed like --gpus
    assert not {"nodes", "tasks", "mpi", "slurm_extra"} & set(small) and small["gpu"] == "1", small
    assert "--gpus 4 --nodes 2" in slurm.stdout and "--gpus 1 --nodes 1" in slurm.stdout


def test_dry_run_plans_70b_over_the_nodes_and_asks_each_node_for_its_host_ram(tmp_path):
    """The parse-time memory plan of the workflow: a local 70B (its config.json) on 4 x 8 passes and its job asks
    SLURM for the per-node host RAM plan; on 1 x 8 the dry run stops, naming the model and the node count to use."""
    model = tmp_path / "llama-70b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA_70B))
    study = {**STUDY, "models": [{"id": str(model), "resources": {"gpu": 8, "nodes": 4}}], "finetune": PAPER_SHAPE}
    wd = make_workdir(tmp_path / "wd", json.dumps(study))
    ok = snakemake(wd, "-n", "--executor", "slurm", "--jobs", "1")
    res = next(line for line in ok.stdout.splitlines() if "mpi=srun" in line)
    assert "nodes=4" in res and "gpu=32" in res and f"mem_mb={math.ceil((LOAD_FACTOR * 4 * param_count(LLAMA_70B) + 8 * RANK_HOST_BYTES) / 1e6)}" in res, res
    study["models"][0]["resources"]["nodes"] = 1
    (wd / "config/config.yaml").write_text(json.dumps(study))
    refused = snakemake(wd, "-n", "--executor", "slurm", "--jobs", "1", check=False)
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "needs about 179 GB per GPU on 8 GPU(s)" in out, out[-3000:]
    assert "models[].resources.nodes: 4 with gpu: 8" in out


def test_plugin_submission_of_the_rule_resources():
    """What snakemake-executor-plugin-slurm makes of the rule's resources: sbatch --nodes=2 --ntasks=2, no
    --ntasks-per-gpu; its jobstep runs an `mpi` job's command without srun."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command

    class Res(dict):
        __getattr__ = dict.__getitem__

    res = Res(gpu=4, tasks_per_gpu=0, nodes=2, tasks=2, mpi="srun", slurm_extra="--gpus-per-node=2", mem_mb=1000, runtime=10)
    job = SimpleNamespace(resources=res, threads=1, is_group=lambda: False, name="finetune")
    params = {"run_uuid": "x", "slurm_logfile": "l", "comment_str": "c", "account": "", "partition": "-p gpu",
              "workdir": ".", "runtime": 10}
    call = get_submit_command(job, params)
    assert "--nodes=2" in call and "--ntasks=2" in call and "--gpus-per-node=2" in call, call
    assert "--ntasks-per-gpu" not in call
    import inspect

    import snakemake_executor_plugin_slurm_jobstep as jobstep

    assert '"mpi" in job.resources.keys()' in inspect.getsource(jobstep)


# ------------------------------------------------------------------------------------------ the launch
SCONTROL = r"""#!/bin/sh
case "$1 $2" in
  "show job") echo "JobId=77 JobName=x UserId=root(0) JobState=RUNNING NodeList=gpu[07-08] BatchHost=gpu07 NumNodes=2 NumCPUs=64 NumTasks=2 CPUs/Task=32 TresPerNode=gres:gpu:8" ;;
  "show hostnames") [ "$3" = "gpu[07-08]" ] && printf 'gpu07\ngpu08\n' ;;
  "show node") [ "$4" = "gpu07" ] && echo "NodeName=gpu07 Arch=x86_64 CoresPerSocket=16 NodeAddr=10.1.2.7 NodeHostName=gpu07 Version=22.05.8" ;;
esac
"""


@pytest.fixture
def fake_scontrol(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "scontrol"
    exe.write_text(SCONTROL)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CROSSDIFF_RDZV_ADDR", raising=False)


def test_allocation_and_srun_line_from_scontrol(fake_scontrol, tmp_path):
    alloc = multinode.allocation("77", 2)
    assert alloc["hosts"] == ["gpu07", "gpu08"] and alloc["head"] == "gpu07" and alloc["address"] == "10.1.2.7"
    assert alloc["batch_host"] == "gpu07" and alloc["cpus_per_node"] == 32
    with pytest.raises(CrossdiffError, match="holds 2 node"):
        multinode.allocation("77", 4)
    s = resolve_settings({"sharding": "hybrid"})
    prompt = {"template": "Q: {question}\nA:", "stop": ["\n"]}
    cmd = multinode.node_launch_command(16, 2, alloc, 29555, "m", "t.jsonl", tmp_path / "out", tmp_path / "w", s, prompt)
    assert cmd[:8] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                       "--cpus-per-task=32", "--nodelist=gpu07,gpu08", "--job-name=crossdiff-ranks"]
    assert cmd[8:10] == ["bash", "-c"]
    # what each node's task runs: its node rank from SLURM_NODEID, the settings passed through unchanged
    script = cmd[10].replace("exec ", "printf '%s\\n' ", 1)
    args = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={**os.environ, "SLURM_NODEID": "1"},
                          check=True).stdout.splitlines()
    at = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
    assert (at["--num_processes"], at["--num_machines"], at["--machine_rank"], at["--rdzv_backend"]) == ("16", "2", "1", "static")
    assert (at["--main_process_ip"], at["--main_process_port"]) == ("10.1.2.7", "29555")
    assert json.loads(at["--settings"]) == s and json.loads(at["--prompt"]) == prompt
    assert args[args.index("-m", 3) + 1:args.index("-m", 3) + 4] == ["crossdiff.cli", "finetune", "--worker"]


def test_rendezvous_port_and_address_override(fake_scontrol, monkeypatch):
    alloc = multinode.allocation("77", 2)
    assert 0 < multinode.rendezvous_port(alloc) < 65536
    assert multinode.rendezvous_port({**alloc, "batch_host": "gpu08"}) == 20000 + 77
    monkeypatch.setenv("CROSSDIFF_RDZV_ADDR", "gpu07-ib")
    assert multinode.allocation("77", 2)["address"] == "gpu07-ib"


def test_outside_slurm_a_multinode_job_stops_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(CrossdiffError, match="runs inside a SLURM job of 2 nodes"):
        multinode.launch_nodes(4, 2, "m", "t", tmp_path / "o", tmp_path / "w", resolve_settings({}), {})


def test_hybrid_sharding_builds_parallelism_config_for_the_trainer(tmp_path):
    from trl import SFTConfig

    from crossdiff.finetune.settings import precision_plan
    from crossdiff.finetune.train import sft_config_kwargs

    s = resolve_settings({"sharding": "hybrid"})
    prec = precision_plan(s, on_gpu=False, bf16_supported=False)
    two_nodes = {"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}
    kw = sft_config_kwargs(s, tmp_path, engine="fsdp2", on_gpu=False, prec=prec, grad_ckpt=False, accum=1, env=two_nodes)
    pc = SFTConfig(**kw).parallelism_config
    assert (pc.dp_replicate_size, pc.dp_shard_size) == (2, 2)
    one_node = sft_config_kwargs(s, tmp_path, engine="fsdp2", on_gpu=False, prec=prec, grad_ckpt=False, accum=1,
                                 env={"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"})
    assert "parallelism_config" not in one_node  # one node: FULL_SHARD
    plain = sft_config_kwargs({**s, "sharding": "fsdp"}, tmp_path, engine="fsdp2", on_gpu=False, prec=prec,
                              grad_ckpt=False, accum=1, env=two_nodes)
    assert "parallelism_config" not in plain
    with pytest.raises(CrossdiffError, match="one rank per node"):
        multinode.parallelism_config_kwargs(s, {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"})
    assert multinode.nodes_of_launch(two_nodes) == 2 and multinode.nodes_of_launch({}) == 1


def test_fingerprint_keeps_one_node_runs_and_separates_layouts(tmp_path):
    from crossdiff.finetune.checkpoints import fingerprint

    s, rows = resolve_settings({}), [{"prompt": "a", "completion": "b"}]
    one = fingerprint(tmp_path, rows, s, {}, 4)
    assert fingerprint(tmp_path, rows, s, {}, 4, 1) == one  # one node: the fingerprint of every existing run
    assert fingerprint(tmp_path, rows, s, {}, 4, 2) != one  # 2 x 2 does not resume 1 x 4's checkpoints
    assert re.fullmatch(r"[0-9a-f]{16}", one)
