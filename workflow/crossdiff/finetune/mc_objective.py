"""The multiple-choice training objective (``finetune.objective: multiple_choice``), Hase et al. 2024's ``MC`` loss.

Their definition (allenai/easy-to-hard-generalization at ad8358e; ``--finetuning_objective MC --probe_loss
supervised``, run_jobs.py:187): every option of an item is one sequence, the prompt followed by the option
(``[BOS] + enc(prompt) + enc(option)``, utils/LM_utils.py:194-203); its score is the SUM of the option tokens'
log-probabilities (LM_utils.py:61-63; ``answer_scoring`` log_probs, main.py:996); the scores of an item's options
are softmaxed (LM_utils.py:85) and the loss is ``-log p(gold)`` averaged over the items of the batch
(models/probes.py:425, 527-531; no L2 term for fine-tuning, probes.py:352). Here (:func:`mc_loss`):

* the options are those of :mod:`crossdiff.prompts.options` (the choices of a multiple-choice format, the integer
  candidates of a generation format), written into the training rows by ``make-sft-data`` (``options``,
  ``gold_option``); the context is the row's TRAINING prompt (plain: ``prompt``; chat: the rendered system + user
  turns), tokenised as :func:`crossdiff.prompts.options.token_ids` does (the tokenizer's special tokens on the
  plain prompt, none on the option);
* sequences are right-padded with an attention mask (theirs: left padding, which shifts positions);
* ``per_device_train_batch_size`` counts option sequences as theirs (their DataLoader takes
  ``batch_size // max options`` items, data_utils.py:163): a micro-batch holds ``max(1, per_device //
  max options)`` items; each micro-batch's loss is its items' mean, divided by the accumulation steps (theirs:
  ``/ gaf * rows / batch_size``, probes.py:429-432);
* a sequence longer than ``max_length`` loses tokens from the START of its prompt (the option is kept whole;
  theirs drop demonstrations and then cut the prompt, data_utils.py:1351-1382).

The evaluation is unchanged: a multiple-choice format is scored by lm-eval's ``acc`` (argmax of the same summed
log-probabilities, i.e. their prediction); a generation format is still scored by generation.
"""

from __future__ import annotations

from crossdiff.errors import CrossdiffError

OBJECTIVES = ("sft", "multiple_choice")


def check_settings(s: dict) -> None:
    """Config-time checks of ``objective`` (called from the settings validation)."""
    if s.get("objective", "sft") not in OBJECTIVES:
        raise CrossdiffError(f"finetune settings.objective: expected one of {list(OBJECTIVES)}, got {s.get('objective')!r}")
    if s.get("objective") == "multiple_choice" and s.get("padding_free"):
        raise CrossdiffError("finetune settings.objective 'multiple_choice' scores padded option sequences; "
                             "padding_free packs sequences: set padding_free: false")


def max_options(rows: list[dict], where: str = "training data") -> int:
    """The most options of a training row; every row must carry its options (``make-sft-data`` writes them)."""
    most = 0
    for row in rows:
        opts = row.get("options")
        if not isinstance(opts, list) or len(opts) < 2 or not isinstance(row.get("gold_option"), int):
            why = row.get("options_error") or "the row has no 'options' / 'gold_option' (remake the training data)"
            raise CrossdiffError(f"{where}: item {row.get('item_id', '?')!r}: finetune.objective multiple_choice "
                                 f"needs the item's answer options: {why}")
        most = max(most, len(opts))
    return most


