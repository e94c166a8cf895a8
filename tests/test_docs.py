"""The documentation keeps up with the code: every `museum` command is documented, every page is reachable from
the README, the README's set-up is the two make commands, and no relative link is broken.

The command check walks the click tree as registered at run time, so a command added by any role (including
ones whose module is written later) fails here until a page shows it as `museum <path>`, in the manner of
sqlite-utils' documentation tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from museum.cli import main

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
SETUP_COMMANDS = ["make demo", "make test"]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)


def command_paths(group: click.Group, prefix: str = "") -> list[str]:
    """Every visible command and subcommand below `group`, as the words typed after `museum`."""
    paths = []
    for name in sorted(group.commands):
        command = group.commands[name]
        if command.hidden:
            continue
        path = f"{prefix}{name}"
        paths.append(path)
        if isinstance(command, click.Group):
            paths.extend(command_paths(command, f"{path} "))
    return paths


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def documented_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in [README, *doc_pages()])


def prose(markdown: str) -> str:
    """The text outside code, where links live."""
    return INLINE_CODE.sub("", FENCE.sub("", markdown))


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text(encoding="utf-8")))


def relative_links(path: Path) -> list[str]:
    return [target for target in links(path) if not SCHEME.match(target) and not target.startswith("//")]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, title in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(title)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def section(markdown: str, title_pattern: str) -> str:
    """The body of the first level-2 section whose title matches, up to the next level-2 heading."""
    match = re.search(rf"^## [^\n]*{title_pattern}[^\n]*\n(.*?)(?=^## |\Z)", markdown,
                      re.MULTILINE | re.DOTALL | re.IGNORECASE)
    assert match is not None, f"README.md has no '## …{title_pattern}…' section"
    return match.group(1)


def code_lines(markdown: str) -> list[str]:
    """The commands shown in the fenced blocks of `markdown`, without comments and prompts."""
    lines = []
    for block in FENCE.finditer(markdown):
        for line in block.group(0).splitlines()[1:-1]:
            line = line.split("#", 1)[0].strip().removeprefix("$ ")
            if line:
                lines.append(line)
    return lines


COMMANDS = command_paths(main)


def test_the_command_walk_sees_subcommands() -> None:
    # Guards the test below: a walk that found nothing, or only the top level, would document nothing.
    assert COMMANDS, "museum.cli.main has no commands registered"
    assert any(" " in path for path in COMMANDS), COMMANDS


@pytest.mark.parametrize("path", COMMANDS)
def test_every_command_is_documented(path: str) -> None:
    shown = re.compile(rf"museum {re.escape(path)}(?![\w-])")
    assert shown.search(documented_text()), (
        f"`museum {path}` appears in neither README.md nor docs/*.md: document it (and link its page from README)")


def commands_with_paths(group: click.Group, prefix: str = "museum") -> list[tuple[str, click.Command]]:
    """The group itself and every command below it, hidden ones included, with the words that invoke them."""
    found: list[tuple[str, click.Command]] = [(prefix, group)]
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            found.extend(commands_with_paths(command, f"{prefix} {name}"))
        else:
            found.append((f"{prefix} {name}", command))
    return found


ALL_COMMANDS = commands_with_paths(main)


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS, ids=[path for path, _ in ALL_COMMANDS])
def test_every_command_and_option_has_help_text(path: str, command: click.Command) -> None:
    assert (command.help or command.short_help or "").strip(), f"`{path}` has no help text (docstring or help=)"
    silent = [parameter.opts[0] for parameter in command.params
              if isinstance(parameter, click.Option) and not (parameter.help or "").strip()]
    assert not silent, f"`{path} --help` says nothing about {', '.join(silent)}: give each option a help= text"


def test_hub_run_help_and_docs_agree_on_what_verbose_logs() -> None:
    hub_run = main.commands["hub"].commands["run"]  # type: ignore[attr-defined]
    verbose = next(p for p in hub_run.params if isinstance(p, click.Option) and "--verbose" in p.opts)
    page = " ".join((DOCS / "hub.md").read_text(encoding="utf-8").split())
    assert " ".join((verbose.help or "").split()) in page, (
        "docs/hub.md must say what `museum hub run -v` logs in the words of its --help")


@pytest.mark.parametrize("page", doc_pages(), ids=lambda path: path.name)
def test_every_doc_page_is_linked_from_the_readme(page: Path) -> None:
    targets = {(REPO / target.split("#", 1)[0]).resolve() for target in relative_links(README)}
    assert page.resolve() in targets, f"README.md does not link docs/{page.name}"


def test_the_readme_set_up_is_the_two_make_commands() -> None:
    readme = README.read_text(encoding="utf-8")
    assert code_lines(section(readme, "set.?up")) == SETUP_COMMANDS
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for command in SETUP_COMMANDS:
        target = command.split()[1]
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"the Makefile has no `{target}` target"


@pytest.mark.parametrize("page", [README, *doc_pages()], ids=lambda path: path.name)
def test_relative_links_point_at_existing_files(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)
