"""Dry-run checks of every model's fine-tune (called once per snakemake invocation from
workflow/rules/finetune_common.smk): the global batch divides into per-device batch x ranks, the GPU
memory plan fits, and the job's host RAM (``mem_mb``) covers the host plan.

``config.json`` of hub models: a local directory, the crossdiff cache (``<cache_dir>/<org>--<name>.json``,
written on the first successful look-up), the HF cache, then ONE download attempt per model and
invocation, all models at once, bounded by ``timeout`` seconds in all (none with HF_HUB_OFFLINE=1). With no route to the hub the
dry run thus costs at most ``timeout`` per uncached model, not minutes of retries. A config.json that is
not JSON, or lacks a size the plan needs (or holds one that is not a positive integer), stops the dry run
with the model, the file and the field named (``memory_plan.load_config_file``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from crossdiff.errors import CrossdiffError
from crossdiff.io import write_json

LOOKUP_TIMEOUT = 5.0


def _download(model_id: str, box: dict) -> None:
    from crossdiff.finetune.memory_plan import load_config_file

    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        path = try_to_load_from_cache(model_id, "config.json")
        if not isinstance(path, str) and os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes"):
            path = hf_hub_download(model_id, "config.json", etag_timeout=box["timeout"])
        if isinstance(path, str):
            box["cfg"] = load_config_file(model_id, Path(path), hint=f"the HF cache's copy: delete {path} to "
                                          "download it again")
    except CrossdiffError as exc:
        box["broken"] = str(exc)
    except Exception as exc:  # offline, gated, unknown: said in one line by the caller
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        box["error"] = f"{type(exc).__name__}: {first[:100]}" if first else type(exc).__name__


def model_configs(model_ids, cache_dir, timeout: float = LOOKUP_TIMEOUT) -> dict:
    """{model id: (config.json dict, None) or (None, why it was skipped)}. Uncached models are looked up
    concurrently, so the whole call waits at most ``timeout`` seconds. A config.json that cannot be
    planned from (not JSON, a size missing or not a positive integer) is a CrossdiffError naming the model,
    the file and the field (all such files at once)."""
    from crossdiff.finetune.memory_plan import load_config_file

    out, pending, broken = {}, {}, []
    for model_id in dict.fromkeys(model_ids):
        local = Path(model_id) / "config.json"
        cached = Path(cache_dir) / (model_id.replace("/", "--") + ".json")
        try:
            if local.is_file():
                out[model_id] = (load_config_file(model_id, local), None)
                continue
            if cached.is_file():
                out[model_id] = (load_config_file(model_id, cached, hint="crossdiff's copy of the hub's "
                                                  f"config.json: delete {cached} to look it up again"), None)
                continue
        except CrossdiffError as exc:
            broken.append(str(exc))
            continue
        box = {"timeout": timeout}
        worker = threading.Thread(target=_download, args=(model_id, box), daemon=True)  # never waited for beyond the deadline
        worker.start()
        pending[model_id] = (worker, box, cached)
    deadline = time.monotonic() + timeout
    for model_id, (worker, box, cached) in pending.items():
        worker.join(max(0.0, deadline - time.monotonic()))
        if "broken" in box:
            broken.append(box["broken"])
        elif "cfg" in box:
            write_json(box["cfg"], cached)
            out[model_id] = (box["cfg"], None)
        elif worker.is_alive():
            out[model_id] = (None, f"no answer from the hub within {timeout:g} s")
        else:
            out[model_id] = (None, box.get("error") or "HF_HUB_OFFLINE=1 and not in the HF cache")
    if broken:
        raise CrossdiffError("\n".join(broken))
    return out


def model_config(model_id: str, cache_dir, timeout: float = LOOKUP_TIMEOUT) -> tuple[dict | None, str | None]:
    """(config.json dict, None) or (None, why it was skipped)."""
    return model_configs([model_id], cache_dir, timeout)[model_id]


def check_model(model_id: str, cfg: dict | None, s: dict, res: dict) -> tuple[list[str], int | None]:
    """(problems, planned host RAM in MB or None) for one model's fine-tune on ``res['gpu']`` GPUs per node on
    ``res['nodes']`` nodes (default 1): GPU memory per rank over all N x G ranks, host RAM per node."""
    from crossdiff.finetune.memory_plan import config_problem, fit_message, host_plan, settings_plan
    from crossdiff.finetune.settings import accumulation_steps, world_size
    from crossdiff.finetune.train import engine_for

    problems = []
    nodes = max(1, int(res.get("nodes") or 1))
    n = world_size(s, res["gpu"] * nodes)
    try:
        accumulation_steps(s, n)
        engine = engine_for(s, n, on_gpu=True)
    except CrossdiffError as exc:
        problems.append(f"model {model_id} on {n} GPU(s): {exc} (models[].resources.gpu or finetune settings)")
        return problems, None
    if cfg is None:
        return problems, None
    bad = config_problem(model_id, cfg, "config.json")
    if bad:
        problems.append(bad)
        return problems, None
    per_node = max(1, n // nodes)
    first = []
    if s["sharding"] == "hybrid" and nodes > 1:
        full = settings_plan(cfg, {**s, "sharding": "fsdp"}, n, nodes=nodes)
        if full["total_gb"] <= res["gpu_mem_gb"]:
            first.append(f"use finetune.sharding: fsdp (about {full['total_gb']:.0f} GB per GPU: sharded over all "
                         f"{n} GPUs; hybrid shards over one node's {per_node}, every node holding the whole state)")
    msg = fit_message(model_id, settings_plan(cfg, s, n, nodes=nodes), res["gpu"], res["gpu_mem_gb"],
                      replan=(lambda g: settings_plan(cfg, s, g)) if nodes == 1 else None, nodes=nodes,
                      replan_nodes=None if s["quantization"] else (lambda k: settings_plan(cfg, s, k * per_node, nodes=k)),
                      first_hints=first)
    if msg:
        problems.append(msg)
    # per node (sbatch --mem is per node): node 0 holds the loading rank 0 and its per_node ranks
    host = host_plan(cfg, ranks=per_node, rank0_loading=engine == "fsdp2" and bool(s["cpu_ram_efficient_loading"]),
                     lora=bool(s["lora"]))
    return problems, host["mem_mb"]


_NOTED: set = set()  # notes printed once per process (one check per distinct setting)


def check_models(models: dict, s: dict, resources, cache_dir, mode: str = "error", timeout: float = LOOKUP_TIMEOUT) -> dict:
    """Run check_model for every GPU-fine-tuned model; raise (mode error) or warn. Returns {model: planned
    host mem_mb} for the models whose config.json could be read."""
    planned, problems = {}, []
    checked = {model: m for model, m in models.items()
               if resources(model)["gpu"] and not m.get("build") and s["device"] != "cpu"}
    configs = model_configs([m["id"] for m in checked.values()], cache_dir, timeout)
    for model, m in checked.items():
        res = resources(model)
        cfg, why = configs[m["id"]]
        if cfg is None and m["id"] not in _NOTED:
            _NOTED.add(m["id"])
            print(f"note: memory plan skipped for {m['id']} ({why}); each job checks its GPU memory when it "
                  "starts", file=sys.stderr)
        found, mem = check_model(m["id"], cfg, s, res)
        problems += found
        if mem is not None:
            planned[model] = mem
            if mem > res["mem_mb"] and (m["id"], mem) not in _NOTED:
                _NOTED.add((m["id"], mem))
                print(f"note: model {m['id']}: the fine-tune's host RAM plan is {mem / 1000:.0f} GB: requesting "
                      f"mem_mb {mem} instead of {res['mem_mb']} (models[].resources.mem_mb)", file=sys.stderr)
    if problems and mode == "error":
        raise CrossdiffError("\n".join(problems))
    for msg in problems:
        print(f"warning: {msg}", file=sys.stderr)
    return planned
