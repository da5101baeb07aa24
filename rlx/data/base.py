"""Problems: the unit every data set yields and every reward scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    id: str  # stable identifier (split/index), written into every result file
    question: str  # the raw question text (before any prompt template)
    answer: str  # the reference final answer (e.g. "42" or a LaTeX expression)
    solution: str = ""  # reference step-by-step solution, when the data set has one
    meta: dict[str, Any] = field(default_factory=dict)  # subject, level, ... (MATH-500 breakdowns)
