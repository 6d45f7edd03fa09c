"""Group commits (creates, and other single writes): who goes together, when the next group starts, and
what a failure costs whom.

The stores here stand in for ``create_contacts`` and for a unit of work's transaction, so
that the test decides when each group commits; the threads and the event loop are real.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import psycopg

from command.group_commit import LoopGroups, WriteGroups
from command.unit_of_work import NewContact, _Write


def new(name: str) -> NewContact:
    contact = uuid.uuid4()
    return NewContact(uuid.uuid4(), uuid.uuid4(), contact, b"k" * 32, False, None, None, name, [])  # type: ignore[arg-type]


class Store:
    """Records each group's names; holds a group's statement until released; fails groups holding ``bad``."""

    def __init__(self, hold: bool = False, bad: str = "", flush_fails: bool = False):
        self.groups: list[list[str]] = []
        self.hold, self.bad, self.flush_fails = hold, bad, flush_fails
        self.release = threading.Semaphore(0)
        self.started = threading.Semaphore(0)
        self.flushed = threading.Event()

    def __call__(self, group: list[NewContact], committed: Any) -> None:
        self.groups.append([n.row for n in group])
        self.started.release()
        if self.hold:
            self.release.acquire()
        if any(n.row == self.bad for n in group):
            raise ValueError(f"cannot store {self.bad}")
        for n in group:
            n.holder = n.contact_id
        committed()
        if self.flush_fails:
            raise ConnectionError("lost during the flush wait")
        self.flushed.wait(5)


async def create(commit: LoopGroups[NewContact], item: NewContact) -> Any:
    """Submit a create; its answer, as ``UnitOfWork.create`` reads it."""
    await commit.submit(item)
    return item.holder


async def started(store: Store) -> None:
    assert await asyncio.to_thread(store.started.acquire, True, 5)


def test_a_create_alone_is_stored_at_once_as_a_group_of_one() -> None:
    store = Store()
    store.flushed.set()
    commit = LoopGroups(store)
    one = new("a")
    assert asyncio.run(create(commit, one)) == one.contact_id
    assert store.groups == [["a"]] and (commit.groups, commit.grouped) == (1, 1)


def test_creates_that_arrive_while_a_group_is_written_go_together_and_start_when_it_commits() -> None:
    store = Store(hold=True)
    commit = LoopGroups(store)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(create(commit, new("a")))
        await started(store)  # "a" is being written: the next ones queue
        rest = [asyncio.ensure_future(create(commit, new(n))) for n in ("b", "c", "d")]
        await asyncio.sleep(0.05)
        assert store.groups == [["a"]]  # nothing starts while "a"'s statement runs
        store.release.release()  # "a" commits; its flush wait has not ended (flushed is unset)
        await started(store)
        assert store.groups == [["a"], ["b", "c", "d"]]  # the next group started before "a" was flushed
        assert not first.done()
        store.release.release()
        store.flushed.set()
        return await asyncio.gather(first, *rest)

    holders = asyncio.run(scenario())
    assert all(isinstance(h, uuid.UUID) for h in holders) and len(set(holders)) == 4


def test_a_group_whose_statement_fails_stores_each_create_alone_so_only_the_bad_one_fails() -> None:
    store = Store(hold=True, bad="c")
    store.flushed.set()
    commit = LoopGroups(store)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(create(commit, new("a")))
        await started(store)
        rest = [asyncio.ensure_future(create(commit, new(n))) for n in ("b", "c", "d")]
        await asyncio.sleep(0.01)
        store.hold = False
        store.release.release()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    a, b, c, d = asyncio.run(scenario())
    assert isinstance(c, ValueError) and "cannot store c" in str(c)
    assert all(isinstance(h, uuid.UUID) for h in (a, b, d))
    assert store.groups[:2] == [["a"], ["b", "c", "d"]]
    assert sorted(map(tuple, store.groups[2:])) == [("b",), ("c",), ("d",)]  # each alone, once


def test_a_group_that_committed_but_lost_its_flush_wait_fails_every_create_and_stores_none_again() -> None:
    store = Store(flush_fails=True)
    commit = LoopGroups(store)

    async def scenario() -> list[Any]:
        return await asyncio.gather(*(create(commit, new(n)) for n in ("a", "b", "c")), return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert sum(len(g) for g in store.groups) == 3  # written once each: a committed write is never redone


def test_a_group_holds_at_most_its_limit() -> None:
    store = Store(hold=True)
    commit = LoopGroups(store, limit=2)

    async def scenario() -> None:
        first = asyncio.ensure_future(create(commit, new("a")))
        await started(store)
        rest = [asyncio.ensure_future(create(commit, new(n))) for n in ("b", "c", "d", "e", "f")]
        store.hold = False
        store.flushed.set()
        store.release.release()
        await asyncio.gather(first, *rest)

    asyncio.run(scenario())
    assert store.groups == [["a"], ["b", "c"], ["d", "e"], ["f"]]
    assert (commit.groups, commit.grouped) == (4, 6)


# -- single writes (WriteGroups): threads, not the event loop ------------------------------------


def write(name: str) -> _Write:
    return _Write([name], ([name], None), None, [], [], None, {}, None)


class Commit:
    """Stands in for UnitOfWork._commit_writes: records groups, holds the first until released, fails on ``bad``."""

    def __init__(self, bad: str = "", error: BaseException | None = None):
        self.groups: list[list[str]] = []
        self.bad, self.error = bad, error
        self.first = threading.Event()
        self.release = threading.Event()

    def __call__(self, group: list[_Write]) -> None:
        self.groups.append([w.events[0] for w in group])
        if not self.first.is_set():
            self.first.set()
            assert self.release.wait(5)
        if any(w.events[0] == self.bad for w in group):
            raise self.error or ValueError(f"cannot store {self.bad}")
        for w in group:
            w.committed = True


def submit_all(groups: WriteGroups, commit: Commit, names: list[str]) -> list[Any]:
    """``names[0]`` first (held in its transaction), the rest while it is held; each one committed (True) or its error."""
    outcomes: dict[str, Any] = {}

    def one(w: _Write) -> None:
        try:
            groups.submit(w)
            outcomes[w.events[0]] = w.committed
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[w.events[0]] = exc

    threads = [threading.Thread(target=one, args=(write(names[0]),))]
    threads[0].start()
    assert commit.first.wait(5)
    threads += [threading.Thread(target=one, args=(write(n),)) for n in names[1:]]
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 5
    while len(groups._queue) < len(names) - 1 - (groups._writers - 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    commit.release.set()
    for t in threads:
        t.join(5)
    return [outcomes[n] for n in names]


def test_writes_that_arrive_while_one_commits_go_together_and_each_is_committed() -> None:
    commit = Commit()
    groups = WriteGroups(commit, writers=1)
    assert submit_all(groups, commit, ["a", "b", "c", "d"]) == [True] * 4
    assert commit.groups == [["a"], ["b", "c", "d"]]
    assert (groups.groups, groups.grouped) == (2, 4)


def test_a_group_the_server_refused_commits_each_write_alone_so_only_the_bad_one_fails() -> None:
    refused = psycopg.errors.UniqueViolation("duplicate key value violates unique constraint")
    commit = Commit(bad="c", error=refused)
    groups = WriteGroups(commit, writers=1)
    a, b, c, d = submit_all(groups, commit, ["a", "b", "c", "d"])
    assert (a, b, d) == (True, True, True) and c is refused
    assert commit.groups[:2] == [["a"], ["b", "c", "d"]]
    assert sorted(map(tuple, commit.groups[2:])) == [("b",), ("c",), ("d",)]


def test_a_group_whose_fate_is_unknown_answers_every_write_with_the_error_and_commits_none_again() -> None:
    lost = psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")
    commit = Commit(bad="c", error=lost)
    groups = WriteGroups(commit, writers=1)
    outcomes = submit_all(groups, commit, ["a", "b", "c", "d"])
    assert outcomes[0] is True and all(o is lost for o in outcomes[1:])
    assert commit.groups == [["a"], ["b", "c", "d"]]


def test_writer_threads_leave_when_idle_and_come_back_with_the_next_write() -> None:
    commit = Commit()
    commit.first.set()
    groups = WriteGroups(commit, writers=2)
    w = write("a")
    groups.submit(w)
    assert w.committed
    deadline = time.monotonic() + 5
    while groups._threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert groups._threads == 0
    w = write("b")
    groups.submit(w)
    assert w.committed
