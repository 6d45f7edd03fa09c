"""A download read from the database at the database's pace, whatever the client's: spooled through a file.

An export used to read its server-side cursor as the client took the bytes: a client on a
slow network (or one that stopped reading) held a connection of the read pool and an open
transaction for the whole download. A few such clients, of any account, took every
connection of the pool, and every other read of the process answered 503; the
transaction's snapshot also held back vacuum for as long. Here a thread of ``threads.EXPORTS``
reads the chunks as fast as the database gives them into an unlinked temporary file, and
lets the connection go; the client reads the file behind it, at its own pace. Memory stays
one chunk; the file takes the export's size on disk until the download ends.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
from collections.abc import Iterator

from command.errors import DomainError
from service import threads

#: The most a read of the file hands over at once, whatever the filler has written ahead of the client.
READ_BYTES = 256 * 1024


class Spooled:
    """Iterates like ``chunks``, which a thread of ``threads.EXPORTS`` writes to a temporary file meanwhile."""

    def __init__(self, chunks: Iterator[bytes]):
        self.fd, path = tempfile.mkstemp(prefix="contacts-export-")
        os.unlink(path)  # gone with the last descriptor, even if the process dies
        self.written = 0
        self.finished = False  # the filler is done (all written, failed, or stopped)
        self.error: BaseException | None = None
        self.abandoned = False  # the reader is done: the filler stops and lets its connection go
        self.changed = threading.Condition()
        threads.EXPORTS.submit(self._fill, chunks)

    def _fill(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in (() if self.abandoned else chunks):
                os.pwrite(self.fd, chunk, self.written)
                with self.changed:
                    self.written += len(chunk)
                    self.changed.notify_all()
                if self.abandoned:
                    break
        except BaseException as exc:  # noqa: BLE001 - the reader raises it, after the bytes written before it
            self.error = exc
        finally:
            try:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # the cursor, the transaction and the connection go now, not when collected
            except BaseException as exc:  # noqa: BLE001 - a connection lost at the end: the reader still finishes
                self.error = self.error or exc
            with self.changed:
                self.finished = True
                self.changed.notify_all()
                if self.abandoned:
                    os.close(self.fd)

    def __iter__(self) -> Iterator[bytes]:
        offset = 0
        try:
            while True:
                with self.changed:
                    while self.written == offset and not self.finished:
                        self.changed.wait()
                    end, finished, error = self.written, self.finished, self.error
                if end > offset:
                    data = os.pread(self.fd, min(end - offset, READ_BYTES), offset)
                    offset += len(data)
                    yield data
                elif error is not None:
                    raise error
                elif finished:
                    return
        finally:
            with self.changed:  # the descriptor is closed by whichever of the two ends last
                self.abandoned = True
                if self.finished:
                    os.close(self.fd)


class SpoolUnavailableError(DomainError):
    """The temporary directory cannot take the download (missing, not writable, full): 503, nothing sent."""

    code = "export_unavailable"


def spooled(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks`` through a ``Spooled`` file, the first read now: a failing query answers an error, not a cut-off file."""
    try:
        reader = iter(Spooled(chunks))
        first = next(reader)
    except OSError as exc:  # the file's; the database's errors are psycopg's, not OSError
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        raise SpoolUnavailableError(f"the service has no room to prepare the download ({exc.strerror} in its"
                                    f" temporary directory {tempfile.gettempdir()}); retry later") from exc
    return itertools.chain([first], reader)
