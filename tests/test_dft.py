"""Dynamic Fine-Tuning (finetune.loss: dft; study.methods: [sft, dft]; Liu et al. 2026 after Wu et al. 2025).

DFT is TRL 1.16's own ``loss_type="dft"`` (trl/trainer/sft_trainer.py:1612-1618): the per-token NLL of the
completion tokens weighted by the token's stop-gradient probability, summed and divided by the number of
trained tokens. The test computes both losses by hand on one batch of a tiny model and compares them with
what the SFTTrainer built by crossdiff computes on the same batch.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import polars as pl
import pytest

from crossdiff.errors import CrossdiffError
from crossdiff.items.synthetic import generate_items
from crossdiff.prompts.format import PromptFormat

SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "warmup_problems": 200,
         "warmup_steps": 10, "batch_size": 32, "eval_items": 0}
FT = {"num_train_epochs": 1, "learning_rate": 1e-3, "per_device_train_batch_size": 6, "save_steps": 100}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from crossdiff.models.tiny import build_base_model

    root = tmp_path_factory.mktemp("dft")
    items = generate_items(12, seed=3)
    items.write_parquet(root / "items.parquet")
    pl.DataFrame({"item_id": items["item_id"], "difficulty": [0.0] * 12, "bin": [0] * 12}).write_parquet(root / "bins.parquet")
    build_base_model(root / "base", root / "items.parquet", SMALL)
    from crossdiff.study.sft_data import make_sft_data

    make_sft_data(root / "items.parquet", root / "bins.parquet", 0, root / "bin0.jsonl")
    return root


def _trainer(env, loss):
    from crossdiff.finetune.run import build_trainer, read_sft_jsonl, resolve_settings

    rows = read_sft_jsonl(env / "bin0.jsonl")
    trainer, _, _ = build_trainer(env / "base", rows, env / f"w_{loss}", resolve_settings({**FT, "loss": loss}),
                                  PromptFormat())
    return trainer


def _hand_losses(model, batch):
    """Both losses from the definition: L_SFT = mean over trained tokens of -log p(y_t); L_DFT = mean of
    sg(p(y_t)) * -log p(y_t) (Wu et al. 2025, eq. 9; TRL's normaliser: the number of trained tokens)."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    tok = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask]
    n = mask.sum()
    return float(-tok.sum() / n), float((-tok * tok.exp()).sum() / n), int(n)


def test_dft_reaches_trl_and_its_loss_is_the_weighted_nll(env):
    import torch

    sft, dft = _trainer(env, "sft"), _trainer(env, "dft")
    assert sft.args.loss_type == "nll" and dft.args.loss_type == "dft"
    batch = sft.data_collator([sft.train_dataset[i] for i in range(6)])
    assert dft.data_collator([dft.train_dataset[i] for i in range(6)])["input_ids"].equal(batch["input_ids"])
    want_sft, want_dft, n = _hand_losses(sft.model, batch)
    assert n > 6  # several completion tokens per example
    sft.model.eval(), dft.model.eval()
    with torch.no_grad():
        got_sft = float(sft.compute_loss(sft.model, dict(batch)))
        got_dft = float(dft.compute_loss(dft.model, dict(batch)))
    assert got_sft == pytest.approx(want_sft, rel=1e-5)
    assert got_dft == pytest.approx(want_dft, rel=1e-5)
    # the weights are probabilities < 1: DFT's loss is strictly smaller, and not a constant rescaling of NLL
    assert got_dft < got_sft


def test_method_dft_sets_the_loss_on_its_runs_only(tmp_path):
    from crossdiff.config import validate
    from crossdiff.plan.settings import Plan

    cfg = validate({"datasets": {"a": {"items": {"source": "synthetic", "n_items": 60},
                                       "responses": {"source": "simulated"}}},
                    "models": [{"id": "m", "build": "tiny"}], "bins": {"n_bins": 3},
                    "study": {"methods": ["sft", "dft"], "train_sizes": [10, None]}})
    plan = Plan(cfg)
    runs = plan.finetune_runs()
    assert runs == ["bin0-n10", "bin0", "bin1-n10", "bin1", "bin2-n10", "bin2",
                    "dft-bin0-n10", "dft-bin0", "dft-bin1-n10", "dft-bin1", "dft-bin2-n10", "dft-bin2"]
    assert {plan.finetune("a", "m", r)["loss"] for r in runs if r.startswith("dft-")} == {"dft"}
    assert {plan.finetune("a", "m", r)["loss"] for r in runs if not r.startswith("dft-")} == {"sft"}
    # the same bins, sizes and seeds: every dft run is an sft run's label with the prefix
    assert sorted("dft-" + r for r in runs if not r.startswith("dft-")) == sorted(r for r in runs if r.startswith("dft-"))
    assert "dft-train1-n10" in plan.eval_labels("a")


def test_unknown_loss_is_refused():
    from crossdiff.finetune.settings import resolve_settings

    with pytest.raises(CrossdiffError, match="loss"):
        resolve_settings({"loss": "kl"})


def test_dft_with_the_multiple_choice_objective_is_refused():
    """objective multiple_choice trains crossdiff's own loss over the options (issue 27c): TRL's dft cannot reach it."""
    from crossdiff.finetune.settings import resolve_settings

    with pytest.raises(CrossdiffError, match="loss dft is TRL's token loss; objective multiple_choice"):
        resolve_settings({"loss": "dft", "objective": "multiple_choice"})
    assert resolve_settings({"loss": "dft"})["loss"] == "dft"
