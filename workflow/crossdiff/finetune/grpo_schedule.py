"""E2H Reasoner's scheduled task sampler for GRPO (Parashar et al., ICLR 2026; divelab/E2H-Reasoning).

A train set with ``schedule`` (``study.train_sets.<name>.schedule``) trains GRPO on several bins at once, its
levels ordered easy to hard (level k = the set's k-th bin in ascending order, bin 0 the easiest). At each
generation round t of T the sampler draws the round's prompts' levels from a schedule p(t), then takes each
level's next prompt from that level's fixed permutation (wrapping around). Read from E2H's ``src/trainer.py``
at 381e5002 (``TaskSampler``, :8-117, and ``CurriculumGRPOTrainer._get_train_sampler``, :129-140).
The schedules p(t) are :mod:`crossdiff.study.schedules` (E2H :43-85).

The draws (:24, :34-37, :90-116): one ``numpy.random.default_rng(seed)`` makes each level's permutation, then,
per round, ``rng.choice(K, size=B, p=p(t))`` picks the B prompts' levels; each prompt is yielded
``num_generations`` times in a row, the round ``repeat_count`` times, as TRL's ``RepeatSampler``.

Differences kept (also in ``config/README.md``):

* The round. E2H's sampler (written for an earlier TRL) draws ``generation_batch_size x
  gradient_accumulation_steps / G`` prompts per iteration and repeats them ``num_iterations`` times, with
  ``T = max_steps``. Under TRL 1.16 a generation round is ``generation_batch_size / G`` prompts reused for
  ``num_iterations x steps_per_generation`` micro-steps (``RepeatSampler``, grpo_trainer.py:1306-1313); this
  sampler keeps that contract, so ``t`` counts generation rounds and T is the run's rounds. With TRL's default
  ``steps_per_generation`` (= gradient_accumulation_steps) and ``num_iterations: 1`` a round is one optimizer
  step, as in E2H.
* T. E2H trains ``max_steps``; a run with ``max_steps: -1`` here trains ``num_train_epochs`` x the set's items in
  prompts (sampling is with replacement), i.e. ``max_steps = ceil(epochs x n_items / prompts per step)``.
"""

from __future__ import annotations

import math

import numpy as np

from crossdiff.errors import CrossdiffError
from crossdiff.study.schedules import probabilities


def total_rounds(max_steps: int, accumulation: int, steps_per_generation: int, num_iterations: int) -> int:
    """Generation rounds of a run of ``max_steps`` optimizer steps (world size 1): each round's prompts serve
    ``num_iterations x steps_per_generation`` micro-steps, ``accumulation`` of them per optimizer step."""
    return max(1, math.ceil(max_steps * accumulation / (steps_per_generation * num_iterations)))


def scheduled_max_steps(s: dict, n_items: int, prompts_per_step: int) -> int:
    """``max_steps`` of a scheduled run: the setting when > 0, else ``num_train_epochs`` x the items in prompts."""
    if int(s["max_steps"]) > 0:
        return int(s["max_steps"])
    return max(1, math.ceil(float(s["num_train_epochs"]) * n_items / max(1, prompts_per_step)))


def make_sampler(levels, *, name: str, args: dict, batch_size: int, mini_repeat_count: int, repeat_count: int,
                 seed: int, total: int):
    """The torch Sampler (module docstring). ``levels``: each dataset row's level, 0 = easiest."""
    import torch

    class LevelScheduleSampler(torch.utils.data.Sampler):
        def __init__(self):
            lv = np.asarray(levels, dtype=np.int64)
            self.K = int(lv.max()) + 1
            missing = sorted(set(range(self.K)) - set(lv.tolist()))
            if missing:
                raise CrossdiffError(f"scheduled GRPO: level(s) {missing} have no prompts")
            self.rng = np.random.default_rng(int(seed))
            self.by_level = [self.rng.permutation(np.flatnonzero(lv == k)) for k in range(self.K)]
            self.last_levels: list[list[int]] = []  # the levels drawn per round (diagnostics, tests)

        def __len__(self):
            return total * batch_size * mini_repeat_count * repeat_count

        def __iter__(self):
            ptr = [0] * self.K
            self.last_levels = []
            for t in range(total):
                p = probabilities(name, t, total, self.K, args)
                chosen = self.rng.choice(np.arange(self.K), size=batch_size, p=p, replace=True)
                self.last_levels.append([int(k) for k in chosen])
                batch = []
                for k in chosen:
                    bucket = self.by_level[int(k)]
                    batch.append(int(bucket[ptr[int(k)] % len(bucket)]))
                    ptr[int(k)] += 1
                for _ in range(repeat_count):
                    for index in batch:
                        for _ in range(mini_repeat_count):
                            yield index

    return LevelScheduleSampler()
