"""Resume safety: which checkpoints are complete, which inputs they belong to, and stray temporaries.

- A checkpoint is *complete* when its ``crossdiff_checkpoint.json`` marker exists and every file it
  lists has the recorded size. The marker is written by :class:`CompletionMarker` (a Trainer
  callback) after the Trainer's own save returned on every rank, so a kill while a checkpoint is
  written (``trainer_state.json`` is the Trainer's last file; a sharded checkpoint has one file per
  rank) leaves an unmarked folder. Unmarked folders are deleted before resuming; the newest
  complete one is used.
- The work directory's stamp holds a fingerprint of the inputs: the training rows, the settings,
  the prompt format and the base model's CONTENT (config.json, and for each weight file its size,
  mtime, safetensors header and sampled blocks of its bytes), so a base model rebuilt at the same
  path never resumes from checkpoints of the old one.
- ``atomic_path`` writes the final model into a hidden ``.NAME.*.tmp`` sibling; a kill during that
  save leaves it behind. :func:`remove_stray_temporaries` deletes them (and ``.NAME.old-*``) at start.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from crossdiff.finetune.settings import NOT_FINGERPRINTED
from crossdiff.io import write_json

MARKER = "crossdiff_checkpoint.json"
STAMP = "crossdiff_run.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
SAMPLE_BLOCKS, BLOCK = 16, 1 << 16


def _checkpoint_step(path: Path) -> int | None:
    m = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(m.group(1)) if m else None


def checkpoints(work_dir) -> list[Path]:
    """checkpoint-N folders, oldest first."""
    work = Path(work_dir)
    if not work.is_dir():
        return []
    found = [p for p in work.iterdir() if p.is_dir() and _checkpoint_step(p) is not None]
    return sorted(found, key=_checkpoint_step)


def _listing(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER
    }


def mark_complete(folder) -> None:
    folder = Path(folder)
    write_json({"files": _listing(folder)}, folder / MARKER)


def is_complete(folder) -> bool:
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file() or not (folder / "trainer_state.json").is_file():
        return False
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for rel, size in files.items():
        p = folder / rel
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True


def last_complete_checkpoint(work_dir) -> str | None:
    done = [p for p in checkpoints(work_dir) if is_complete(p)]
    return str(done[-1]) if done else None


def remove_incomplete_checkpoints(work_dir, say=print) -> list[str]:
    removed = []
    for p in checkpoints(work_dir):
        if not is_complete(p):
            say(f"{p}: incomplete checkpoint (killed while saving?); removing it")
            shutil.rmtree(p, ignore_errors=True)
            removed.append(str(p))
    return removed


def remove_stray_temporaries(output, say=print) -> list[str]:
    """Hidden ``.NAME.*.tmp`` / ``.NAME.old-*`` siblings of ``output`` left by a killed atomic save."""
    output = Path(output)
    removed = []
    if not output.parent.is_dir():
        return removed
    prefix = f".{output.name}."
    for p in output.parent.iterdir():
        if p.name.startswith(prefix) and (p.name.endswith(".tmp") or p.name[len(prefix):].startswith("old-")):
            say(f"{p}: temporary copy left by an interrupted save; removing it")
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(str(p))
    return removed


def _sampled_digest(path: Path) -> str:
    """sha256 of the safetensors header (if any) and SAMPLE_BLOCKS blocks spread over the file."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if path.suffix == ".safetensors" and size >= 8:
            n = int.from_bytes(fh.read(8), "little")
            if 0 < n <= min(size - 8, 100 << 20):
                h.update(fh.read(n))
        for k in range(SAMPLE_BLOCKS):
            fh.seek(max(0, (size - BLOCK) * k // max(1, SAMPLE_BLOCKS - 1)))
            h.update(fh.read(BLOCK))
    return h.hexdigest()


def model_content_id(model_dir) -> dict:
    """What identifies the base model's content (not its path)."""
    d = Path(model_dir)
    if not d.is_dir():
        return {"id": str(model_dir)}
    out: dict = {}
    for name in ("config.json", "generation_config.json"):
        if (d / name).is_file():
            out[name] = hashlib.sha256((d / name).read_bytes()).hexdigest()
    weights = {}
    for p in sorted(d.iterdir()):
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES):
            real = p.resolve()
            st = real.stat()
            weights[p.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sample": _sampled_digest(real)}
    out["weights"] = weights
    return out


def fingerprint(model_dir, rows, s: dict, prompt: dict, n_processes: int, nodes: int = 1) -> str:
    payload = json.dumps(
        {
            "model": model_content_id(model_dir),
            "rows": rows,
            "settings": {k: v for k, v in s.items() if k not in NOT_FINGERPRINTED},
            "processes": n_processes,  # sharded checkpoints only load with the same world size
            "prompt": prompt,
            # and the same layout: hybrid sharding's replicas are the nodes (one node: the fingerprint as before)
            **({"nodes": nodes} if nodes > 1 else {}),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def prepare_work_dir(work_dir, output, fp: str, meta: dict, say=print) -> str | None:
    """Make ``work_dir`` safe to resume from; returns the checkpoint to resume from (or None)."""
    work_dir = Path(work_dir)
    remove_stray_temporaries(output, say)
    stamp = work_dir / STAMP
    if work_dir.exists():
        try:
            old = json.loads(stamp.read_text()).get("fingerprint") if stamp.exists() else None
        except (OSError, ValueError):
            old = None
        if old != fp:
            say(f"{work_dir}: checkpoints belong to other inputs, settings or base-model content; starting afresh")
            shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    remove_incomplete_checkpoints(work_dir, say)
    write_json({"fingerprint": fp, **meta}, stamp)
    return last_complete_checkpoint(work_dir)


def completion_callback():
    """A TrainerCallback marking each checkpoint complete once every rank finished writing it."""
    from transformers import TrainerCallback

    class CompletionMarker(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    mark_complete(folder)
            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            return control

    return CompletionMarker()


def in_worker() -> bool:
    """True inside a rank started by accelerate launch / torchrun."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ
