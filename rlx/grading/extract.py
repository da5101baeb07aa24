"""Final-answer extraction and cheap normalisation. Pure string scanning, linear in the text: runs in the
caller's process on untrusted model output and never evaluates it.

Markers of a final answer, by style: `boxed` (every balanced `\\boxed{}`/`\\fbox{}`), `gsm8k` (every `####`,
the value on its line) and `last_number` (every "the answer is"/"answer:" cue followed by a value; when no
marker answers, the final answer-shaped expression: the last number, widened to the LaTeX expression, inline
math or `a/b` fraction it belongs to, so `The answer is $\\frac{3}{4}$.` gives `\\frac{3}{4}` and not `4`);
`auto` reads all three markers.

One rule for several final answers (docs/rewards.md, "One rule for several final answers"): the answer is
every value the completion offers as final, whatever the marker: every box, every `####` line, every cue,
and the values joined to one of them by "or", a list (`42, 43, or 44`, `42 and 43.`) or a hedging remark
(`42, maybe 43`, `42; alternatively 43`, `\\boxed{42} (if I am wrong, it is 7)`). Values equal after
normalisation are one value; different ones form the set `\\{a, b\\}` (math-verify's reading of `a, b` and
of several boxes, `boxed="all"`), so a hedge never matches a single-valued reference. A value right after
"not" is never offered (`The answer is not 42.`).

What a reader cannot see is not read: HTML comments (`<!-- ... -->`, an unclosed one hides the rest) and
`\\phantom{}` groups are dropped first.
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
# Text a reader never sees: an HTML comment (an unclosed one hides the rest) and a LaTeX \phantom group.
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
_PHANTOM = re.compile(r"\\[hv]?phantom\s*(?=\{)")
# A value offered as an alternative to the one before it: "7 or 42", "$7$ or $x = 42$", "7 \lor 42", "42 (or
# 43)", "42, maybe 43", "42; alternatively 43", "\boxed{42} (if I am wrong, it is 7)". The closing `$` of the
# first value's math may come first.
_OR_JOINER = re.compile(
    r"\s*(?:\$|\\\)|\\\])?\s*[,;]?\s*\(?\s*(?:\bor\b|\\text\{\s*or\s*\}|\\lor\b|\\vee\b|\bmaybe\b|\bperhaps\b|"
    r"\bpossibly\b|\balternatively\b|\botherwise\b|\bor\s+else\b|\bif\b[^.\n()$]{0,40}?\b(?:wrong|not|mistaken)\b)"
    r"[\s,]*(?:(?:maybe|perhaps|possibly|even)\s+)?(?:(?:it|this|that|the\s+answer)\s+(?:is|would\s+be|could\s+be|"
    r"might\s+be|may\s+be)\s+)?(?:[A-Za-z]\s*=\s*)?", re.IGNORECASE)
# The next item of a list of values: "42, 43", "42 and 43", "1, 2, ..., 100" (one line). A list item must end
# its item (`_ITEM_END`): "42, and 2 more checks" is not a list.
_LIST_JOINER = re.compile(r"[ \t]*(?:\$|\\\)|\\\])?[ \t]*"
                          r"(?:,[ \t]*(?:(?:\.\.\.|\\[lc]?dots|…)[ \t]*,[ \t]*)?(?:and[ \t]+)?"
                          r"|[ \t]+and[ \t]+|;[ \t]*)")
_ITEM_END = re.compile(r"[ \t]*(?:\$|\\\)|\\\])?[ \t]*(?:[,;.!?)\n]|$|(?:and|or)\b)")
# "not 42", "isn't 42", "never 42": a value a completion rules out, not one it offers.
_NEGATION = re.compile(r"(?:\bnot|n't|\bnever)\s*(?:equal\s+to\s+|be\s+)?\$?\s*$", re.IGNORECASE)
# "The answer is 204", "Final answer: $\frac{3}{4}$", "**Answer:** 7" (markdown bold around the cue).
_ANSWER_CUE = re.compile(r"\b(?:final\s+)?answer\s*(?:is\b\s*:?|:|=)[\s*]*", re.IGNORECASE)
# "We may check our answer: $17 \cdot 44 = 748$" (a MATH-500 solution) verifies an answer, it does not give one
_CHECKING = re.compile(r"\b(?:check|verif|confirm|test|double-check)\w*\s+(?:(?:our|the|my|this|that)\s+)?$",
                       re.IGNORECASE)
_CUE_WINDOW = 300  # the answer after a cue starts right after it: look no further
# hostile text may repeat a marker: the values joined to a marker are looked for around the last 8 of each
# kind, and only the last 8 cues are read (every box and every `####` value still counts)
_MAX_CUES = 8
_BEFORE = 40  # how far before a value a value joined to it may start
# What may stand between a cue and its value: spaces, markdown bold, dollar signs (`$\$18$`, `\$18`, `$18`).
_CUE_GAP = re.compile(r"[\s*]*\$?\s*(?:\\\$)?\s*")
# The end of the sentence that holds a cue's answer (a period followed by a space or the end, not "3.5").
_SENTENCE_END = re.compile(r"\.(?=\s|$)|[!?;\n]")
# A cue's answer that starts as plain arithmetic, "5 + 3 = 8 apples": the last side, 8, is the value.
_ARITHMETIC = re.compile(r"(?:[\d\s.+\-*/^()=]|\\times|\\cdot|\\div)*")
_ALPHANUMERIC = re.compile(r"[0-9A-Za-z]")
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


def strip_hidden(text: str) -> str:
    """`text` without what a reader never sees: HTML comments and `\\phantom{}`/`\\hphantom{}`/`\\vphantom{}`
    groups (each replaced by a space). `\\boxed{41} <!-- \\boxed{42} -->` answers 41."""
    if "<!--" in text:
        text = _HTML_COMMENT.sub(" ", text)
    heads = list(_PHANTOM.finditer(text))
    if not heads:
        return text
    partner = matching_braces(text, heads[0].end())
    pieces, pos = [], 0
    for head in heads:
        if head.start() < pos or head.end() not in partner:
            continue  # inside a phantom already dropped, or unclosed
        pieces.append(text[pos : head.start()])
        pos = partner[head.end()] + 1
    return " ".join(pieces + [text[pos:]])


def one_answer(values: Sequence[str]) -> str | None:
    """The answer a list of offered values gives: the last spelling when they are all the same value after
    normalisation (`\\boxed{42} ... \\boxed{42.0}`), else the set `\\{a, b\\}` of the distinct ones, which
    math-verify compares as a set (so `7 or 42` never matches the reference 42)."""
    distinct: dict[str, str] = {}
    for value in values:
        distinct[normalize_answer(value)] = value  # first occurrence's place, last spelling
    if len(distinct) <= 1:
        return values[-1] if values else None
    return "\\{" + ", ".join(distinct.values()) + "\\}"


Candidate = tuple[int, int, str]  # (start, end, answer text)


def _boxed_spans(text: str) -> list[Candidate]:
    """(start, end, content) of every outermost balanced `\\boxed{...}`/`\\fbox{...}` (or `\\boxed 5`) with
    content, in order. A box inside a box is only braces of the outer one's content; an unclosed box is
    skipped."""
    commands = list(_BOX_COMMAND.finditer(text))
    if not commands:
        return []
    partner = matching_braces(text, commands[0].end())
    found, inside_until = [], -1
    for command in commands:
        if command.start() < inside_until:
            continue
        pos = command.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos < len(text) and text[pos] == "{":
            if pos in partner:
                content = _BOX_COMMAND.sub("", text[pos + 1 : partner[pos]]).strip()
                found.append((command.start(), partner[pos] + 1, content))
                inside_until = partner[pos]
        elif command.end() < pos < len(text):  # `\boxed 5`: the argument is one token
            token = re.match(r"[^\s$]+", text[pos : pos + 200])
            if token:
                found.append((command.start(), pos + token.end(), token.group()))
    return [box for box in found if box[2]]


def _boxed_contents(text: str) -> list[str]:
    return [content for _, _, content in _boxed_spans(text)]


def _box_values(text: str) -> list[str]:
    """Every box's content, and the values joined to one of the last boxes (`\\boxed{42} (or 43)`)."""
    boxes = _boxed_spans(text)
    values = [content for _, _, content in boxes[:-_MAX_CUES]]
    for box in boxes[-_MAX_CUES:]:
        values += _offered_around(text, box)
    return values


def _offered_around(text: str, marked: Candidate) -> list[str]:
    """A marked value (positions in `text`) with the values joined to it (`_or_chain`) in a window around it."""
    start, end, value = marked
    lo = max(0, start - _BEFORE)
    window = text[lo : end + _CUE_WINDOW]
    chosen = (start - lo, end - lo, value)
    return _unboxed(_or_chain(window, [*_candidates(window), chosen], chosen))


def _unboxed(values: list[str]) -> list[str]:
    """`values` with a box read as its content (`$\\boxed{42}$` -> 42); a box cut by the math span around it
    (`$\\boxed{\\$18}$` is cut at `\\$`) offers nothing here, its content is read by the box marker."""
    return [inner for value in values
            for inner in (_boxed_contents(value) if _BOX_COMMAND.search(value) else [value])]


_GSM8K_MARKER = re.compile(r"#{4,}\s*")


def _gsm8k_values(text: str) -> list[str]:
    """The value of every `####`: its line's leading number (with the values joined to it, for the last few
    markers), else the rest of its line up to the next `####`."""
    markers = list(_GSM8K_MARKER.finditer(text))
    values = []
    for k, marker in enumerate(markers):
        stop = markers[k + 1].start() if k + 1 < len(markers) else len(text)
        line = text[marker.end() : min(stop, marker.end() + _CUE_WINDOW)].split("\n", 1)[0].strip()
        number = _LEADING_NUMBER.match(line)
        if number and k >= len(markers) - _MAX_CUES:
            first = (number.start(1), number.end(1), number.group(1))
            values += _unboxed(_or_chain(line, _candidates(line), first))
        elif line:
            values.append(number.group(1) if number else line)
    return values


