"""Prompt templates: how a problem's question becomes the text fed to the model.

Evaluation protocol moves benchmark numbers by tens of points (the template alone swings Qwen2.5-Math-1.5B on
MATH-500 by ~29 points, LANDSCAPE §3), so every result file records the template's name and a short sha256
of what was effectively used (see `PromptInfo`).

A template is either plain text (the model continues right after it) or a chat template: one user turn
rendered through `tokenizer.apply_chat_template(..., add_generation_prompt=True)`. A chat template on a
tokenizer without one (the tiny char-level model) falls back to the plain text and says so in the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from rlx.data.base import Problem

log = logging.getLogger(__name__)

QUESTION = "{question}"  # the placeholder; substituted literally (not str.format: LaTeX is full of braces)
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
GSM8K_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str  # contains QUESTION exactly once
    chat: bool = False  # render `text` as a user turn through the tokenizer's chat template
    # Chat templates only: the system turn (None = the chat template's own default, e.g. SmolLM2's "You are a
    # helpful AI assistant ..."; "" = an empty one) and few-shot (question, answer) turns before the question.
    system: str | None = None
    examples: tuple[tuple[str, str], ...] = ()

    def fill(self, question: str) -> str:
        return self.text.replace(QUESTION, question)

    def messages(self, question: str) -> list[dict[str, str]]:
        """The chat turns: system (when set), each example as a user and an assistant turn, then the question."""
        turns = [] if self.system is None else [{"role": "system", "content": self.system}]
        for example_question, answer in self.examples:
            turns += [{"role": "user", "content": self.fill(example_question)},
                      {"role": "assistant", "content": answer}]
        return [*turns, {"role": "user", "content": self.fill(question)}]

    def plain_text(self) -> str:
        """The template as plain text (no chat template): examples as question/answer blocks before it."""
        shots = "".join(f"{self.fill(q)}\n{a}\n\n" for q, a in self.examples)
        return shots + self.text + ("\n" if self.chat else "")


@dataclass(frozen=True)
class PromptInfo:
    """What produced the prompts of a run; written into every result file."""

    name: str
    sha256: str  # short hash of (mode, template text, the tokenizer's chat template when applied)
    chat_applied: bool  # False for plain templates and for chat templates that fell back to plain

    def as_dict(self) -> dict[str, object]:
        return {"prompt_template": self.name, "template_sha256": self.sha256,
                "chat_template_applied": self.chat_applied}


# The plain variants end in a newline so that the answer starts on a line of its own (like data=arith).
TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        PromptTemplate("arith", "{question}\n"),  # the built-in task's format (question, then the answer)
        PromptTemplate("question", "{question}\n"),  # no instruction at all (Dr.GRPO's "no template")
        PromptTemplate("boxed", "{question}\n" + BOXED_INSTRUCTION + "\n"),
        PromptTemplate("boxed_chat", "{question}\n" + BOXED_INSTRUCTION, chat=True),
        PromptTemplate("gsm8k", "{question} " + GSM8K_INSTRUCTION + "\n"),
        PromptTemplate("gsm8k_chat", "{question} " + GSM8K_INSTRUCTION, chat=True),  # verl's GSM8K quickstart
        PromptTemplate("arith_chat", "Compute {question}", chat=True),  # data=arith_chat: few-shot turns before it
    )
}


def resolve_template(spec: str) -> PromptTemplate:
    """A built-in template by name, or a custom plain template: any text containing `{question}`."""
    if spec in TEMPLATES:
        return TEMPLATES[spec]
    if spec.count(QUESTION) == 1:
        return PromptTemplate("custom", spec)
    raise ValueError(f"must be one of {sorted(TEMPLATES)} or a text containing {QUESTION} once, got {spec!r}")


def short_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _has_chat_template(tokenizer) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def prompt_function(template: PromptTemplate, tokenizer=None) -> tuple[Callable[[Problem], str], PromptInfo]:
    """problem -> prompt text, and the info to record. Chat templates need a tokenizer that has one;
    without it they render as their plain text (+ a newline)."""
    use_chat = template.chat and _has_chat_template(tokenizer)
    if template.chat and tokenizer is not None and not use_chat:  # (without a tokenizer the caller says why)
        log.warning("prompt template %r is a chat template but the tokenizer has none: using its plain text",
                    template.name)
    # A chat template rendered as plain text gets the plain variants' trailing newline.
    text = template.plain_text() if not use_chat else template.text
    # The hash covers everything that shapes the prompt text, so two runs with equal hashes saw equal prompts.
    fingerprint = {"mode": "chat" if use_chat else "plain", "text": text,
                   "chat_template": tokenizer.chat_template if use_chat else None}
    if use_chat and (template.system is not None or template.examples):  # (absent otherwise: old hashes stay)
        fingerprint.update(system=template.system, examples=template.examples)
    info = PromptInfo(template.name, short_sha256(json.dumps(fingerprint, sort_keys=True)), use_chat)
    if not use_chat:
        return (lambda problem: text.replace(QUESTION, problem.question)), info

    def chat_prompt(problem: Problem) -> str:
        return tokenizer.apply_chat_template(template.messages(problem.question), tokenize=False,
                                             add_generation_prompt=True)

    return chat_prompt, info
