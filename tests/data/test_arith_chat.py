"""The arithmetic task's knobs for chat models (data=arith_chat / arith_chain): operators, few-shot turns, the
system prompt; the tiny models' task and cache digests stay exactly as before."""

from __future__ import annotations

import pytest

from rlx.config import ConfigError, to_dataclass
from rlx.data import arith
from rlx.data.base import Problem
from rlx.data.configs import ArithDataConfig
from rlx.data.prompts import TEMPLATES, prompt_function
from rlx.data.tasks import load_task
from rlx.recipes.tiny import TINY_MODELS


def test_the_tiny_models_keep_their_cache_digests():
    # the digests of the models every earlier result was measured on: a changed task spec would rebuild them
    assert {name: spec.digest() for name, spec in TINY_MODELS.items()} == {"tiny": "eec1130745",
                                                                            "tiny_long": "dbf383c294"}


def test_products_are_bracketed_and_evaluated_left_to_right():
    assert arith._expression(12, [("+", 5), ("*", 3)]) == "(12+5)*3"
    assert arith._expression(12, [("*", 5), ("+", 3), ("-", 4), ("*", 2)]) == "(12*5+3-4)*2"
    spec = arith.ArithSpec(min_ops=2, max_ops=3, operators="+-*", test_size=200)
    for p in arith.test_problems(spec):  # the answer is the expression's value under the usual precedence
        assert int(p.answer) == _evaluate(p.question.removesuffix("=?")), p.question
    assert any("*" in p.question for p in arith.test_problems(spec))


def _evaluate(expression: str) -> int:
    """A tiny recursive-descent evaluator of + - * and brackets (the test's own, independent of rlx)."""
    tokens = [t for t in expression.replace("(", " ( ").replace(")", " ) ").replace("+", " + ").replace(
        "-", " - ").replace("*", " * ").split()]

    def term(i):
        value, i = factor(i)
        while i < len(tokens) and tokens[i] == "*":
            right, i = factor(i + 1)
            value *= right
        return value, i

    def factor(i):
        if tokens[i] == "(":
            value, i = expr(i + 1)
            return value, i + 1
        return int(tokens[i]), i + 1

    def expr(i):
        value, i = term(i)
        while i < len(tokens) and tokens[i] in "+-":
            right, j = term(i + 1)
            value, i = (value + right if tokens[i] == "+" else value - right), j
        return value, i

    return expr(0)[0]


def test_few_shot_examples_show_each_step_then_the_answer_line():
    examples = arith.few_shot_examples(2)
    assert examples == (("63-4+8=?", "63-4=59\n59+8=67\n#### 67"), ("41+3+5=?", "41+3=44\n44+5=49\n#### 49"))
    single = arith.few_shot_examples(1, arith.ArithSpec(min_ops=1, max_ops=1, operators="+"))
    assert single == (("69+4=?", "69+4=73\n#### 73"),)
    test_questions = {p.question for p in arith.test_problems()}
    assert not test_questions & {q for q, _ in arith.few_shot_examples(50)}


def test_arith_chat_task_renders_examples_as_plain_text_without_a_chat_template():
    cfg = ArithDataConfig(min_ops=1, max_ops=1, operators="+", prompt_template="arith_chat", few_shot=1)
    task = load_task(cfg, train_size=4, seed=0)
    assert all("+" in p.question and "-" not in p.question for p in task.train + task.test)
    # no tokenizer (or one without a chat template): the turns become plain question/answer blocks
    assert task.prompt(Problem("x", "12+5=?", "17")) == "Compute 69+4=?\n69+4=73\n#### 73\n\nCompute 12+5=?\n"
    assert task.template.examples == (("69+4=?", "69+4=73\n#### 73"),)
    plain, _ = prompt_function(TEMPLATES["arith"])
    assert plain(Problem("x", "12+5=?", "17")) == "12+5=?\n"  # the tiny models' format, unchanged


@pytest.mark.parametrize(("override", "key"), [({"operators": "+/"}, "data.operators"),
                                               ({"operators": "++"}, "data.operators"),
                                               ({"few_shot": -1}, "data.few_shot"),
                                               ({"few_shot": 2}, "data.prompt_template"),
                                               ({"system_prompt": "hi"}, "data.prompt_template")])
def test_bad_chat_arith_settings_name_their_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        to_dataclass(ArithDataConfig, {"name": "arith", **override}, "data").validate()
