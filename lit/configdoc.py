"""The configuration reference (docs/configuration.md), generated from the config tree's field docstrings.

`python -m lit.configdoc --write` refreshes the block between the markers in docs/configuration.md (the
text around it is written by hand); `python -m lit.configdoc` prints the block. tests/test_readme.py fails
when the page and the code drift apart.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path
from typing import Any

from lit import config as config_module
from lit import config_cluster
from lit.configlib import to_dict

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
SOURCES = (config_module, config_cluster)
"""The modules whose dataclasses make up the config tree."""
DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
"""The page that holds the reference between START and END."""


def field_docs() -> dict[str, dict[str, str]]:
    """{class name: {field: docstring}} read from the string literal below each field."""
    docs: dict[str, dict[str, str]] = {}
    nodes = [node for module in SOURCES for node in ast.parse(Path(module.__file__ or "").read_text()).body]
    for node in nodes:
        if not isinstance(node, ast.ClassDef):
            continue
        fields: dict[str, str] = {}
        body = node.body
        for current, following in zip(body, body[1:]):
            if (isinstance(current, ast.AnnAssign) and isinstance(current.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                fields[current.target.id] = " ".join(following.value.value.split())
        docs[node.name] = fields
    return docs


def _default(value: Any) -> str:
    plain = to_dict(value)
    if plain in ("", None):
        return '`""`' if plain == "" else "`null`"
    if isinstance(plain, (list, dict)) and not plain:
        return "`[]`" if isinstance(plain, list) else "`{}`"
    text = str(plain).replace("'", "") if isinstance(plain, list) else str(plain)
    if isinstance(plain, bool):
        text = str(plain).lower()
    return f"`{text}`"


def reference() -> str:
    """Markdown: one table per section, key, default, meaning."""
    docs = field_docs()
    root = config_module.Config()
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    sections = []
    for f in dataclasses.fields(root):
        value = getattr(root, f.name)
        if dataclasses.is_dataclass(value):
            sections.append((f.name, value))
        else:
            lines.append(f"| `{f.name}` | {_default(value)} | {docs['Config'][f.name]} |")
    out = ["### Top level", "", *lines]
    while sections:
        name, section = sections.pop(0)
        cls = type(section)
        title = (cls.__doc__ or "").strip().splitlines()[0]  # dataclasses always have a docstring
        out += ["", f"### `{name}`: {title}", "", "| key | default | meaning |", "| --- | --- | --- |"]
        nested = []
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if dataclasses.is_dataclass(value):  # a sub-section gets its own table, after this one
                nested.append((f"{name}.{f.name}", value))
                continue
            out.append(f"| `{name}.{f.name}` | {_default(value)} | {_doc(docs, cls, f.name)} |")
        sections[:0] = nested
    return "\n".join(out) + "\n"


def _doc(docs: dict[str, dict[str, str]], cls: type, name: str) -> str:
    """A field's docstring, from the class or the nearest base that declares it with one."""
    for klass in cls.__mro__:
        if name in docs.get(klass.__name__, {}):
            return docs[klass.__name__][name]
    raise KeyError(f"{cls.__name__}.{name} has no docstring in lit/config.py or lit/config_cluster.py")


def splice(text: str) -> str:
    """The page's text with the block between the markers replaced by the current reference."""
    if START not in text or END not in text:
        raise ValueError(f"{DOC.name} lacks the markers {START} ... {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{reference()}{END}{tail}"


def main(argv: list[str]) -> int:
    if "--write" in argv:
        DOC.write_text(splice(DOC.read_text()))
        return 0
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
