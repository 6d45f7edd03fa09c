"""An import's memory: each batch is freed as soon as it is stored, not when the collector next runs."""

from __future__ import annotations

import gc

from command.domain import ContactImport
from command.imports.service import BATCH_SIZE
from command.unit_of_work import _Write
from tests.support import Service

ROWS = 3 * BATCH_SIZE  # three batches, two of them stored at once


def _csv(rows: int) -> bytes:
    lines = ["phone,first_name"] + [f"+2547{12_000_000 + i:08d},Row{i}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def test_an_imports_batches_are_freed_without_the_cycle_collector(service: Service) -> None:
    """The API imports in its own process: a batch caught in a reference cycle stays in memory (its
    rows, events and keys) until the collector's oldest generation runs, which the service runs
    rarely (service/heap.py). With the collector off during the import, nothing of a batch is left."""
    api = service.client()
    gc.collect()
    gc.disable()
    try:
        r = api.post("/api/v1/contacts/import", files={"file": ("c.csv", _csv(ROWS), "text/csv")})
        assert r.status_code == 201, r.text
        assert r.json()["imported"] == ROWS
        # The job's last save (its Completed event) commits in a group, whose writer thread
        # holds it until the next group: one small write, not a batch.
        batches = [o for o in gc.get_objects() if isinstance(o, _Write)
                   and any(isinstance(e, ContactImport.Progressed) for e in o.events)]
        assert batches == [], f"{len(batches)} of the {ROWS // BATCH_SIZE} stored batches still in memory"
    finally:
        gc.enable()
