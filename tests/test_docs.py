"""The docs stay true: every relative link in README.md and docs/ resolves, and every `rlx train` / `rlx eval`
command quoted in README.md and docs/*.md composes through real Hydra and validates, as the CLI would do before
starting a job (`rlx train --cfg job ...`), without loading a model.

Which commands are checked: every line of a fenced code block, and every inline code span, that runs
`rlx train`, `rlx eval` (also `rlx -v ...`) or `python -m rlx.cli train|eval` (torchrun). A shell line is read
with `shlex` after joining `\\` continuations and dropping `# comments`. A multirun (`-m`, or `rlx eval`'s
comma lists) is expanded into its jobs and each job is checked; a saved sweep (`+sweep=NAME`) is expanded over
its `hydra.sweeper.params` too, with the command line's own values winning, as Hydra's basic sweeper does.

The allow-list of commands that are NOT checked (PLACEHOLDER below, one rule): a command holding a placeholder
for the reader to fill in: `<...>` (`runs/<date>/<time>`), a literal `...` (an elision) or a `[...]` optional
part that starts a word (`[model.path=DIR ...]`); and `-sc` / `--help` lines, which start no job.
Paths on the reader's machine (`model.path=/models/ckpt`) are composed and validated but not looked up.
"""

from __future__ import annotations

import functools
import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from rlx.config import ConfigError, parse_eval_config, parse_run_config
from rlx.sweep_guard import job_overrides

