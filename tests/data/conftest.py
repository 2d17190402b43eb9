"""Fixtures of the data tests: one small toy dataset per session, the shared reference data when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit.data.toy import write_toy_inat

# The folder `../shared/data` beside the repository root (never copied into the repository).
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CATEGORIES_CSV = SHARED_DATA / "inat2021-categories.csv"
TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS = 10, 3, 1


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Toy iNat (32 species, 10 train / 3 val / 1 test image each, 48 px); read-only for tests."""
    return write_toy_inat(tmp_path_factory.mktemp("toy") / "inat", seed=0, train_per_class=TRAIN_PER_CLASS,
                          val_per_class=VAL_PER_CLASS, image_size=48, test_per_class=TEST_PER_CLASS)


@pytest.fixture(scope="session")
def categories_csv() -> Path:
    """All 10,000 real iNat2021 categories (skips when the shared data is absent)."""
    if not CATEGORIES_CSV.is_file():
        pytest.skip(f"shared reference data not found at {CATEGORIES_CSV.resolve()} (see shared/data/README.md)")
    return CATEGORIES_CSV
