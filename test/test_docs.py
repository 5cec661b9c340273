"""README.md and docs/: the README stays short and links every page; every relative link, anchor, file
path, `bisenetv2` subcommand, script and `python -m` module they name exists. Reads text only (the
subcommand list comes from the CLI parser, which does not import torch)."""

from __future__ import annotations

import argparse
import glob
import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
PAGE_IDS = [page.relative_to(ROOT).as_posix() for page in PAGES]
README_MAX_LINES = 200

# Paths from the repository root, and module paths relative to the package (as docs/architecture.md writes them).
ROOT_PATH = re.compile(r"(?<![\w/.~$-])((?:bisenetv2_ros|training|test|config|scripts|launch|docs)/[\w/{},.*-]*"
                       r"\.(?:py|yaml|sh|jpg|png|md|rviz|pt))\b")
PACKAGE_PATH = re.compile(r"(?<![\w/.~$-])((?:models|weights|inference|ros|cli|benchmarks)/[\w/{},.*-]*\.py)\b")
SUBCOMMAND = re.compile(r"(?<![\w/.-])bisenetv2 ([a-z][a-z0-9-]*)")
SCRIPT = re.compile(r"\bpython3? ((?:training|test)/[\w/]+\.py)")
MODULE = re.compile(r"\bpython3? -m ((?:bisenetv2_ros|training)(?:\.\w+)*)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def split_code(text: str) -> tuple[str, list[str]]:
    """(prose with code blocks removed, code pieces: fenced and indented blocks, inline spans)."""
    prose, code, block, fenced = [], [], [], False
    previous_blank, indented = True, False
    for line in text.splitlines():
        if line.startswith("```"):
            if fenced:
                code.append("\n".join(block))
                block = []
            fenced = not fenced
            continue
        if fenced:
            block.append(line)
            continue
        # an indented code block starts after a blank line (docs/training.md uses them)
        indented = line.startswith("    ") and (previous_blank or indented)
        if indented:
            code.append(line)
        else:
            prose.append(line)
        previous_blank = not line.strip()
    text_outside = "\n".join(prose)
    code += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", text_outside)]
    return text_outside, code


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose, _ = split_code(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for line in prose.splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def expand(path: str) -> list[str]:
    """`a/{b,c}.py` -> [a/b.py, a/c.py]."""
    parts = re.split(r"\{([^}]*)\}", path)
    choices = [[piece] if i % 2 == 0 else piece.split(",") for i, piece in enumerate(parts)]
    return ["".join(combination) for combination in itertools.product(*choices)]


def exists(path: Path) -> bool:
    return bool(glob.glob(str(path))) if "*" in str(path) else path.exists()


def subcommands() -> set[str]:
    from bisenetv2_ros.cli.commands import build_parser

    actions = [action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)]
    return set(actions[0].choices)


def code_of(page: Path) -> str:
    return "\n".join(split_code(page.read_text(encoding="utf-8"))[1])


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details into docs/ (at most {README_MAX_LINES})"


def test_readme_links_every_docs_page():
    linked = {(README.parent / target.split("#")[0]).resolve()
              for target in LINK.findall(README.read_text(encoding="utf-8")) if not target.startswith("#")}
    assert DOCS, "docs/ has no pages"
    missing = [page.name for page in DOCS if page.resolve() not in linked]
    assert not missing, f"README.md does not link docs/{missing}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_relative_links_point_at_existing_files_and_headings(page):
    prose, _ = split_code(page.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target} (no file {linked})")
        elif anchor and anchor not in anchors(linked):
            broken.append(f"{target} (no heading #{anchor} in {linked.name})")
    assert not broken, f"{page.name}: broken links: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_named_files_exist(page):
    code = code_of(page)
    missing = []
    for match in ROOT_PATH.finditer(code):
        missing += [path for path in expand(match.group(1)) if not exists(ROOT / path)]
    for match in PACKAGE_PATH.finditer(code):
        missing += [path for path in expand(match.group(1)) if not exists(ROOT / "bisenetv2_ros" / path)]
    assert not missing, f"{page.name} names files that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_named_subcommands_exist(page):
    named = set(SUBCOMMAND.findall(code_of(page)))
    unknown = named - subcommands()
    assert not unknown, f"{page.name} names bisenetv2 subcommands that do not exist: {sorted(unknown)}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_named_scripts_and_modules_exist(page):
    code = code_of(page)
    missing = [script for script in SCRIPT.findall(code) if not (ROOT / script).is_file()]
    for module in MODULE.findall(code):
        base = ROOT / module.replace(".", "/")
        if not (base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()):
            missing.append(f"-m {module}")
    assert not missing, f"{page.name} names scripts or modules that do not exist: {missing}"


def test_the_checks_catch_what_they_are_for(tmp_path):
    """Each check fails on a page that breaks its rule."""
    (tmp_path / "other.md").write_text("# Other page\n\n## A section: here\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n```bash\n# a comment, not a heading\nbisenetv2 segmnt x.jpg\n```\n\n"
                    "[ok](other.md#a-section-here) [bad anchor](other.md#nope) [gone](missing.md)\n\n"
                    "Run `python training/no_such_script.py` or `python -m bisenetv2_ros.no_such_module`;\n"
                    "see `bisenetv2_ros/{conventions,no_such}.py` and `inference/no_such_backend.py`.\n",
                    encoding="utf-8")
    assert anchors(tmp_path / "other.md") == {"other-page", "a-section-here"}
    assert anchors(page) == {"title"}
    prose, code = split_code(page.read_text(encoding="utf-8"))
    assert LINK.findall(prose) == ["other.md#a-section-here", "other.md#nope", "missing.md"]
    joined = "\n".join(code)
    assert SUBCOMMAND.findall(joined) == ["segmnt"] and "segmnt" not in subcommands()
    assert SCRIPT.findall(joined) == ["training/no_such_script.py"]
    assert MODULE.findall(joined) == ["bisenetv2_ros.no_such_module"]
    paths = [p for m in ROOT_PATH.finditer(joined) for p in expand(m.group(1))]
    assert paths == ["training/no_such_script.py", "bisenetv2_ros/conventions.py", "bisenetv2_ros/no_such.py"]
    assert [exists(ROOT / p) for p in paths] == [False, True, False]
    assert PACKAGE_PATH.findall(joined) == ["inference/no_such_backend.py"]
