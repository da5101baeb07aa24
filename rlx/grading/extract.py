"""Final-answer extraction and cheap normalisation. Pure string scanning, linear in the text: runs in the
caller's process on untrusted model output and never evaluates it.

Styles: `boxed` (the last balanced `\\boxed{}`/`\\fbox{}`), `gsm8k` (the text after the last `####`),
`last_number` (the final answer-shaped expression at the end: the last number, widened to the LaTeX
expression, inline math or `a/b` fraction it belongs to, so `The answer is $\\frac{3}{4}$.` gives
`\\frac{3}{4}` and not `4`), and `auto` (= boxed, then gsm8k, then last_number).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

# `auto` tries the strictest marker first: an explicit \boxed{}, then GSM8K's "####", then the final expression.
AUTO_STYLES: tuple[str, ...] = ("boxed", "gsm8k", "last_number")
SINGLE_STYLES: frozenset[str] = frozenset(AUTO_STYLES)

# `\boxed` / `\fbox` not followed by a letter (so `\boxedsymbol` is not a box).
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# Tokens that matter for brace matching: an escaped character (`\{`, `\}`, `\\`) or a bare brace.
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
# A number, with thousands separators only in groups of three so that "1,2,3" reads as three numbers.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
# A number at the start of the text after "####" (GSM8K writes "#### 1,234" or "#### $18").
_LEADING_NUMBER = re.compile(r"[$\s]*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(?![\d/^])")
# The final answer sits at the end: expressions are looked for in this many trailing characters only, which
# also bounds the cost of the non-greedy span patterns below on hostile input.
_TAIL_CHARS = 600
# Inline/display math: $...$, $$...$$, \(...\), \[...\].
_MATH_SPAN = re.compile(r"\$\$([^$]+)\$\$|\$([^$]+)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
# A LaTeX fraction or root written outside math mode (its brace groups are matched separately).
_LATEX_HEAD = re.compile(r"(?:-\s*)?\d*\\(?:[dt]?frac|sqrt)(?![A-Za-z])")
# `3/4`, `-12 / 5`, `2.5/7`.
_SLASH_FRACTION = re.compile(r"-?\d+(?:\.\d+)?\s*/\s*\d+(?:\.\d+)?")
# Two words in a row that are not LaTeX commands: a "$...$" holding them is prose between two currency signs
# ("$5 for apples and $3"), not math.
_PROSE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}\s+[A-Za-z]{2,}")


def matching_braces(text: str, start: int) -> dict[int, int]:
    """Map each `{` at or after `start` to its closing `}` (one linear pass; escaped braces are ignored).

    The partner of a brace depends only on the text after it, so starting mid-text is exact.
    """
    partner: dict[int, int] = {}
    open_positions: list[int] = []  # an explicit stack: 10 000 nested braces must not recurse
    for token in _BRACE_TOKEN.finditer(text, start):
        if token.group() == "{":
            open_positions.append(token.start())
        elif token.group() == "}" and open_positions:
            partner[open_positions.pop()] = token.start()
    return partner


def _extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`/`\\fbox{...}` whose braces balance (or `\\boxed 5`)."""
    commands = list(_BOX_COMMAND.finditer(text))
    if not commands:
        return None
    partner = matching_braces(text, commands[0].end())
    for command in reversed(commands):
        pos = command.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos < len(text) and text[pos] == "{":
            if pos in partner:  # a truncated box (no closing brace) falls back to the one before it
                return text[pos + 1 : partner[pos]].strip()
        elif command.end() < pos < len(text):  # `\boxed 5`: the argument is one token
            token = re.match(r"[^\s$]+", text[pos : pos + 200])
            if token:
                return token.group()
    return None


def _extract_gsm8k(text: str) -> str | None:
    """The answer after the last `####`: its leading number when there is one, else the rest of the line."""
    marker = text.rfind("####")
    if marker < 0:
        return None
    rest = text[marker + 4 :].lstrip()
    line = rest.split("\n", 1)[0].strip()
    number = _LEADING_NUMBER.match(line)
    if number:
        return number.group(1)
    return line or None


# ------------------------------------------------------------------------------------------ last_number

Candidate = tuple[int, int, str]  # (start, end, answer text)


def _math_span_candidates(tail: str) -> list[Candidate]:
    found = []
    for match in _MATH_SPAN.finditer(tail):
        content = next(group for group in match.groups() if group is not None).strip()
        if not content or _PROSE.search(content):
            continue  # "$5 for apples and $" is prose between dollar signs
        found.append((match.start(), match.end(), _right_hand_side(content)))
    return found


def _right_hand_side(content: str) -> str:
    """`x = \\frac{3}{4}` -> `\\frac{3}{4}`: a final answer written as an equation gives its last side."""
    side = content.rsplit("=", 1)[-1].strip()
    return side or content


