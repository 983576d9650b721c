"""Linear probes on a frozen base model's hidden states (``study.methods: probe``), as Hase et al. 2024 ran them.

The probe (allenai/easy-to-hard-generalization at ad8358e, models/probes.py; :func:`fit_probe`):

* a bias-free linear scorer of each (question, option) state, ``nn.Linear(F, 1, bias=False)`` (probes.py:77-78),
  on the states of :mod:`crossdiff.evaluate.hidden` (layers concatenated: F = layers x hidden size; theirs
  ``middle_and_last``, main.py:1120-1125, probes.py:73, 647-663); the weight initialised by ``reset_parameters()``
  (probes.py:209, 569-576);
* scores softmaxed over the item's options (``MultipleChoiceClassifier``, probes.py:690-708); prediction = argmax
  (ties: the first option), the label confidence = the gold option's probability;
* z-normalised with the training states' mean and (unbiased) standard deviation pooled over items x options
  (probes.py:127-141, 626-628; ``--normalize_representations`` true, main.py:1076);
* loss ``-mean log p(gold) + l2 * ||w||_2`` (the L2 norm, not squared; l2 = 1, main.py:1080; probes.py:527-542);
* plain SGD, lr 0.05 (probes.py:232-237), 100 epochs (main.py:1011), one full batch per epoch
  (``probing_batch_size_all_data``, main.py:1030, 632-633), gradient-norm clipping at 1.0 (probes.py:293), the
  learning rate decaying linearly to 10% over the run (transformers' linear schedule over epochs / 0.9 steps,
  probes.py:245-251; ``--probing_lr_decay 10-percent``, main.py:1033);
* a fit with NaN weights is refitted with l2 x 4 and the clipping norm / 4, at most 6 more times (safe_fit,
  probes.py:143-159).

Differences kept (config/README.md): options an item lacks are masked out of the softmax and the normalisation
(theirs zero-pad them, so a padded option gets a score and enters the mean and std); a feature with zero spread in
the training states is divided by 1 (theirs by 0); seeds per (train bin, bootstrap) instead of one advancing global
stream.

The cells (:func:`probe_cells`; like ICL's): for each train bin b and bootstrap r (``study.probe.n_bootstrap``,
theirs 5, ``-nb 5``), ``n_train`` items (theirs 160, ``--n_train 160``) drawn without replacement from bin b's
training items (``numpy.random.default_rng([seed, b, r])``; null = all of them) train one probe, which scores every
test bin's test items (the task folders' items, as every other cell). When bin b's training items ARE the test items
(b == t without ``bins.holdout_fraction``), the test items are split into 5 folds and each fold is scored by probes
trained on draws from the other folds' items (theirs: the test set is the complement of the training draw). Each
item's ``correct`` is its mean over the bootstraps (0/1 with one bootstrap); the per-sample log keeps each
bootstrap's prediction and gold-option probability. Results: ``results/eval/{model}/{dataset}/probe-train{b}/bin{t}.json``
with ``train_bin: "probe-{b}"``, metric ``acc``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from crossdiff.cli import json_arg
from crossdiff.errors import CrossdiffError
from crossdiff.io import write_json, write_jsonl

DEFAULTS: dict = {
    "layers": "middle_and_last",
    "token": "last",
    "epochs": 100,
    "lr": 0.05,
    "l2": 1.0,
    "max_grad_norm": 1.0,
    "lr_decay": "10-percent",
    "optimizer": "sgd",
    "normalize": True,
    "n_train": 160,
    "n_bootstrap": 5,
    "seed": 0,
}
LR_DECAYS = ("10-percent", "linear", "constant")
OPTIMIZERS = ("sgd", "adamw", "adam")
OVERLAP_FOLDS = 5
#: refits of a probe whose weights came out NaN (theirs: patience 5, probes.py:143-159)
NAN_PATIENCE = 5


def validate_settings(s: dict, where: str = "study.probe") -> dict:
    """Complete probe settings (every key of :data:`DEFAULTS`), checked."""
    from crossdiff.evaluate.hidden import LAYER_WORDS, TOKENS

    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise CrossdiffError(f"{where}: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    missing = sorted(set(DEFAULTS) - set(s))
    if missing:
        raise CrossdiffError(f"{where}: key(s) {missing} missing (the workflow resolves them at parse time; "
                             "the Python API: resolve_settings)")
    lay = s["layers"]
    if not (lay in LAYER_WORDS or (isinstance(lay, list) and lay and all(isinstance(i, int) and not isinstance(i, bool)
                                                                         and i >= 0 for i in lay))):
        raise CrossdiffError(f"{where}.layers: expected one of {list(LAYER_WORDS)} or a list of layer indices >= 0, "
                             f"got {lay!r}")
    if s["token"] not in TOKENS:
        raise CrossdiffError(f"{where}.token: expected one of {list(TOKENS)}, got {s['token']!r}")
    for key in ("epochs", "n_bootstrap"):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 1:
            raise CrossdiffError(f"{where}.{key}: expected an integer >= 1, got {s[key]!r}")
    n = s["n_train"]
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise CrossdiffError(f"{where}.n_train: expected null (every training item) or an integer >= 1, got {n!r}")
    for key in ("lr", "l2", "max_grad_norm"):
        v = s[key]
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not number or v < 0 or (v == 0 and key != "l2"):
            raise CrossdiffError(f"{where}.{key}: expected a number {'>= 0' if key == 'l2' else '> 0'}, got {v!r}")
    if s["lr_decay"] not in LR_DECAYS:
        raise CrossdiffError(f"{where}.lr_decay: expected one of {list(LR_DECAYS)}, got {s['lr_decay']!r}")
    if s["optimizer"] not in OPTIMIZERS:
        raise CrossdiffError(f"{where}.optimizer: expected one of {list(OPTIMIZERS)}, got {s['optimizer']!r}")
    if not isinstance(s["normalize"], bool):
        raise CrossdiffError(f"{where}.normalize: expected true or false, got {s['normalize']!r}")
    if not isinstance(s["seed"], int) or isinstance(s["seed"], bool):
        raise CrossdiffError(f"{where}.seed: expected an integer, got {s['seed']!r}")
    return s


def resolve_settings(settings: dict | None) -> dict:
    """Settings over :data:`DEFAULTS`, validated (the Python API; jobs get them resolved by crossdiff.plan)."""
    from crossdiff.config import deep_merge

    return validate_settings(deep_merge(DEFAULTS, dict(settings or {})))


# ------------------------------------------------------------------------------------------------ the probe
def _lr_factor(decay: str, epochs: int):
    """transformers' linear schedule as theirs: over ``epochs / 0.9`` steps for 10-percent (probes.py:245-251)."""
    if decay == "constant":
        return lambda step: 1.0
    total = epochs / 0.9 if decay == "10-percent" else float(epochs)
    return lambda step: max(0.0, (total - step) / max(1.0, total))