# ------------------------------------------------------------------------------------------ last_number


def _math_span_candidates(tail: str) -> list[Candidate]:
    found = []
    for match in _MATH_SPAN.finditer(tail):
        content = next(group for group in match.groups() if group is not None).strip()
        if not _ALPHANUMERIC.search(content) or _PROSE.search(content):
            continue  # "$5 for apples and $" is prose between dollar signs, "$\$" an escaped dollar
        value = content if _BOX_COMMAND.search(content) else _right_hand_side(content)  # `\\boxed{x = 5}` whole
        found.append((match.start(), match.end(), value))
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


def _candidates(text: str) -> list[Candidate]:
    """Every answer-shaped expression in `text`: inline math, bare LaTeX fractions/roots, `a/b`, numbers."""
    found = _math_span_candidates(text) + _latex_candidates(text)
    found += [(m.start(), m.end(), m.group()) for m in _SLASH_FRACTION.finditer(text)]
    return found + [(m.start(), m.end(), m.group()) for m in _NUMBER.finditer(text)]


def _widest_by(candidates: list[Candidate], edge: int) -> dict[int, Candidate]:
    """The widest candidate starting (`edge` 0) or ending (`edge` 1) at each position: `3/4` over its `3`."""
    widest: dict[int, Candidate] = {}
    for candidate in candidates:
        held = widest.get(candidate[edge])
        if held is None or candidate[1] - candidate[0] > held[1] - held[0]:
            widest[candidate[edge]] = candidate
    return widest


def _or_chain(text: str, candidates: list[Candidate], chosen: Candidate) -> list[str]:
    """`chosen` with the values joined to it on either side: by "or" or a hedging remark (`_OR_JOINER`:
    "7 or 42", "42, maybe 43"), or as items of one list (`_LIST_JOINER`: "42, 43, or 44", "42 and 43.")."""
    starts, ends = _widest_by(candidates, 0), _widest_by(candidates, 1)
    chain = [chosen]
    while (following := _joined_after(text, starts, chain[-1][1])) is not None and following not in chain:
        chain.append(following)
    while (previous := _joined_before(text, ends, chain[0][0])) is not None and previous not in chain:
        chain.insert(0, previous)
    return [value for _, _, value in chain]


def _joined_after(text: str, starts: dict[int, Candidate], end: int) -> Candidate | None:
    """The value joined to a value ending at `end`: any value after "or" or a hedging remark; after a list
    separator, a value that ends its item ("42, and 2 more checks" is no list)."""
    joiner = _OR_JOINER.match(text, end)
    if joiner and joiner.end() in starts:
        return starts[joiner.end()]
    joiner = _LIST_JOINER.match(text, end)
    item = starts.get(joiner.end()) if joiner else None
    return item if item and _ITEM_END.match(text, item[1]) else None


def _joined_before(text: str, ends: dict[int, Candidate], start: int) -> Candidate | None:
    """The value that a joiner links to a value starting at `start`, looking back `_BEFORE` characters."""
    for end in range(start - 1, max(-1, start - _BEFORE), -1):
        candidate = ends.get(end)
        if candidate and (_OR_JOINER.fullmatch(text, end, start) or _LIST_JOINER.fullmatch(text, end, start)):
            return candidate
    return None


