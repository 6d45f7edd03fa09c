"""The garbage collector's settings for the long-running processes (api, worker, relay).

An import allocates a few dozen objects a row (parsed cells, event entries, messages),
and with CPython's default thresholds the cyclic collector's older generations kept
walking everything start-up had built (about 89,000 objects: Litestar's app,
phonenumbers' metadata, the eventsourcing application), which lives as long as the
process anyway. Those objects are frozen out of collection, and young objects are
collected in larger steps. The relay's decoding and message building of an import
batch went from 57-58 to 44-50 µs a row (median of 12 passes over 19,247 rows, two
runs; 42-45 with the collector off). Figures and the command: docs/imports.md.

The price: with the older generations collected this rarely, anything caught in a
reference cycle stays in memory for long. An import batch was (its write held a partial
over itself): the API kept every batch of an import until a full collection, 275 MB at a
million rows where 156 MB is needed. Code on the write and import paths makes no cycles;
tests/integration/test_import_memory.py checks the import's with the collector off.
"""

from __future__ import annotations

import gc
import sys

#: Allocations (net of frees) between young-generation collections; CPython's default is 700.
GEN0_THRESHOLD = 50_000
#: Seconds a thread may hold the GIL while another waits for it; CPython's default is 0.005.
#: An import's store thread waits for the GIL after each of its batch's round trips while
#: the parse and resolve threads run: a SELECT 1 beside two busy threads took 5.7 ms with
#: the default, 2.0 ms with 1 ms (median of three, /tmp script); CPU-bound threads lost
#: no throughput that the import benchmark could see (docs/imports.md).
SWITCH_INTERVAL = 0.001


def settle_heap() -> None:
    """Collect start-up's garbage, freeze what is left, and collect young objects less often;
    hand the GIL to a waiting thread sooner (``SWITCH_INTERVAL``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, 10, 10)
    sys.setswitchinterval(SWITCH_INTERVAL)
