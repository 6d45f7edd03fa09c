"""Every test in this folder is marked e2e, so `-m e2e` and `-m "not e2e"` choose by folder."""

from __future__ import annotations

from pathlib import Path

import pytest

E2E = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the real-process tests e2e (a conftest's collection hook sees every item, so filter by path)."""
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.e2e)
