"""The documentation's commands and links: every `python -m gan.train|sample|evaluate|evaluator ...` line in a code
block of README.md, docs/*.md or results/**/README.md composes with today's configs (a sweep by the first value of each
comma-separated list), the README's quick start trains on this machine's layout on a CPU, and every relative link (and
its #anchor) points at something that exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from gan.evaluator import legacy_flags
from gan.runs.schema import CONF_DIR, register
from tests.helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "results").glob("**/README.md"))]
CONFIG_OF = {"gan.train": "train", "gan.sample": "sample", "gan.evaluate": "evaluate", "gan.evaluator": "evaluator"}
FENCE = re.compile(r"^\s*```")


def code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every code line: inside ``` fences (indented ones too), or indented by 4 spaces after a
    blank line or another such line outside them; backslash continuations joined."""
    out: list[tuple[int, str]] = []
    fenced, prev_code, prev_blank = False, False, True
    pending: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced, prev_code, prev_blank = not fenced, False, False
            continue
        is_code = fenced or (line.startswith("    ") and line.strip() != "" and (prev_blank or prev_code))
        prev_code, prev_blank = is_code and not fenced, line.strip() == ""
        if not is_code:
            continue
        if pending is not None:
            pending = (pending[0], pending[1] + " " + line.strip())
        else:
            pending = (number, line.strip())
        if pending[1].endswith("\\"):
            pending = (pending[0], pending[1][:-1].rstrip())
            continue
        out.append(pending)
        pending = None
    return out


def shell_commands(line: str) -> list[list[str]]:
    """The words of each command of a shell line (`a && b`: two), comments dropped."""
    out: list[list[str]] = [[]]
    for word in shlex.split(line, comments=True):
        if word in ("&&", "||", ";", "|"):
            out.append([])
        else:
            out[-1].append(word)
    return [words for words in out if words]


def commands() -> list[tuple[str, int, str, list[str]]]:
    """(file, line, module, arguments) of every documented lab command that takes Hydra overrides."""
    found = []
    for path in DOCS:
        for number, line in code_lines(path.read_text()):
            if not re.search(r"\bpython3? -m gan\.", line):  # the layout's tree, tensorboard, ...
                continue
            for words in shell_commands(line):
                while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # OMP_NUM_THREADS=1 ...
                    words = words[1:]
                if len(words) >= 3 and words[0] in ("python", "python3") and words[1] == "-m" and words[2] in CONFIG_OF:
                    found.append((str(path.relative_to(REPO)), number, words[2], words[3:]))
    return found


COMMANDS = commands()


def first_of_each_sweep(args: list[str]) -> list[str]:
    """The overrides of one job of the sweep: -m dropped, `...` placeholders dropped, each list's first value."""
    args = [a for a in args if a not in ("-m", "--multirun", "...")]
    overrides = OverridesParser.create().parse_overrides(args)
    return [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override() else o.input_line
        for o in overrides
    ]


def test_the_docs_hold_the_commands_this_test_checks():
    readme = [c for c in COMMANDS if c[0] == "README.md"]
    assert len([c for c in readme if c[2] == "gan.train"]) >= 6, readme
    assert {c[2] for c in COMMANDS} == set(CONFIG_OF)


@pytest.mark.parametrize(("doc", "line", "module", "args"), COMMANDS, ids=[f"{c[0]}:{c[1]}" for c in COMMANDS])
def test_every_documented_command_composes(doc, line, module, args):
    register()
    if module == "gan.evaluator":
        args = legacy_flags(args)
    overrides = first_of_each_sweep(args)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        compose(CONFIG_OF[module], overrides=overrides, return_hydra_config=True)


def section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_quick_start_trains_on_this_machines_layout_and_a_cpu():
    quick = section((REPO / "README.md").read_text(), "## Quick start")
    words = [w for _, line in code_lines(quick) for w in shell_commands(line)]
    trains = [w for w in words if w[:3] == ["python", "-m", "gan.train"]]
    assert len(trains) >= 5
    for words in trains:
        assert "data.root=../shared/mnist" in words, words
        assert "trainer.accelerator=gpu" not in words, words


def test_every_readme_command_that_reads_mnist_names_its_root():
    for doc, line, module, args in COMMANDS:
        if doc == "README.md" and module != "gan.sample":
            assert "data.root=../shared/mnist" in args, (line, args)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces -> -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            base = slug(m.group(1))
            out.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return out


def links(path: Path) -> list[str]:
    text = re.sub(r"^\s*```.*?^\s*```", "", path.read_text(), flags=re.M | re.S)  # code blocks
    text = re.sub(r"`[^`]*`", "", text)  # code spans
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_every_relative_link_points_at_something_that_exists(doc):
    broken = []
    for target in links(doc):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)
