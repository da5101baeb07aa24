"""Built-in task `data=arith`: multi-step integer arithmetic written GSM8K-style.

A problem is a chain of additions and subtractions, e.g. question `47+8-9=?`.
Its reference solution evaluates one operation per line and ends in a GSM8K answer line:

    =55-9
    =46
    #### 46

so answers are checked exactly like math benchmarks (`#### <n>`) and every line start is a reasoning-step
boundary for branching (VinePPO-style knots). Carries and borrows in several steps make the tiny model
err in realistic ways. Generation is seeded; the test split is a fixed set and the train stream
never yields a test question (disjoint by construction).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from rlx.data.base import Problem


@dataclass(frozen=True)
class ArithSpec:
    min_ops: int = 1  # operations (= solution steps) per problem
    max_ops: int = 3
    start_min: int = 10  # the first number is drawn from [start_min, start_max]
    start_max: int = 99
    operand_min: int = 1  # every later operand from [operand_min, operand_max]
    operand_max: int = 9
    test_size: int = 500
    test_seed: int = 1234  # fixed: the test set is the same for every run seed
    operators: str = "+-"  # the operations drawn ("*": products of the running total; data=arith_chain)

    def fields_for_digest(self) -> dict:
        """The spec as tiny-model cache digests see it: `operators` joined later and is left out at its default,
        so models built before it keep their digests."""
        fields = dataclasses.asdict(self)
        if fields["operators"] == "+-":
            del fields["operators"]
        return fields


# `data=arith_long` (conf/data/arith_long.yaml): 6-10 steps per problem, so reference responses run 56-143
# tokens (mean ~100) under the character tokenizer and a mistake in the middle of a chain decides the outcome:
# the horizon on which credit assignment matters. `model=tiny_long` is warm-started on exactly this spec.
LONG_SPEC = ArithSpec(min_ops=6, max_ops=10)


def _draw_problem(rng: random.Random, spec: ArithSpec) -> tuple[str, list[str], int, list[str]]:
    """One problem: question text, solution lines, final answer, and the chat form's step lines
    (`47+8=55`, `55-9=46`). Running totals stay non-negative.

    Each solution line evaluates the leftmost operation and copies the rest of the expression, so every
    step is a local rewrite of the line above (what a small model can learn to do reliably)."""
    n_ops = rng.randint(spec.min_ops, spec.max_ops)
    total = rng.randint(spec.start_min, spec.start_max)
    start, terms = total, []
    for _ in range(n_ops):
        operand = rng.randint(spec.operand_min, spec.operand_max)
        allowed = spec.operators if total >= operand else spec.operators.replace("-", "") or "+"
        op = rng.choice(allowed) if len(allowed) > 1 else allowed  # "+-": draws exactly as before products
        total = _apply(total, op, operand)
        terms.append((op, operand))
    lines, steps, running = [], [], start
    for i, (op, operand) in enumerate(terms):
        after = _apply(running, op, operand)
        steps.append(f"{running}{op}{operand}={after}")
        lines.append("=" + _expression(after, terms[i + 1 :]))
        running = after
    return _expression(start, terms), lines, total, steps


def _apply(total: int, op: str, operand: int) -> int:
    return total + operand if op == "+" else total - operand if op == "-" else total * operand


def _expression(start: int, terms: list[tuple[str, int]]) -> str:
    """`start` then the terms left to right; a product of a sum or difference gets its brackets: (12+5)*3."""
    text, bare_sum = str(start), False
    for op, operand in terms:
        if op == "*" and bare_sum:
            text, bare_sum = f"({text})", False
        text += f"{op}{operand}"
        bare_sum = bare_sum or op in "+-"
    return text


def _make_problem(pid: str, question: str, lines: list[str], answer: int) -> Problem:
    solution = "\n".join([*lines, f"#### {answer}"])
    return Problem(id=pid, question=f"{question}=?", answer=str(answer), solution=solution)


def test_problems(spec: ArithSpec = ArithSpec()) -> list[Problem]:
    """The fixed held-out set (`spec.test_size` distinct questions)."""
    rng = random.Random(spec.test_seed)
    seen: set[str] = set()
    problems: list[Problem] = []
    while len(problems) < spec.test_size:
        question, lines, answer, _ = _draw_problem(rng, spec)
        if question in seen:
            continue
        seen.add(question)
        problems.append(_make_problem(f"arith-test-{len(problems)}", question, lines, answer))
    return problems


def train_problems(n: int, seed: int, spec: ArithSpec = ArithSpec()) -> list[Problem]:
    """`n` training problems for a run seed; never a question of the test split."""
    test_questions = {p.question for p in test_problems(spec)}
    rng = random.Random(f"arith-train-{seed}")
    problems: list[Problem] = []
    while len(problems) < n:
        question, lines, answer, _ = _draw_problem(rng, spec)
        problem = _make_problem(f"arith-train-{seed}-{len(problems)}", question, lines, answer)
        if problem.question not in test_questions:
            problems.append(problem)
    return problems


def few_shot_examples(n: int, spec: ArithSpec = ArithSpec()) -> tuple[tuple[str, str], ...]:
    """`n` worked examples (question, chat answer) for the chat prompt: drawn from a stream of their own, never a
    test question; the answer shows one line per step, then the `#### n` line the grader reads."""
    test_questions = {p.question for p in test_problems(spec)}
    rng = random.Random("arith-few-shot")
    examples: list[tuple[str, str]] = []
    while len(examples) < n:
        question, _, answer, steps = _draw_problem(rng, spec)
        if f"{question}=?" not in test_questions:
            examples.append((f"{question}=?", "\n".join([*steps, f"#### {answer}"])))
    return tuple(examples)


def format_prompt(problem: Problem) -> str:
    """The built-in task's prompt: the question on its own line; the answer starts on the next line."""
    return f"{problem.question}\n"
