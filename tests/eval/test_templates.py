"""Template sets: the paper caption, open_clip's templates, files."""

from __future__ import annotations

from pathlib import Path

import pytest
from open_clip import OPENAI_IMAGENET_TEMPLATES

from lit.config import CaptionConfig
from lit.configlib import ConfigError
from lit.data.captions import caption
from lit.data.toy import toy_categories
from lit.eval.templates import class_label, parse_template_list, resolve_templates

CATS = {c.id: c for c in toy_categories()}


def test_paper_is_the_training_caption() -> None:
    (paper,) = resolve_templates(["paper"])
    assert paper.texts(CATS[3308]) == ["A photo of the Buff-tailed Coronet Birds Boissonneaua flavescens"]
    assert paper.texts(CATS[2]) == [caption(CATS[2], "paper")]  # no English name: the binomial once
    (custom,) = resolve_templates(["paper"], CaptionConfig(prefix="An image of a"))
    assert custom.texts(CATS[3308])[0].startswith("An image of a Buff-tailed Coronet")


def test_train_follows_the_run_recipes() -> None:
    (train,) = resolve_templates(["train"], CaptionConfig(recipe="mixed", mixed_recipes=("paper", "scientific")))
    assert train.texts(CATS[3308]) == ["A photo of the Buff-tailed Coronet Birds Boissonneaua flavescens",
                                       "A photo of the Boissonneaua flavescens"]


def test_openai_and_simple_sets() -> None:
    openai, simple = resolve_templates(["openai", "simple"])
    assert len(openai.templates) == len(OPENAI_IMAGENET_TEMPLATES) == 80
    assert openai.texts(CATS[3308])[0] == "a bad photo of a Buff-tailed Coronet (Boissonneaua flavescens)."
    assert class_label(CATS[2]) == "Serpula columbiana"
    assert simple.texts(CATS[3308]) == ["a photo of a Buff-tailed Coronet.", "a photo of Boissonneaua flavescens.",
                                        "a photo of the Buff-tailed Coronet (Boissonneaua flavescens)."]
    assert parse_template_list(" paper, openai ,") == ("paper", "openai")


def test_template_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("# comment\n\na photo of {}.\n{common_name}, a kind of {family} ({class}).\n")
    (mine,) = resolve_templates([str(path)])
    assert mine.name == "mine.txt"
    assert mine.texts(CATS[3308]) == ["a photo of Buff-tailed Coronet (Boissonneaua flavescens).",
                                      "Buff-tailed Coronet, a kind of Trochilidae (Aves)."]


@pytest.mark.parametrize("text, match", [
    ("a photo of {colour}.\n", "line 1"),
    ("# only a comment\n", "no templates"),
    ("ok {}\nthe same for every class\n", "line 2"),
])
def test_bad_template_files_say_what_to_fix(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        resolve_templates([str(path)])


def test_unknown_set() -> None:
    with pytest.raises(ConfigError, match="eval.templates.*neither a template set"):
        resolve_templates(["imagenet"])