REPO = Path(__file__).resolve().parents[1]
LINKED_DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]  # links: every page, at any depth
COMMAND_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]  # commands: README + docs/*.md
PARSERS = {"train": parse_run_config, "eval": parse_eval_config}

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
COMMAND = re.compile(r"(?:^|[\s;&|(])(?:rlx(?:\s+(?:-v|--verbose))?|-m\s+rlx\.cli)\s+(train|eval)(?=\s|$)(.*)")
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|(?:^|\s)\[")
NOT_A_JOB = {"-sc", "--shell-completion", "-h", "--help", "--hydra-help", "--info"}
FLAGS = {"-m", "--multirun", "-v", "--verbose"}


@dataclass(frozen=True)
class Command:
    where: str  # file:line, for the failure message
    app: str  # train | eval
    args: tuple[str, ...]


# ---------------------------------------------------------------- reading the markdown


def split_markdown(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(prose lines, code-block lines), each as (1-based line number, text)."""
    prose, code, in_fence = [], [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        (code if in_fence else prose).append((number, line))
    return prose, code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces
    to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading anchors on its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    found, counts = set(), {}
    for _, line in split_markdown(path.read_text())[0]:
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            found.add(base if base not in counts else f"{base}-{counts[base]}")
            counts[base] = counts.get(base, 0) + 1
    return found


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every link and image outside code that is not a URL."""
    links = []
    for number, line in split_markdown(path.read_text())[0]:
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
                links.append((number, target))
    return links


def link_error(path: Path, target: str) -> str | None:
    """Why `target` (a link in `path`) does not resolve, or None."""
    file_part, _, anchor = target.partition("#")
    dest = (path.parent / file_part).resolve() if file_part else path
    if not dest.exists():
        return f"{target}: no file {shown(dest)}"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"{target}: {shown(dest)} has no heading with the anchor #{anchor}"
    return None


def shell_lines(code: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Code-block lines with `\\` continuations joined, each at the number of its first line."""
    joined, start, buffer = [], None, ""
    for number, line in code:
        start = number if start is None else start
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        joined.append((start, buffer + line))
        start, buffer = None, ""
    return joined


def commands_in(path: Path) -> list[Command]:
    prose, code = split_markdown(path.read_text())
    candidates = [(n, strip_comment(line)) for n, line in shell_lines(code)]
    candidates += [(n, span[1]) for n, line in prose for span in INLINE_CODE.findall(line)]
    found = []
    for number, line in candidates:
        match = COMMAND.search(line)
        if match:
            found.append(Command(f"{shown(path)}:{number}", match.group(1), tuple(shlex.split(match.group(2)))))
    return found


def strip_comment(line: str) -> str:
    """A shell line without its trailing `# comment` (a `#` that starts a word, outside quotes)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        return " ".join(shlex.quote(token) for token in lexer)
    except ValueError:  # unbalanced quotes: leave the line to fail loudly in shlex.split
        return line


# ---------------------------------------------------------------- composing a command's jobs


def is_checked(command: Command) -> bool:
    """The one allow-list rule (module docstring): placeholders and non-job flags are not checked."""
    return not (NOT_A_JOB & set(command.args) or any(PLACEHOLDER.search(arg) for arg in command.args))


def overrides_of(args: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(job overrides, hydra.* overrides) of a command line; `--cfg job` and the flags carry no override."""
    rest = [a for a in args if a not in FLAGS]
    if "--cfg" in rest:
        at = rest.index("--cfg")
        del rest[at:at + 2]
    unknown = [a for a in rest if "=" not in a]
    assert not unknown, f"not a Hydra override: {unknown}"
    hydra = [a for a in rest if a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    return [a for a in rest if a not in hydra], hydra


def saved_sweep_params(app: str, overrides: list[str], hydra: list[str]) -> list[str]:
    """The `hydra.sweeper.params` of a saved sweep in the command, as overrides the command line's own keys win
    over (Hydra's basic sweeper merges them the same way)."""
    cfg = compose(app, overrides=[*first_job(overrides), *hydra], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    params = OmegaConf.to_container(params, resolve=False) if params is not None else {}
    own = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return [f"{key}={value}" for key, value in params.items() if key not in own]


def first_job(overrides: list[str]) -> list[str]:
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.input_line if not o.is_sweep_override() else f"{o.get_key_element()}={next(o.sweep_string_iterator())}"
            for o in parsed]


def jobs_of(command: Command) -> tuple[list[list[str]], list[str]]:
    overrides, hydra = overrides_of(command.args)
    sweep = saved_sweep_params(command.app, overrides, hydra)
    return job_overrides([*overrides, *sweep]), hydra


def check_command(command: Command) -> int:
    """Compose (Hydra config included) and parse every job of the command; returns the number of jobs."""
    try:
        jobs, hydra = jobs_of(command)
    except (ConfigCompositionException, ConfigError) as err:
        raise AssertionError(f"{command.where}: `{' '.join(command.args)}` fails: {err}") from err
    for number, job in enumerate(jobs):
        try:
            if number == 0:  # the hydra.* overrides resolve too (launcher, run and sweep directories)
                cfg = compose(command.app, overrides=[*job, *hydra], return_hydra_config=True)
                assert cfg.hydra.run.dir and cfg.hydra.sweep.dir
                OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
            check_job(command.app, tuple(job))
        except (ConfigCompositionException, ConfigError) as err:
            raise AssertionError(f"{command.where}: the job `{' '.join([*job, *hydra])}` fails: {err}") from err
    return len(jobs)


@functools.cache
def check_job(app: str, job: tuple[str, ...]) -> None:
    """One job composed and converted to its typed config; cached, as saved sweeps recur across the docs."""
    cfg = compose(app, overrides=[*job, "output_dir=/tmp/rlx-docs"])
    PARSERS[app](OmegaConf.to_container(cfg, resolve=True))


# ---------------------------------------------------------------- the tests

ALL_COMMANDS = [c for path in COMMAND_DOCS for c in commands_in(path)]
CHECKED = [c for c in ALL_COMMANDS if is_checked(c)]


@pytest.mark.parametrize("path", LINKED_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(path):
    errors = [f"{path.relative_to(REPO)}:{n}: {e}" for n, t in relative_links(path) if (e := link_error(path, t))]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", LINKED_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_code_fences_are_closed(path):
    """An unclosed fence turns the rest of a page into code: its links and commands would go unchecked."""
    fences = [n for n, line in enumerate(path.read_text().splitlines(), 1) if FENCE.match(line)]
    assert len(fences) % 2 == 0, f"{path.relative_to(REPO)}: the fence at line {fences[-1]} is never closed"


def test_the_readme_links_every_docs_page():
    linked = {(REPO / t.partition("#")[0]).resolve() for _, t in relative_links(REPO / "README.md")}
    pages = {p.resolve() for p in (REPO / "docs").glob("*.md")}
    assert pages - linked == set(), f"docs pages the README does not link: {sorted(pages - linked)}"


def test_the_readme_keeps_the_ci_command_and_is_short():
    """.ci/run runs the README's test command: both set-up commands stay in a README code block."""
    text = (REPO / "README.md").read_text()
    code = {line.split("#")[0].strip() for _, line in split_markdown(text)[1]}
    assert {"make train", "make test"} <= code
    assert "\nmake test\n" in (REPO / ".ci" / "run").read_text()
    assert len(text.splitlines()) <= 220


@pytest.mark.parametrize("command", CHECKED, ids=lambda c: f"{c.where} rlx {c.app} {' '.join(c.args)}"[:120])
def test_documented_command_composes_and_validates(command):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # joblib.yaml shadows the plugin's schema of that name
        with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
            assert check_command(command) >= 1


def test_the_docs_quote_commands_and_the_allow_list_is_small():
    assert len(CHECKED) >= 30, [c.where for c in CHECKED]
    skipped = [c for c in ALL_COMMANDS if not is_checked(c)]
    assert len(skipped) <= len(ALL_COMMANDS) // 4, [f"{c.where}: {' '.join(c.args)}" for c in skipped]


# ---------------------------------------------------------------- the checker checks what it claims


def test_the_extractor_reads_blocks_inline_code_and_continuations(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Run `rlx train algo=grpo` or `rlx eval`.\n\n```bash\nrlx train -m algo=trepo,ppo \\\n"
                    "    seed=0,1   # a comment\ntorchrun --nproc_per_node=2 -m rlx.cli train sampler=hf\n"
                    "make test\n```\n")
    found = [(c.where.rsplit("/", 1)[-1], c.app, c.args) for c in commands_in(page)]
    assert found == [("page.md:4", "train", ("-m", "algo=trepo,ppo", "seed=0,1")),
                     ("page.md:6", "train", ("sampler=hf",)),
                     ("page.md:1", "train", ("algo=grpo",)), ("page.md:1", "eval", ())]


def test_a_multirun_is_checked_job_by_job():
    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        assert check_command(Command("x", "train", ("-m", "algo=trepo,ppo", "algo.lam=0,0.95"))) == 4
        assert check_command(Command("x", "train", ("-m", "+sweep=compare", "seed=0"))) == 5  # params expanded
        with pytest.raises(AssertionError, match=r"the job `algo=grpo algo\.lam=0\.9` fails"):  # GRPO has no lam
            check_command(Command("x", "train", ("-m", "algo=trepo,grpo", "algo.lam=0.9")))
        with pytest.raises(AssertionError, match=r"algo\.gamam"):
            check_command(Command("x", "train", ("algo.gamam=0.9",)))
        with pytest.raises(AssertionError, match=r"eval\.nn"):
            check_command(Command("x", "eval", ("eval.nn=2",)))
        with pytest.raises(AssertionError, match=r"algo\.gamma"):  # composes, but the typed config rejects it
            check_command(Command("x", "train", ("algo.gamma=1.5",)))
        with pytest.raises(AssertionError, match="hydra/launcher=nope"):
            check_command(Command("x", "train", ("-m", "hydra/launcher=nope")))


def test_the_allow_list_rule():
    assert not is_checked(Command("x", "eval", ("model.path=runs/<date>/<time>/checkpoint",)))
    assert not is_checked(Command("x", "train", ("+experiment=NAME", "[model.path=DIR", "data.path=...]")))
    assert not is_checked(Command("x", "train", ("-sc", "install=bash")))
    assert is_checked(Command("x", "train", ("logger=wandb", "logger.tags=[trepo,arith]")))


def test_links_and_anchors_are_checked(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n## The `x` option, and more\n[ok](#the-x-option-and-more) [img](b.png)\n"
                                   "[bad](#nope) [gone](c.md) [web](https://example.org) `[code](d.md)`\n")
    (tmp_path / "b.png").write_bytes(b"")
    page = tmp_path / "a.md"
    errors = [e for _, t in relative_links(page) if (e := link_error(page, t))]
    assert [e.split(":")[0] for e in errors] == ["#nope", "c.md"]