def features(states: np.ndarray) -> np.ndarray:
    """items x options x layers x d -> items x options x (layers * d): the layers side by side (theirs)."""
    return states.reshape(states.shape[0], states.shape[1], -1)


def normalization(X: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased std of the options' states pooled over items x options (probes.py:138-141)."""
    rows = X[mask].astype(np.float64)
    mean = rows.mean(axis=0)
    std = rows.std(axis=0, ddof=1) if rows.shape[0] > 1 else np.ones_like(mean)
    std[~(std > 0)] = 1.0
    return mean, std


def _probs(weight, Z, mask):
    import torch

    scores = (Z @ weight.reshape(-1, 1)).squeeze(-1)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def fit_probe(X: np.ndarray, mask: np.ndarray, gold: np.ndarray, settings: dict, seed: int = 0) -> dict:
    """Fit one probe (module doc) on items x options x F states; returns ``{weight, mean, std, loss, attempts}``."""
    import torch

    s = settings
    X = np.asarray(X, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    gold = np.asarray(gold, dtype=np.int64)
    if X.shape[0] == 0:
        raise CrossdiffError("probe: no training items")
    if s["normalize"]:
        mean, std = normalization(X, mask)
    else:
        mean, std = np.zeros(X.shape[-1]), np.ones(X.shape[-1])
    Z = torch.tensor(((X - mean) / std).astype(np.float32))
    Z[torch.tensor(~mask)] = 0.0
    m = torch.tensor(mask)
    y = torch.tensor(gold)
    gen = torch.Generator().manual_seed(int(seed))
    l2, clip = float(s["l2"]), float(s["max_grad_norm"])
    for attempt in range(NAN_PATIENCE + 2):
        lin = torch.nn.Linear(X.shape[-1], 1, bias=False)
        with torch.no_grad():  # reset_parameters' kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(F), 1/sqrt(F)), seeded
            bound = 1.0 / math.sqrt(X.shape[-1])
            lin.weight.copy_(torch.rand(lin.weight.shape, generator=gen) * 2 * bound - bound)
        params = list(lin.parameters())
        opt = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[s["optimizer"]](
            params, lr=float(s["lr"]))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(s["lr_decay"], int(s["epochs"])))
        for _ in range(int(s["epochs"])):
            probs = _probs(lin.weight, Z, m)
            nll = -torch.log(probs.gather(1, y.view(-1, 1))).mean()
            loss = nll + l2 * torch.linalg.vector_norm(lin.weight)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            sched.step()
        w = lin.weight.detach().reshape(-1).numpy().astype(np.float64)
        if np.isfinite(w).all():
            break
        print(f"WARNING: probe weights came out NaN; refitting with l2 x 4 and clipping / 4 (attempt {attempt + 2})")
        l2, clip = l2 * 4, clip / 4
    return {"weight": w, "mean": mean, "std": std, "loss": float(loss.detach()), "attempts": attempt + 1}


def predict(probe: dict, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Option probabilities (items x options; 0 where an item has no such option)."""
    Z = ((np.asarray(X, dtype=np.float64) - probe["mean"]) / probe["std"]) @ probe["weight"]
    Z = np.where(mask, Z, -np.inf)
    Z = Z - Z.max(axis=1, keepdims=True)
    e = np.where(mask, np.exp(Z), 0.0)
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------------ the cells
def _fit(X, mask, gold, rows, s: dict, key: list) -> dict:
    """A probe on the items at ``rows``; its initialisation seeded by ``key`` (the draw's key + a tag)."""
    return fit_probe(X[rows], mask[rows], gold[rows], s, seed=int(np.random.SeedSequence([*key, 7]).generate_state(1)[0]))


def eval_label(b: int) -> str:
    return f"probe-train{int(b)}"


def result_label(b: int) -> str:
    return f"probe-{int(b)}"


def draw(ids: list[str], n: int | None, rng: np.random.Generator, where: str) -> list[str]:
    """``n`` of ``ids`` without replacement (all of them, permuted, for null)."""
    ids = sorted(ids)
    if n is None:
        n = len(ids)
    if n > len(ids):
        raise CrossdiffError(f"study.probe.n_train = {n}: {where} has only {len(ids)} training item(s); lower "
                             "n_train (null = every training item) or use fewer bins")
    return [ids[i] for i in rng.choice(len(ids), size=n, replace=False)]


def _test_ids(task_dir) -> tuple[dict, list[str]]:
    from crossdiff.evaluate.run import read_task

    meta = read_task(task_dir)
    if meta.get("kind") == "lm_eval_task":
        raise CrossdiffError(f"{task_dir}: an lm_eval_task dataset; probes need a crossdiff prompt format")
    rows = [json.loads(x) for x in (Path(meta["dir"]) / "data.jsonl").read_text().splitlines() if x.strip()]
    return meta, [str(r["item_id"]) for r in rows]


def probe_cells(hidden_path, items_path, bins_path, test_tasks: list, train_bins: list[int], outdir,
                settings: dict, model_name: str | None = None) -> list[dict]:
    """Every (train bin, test bin) probe cell of one model from its hidden-state file (module doc)."""
    from crossdiff.bins.holdout import bin_items, training_part
    from crossdiff.compute import deterministic_torch
    from crossdiff.evaluate.hidden import option_mask, read_states

    s = validate_settings(dict(settings))
    deterministic_torch("cpu")  # the job's threads (OMP_NUM_THREADS), deterministic kernels
    H = read_states(hidden_path)
    X = features(H["states"])
    mask = option_mask(H["n_options"], X.shape[1])
    gold = H["gold"]
    row_of = {iid: i for i, iid in enumerate(H["item_id"])}
    tests = [_test_ids(t) for t in test_tasks]
    pools = {}
    for b in train_bins:
        pools[b] = sorted(str(x) for x in training_part(bin_items(items_path, bins_path, b))["item_id"].to_list())
        for meta, ids in tests:
            missing = sorted(set(ids + pools[b]) - set(row_of))
            if missing:
                raise CrossdiffError(f"{hidden_path}: no hidden states for {len(missing)} item(s), e.g. {missing[:3]}; "
                                     "rerun rule probe_states")
            both = set(ids) & set(pools[b])
            if both and both != set(ids) | set(pools[b]):
                raise CrossdiffError(f"bin {b}'s training items and {meta['dir']}'s test items overlap partly "
                                     f"({len(both)} shared); remake the bins and task folders")
            smallest_pool = len(ids) - math.ceil(len(ids) / OVERLAP_FOLDS)  # the pool beside the largest fold
            if both and s["n_train"] is not None and s["n_train"] > smallest_pool:
                raise CrossdiffError(f"study.probe.n_train = {s['n_train']}: bin {b} trains and tests on the same "
                                     f"{len(ids)} items (no bins.holdout_fraction), so a fold's probe draws from "
                                     f"{smallest_pool} items; lower n_train")
        draw(pools[b], s["n_train"], np.random.default_rng(0), f"train bin {b}")  # too few: stop before any fit
    rows_idx = lambda ids: np.array([row_of[i] for i in ids], dtype=np.int64)  # noqa: E731
    written = []
    t0 = time.time()
    n_fits = 0
    for b in train_bins:
        per_test = {meta["bin"]: {i: [] for i in ids} for meta, ids in tests}
        for r in range(s["n_bootstrap"]):
            shared = None  # the probe of bootstrap r: every test bin disjoint from bin b's training items
            for meta, ids in tests:
                if set(ids) & set(pools[b]):  # b == t without held-out items: folds of the test items
                    order = [ids[i] for i in np.random.default_rng([s["seed"], b, r, 1]).permutation(len(ids))]
                    jobs = []
                    for f in range(OVERLAP_FOLDS):
                        fold = order[f::OVERLAP_FOLDS]
                        key = [s["seed"], b, r, 2 + f]
                        train = draw(sorted(set(pools[b]) - set(fold)), s["n_train"], np.random.default_rng(key),
                                     f"train bin {b} without fold {f}")
                        jobs.append((fold, _fit(X, mask, gold, rows_idx(train), s, key)))
                        n_fits += 1
                else:
                    if shared is None:
                        key = [s["seed"], b, r]
                        train = draw(pools[b], s["n_train"], np.random.default_rng(key), f"train bin {b}")
                        shared = _fit(X, mask, gold, rows_idx(train), s, key)
                        n_fits += 1
                    jobs = [(ids, shared)]
                for fold, fitted in jobs:
                    fi = rows_idx(fold)
                    probs = predict(fitted, X[fi], mask[fi])
                    for iid, p, g in zip(fold, probs, gold[fi]):
                        pred = int(np.argmax(p))
                        per_test[meta["bin"]][iid].append({"prediction": pred, "correct": int(pred == int(g)),
                                                           "p_gold": float(p[int(g)])})
        for (meta, ids) in tests:
            samples = []
            for iid in ids:
                runs = per_test[meta["bin"]][iid]
                samples.append({"item_id": iid, "correct": float(np.mean([x["correct"] for x in runs])),
                                "prediction": runs[0]["prediction"], "target": int(gold[row_of[iid]]),
                                "p_gold": float(np.mean([x["p_gold"] for x in runs])),
                                "by_bootstrap": runs})
            n = len(samples)
            value = float(np.mean([x["correct"] for x in samples])) if n else math.nan
            out = Path(outdir) / eval_label(b) / f"bin{int(meta['bin'])}.json"
            record = {
                "model": model_name or H["meta"].get("model"),
                "model_path": H["meta"].get("model_path"),
                "dataset": meta["dataset"],
                "train_bin": result_label(b),
                "test_bin": int(meta["bin"]),
                "task": meta["task"],
                "metric": "acc",
                "filter": "none",
                "value": value,
                "stderr": math.sqrt(value * (1 - value) / (n - 1)) if n > 1 else None,
                "n_items": n,
                "other_metrics": {"mean_p_gold": float(np.mean([x["p_gold"] for x in samples])) if n else None},
                "probe": {**s, "layers_used": H["meta"].get("layers"), "n_train_pool": len(pools[b]),
                          "hidden_states": str(hidden_path)},
                "samples": out.with_suffix("").name + ".samples.jsonl",
            }
            write_jsonl(samples, out.with_name(out.name[: -len(".json")] + ".samples.jsonl"))
            write_json(record, out)
            written.append(record)
    print(f"{len(written)} probe cell(s) of {model_name or H['meta'].get('model')}: train bins {list(train_bins)} x "
          f"{len(tests)} test bin(s), {n_fits} probe fit(s) in {time.time() - t0:.1f} s: "
          + ", ".join(f"{r['train_bin']}->bin{r['test_bin']}={r['value']:.3f}" for r in written))
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hidden", required=True, help="hidden-state file of the model (crossdiff probe-states)")
    p.add_argument("--items", required=True, help="item table (parquet)")
    p.add_argument("--bins", required=True, help="bins table (parquet)")
    p.add_argument("--tasks", nargs="+", required=True, help="test task folders (from make-task), one per test bin")
    p.add_argument("--train-bins", type=int, nargs="+", required=True, help="bins the probes train on")
    p.add_argument("--outdir", required=True, help="results/eval/{model}/{dataset}: writes probe-train{b}/bin{t}.json")
    p.add_argument("--model-name", help="model slug recorded in the results")
    p.add_argument("--settings", type=json_arg, required=True, help="JSON object: the resolved probe settings")


def run(args: argparse.Namespace) -> None:
    probe_cells(args.hidden, args.items, args.bins, args.tasks, args.train_bins, args.outdir, args.settings,
                args.model_name)
