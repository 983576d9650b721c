"""The ONE place a chat template is rendered: training, the loss measure, ICL, show-prompt and lm-eval.

Every chat rendering crossdiff makes goes through :func:`render_chat`, which calls the tokenizer's
``apply_chat_template`` with :data:`CHAT_TEMPLATE_KWARGS` (a fixed ``date_string``: Llama 3.x templates write
TODAY's date into the system header otherwise, so a fine-tune, its loss measure and its evaluation on
different days would see different prompts):

* training text: :meth:`crossdiff.prompts.format.PromptFormat.render_training` (what ``show-prompt`` prints);
  TRL's SFTTrainer tokenizes the conversational examples itself (its completion mask needs it), with the
  per-example ``chat_template_kwargs`` that :meth:`~crossdiff.prompts.format.PromptFormat.training_example`
  takes from :func:`template_kwargs`, i.e. the same call (tests/test_chat_render.py checks TRL's tokens
  against this function's text); the training-length check (``study.sft_data``) renders with it;
* the loss measure (``evaluate.loss_measure``): the same prompt/full-example rendering, tokenized;
* evaluation: :meth:`~crossdiff.prompts.format.PromptFormat.render_prompt`, and lm-eval's own chat path
  (``--apply_chat_template``: zero-shot, checkpoints, ICL demonstrations as turns, ``items.source:
  lm_eval_task``): :func:`install` replaces the loaded lm-eval model's ``apply_chat_template`` with
  :func:`lm_eval_renderer`, which is lm-eval's method (``continue_final_message`` when no generation
  prompt; the system turn dropped if the template refuses one) calling :func:`render_chat`;
* inspection: ``evaluate.icl.rendered_contexts`` and ``show-prompt`` of an lm-eval task use the same renderer.

Extra template variables (``evaluate.model_args.chat_template_args``, e.g. ``enable_thinking``) join the
fixed ones; another ``date_string`` there is refused, as training could not see it.
"""

from __future__ import annotations

from crossdiff.errors import CrossdiffError

#: variables every chat template is rendered with, in training and evaluation alike (module docstring).
#: The date is the Llama 3.x templates' own fallback.
CHAT_TEMPLATE_KWARGS = {"date_string": "26 Jul 2024"}


def template_kwargs(extra: dict | None = None) -> dict:
    """The template variables of every rendering: :data:`CHAT_TEMPLATE_KWARGS` plus ``extra``."""
    extra = dict(extra or {})
    for key, value in CHAT_TEMPLATE_KWARGS.items():
        if key in extra and extra[key] != value:
            raise CrossdiffError(f"chat_template_args.{key} = {extra[key]!r}: every chat template is rendered with "
                                 f"{key} {value!r} (training, the loss measure and evaluation alike); remove it")
    return {**extra, **CHAT_TEMPLATE_KWARGS}


def _ids(x) -> list[int]:
    return list(x["input_ids"] if hasattr(x, "keys") else x)


def render_chat(tokenizer, messages: list[dict], *, add_generation_prompt: bool = False,
                continue_final_message: bool = False, tokenize: bool = False, extra: dict | None = None):
    """``messages`` through ``tokenizer``'s chat template with the fixed variables: the text, or (``tokenize``)
    its token ids as the tokenizer's ``apply_chat_template`` gives them (no special tokens added twice)."""
    kwargs = template_kwargs(extra)
    if continue_final_message:
        kwargs["continue_final_message"] = True
    out = tokenizer.apply_chat_template(messages, tokenize=tokenize, add_generation_prompt=add_generation_prompt, **kwargs)
    return _ids(out) if tokenize else out


def lm_eval_renderer(tokenizer, extra: dict | None = None):
    """lm-eval's ``apply_chat_template(chat_history, add_generation_prompt=True)`` (HFLM's and VLLM's, 0.4.13)
    rendering through :func:`render_chat`: the final message is continued when no generation prompt is asked
    for, and a template that refuses a system turn gets the history without it (lm-eval's fallback)."""
    import jinja2

    template_kwargs(extra)  # a conflicting date_string is refused now, not at the first request

    def apply_chat_template(chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        try:
            return render_chat(tokenizer, chat_history, add_generation_prompt=add_generation_prompt,
                               continue_final_message=not add_generation_prompt, extra=extra)
        except jinja2.exceptions.TemplateError:
            history = [m for m in chat_history if m["role"] != "system"]
            return render_chat(tokenizer, history, add_generation_prompt=add_generation_prompt,
                               continue_final_message=not add_generation_prompt, extra=extra)

    return apply_chat_template


def install(lm):
    """Make an lm-eval model (HFLM or VLLM) render chat templates through :func:`lm_eval_renderer`; returns it.
    Its own template arguments carry over (``chat_template_args``; VLLM's ``hf_chat_template`` and
    ``enable_thinking``, which its method passes)."""
    tokenizer = getattr(lm, "tokenizer", None)
    if tokenizer is None or not hasattr(lm, "apply_chat_template"):
        return lm
    extra = dict(getattr(lm, "chat_template_args", None) or {})
    if hasattr(lm, "hf_chat_template"):  # lm-eval's VLLM
        extra = {"chat_template": lm.hf_chat_template, "enable_thinking": getattr(lm, "enable_thinking", None), **extra}
    lm.apply_chat_template = lm_eval_renderer(tokenizer, extra)
    return lm
