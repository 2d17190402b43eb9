"""The README and docs/ keep their promises: the two set-up commands, a command table in step with both
command lines, an index of every page in docs/, links that lead somewhere, and a configuration reference
(docs/configuration.md) that matches the code."""

from __future__ import annotations

import re
from pathlib import Path

from lit import config
from lit.configdoc import DOC, field_docs, splice

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
TABLE_HEADING = "## Commands at a glance"
ROW = re.compile(r"^\|\s*`(lit|python -m launcher) ([a-z][\w-]*)[^`]*`\s*\|", re.MULTILINE)


def section(text: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same level."""
    assert heading in text, f"README.md has no section {heading!r}"
    body = text.split(heading, 1)[1]
    return re.split(r"^## ", body, maxsplit=1, flags=re.MULTILINE)[0]


def test_readme_names_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def test_the_command_table_lists_every_command_of_both_command_lines() -> None:
    from launcher import __main__ as launcher_cli
    from lit.cli import COMMANDS

    rows = ROW.findall(section(README.read_text(), TABLE_HEADING))
    listed = {"lit": [name for tool, name in rows if tool == "lit"],
              "python -m launcher": [name for tool, name in rows if tool == "python -m launcher"]}
    commands = {"lit": set(COMMANDS), "python -m launcher": set(launcher_cli.COMMANDS) | set(launcher_cli.PLUGINS)}
    for tool, names in listed.items():
        assert len(names) == len(set(names)), f"{tool}: a command has more than one row in the README's table"
        assert set(names) == commands[tool], (
            f"the README's table and `{tool}` differ: missing {sorted(commands[tool] - set(names))}, "
            f"not a command {sorted(set(names) - commands[tool])}")


def test_the_readme_indexes_every_page_of_docs() -> None:
    index = section(README.read_text(), "## Documentation")
    for page in sorted(DOCS.glob("*.md")):
        assert f"(docs/{page.name})" in index, f"README.md's documentation index does not list docs/{page.name}"


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.DOTALL), re.MULTILINE):
        found.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return found


def test_relative_links_of_the_readme_and_docs_lead_somewhere() -> None:
    broken = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # code blocks hold no links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_configuration_reference_matches_the_code() -> None:
    assert DOC == DOCS / "configuration.md"
    text = DOC.read_text()
    assert splice(text) == text, "docs/configuration.md is stale: run `python -m lit.configdoc --write`"


def test_every_config_field_has_a_docstring() -> None:
    import dataclasses

    docs = field_docs()
    for cls in (config.Config, config.DataConfig, config.CaptionConfig, config.ShardConfig, config.ModelConfig,
                config.TrainConfig, config.CheckpointConfig, config.EvalConfig, config.SlurmConfig, config.ContainerConfig):
        for f in dataclasses.fields(cls):
            assert docs[cls.__name__].get(f.name), f"{cls.__name__}.{f.name} has no docstring"