def _latex_candidates(tail: str) -> list[Candidate]:
    """Bare `\\frac{a}{b}`, `\\dfrac..`, `4\\frac{2}{3}`, `\\sqrt{2}`, `\\sqrt[3]{x}` outside math mode."""
    heads = list(_LATEX_HEAD.finditer(tail))
    if not heads:
        return []
    partner = matching_braces(tail, heads[0].start())
    found = []
    for head in heads:
        pos = head.end()
        if "sqrt" in head.group() and tail.startswith("[", pos):
            close = tail.find("]", pos)
            pos = close + 1 if close > 0 else pos
        groups = 1 if "sqrt" in head.group() else 2
        for _ in range(groups):
            if pos >= len(tail) or tail[pos] != "{" or pos not in partner:
                break
            pos = partner[pos] + 1
        else:
            found.append((head.start(), pos, tail[head.start() : pos]))
    return found


def _extract_last_number(text: str) -> str | None:
    """The answer-shaped expression that ends last: a number, `a/b`, a bare LaTeX fraction/root or an inline
    math span that is not prose (ties go to the longer one, so `$\\frac{3}{4}$` beats its `4`)."""
    offset = max(0, len(text) - _TAIL_CHARS)
    tail = text[offset:]
    candidates = _math_span_candidates(tail) + _latex_candidates(tail)
    candidates += [(m.start(), m.end(), m.group()) for m in _SLASH_FRACTION.finditer(tail)]
    candidates += [(m.start(), m.end(), m.group()) for m in _NUMBER.finditer(tail)]
    if candidates:
        return max(candidates, key=lambda c: (c[1], -c[0]))[2]
    last = None
    for last in _NUMBER.finditer(text, 0, offset):  # noqa: B007 - no candidate in the tail: the last number
        pass
    return last.group() if last else None


_EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": _extract_boxed,
    "gsm8k": _extract_gsm8k,
    "last_number": _extract_last_number,
}


def resolve_styles(style: str | Sequence[str]) -> tuple[str, ...]:
    """`"auto"` -> its chain; a single style -> a 1-tuple; a sequence of styles is tried in order."""
    styles = (style,) if isinstance(style, str) else tuple(style)
    expanded: list[str] = []
    for name in styles:
        if name == "auto":
            expanded.extend(AUTO_STYLES)
        elif name in SINGLE_STYLES:
            expanded.append(name)
        else:
            known = sorted(SINGLE_STYLES)
            raise ValueError(f"unknown extraction style {name!r}; use one of {known} or 'auto'")
    return tuple(expanded)


def extract_answer(text: str, style: str | Sequence[str] = "auto") -> str | None:
    """The final answer in `text`, or None. `style`: boxed | gsm8k | last_number | auto, or a list tried in
    order (auto = boxed, then ####, then the final expression). Linear time in len(text)."""
    if not isinstance(text, str):
        return None
    for name in resolve_styles(style):
        answer = _EXTRACTORS[name](text)
        if answer:
            return answer
    return None


# ------------------------------------------------------------------------------------------ normalisation

_THOUSANDS_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PLAIN_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?")
# Whitespace is dropped unless it separates two letters ("\pi r" must not become "\pir").
_DROPPABLE_SPACE = re.compile(r"(?<![A-Za-z])\s+|\s+(?![A-Za-z])")


# A trailing percent sign: `25\%` and `25` are the same answer (the convention of MATH's graders).
_PERCENT = re.compile(r"\s*(?:\\%|%|\\text\{\s*\\?%\s*\}|\\text\{\s*percent\s*\})\s*$")


def strip_percent(answer: str) -> str:
    r"""`25\%` -> `25` (math-verify parses neither `25\%` nor `25%`)."""
    return _PERCENT.sub("", answer)


def normalize_answer(answer: str) -> str:
    """A cheap canonical form for string comparison (never a math decision on its own for non-numbers)."""
    text = strip_percent(answer.strip()).replace("\\$", "").replace("$", "").replace("\\!", "")
    text = _DROPPABLE_SPACE.sub("", text).rstrip(".")
    if _THOUSANDS_NUMBER.fullmatch(text):  # only number-shaped commas: "(1,2)" must keep its comma
        text = text.replace(",", "")
    if _PLAIN_DECIMAL.fullmatch(text) and "." in text:
        text = text.rstrip("0").rstrip(".")  # "18.00" -> "18"
    if text == "-0":
        text = "0"
    return text


def quick_decision(reference: str, answer: str) -> bool | None:
    """True/False when normalisation alone decides, None when a CAS is needed."""
    ref, ans = normalize_answer(reference), normalize_answer(answer)
    if ref == ans:
        return True
    if _PLAIN_DECIMAL.fullmatch(ref) and _PLAIN_DECIMAL.fullmatch(ans):
        try:
            return Decimal(ref) == Decimal(ans)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
            return None
    return None
