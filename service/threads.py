"""Thread pools for work that holds a thread for long (an import, a mail send, an export's read), apart from the loop's executor.

Litestar runs every sync handler (GET /contacts and the rest) in the event loop's executor:
min(32, cores + 4) threads, six on two cores. Work that holds one of them for seconds or
minutes keeps every sync request waiting once six such are in progress. Each such kind of
work gets a pool of its own: beyond the pool's size that kind waits, and nothing else does
(tests/integration/test_import_threads.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: Imports run in the request (file and JSON), each for as long as it lasts; ``Prefer:
#: respond-async`` queues an import for the worker instead.
IMPORTS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="import")
#: Export mails: a send to a slow provider takes seconds (each account has an hourly quota).
MAIL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mail")
#: Downloads (exports, import reports) reading the database into their spool files (service/spool.py):
#: each holds a connection of the read pool while it reads, whatever its client's pace.
EXPORTS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="export")


async def run_in(pool: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """``asyncio.to_thread`` on ``pool``: ``fn`` in one of its threads, with the caller's context."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(pool, call)
