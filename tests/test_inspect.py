"""`rlx inspect`: sample dumps written by the real logger render as one self-contained HTML page per step."""

from __future__ import annotations

import math
import sys
from html.parser import HTMLParser

import pytest

from rlx import cli
from rlx.config import LoggerConfig
from rlx.inspect import advantage_colour, write_pages
from rlx.logger import build_logger, knot_stats

TOKENS = ["1", "2", "+", "3", "=", "1", "5", "\n"]
ADVANTAGES = [0.5, 0.5, -0.25, -0.25, 1.0, 1.0, 0.0, 0.0]


class PageParser(HTMLParser):
    """Collects the rendered tokens, knots, error bars, knot points and any external references."""

    def __init__(self):
        super().__init__()
        self.tokens, self.knots, self.errorbars, self.points, self.external = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "span" and "tok" in classes:
            self.tokens.append((int(a["data-t"]), float(a["data-adv"])))
            if "knot" in classes:
                self.knots.append(int(a["data-t"]))
        if tag == "line" and "errorbar" in classes:
            self.errorbars.append(int(a["data-t"]))
        if tag == "circle" and "knot-value" in classes:
            self.points.append(int(a["data-t"]))
        if tag in ("script", "link", "img", "iframe"):
            self.external.append(tag)


def _rows():
    stats = knot_stats([[1.0, 0.0, 1.0, 1.0], [1.0], [0.0, 0.0]])
    return [{"prompt": "12+3=", "completion": "15\n", "reward": 1.0, "advantages": ADVANTAGES, "tokens": TOKENS,
             "knots": [1, 5, 7], **stats},
            {"prompt": "<b>1+1=</b>", "completion": "2", "reward": 0.0, "advantages": [-1.0], "tokens": ["<2>"],
             "knots": [1]}]


def test_knot_stats_hand_computed():
    stats = knot_stats([[1.0, 0.0, 1.0, 1.0], [1.0], [0.0, 0.0], []])
    assert stats["knot_values"] == [0.75, 1.0, 0.0, None]
    assert stats["knot_stderrs"][0] == pytest.approx(math.sqrt(0.25 / 4))  # var(ddof=1) = 0.25, M = 4
    assert stats["knot_stderrs"][1:] == [None, 0.0, None]


def test_pages_render_tokens_knots_and_error_bars(tmp_path):
    logger = build_logger(LoggerConfig(log_samples_every=2, num_samples=4), tmp_path)
    logger.log_samples(2, _rows())
    logger.log_samples(4, _rows()[:1])
    logger.close()
    pages = write_pages(tmp_path)
    assert [p.name for p in pages] == ["step_000002.html", "step_000004.html"]
    parser = PageParser()
    parser.feed(pages[0].read_text())
    assert [t for t, _ in parser.tokens] == list(range(1, 9)) + [1]  # 8 tokens of sample 0, 1 of sample 1
    assert [a for _, a in parser.tokens][:8] == ADVANTAGES
    assert parser.knots == [1, 5, 7, 1]
    assert parser.points == [1, 5, 7]  # sample 1 saved no knot values
    assert parser.errorbars == [1, 7]  # knot 5 has one rollout: no standard error
    assert parser.external == []  # self-contained
    text = pages[0].read_text()
    assert "&lt;b&gt;1+1=&lt;/b&gt;" in text and "&lt;2&gt;" in text  # model output is escaped, never markup


def test_knot_values_must_match_the_knots(tmp_path):
    logger = build_logger(LoggerConfig(log_samples_every=1), tmp_path)
    with pytest.raises(ValueError, match="knot_values has 2 entries for 3 knots"):
        logger.log_samples(1, [{**_rows()[0], "knot_values": [0.5, 1.0]}])
    logger.close()


def test_colours_scale_and_saturate():
    assert advantage_colour(0.0, 1.0) == "rgb(255,255,255)"
    assert advantage_colour(2.0, 1.0) == "rgb(33,102,172)"  # saturated blue
    assert advantage_colour(-1.0, 1.0) == "rgb(178,24,43)"  # saturated red


def test_cli_subcommand_and_missing_step(tmp_path, monkeypatch, capsys):
    logger = build_logger(LoggerConfig(log_samples_every=1), tmp_path)
    logger.log_samples(3, _rows())
    logger.close()
    monkeypatch.setattr(sys, "argv", ["rlx", "inspect", str(tmp_path), "--step", "3", "--out", str(tmp_path / "h")])
    cli.main()
    assert (tmp_path / "h" / "step_000003.html").is_file()
    assert "step_000003.html" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["rlx", "inspect", str(tmp_path), "--step", "9"])
    with pytest.raises(SystemExit, match=r"no samples for step 9 .*steps with samples: \[3\]"):
        cli.main()