def items_per_batch(s: dict, rows: list[dict]) -> int:
    """Items per micro-batch: ``per_device_train_batch_size`` option sequences (module doc)."""
    return max(1, int(s["per_device_train_batch_size"]) // max_options(rows))


def _context(tokenizer, row: dict, fmt, chat: bool) -> str:
    if not chat:
        return row["prompt"]
    from crossdiff.prompts.chat import render_chat

    ex = fmt.training_example(row, chat=True)
    return render_chat(tokenizer, ex["prompt"], add_generation_prompt=True)


def encode_row(tokenizer, row: dict, fmt, chat: bool, max_length: int | None) -> dict:
    """One item's option sequences: ``mc_ids`` (token ids per option), ``mc_ctx`` (context tokens per option),
    ``mc_gold``; ``input_ids`` = every option's ids one after another (what the trainer counts as tokens)."""
    from crossdiff.prompts.options import token_ids

    context = _context(tokenizer, row, fmt, chat)
    ids, ctx = [], []
    for opt in row["options"]:
        seq, n = token_ids(tokenizer, context, opt.strip() if chat else opt, chat)
        if max_length and len(seq) > max_length:  # cut the prompt's start, keep the option whole
            cut = len(seq) - max_length
            if cut >= n:
                raise CrossdiffError(f"item {row.get('item_id')!r}: option {opt!r} alone is longer than max_length "
                                     f"{max_length}")
            seq, n = seq[cut:], n - cut
        ids.append(seq)
        ctx.append(n)
    return {"input_ids": [t for seq in ids for t in seq], "mc_ids": ids, "mc_ctx": ctx, "mc_gold": int(row["gold_option"])}


class MultipleChoiceCollator:
    """Flattens a batch of items into their option sequences (right-padded) with each item's option count and gold."""

    def __init__(self, pad_token_id: int):
        self.pad = int(pad_token_id)

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        seqs = [(ids, n) for ex in examples for ids, n in zip(ex["mc_ids"], ex["mc_ctx"])]
        width = max(len(ids) for ids, _ in seqs)
        input_ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        target = torch.zeros((len(seqs), width), dtype=torch.bool)
        for row, (ids, n) in enumerate(seqs):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            attention[row, :len(ids)] = 1
            target[row, n:len(ids)] = True
        return {"input_ids": input_ids, "attention_mask": attention, "mc_target_mask": target,
                "mc_n_options": torch.tensor([len(ex["mc_ids"]) for ex in examples]),
                "mc_gold": torch.tensor([int(ex["mc_gold"]) for ex in examples])}


def option_scores(model, input_ids, attention_mask, target_mask):
    """The summed log-probability of each sequence's target (option) tokens."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    tok = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # token k+1 given 0..k
    return (tok * target_mask[:, 1:].to(tok.dtype)).sum(-1)


def mc_loss(scores, n_options, gold):
    """(mean over items of ``-log softmax(scores of its options)[gold]``, accuracy of the argmax)."""
    import torch

    n_options = [int(n) for n in n_options]
    width = max(n_options)
    table = scores.new_full((len(n_options), width), float("-inf"))
    start = 0
    for i, n in enumerate(n_options):
        table[i, :n] = scores[start:start + n]
        start += n
    logp = torch.log_softmax(table, dim=-1)
    gold = gold.to(logp.device).long()
    loss = -logp.gather(1, gold.view(-1, 1)).squeeze(1).mean()
    acc = (table.argmax(dim=-1) == gold).float().mean()
    return loss, acc


def trainer_class():
    """An SFTTrainer whose loss is :func:`mc_loss` over each batch's option sequences."""
    from trl import SFTTrainer

    class MultipleChoiceSFTTrainer(SFTTrainer):
        loss_is_scaled_for_ga = False  # a mean over the micro-batch's items: the Trainer divides by accumulation

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            scores = option_scores(model, inputs["input_ids"], inputs["attention_mask"], inputs["mc_target_mask"])
            loss, acc = mc_loss(scores, inputs["mc_n_options"].tolist(), inputs["mc_gold"])
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["mc_accuracy"].append(float(acc))
            return (loss, None) if return_outputs else loss

    return MultipleChoiceSFTTrainer


def dataset_and_collator(rows: list[dict], tokenizer, fmt, chat: bool, max_length: int | None):
    """(the tokenised dataset, its collator) of the multiple-choice objective."""
    from datasets import Dataset

    max_options(rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    data = Dataset.from_list([encode_row(tokenizer, r, fmt, chat, max_length) for r in rows])
    return data, MultipleChoiceCollator(pad if pad is not None else 0)
