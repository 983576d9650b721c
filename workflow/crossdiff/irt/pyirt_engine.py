"""The reference engine: the py-irt library itself (``engine: py-irt``).

py-irt's command line is broken with the pinned typer/click pair, so this calls its Python API:
``IrtModelTrainer(data_path=jsonlines, config=IrtConfig(...)).train()``. Two facts of py-irt 0.7.1
handled here: it ignores ``IrtConfig.seed`` during training (we seed pyro ourselves), and its
``best_params`` are the parameters at the epoch of lowest (noisy) ELBO loss, which is what its
users report; we take those, and the guide's scale for the posterior sd.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

from crossdiff.irt.base import EngineResult, IrtSettings, check_matrix


def _to_jsonlines(Y: np.ndarray, observed: np.ndarray, path: str) -> None:
    # py-irt needs every item to appear once before models reorder its item index; we keep our
    # own column order by mapping through the item ids it returns.
    with open(path, "w") as fh:
        for i in range(Y.shape[0]):
            cols = np.flatnonzero(observed[i])
            responses = {f"i{j}": int(Y[i, j]) for j in cols}
            fh.write(json.dumps({"subject_id": f"m{i}", "responses": responses}) + "\n")


def fit(Y: np.ndarray, observed: np.ndarray, settings: IrtSettings, progress: bool = False) -> EngineResult:
    check_matrix(Y, observed)
    if settings.model not in ("1pl", "2pl", "3pl", "4pl"):
        raise ValueError(f"irt.model: {settings.model} is not a py-irt model (py-irt 0.7.1 fits 1pl, 2pl, 3pl, 4pl; "
                         "its 4pl has no guessing floor); use irt.engine: fast for 4pl-standard")
    # scikit-learn's OpenMP beside torch's makes torch ~40x slower on 2 cores unless passive.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import pyro
    import torch
    from py_irt.config import IrtConfig
    from py_irt.training import IrtModelTrainer

    # oversubscribed torch threads ran ~6x slower on a shared 2-core machine
    torch.set_num_threads(settings.threads or min(2, os.cpu_count() or 1))
    M, N = Y.shape
    empty_items = np.flatnonzero(observed.sum(0) == 0)
    if empty_items.size:
        raise ValueError(f"{empty_items.size} item(s) have no observed response; filter them first")
    device = "cuda" if settings.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crossdiff-pyirt-") as tmp:
        data = os.path.join(tmp, "responses.jsonlines")
        _to_jsonlines(Y, observed, data)
        config = IrtConfig(
            model_type=settings.model,
            priors=settings.priors,
            epochs=settings.epochs,
            lr=settings.lr,
            lr_decay=settings.lr_decay,
            seed=settings.seed,
        )
        pyro.set_rng_seed(settings.seed)
        trainer = IrtModelTrainer(data_path=data, config=config, verbose=progress)
        trainer.train(device=device)
    params = trainer.best_params
    store = pyro.get_param_store()
    # map py-irt's internal order back to ours
    item_ix = np.array([int(params["item_ids"][k][1:]) for k in range(len(params["item_ids"]))])
    subj_ix = np.array([int(params["subject_ids"][k][1:]) for k in range(len(params["subject_ids"]))])
    difficulty = np.empty(N)
    difficulty[item_ix] = params["diff"]
    ability = np.empty(M)
    ability[subj_ix] = params["ability"]
    difficulty_sd = np.empty(N)
    difficulty_sd[item_ix] = store["scale_diff"].detach().cpu().numpy()
    ability_sd = np.empty(M)
    ability_sd[subj_ix] = store["scale_ability"].detach().cpu().numpy()
    discrimination = None
    if "disc" in params:
        discrimination = np.empty(N)
        discrimination[item_ix] = params["disc"]
    lambdas = None
    if "lambdas" in params:  # 3PL guessing floor / 4PL upper asymptote (a pyro param: no posterior sd)
        lambdas = np.empty(N)
        lambdas[item_ix] = params["lambdas"]
    return EngineResult(
        ability=ability,
        difficulty=difficulty,
        difficulty_sd=difficulty_sd,
        discrimination=discrimination,
        ability_sd=ability_sd,
        lambdas=lambdas,
        model=settings.model,
        info={
            "iterations": settings.epochs,
            "converged": None,
            "criterion": "fixed number of SVI epochs (py-irt default: no convergence check)",
            "device": device,
            "wall_s": time.perf_counter() - start,
        },
    )
