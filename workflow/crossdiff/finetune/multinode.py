"""One fine-tune on N nodes x G GPUs as ONE SLURM job: the allocation, the rendezvous, one launcher per node.

What the workflow asks SLURM for (``workflow/rules/finetune.smk``, only when ``nodes`` > 1): the finetune rule
gets ``nodes=N, tasks=N, mpi="srun"``, ``gpu=N*G`` (``tasks_per_gpu=0``) and ``slurm_extra="--gpus-per-node=G"``,
so snakemake-executor-plugin-slurm 2.8 submits ``sbatch --nodes=N --ntasks=N ... --gpus=N*G --gpus-per-node=G``
(``submit_string.py:135-141``, ``:176-198``). Because of ``mpi`` its jobstep runs the rule's shell ONCE, on the
job's first node, without an ``srun`` around it (``snakemake_executor_plugin_slurm_jobstep/__init__.py:144-153``);
it also removes every ``SLURM_*`` variable but the job id (``:203-226``). ``crossdiff finetune --nodes N`` then:

1. reads the allocation from ``scontrol show job -o $SLURM_JOB_ID`` (node list, batch host, CPUs), because the
   jobstep removed ``SLURM_JOB_NODELIST`` and the others;
2. puts the rendezvous on the first node (where srun's ``SLURM_NODEID`` 0 runs): its ``NodeAddr``
   (``scontrol show node``; ``CROSSDIFF_RDZV_ADDR`` overrides, e.g. a fast interface's name) and a port free
   there (this process runs on the batch host, the first node);
3. starts one launcher per node::

       srun --nodes=N --ntasks=N --ntasks-per-node=1 --kill-on-bad-exit=1 --cpus-per-task=C bash -c \\
         'exec python -m accelerate.commands.launch --multi_gpu --num_processes N*G --num_machines N \\
            --machine_rank "$SLURM_NODEID" --rdzv_backend static --main_process_ip ADDR --main_process_port PORT \\
            ... -m crossdiff.cli finetune --worker ...'

   accelerate turns this into torchrun's launcher with ``nnodes=N, nproc_per_node=G, node_rank=machine_rank``
   (accelerate 1.15 ``utils/launch.py:216-224``).

Why a static rendezvous and not c10d: with c10d torchrun assigns ranks by arrival and ignores the node rank, and
global rank 0 (which saves the model and writes ``train_metrics.json``, read right after the launch by this
process on node 0) landed on the second node in 8 of 10 measured runs; static keeps rank 0 on machine rank 0.
``--kill-on-bad-exit=1``: when one node's launcher dies the others stop at once instead of waiting in a
collective until the time limit. torchtune's multi-node recipe (``recipes/full_finetune_multinode.slurm``:
``srun tune run --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint $head_node_ip:29500``) and
axolotl (``docs/multi-node.qmd``: one launcher per node through srun, the head node's address; its accelerate
recipe sets ``machine_rank``, ``main_process_ip`` and ``rdzv_backend: static``) do the same with their launchers.

Signals: SIGTERM (scancel, a preemption before the time limit, ``scontrol requeue``) reaches every process of
the job on every node; this process also forwards it to srun, which forwards it to the launchers. The ranks stop
without saving; the rerun (or the requeued job) resumes from the newest complete sharded checkpoint
(crossdiff.finetune.checkpoints), written by all N x G ranks into the shared work directory.

``sharding: hybrid`` (FSDP2 hybrid sharding, HSDP): the ranks build ``accelerate.ParallelismConfig(
dp_replicate_size=N, dp_shard_size=G)`` (:func:`parallelism_config_kwargs`): the mesh is replicate-major, so with
each node's G ranks consecutive the weights, gradients and optimizer state are sharded within a node and
replicated across nodes (inter-node traffic: one gradient all-reduce per step instead of every all-gather and
reduce-scatter). FSDP1's ``sharding_strategy: HYBRID_SHARD`` is not used: transformers 5.19 refuses it for FSDP2.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

from crossdiff.errors import CrossdiffError

NODEID = "$SLURM_NODEID"  # expanded by each srun task's shell


def topology_problems(s: dict, gpus_per_node: int, nodes: int) -> list[str]:
    """What stops resolved settings from running on ``nodes`` x ``gpus_per_node`` (checked at parse)."""
    nodes, g = max(1, int(nodes or 1)), int(gpus_per_node or 0)
    problems = []
    if nodes > 1:
        if g < 1:
            problems.append(f"nodes {nodes} needs GPUs: a multi-node fine-tune runs one rank per GPU on every node "
                            f"(set resources.finetune.gpu / models[].resources.gpu to the GPUs per node, got {g})")
        n = s["num_processes"]
        if n != "auto" and (int(n) % nodes or int(n) < nodes):
            problems.append(f"num_processes {n} cannot be split evenly over nodes {nodes}: use num_processes: auto "
                            "(every GPU of every node) on a multi-node fine-tune")
    if s["sharding"] == "hybrid" and nodes > 1 and g == 1 and s["num_processes"] == "auto":
        problems.append(f"sharding 'hybrid' shards within a node, but each of the {nodes} nodes has one GPU: nothing "
                        "to shard; use sharding: fsdp (shard over all nodes) or ddp")
    return problems


def parallelism_config_kwargs(s: dict, env=None) -> dict:
    """TrainingArguments' ``parallelism_config`` for ``sharding: hybrid`` in a launched rank of a job of several
    nodes (WORLD_SIZE / LOCAL_WORLD_SIZE nodes, torchrun's variables), else {}."""
    env = os.environ if env is None else env
    if s.get("sharding") != "hybrid":
        return {}
    world, local = int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
    replicas = world // max(1, local)
    if replicas <= 1:
        return {}  # one node: hybrid is FSDP2 FULL_SHARD
    if local < 2:
        raise CrossdiffError(f"finetune settings.sharding 'hybrid': one rank per node ({world} nodes) leaves nothing "
                             "to shard within a node; use sharding: fsdp")
    from accelerate.parallelism_config import ParallelismConfig

    return {"parallelism_config": ParallelismConfig(dp_replicate_size=replicas, dp_shard_size=local)}


def nodes_of_launch(env=None) -> int:
    """Nodes of the running distributed job, from torchrun's variables in a rank (1 outside a launch)."""
    env = os.environ if env is None else env
    world, local = int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
    return max(1, world // max(1, local))


# ------------------------------------------------------------------------------------------- the allocation
def _field(record: str, key: str) -> str | None:
    m = re.search(rf"(?:^|\s){re.escape(key)}=(\S*)", record)
    return m.group(1) if m else None


def _scontrol(*args: str) -> str:
    try:
        proc = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CrossdiffError(f"'scontrol {' '.join(args)}' failed: {exc}") from None
    if proc.returncode != 0:
        raise CrossdiffError(f"'scontrol {' '.join(args)}' failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
    return proc.stdout


def allocation(job_id: str, nodes: int) -> dict:
    """The SLURM job's nodes (in SLURM_NODEID order), batch host, the head's address and CPUs per node; a
    CrossdiffError when the job does not hold ``nodes`` nodes."""
    record = _scontrol("show", "job", "-o", str(job_id))
    nodelist = _field(record, "NodeList")
    if not nodelist or nodelist == "(null)":
        raise CrossdiffError(f"SLURM job {job_id} has no node list yet (scontrol show job: {record.strip()[:200]})")
    hosts = [h for h in _scontrol("show", "hostnames", nodelist).split() if h]
    if len(hosts) < nodes:
        raise CrossdiffError(
            f"finetune --nodes {nodes}: SLURM job {job_id} holds {len(hosts)} node(s) ({nodelist}); the finetune rule "
            f"asks for them (resources nodes/tasks/mpi, see profiles/slurm/README.md): is a profile overriding them?")
    head = hosts[0]
    address = os.environ.get("CROSSDIFF_RDZV_ADDR") or _field(_scontrol("show", "node", "-o", head), "NodeAddr") or head
    num_cpus, num_nodes = int(_field(record, "NumCPUs") or 0), int(_field(record, "NumNodes") or len(hosts))
    return {"job_id": str(job_id), "hosts": hosts[:nodes], "nodelist": nodelist, "head": head, "address": address,
            "batch_host": _field(record, "BatchHost"), "cpus_per_node": max(1, num_cpus // max(1, num_nodes))}


def rendezvous_port(alloc: dict) -> int:
    """A port free on the head: this process runs on the batch host; when that is the head (SLURM runs the batch
    script on the first node) a free port of every interface, else one derived from the job id."""
    from crossdiff.finetune.launch import free_port

    if alloc["batch_host"] in (None, alloc["head"]):
        return free_port("")
    return 20000 + int(re.sub(r"\D", "", alloc["job_id"]) or 0) % 20000


def node_launch_command(n: int, nodes: int, alloc: dict, port: int, model, train, output, work_dir, s: dict,
                        prompt: dict) -> list[str]:
    """``srun`` starting one ``accelerate launch`` per node (node rank = ``$SLURM_NODEID``, expanded per task)."""
    from crossdiff.finetune.launch import launch_command

    accel = launch_command(n, model, train, output, work_dir, s, prompt, port, machines=nodes,
                           machine_rank=NODEID, address=alloc["address"])
    script = "exec " + " ".join('"$SLURM_NODEID"' if a == NODEID else shlex.quote(str(a)) for a in accel)
    return ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            f"--cpus-per-task={alloc['cpus_per_node']}", f"--nodelist={','.join(alloc['hosts'])}",
            "--job-name=crossdiff-ranks", "bash", "-c", script]


def launch_nodes(n: int, nodes: int, model, train, output, work_dir, s: dict, prompt: dict) -> None:
    """Start the ``n`` ranks of the job on its ``nodes`` nodes (``n // nodes`` per node) and wait for them."""
    from crossdiff.finetune.launch import run_forwarding_signals

    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        raise CrossdiffError(
            f"finetune --nodes {nodes}: a multi-node fine-tune runs inside a SLURM job of {nodes} nodes "
            "(snakemake --profile profiles/slurm), but SLURM_JOB_ID is not set")
    if n % nodes:
        raise CrossdiffError(f"finetune --nodes {nodes}: {n} ranks do not split evenly over {nodes} nodes")
    seen = sorted(k for k in os.environ if k.startswith("SLURM_"))
    print(f"SLURM job {job_id}: this process sees {', '.join(seen)}; nodes, batch host and CPUs from scontrol",
          flush=True)
    alloc = allocation(job_id, nodes)
    port = rendezvous_port(alloc)
    cmd = node_launch_command(n, nodes, alloc, port, model, train, output, work_dir, s, prompt)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    print(f"launching {n} ranks on {nodes} nodes ({', '.join(alloc['hosts'])}; {n // nodes} per node, "
          f"sharding {s['sharding']}): rendezvous {alloc['address']}:{port} on {alloc['head']} (static, node rank = "
          f"SLURM_NODEID)", flush=True)
    print("srun line: " + " ".join(shlex.quote(a) for a in cmd), flush=True)
    rc = run_forwarding_signals(cmd, env)
    sys.stdout.flush()
    if rc != 0:
        raise CrossdiffError(f"distributed fine-tune ({n} ranks on {nodes} nodes) failed with exit status {rc}; "
                             "see the log above")
