"""Every test file sits in one level folder, so `make test-unit` and the others run what their names say."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).parents[1]
LEVELS = ("unit", "integration", "e2e")


def test_every_test_file_is_in_a_level_folder() -> None:
    loose = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert loose == [], f"move these into tests/unit, tests/integration or tests/e2e (the README says which is which): {loose}"
    assert sorted(p.name for p in TESTS.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == sorted(LEVELS)
