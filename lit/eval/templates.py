"""Template sets: the texts whose embeddings, averaged, make one class's zero-shot weight.

A template is a function of the whole `Category` (not of a class name): the `paper` set
is the class's training caption, which has no "{}" slot. Sets:

- `paper`: the training caption "A photo of the {common name} {supercategory} {genus species}"
  (repeated fields dropped, the run's caption prefix).
- `train`: one caption per recipe the run trained with (the recipe, or each of `mixed`).
- `openai`: open_clip's 80 OPENAI_IMAGENET_TEMPLATES applied to the class label
  "{common name} ({genus species})", or the binomial alone when it has no common name.
- `simple`: "a photo of a {common name}.", "a photo of {genus species}.", "a photo of the {label}."
  (the label as in `openai`).
- a file: one template per line; `{}` is the class label as in `openai`, and named fields
  `{common_name}`, `{name}`, `{supercategory}`, `{kingdom}` ... `{genus}`, `{specific_epithet}`
  are the category's metadata. Blank lines and lines starting with `#` are skipped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from open_clip import OPENAI_IMAGENET_TEMPLATES

from lit.config import CaptionConfig
from lit.configlib import ConfigError
from lit.data.captions import RECIPE_COLUMNS, caption
from lit.data.inat import Category

Template = Callable[[Category], str]
BUILTIN = ("paper", "train", "openai", "simple")
FIELDS = ("common_name", "name", "supercategory", "kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet")


@dataclass(frozen=True)
class TemplateSet:
    """Named templates whose text embeddings are averaged into one class embedding."""

    name: str
    templates: tuple[Template, ...]

    def texts(self, category: Category) -> list[str]:
        """Every text of this set for one class (for display and tests)."""
        return [t(category) for t in self.templates]


def label(common_name: str, name: str) -> str:
    """"{common name} ({binomial})", or the binomial when iNat has no English name for it."""
    return f"{common_name} ({name})" if common_name and common_name.casefold() != name.casefold() else name


def class_label(category: Category) -> str:
    """`label` of a category."""
    return label(category.common_name, category.name)


def _fields(category: Category) -> dict[str, str]:
    return {f: getattr(category, "class_" if f == "class" else f) for f in FIELDS}


def _caption(recipe: str, prefix: str, category: Category) -> str:
    return caption(category, recipe, prefix)


def _on_label(template: Callable[[str], str], category: Category) -> str:
    return template(class_label(category))


def _from_line(line: str, category: Category) -> str:
    return line.format(class_label(category), **_fields(category))


def _simple(kind: int, category: Category) -> str:
    common = category.common_name or category.name
    return (f"a photo of a {common}.", f"a photo of {category.name}.", f"a photo of the {class_label(category)}.")[kind]


def _train_recipes(captions: CaptionConfig) -> tuple[str, ...]:
    return tuple(captions.mixed_recipes) if captions.recipe == "mixed" else (captions.recipe,)


def builtin_set(name: str, captions: CaptionConfig) -> TemplateSet:
    """One of BUILTIN; `paper` and `train` follow the run's caption config (prefix, recipes)."""
    if name == "paper":
        return TemplateSet(name, (functools.partial(_caption, "paper", captions.prefix),))
    if name == "train":
        recipes = [r for r in _train_recipes(captions) if r in RECIPE_COLUMNS]
        return TemplateSet(name, tuple(functools.partial(_caption, r, captions.prefix) for r in recipes))
    if name == "openai":
        return TemplateSet(name, tuple(functools.partial(_on_label, t) for t in OPENAI_IMAGENET_TEMPLATES))
    if name == "simple":
        return TemplateSet(name, tuple(functools.partial(_simple, k) for k in range(3)))
    raise ConfigError("", "eval.templates",
                      f"unknown template set {name!r}; choose from {', '.join(BUILTIN)} or give a file path")


# Two categories that differ in every field: a template that gives both the same text has no slot.
_PROBES = tuple(
    Category(id=i, name=f"Genus{i} species{i}", common_name=f"Common Name {i}", supercategory=f"Super{i}", kingdom=f"K{i}",
             phylum=f"P{i}", class_=f"C{i}", order=f"O{i}", family=f"F{i}", genus=f"Genus{i}", specific_epithet=f"species{i}")
    for i in (1, 2)
)


def load_template_file(path: str | Path) -> TemplateSet:
    """Templates from a text file, one per line, each checked against a probe category."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), "eval.templates", f"cannot read the template file ({err}): give a UTF-8 text file") from err
    lines = [(n, raw.strip()) for n, raw in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise ConfigError(str(path), "eval.templates",
                          "the template file holds no templates: write one per line, with {} for the class")
    templates = []
    for n, line in lines:
        try:
            texts = {_from_line(line, probe) for probe in _PROBES}
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(
                str(path), f"line {n}",
                f"{line!r} is not a valid template ({type(err).__name__}: {err}); use {{}} for the class label "
                f"or named fields {{{'}, {'.join(FIELDS)}}}; double literal braces as {{{{ }}}}",
            ) from err
        if len(texts) == 1:
            raise ConfigError(str(path), f"line {n}", f"{line!r} has no {{}} or named field: every class would get the same text")
        templates.append(functools.partial(_from_line, line))
    return TemplateSet(path.name, tuple(templates))


def resolve_templates(specs: Sequence[str], captions: CaptionConfig | None = None) -> list[TemplateSet]:
    """Template sets for `eval.templates` entries: built-in names or template files."""
    captions = captions or CaptionConfig()
    if not specs:
        raise ConfigError("", "eval.templates", f"needs at least one template set ({', '.join(BUILTIN)} or a file)")
    sets = []
    for spec in specs:
        spec = spec.strip()
        if spec in BUILTIN:
            sets.append(builtin_set(spec, captions))
        elif Path(spec).is_file():
            sets.append(load_template_file(spec))
        else:
            raise ConfigError("", "eval.templates", f"{spec!r} is neither a template set ({', '.join(BUILTIN)}) nor a file")
    return sets


def parse_template_list(text: str) -> tuple[str, ...]:
    """`paper,openai` → ("paper", "openai") (the command-line form)."""
    return tuple(s.strip() for s in text.split(",") if s.strip())


__all__ = [
    "BUILTIN", "FIELDS", "Template", "TemplateSet", "builtin_set", "class_label", "label", "load_template_file",
    "parse_template_list", "resolve_templates",
]
