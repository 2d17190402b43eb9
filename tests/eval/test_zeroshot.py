"""The zero-shot classifier: open_clip's builder, exact trimming, bounded blocks, the real 10,000 classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from open_clip import build_zero_shot_classifier

from lit.data.inat import RANKS, load_categories_csv
from lit.data.taxonomy import Taxonomy
from lit.data.toy import toy_categories
from lit.eval.metrics import count_batch, summarize
from lit.eval.templates import resolve_templates
from lit.eval.zeroshot import build_classifier, class_blocks
from lit.model import BuiltModel

SHARED_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "inat2021-categories.csv"


def test_classifier_matches_open_clip_and_is_unit_norm(tiny: BuiltModel) -> None:
    cats = toy_categories()
    sets = resolve_templates(["paper", "simple"])
    ours = build_classifier(tiny.model, tiny.tokenizer, cats, sets, class_block=5, text_batch=7)
    # open_clip on full-length (untrimmed) tokens, all classes at once, sets weighted equally
    per_set = [build_zero_shot_classifier(tiny.model, tiny.tokenizer, cats, list(s.templates), num_classes_per_batch=None).T
               for s in sets]
    reference = F.normalize(torch.stack(per_set).sum(0), dim=-1)
    assert ours.shape == (len(cats), tiny.model.text.text_projection.shape[1])
    assert torch.allclose(ours, reference, atol=1e-5)
    assert torch.allclose(ours.norm(dim=1), torch.ones(len(cats)), atol=1e-5)


def test_class_blocks_cover_every_class_once() -> None:
    blocks = class_blocks(1001, 256)
    assert [len(b) for b in blocks] == [256, 256, 256, 233]
    assert [i for b in blocks for i in b] == list(range(1001))


@pytest.mark.skipif(not SHARED_CSV.is_file(), reason=f"{SHARED_CSV} is absent (shared reference data)")
def test_inat2021_classifier_builds_with_unit_rows(tiny: BuiltModel) -> None:
    cats = load_categories_csv(SHARED_CSV)
    assert len(cats) == 10_000
    weights = build_classifier(tiny.model, tiny.tokenizer, cats, resolve_templates(["paper"]))
    assert weights.shape[0] == 10_000
    assert torch.allclose(weights.norm(dim=1), torch.ones(10_000), atol=1e-5)

    # Per-rank accuracy on the real taxonomy (homonym genera included) can only fall from
    # kingdom to species, and species-level accuracy is top-1 itself.
    tax = Taxonomy.of(cats)
    torch.manual_seed(0)
    targets = torch.randint(0, 10_000, (3000,))
    logits = torch.randn(3000, 10_000)
    near = torch.as_tensor(tax.ids[RANKS.index("family")])  # make many predictions land in the true family
    for i, t in enumerate(targets[:1500].tolist()):
        same = (near == near[t]).nonzero().flatten()
        logits[i, same[torch.randint(0, len(same), (1,))]] = 10.0
    result = summarize(count_batch(logits, targets, tax.ids), cats, tax)
    values = list(result["per_rank"].values())
    assert all(a >= b for a, b in zip(values, values[1:])), result["per_rank"]
    assert result["per_rank"]["species"] == result["top1"]
    assert result["per_rank"]["family"] > 45.0