def _starts_a_value(text: str, pos: int) -> bool:
    """Whether a value (a digit, a sign, math or a LaTeX command) starts right after a cue ending at `pos`."""
    gap = _CUE_GAP.match(text, pos, pos + 40)
    return gap is not None and text[gap.end() : gap.end() + 1] in tuple("0123456789-$\\.")


def _cue_values(text: str) -> list[str]:
    """The value after each of the last few "the answer is"/"answer:" cues that a value follows
    (`_after_cue`)."""
    cues = [cue for cue in _ANSWER_CUE.finditer(text) if _starts_a_value(text, cue.end())
            and not _CHECKING.search(text, max(0, cue.start() - 30), cue.start())]
    return [value for cue in cues[-_MAX_CUES:] for value in _after_cue(text, cue.end())]


def _after_cue(text: str, pos: int) -> list[str]:
    """The values right after a cue ending at `pos`: plain arithmetic up to the end of its sentence gives its
    last side ("5 + 3 = 8" -> 8), otherwise the expression there with the values joined to it; a box there
    gives its content. Empty when no expression starts right after the cue."""
    window = text[pos : pos + _CUE_WINDOW]
    candidates = _candidates(window)
    at_cue = [c for c in candidates if _CUE_GAP.fullmatch(window, 0, c[0])]
    if not at_cue:
        return []
    first = min(at_cue, key=lambda c: (c[0], -c[1]))
    end = _SENTENCE_END.search(window, first[0])
    arithmetic = _ARITHMETIC.match(window, first[0], end.start() if end else len(window)).group()
    if "=" in arithmetic and arithmetic.rsplit("=", 1)[1].strip():
        return [arithmetic.rsplit("=", 1)[1].strip()]
    return _unboxed(_or_chain(window, candidates, first))


def _negated(text: str, start: int) -> bool:
    """Whether the value starting at `start` follows "not" ("The answer is not 42"): it is ruled out."""
    return _NEGATION.search(text, max(0, start - 30), start) is not None


def _last_expression(text: str) -> str | None:
    """The answer-shaped expression that ends last and is not negated: a number, `a/b`, a bare LaTeX
    fraction/root or an inline math span that is not prose (ties go to the longer one, so `$\\frac{3}{4}$`
    beats its `4`), with the values joined to it; None when there is none."""
    offset = max(0, len(text) - _TAIL_CHARS)
    tail = text[offset:]
    candidates = [c for c in _candidates(tail) if not _negated(tail, c[0])]
    if candidates:
        return one_answer(_unboxed(_or_chain(tail, candidates, max(candidates, key=lambda c: (c[1], -c[0])))))
    last = None
    for last in _NUMBER.finditer(text, 0, offset):  # noqa: B007 - no candidate in the tail: the last number
        pass
    return last.group() if last else None


# the final-answer markers of each style; `last_number` falls back to `_last_expression` when none answers
_MARKERS: dict[str, Callable[[str], list[str]]] = {
    "boxed": _box_values,
    "gsm8k": _gsm8k_values,
    "last_number": _cue_values,
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
    """The final answer in `text`, or None. `style`: boxed | gsm8k | last_number | auto, or a list: the
    markers read (auto = all three). Every value they offer counts (`one_answer`: one value, or the set of
    the different ones); with `last_number` and no marker, the final expression. Linear time in len(text)."""
    if not isinstance(text, str):
        return None
    text = strip_hidden(text)
    styles = resolve_styles(style)
    values = [value for name in dict.fromkeys(styles) for value in _MARKERS[name](text)]
    if values:
        return one_answer(values)
    return _last_expression(text) if "last_number" in styles else None


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


def has_percent(answer: str) -> bool:
    """Whether `answer` ends in a percent sign (`25\\%`, `25%`, `25\\text{ percent}`)."""
    return _PERCENT.search(answer) is not None


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


def _decimal_values(answer: str) -> list[Decimal]:
    """The values a plain decimal answer can mean: itself, and for a percentage also its fraction
    (`42\\%` -> 42 and 0.42). Empty when the answer is not a plain decimal."""
    text = normalize_answer(answer)
    if not _PLAIN_DECIMAL.fullmatch(text):
        return []
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        return []
    return [value, value / 100] if has_percent(answer.strip()) else [value]


def quick_decision(reference: str, answer: str) -> bool | None:
    """True/False when normalisation alone decides, None when a CAS is needed."""
    if normalize_answer(reference) == normalize_answer(answer):
        return True
    references, answers = _decimal_values(reference), _decimal_values(answer)
    if references and answers:  # decimals have one exact value (a percentage two readings): no CAS needed
        return any(ref == ans for ref in references for ans in answers)
    return None
