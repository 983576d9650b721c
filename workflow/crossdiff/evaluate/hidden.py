"""The frozen base model's hidden states of every (item, option) sequence, once per model x dataset
(``results/probe/{model}/{dataset}/hidden.npz``): what the linear probes (:mod:`crossdiff.evaluate.probe`) and
the MDL measure (:mod:`crossdiff.evaluate.mdl`) read.

As Hase et al.'s ``write_hidden_states`` (allenai/easy-to-hard-generalization main.py:26-75, with
``--probing_token_state answer_end_token``): each option of an item is one sequence, the zero-shot prompt
followed by the option (:func:`crossdiff.prompts.options.option_sequences`); ONE forward pass per sequence over
every item of the dataset's IRT table (every cell and every MDL fit reads the same states), keeping

* the hidden state at the sequence's last token (``study.probe.token: last``, theirs: the last option token,
  LM_utils.py:155) or the mean over the option's tokens (``option_mean``), of the layers ``study.probe.layers``:
  indices into transformers' ``hidden_states`` (0 = the embeddings, L = the last layer); ``middle_and_last`` =
  ``[ceil((L + 1) / 2), L]`` as theirs (LM_utils.py:162-166: Llama-2-7B -> 17 and 32), ``middle``, ``last``, or a
  list of indices; stored float32 as theirs;
* the option's summed token log-probability (theirs: LM_utils.py:61-63, the zero-shot ``decoding`` score the MDL
  measure's decoding variant softmaxes over the options).

Sequences are right-padded with an attention mask (a batched state equals the unbatched one; theirs left-pad,
which shifts the positions of shorter sequences in a batch). The file holds ``item_id``, ``n_options``, ``gold``,
``states`` (items x max options x layers x hidden size; padded options zero), ``logprob`` (items x max options;
padded NaN), ``layers`` and ``meta`` (JSON: model, settings, format), written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import polars as pl

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import atomic_path, read_table, require_columns, write_parquet
from crossdiff.prompts.format import PromptFormat
from crossdiff.prompts.options import option_sequences, token_ids

LAYER_WORDS = ("middle_and_last", "middle", "last")
TOKENS = ("last", "option_mean")


def layer_indices(layers, n_states: int, where: str = "study.probe.layers") -> list[int]:
    """Indices into ``hidden_states`` (``n_states`` = layers + 1, the embeddings first) of a ``layers`` setting."""
    last = n_states - 1
    middle = int(math.ceil(n_states / 2))  # theirs: np.ceil(num_layers / 2) over the states incl. embeddings
    if layers == "middle_and_last":
        return [middle, last]
    if layers == "middle":
        return [middle]
    if layers == "last":
        return [last]
    if isinstance(layers, list) and layers and all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        bad = [i for i in layers if not 0 <= i <= last]
        if bad:
            raise CrossdiffError(f"{where}: layer(s) {bad} out of range: this model has hidden states 0..{last} "
                                 "(0 = the embeddings)")
        return list(layers)
    raise CrossdiffError(f"{where}: expected one of {list(LAYER_WORDS)} or a list of layer indices, got {layers!r}")


def all_items(items_path, irt_path) -> list[dict]:
    """Every item of the IRT table, with its item-table columns, in item_id order."""
    import tempfile
    from pathlib import Path

    from crossdiff.bins.holdout import bin_items

    irt = read_table(irt_path, "IRT item table")
    require_columns(irt, ["item_id"], irt_path, "IRT item table")
    ids = sorted(irt["item_id"].cast(pl.Utf8).to_list())
    with tempfile.TemporaryDirectory(prefix="crossdiff-hidden-") as tmp:
        path = Path(tmp) / "all.parquet"
        write_parquet(pl.DataFrame({"item_id": ids, "bin": [0] * len(ids)}), path)
        return bin_items(items_path, path, None).to_dicts()


def sequences(rows: list[dict], fmt: PromptFormat, tokenizer, max_length: int | None = None):
    """Per item: (token ids + context length per option, gold index); every option checked before any forward."""
    out = []
    for item in rows:
        context, conts, gold, chat = option_sequences(fmt, item, tokenizer)
        seqs = [token_ids(tokenizer, context, c, chat) for c in conts]
        if max_length:
            long = max(len(ids) for ids, _ in seqs)
            if long > max_length:
                raise CrossdiffError(f"item {item['item_id']!r}: an option sequence has {long} tokens, more than the "
                                     f"model's {max_length} positions")
        out.append((seqs, gold))
    return out


def forward_states(model, tokenizer, seqs: list[tuple[list[int], int]], layers: list[int], token: str,
                   batch_size: int = 32, device: str = "cpu", progress: bool = True):
    """(states [n, len(layers), d] float32, option log-prob [n]) of (ids, n_context) sequences, batched."""
    import torch
    from tqdm import tqdm

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    states: list = [None] * len(seqs)
    logprob = np.zeros(len(seqs), dtype=np.float64)
    starts = range(0, len(order), batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc="hidden states", unit="batch", disable=not progress, mininterval=5):
            idx = order[start:start + batch_size]
            width = max(len(seqs[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                seq = seqs[i][0]
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
            hs = torch.stack([out.hidden_states[k] for k in layers], dim=2).float()  # b x T x layers x d
            logp = torch.log_softmax(out.logits.float()[:, :-1], dim=-1)
            tok = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)  # token k+1 given 0..k
            for row, i in enumerate(idx):
                seq, n_ctx = seqs[i]
                n = len(seq)
                if token == "last":
                    states[i] = hs[row, n - 1].cpu().numpy()
                else:
                    states[i] = hs[row, n_ctx:n].mean(dim=0).cpu().numpy()
                logprob[i] = float(tok[row, n_ctx - 1:n - 1].sum())
    return np.stack(states).astype(np.float32), logprob


def write_states(path, item_ids, n_options, gold, states, logprob, layers, meta: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: numpy adds no .npz suffix
            np.savez(fh, item_id=np.array(item_ids, dtype=str), n_options=np.asarray(n_options, dtype=np.int64),
                     gold=np.asarray(gold, dtype=np.int64), states=states, logprob=logprob,
                     layers=np.asarray(layers, dtype=np.int64), meta=np.array(json.dumps(meta, sort_keys=True)))


def read_states(path) -> dict:
    """The arrays of a ``hidden.npz`` (module doc), checked."""
    from pathlib import Path

    if not Path(path).is_file():
        raise CrossdiffError(f"{path}: hidden-state file not found (rule probe_states writes it)")
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise CrossdiffError(f"{path}: not a hidden-state file ({exc}); remove it and rerun") from None
    need = {"item_id", "n_options", "gold", "states", "logprob", "layers", "meta"}
    if not need <= set(d):
        raise CrossdiffError(f"{path}: missing array(s) {sorted(need - set(d))}; remove it and rerun")
    d["item_id"] = [str(x) for x in d["item_id"]]
    d["meta"] = json.loads(str(d["meta"]))
    return d


def option_mask(n_options: np.ndarray, width: int) -> np.ndarray:
    return np.arange(width)[None, :] < np.asarray(n_options)[:, None]


def probe_states(items_path, irt_path, model, output, prompt: dict | None, probe: dict, settings: dict | None = None,
                 model_name: str | None = None) -> dict:
    """Write the hidden-state file of every IRT item (module doc); returns its meta."""
    from crossdiff.compute import require_device
    from crossdiff.evaluate.loss_measure import load_model

    s = settings or {}
    require_device(s.get("device"), "evaluate.device")  # at job start, before any model loads
    if s.get("limit"):
        raise CrossdiffError(f"evaluate.limit = {s['limit']}: the probes and MDL need every item's hidden states; "
                             "unset evaluate.limit")
    if probe.get("token") not in TOKENS:
        raise CrossdiffError(f"study.probe.token: expected one of {list(TOKENS)}, got {probe.get('token')!r}")
    fmt = PromptFormat.from_config(prompt)
    if fmt.lm_eval_task is not None:
        raise CrossdiffError("probe / mdl: an items.source lm_eval_task dataset renders its prompts with the task's "
                             "own config; option sequences need a crossdiff prompt format")
    rows = all_items(items_path, irt_path)
    net, tokenizer, device = load_model(model, s)
    n_states = int(getattr(net.config, "num_hidden_layers")) + 1
    layers = layer_indices(probe.get("layers", "middle_and_last"), n_states)
    max_pos = getattr(net.config, "max_position_embeddings", None)
    per_item = sequences(rows, fmt, tokenizer, max_pos)  # every item's options before the forward pass
    flat = [seq for seqs, _ in per_item for seq in seqs]
    batch = s.get("batch_size", 32)
    batch = 32 if not isinstance(batch, int) else batch
    t0 = time.time()
    states, logprob = forward_states(net, tokenizer, flat, layers, probe["token"], batch, device)
    n_opt = [len(seqs) for seqs, _ in per_item]
    width = max(n_opt)
    full = np.zeros((len(rows), width, len(layers), states.shape[-1]), dtype=np.float32)
    lp = np.full((len(rows), width), np.nan)
    k = 0
    for i, n in enumerate(n_opt):
        full[i, :n] = states[k:k + n]
        lp[i, :n] = logprob[k:k + n]
        k += n
    meta = {"model": model_name or str(model), "model_path": str(model), "layers": layers, "n_states": n_states,
            "token": probe["token"], "chat_template": fmt.use_chat(tokenizer), "n_items": len(rows),
            "n_sequences": len(flat), "seconds": time.time() - t0, "prompt": fmt.to_config()}
    write_states(output, [str(r["item_id"]) for r in rows], n_opt, [g for _, g in per_item], full, lp, layers, meta)
    print(f"{model_name or model}: hidden states of {len(flat)} sequences ({len(rows)} items, layers {layers} of "
          f"0..{n_states - 1}, token {probe['token']}) in {meta['seconds']:.1f} s -> {output}")
    return meta


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="item table (parquet)")
    p.add_argument("--irt", required=True, help="IRT item table (parquet): the items (all of them)")
    p.add_argument("--model", required=True, help="base model directory or HF id")
    p.add_argument("--model-name", help="model slug recorded in the file")
    p.add_argument("--prompt", type=json_arg, default={}, help="JSON object: the dataset's prompt format")
    p.add_argument("--probe", type=json_arg, required=True, help="JSON object: the resolved probe settings (layers, token)")
    p.add_argument("--settings", type=json_arg, default={}, help="JSON object: evaluation settings (batch_size, device, dtype)")
    p.add_argument("--output", required=True, help="hidden-state file (.npz)")


def run(args: argparse.Namespace) -> None:
    probe_states(args.items, args.irt, args.model, args.output, args.prompt, args.probe, args.settings, args.model_name)
