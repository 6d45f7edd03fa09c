"""Peak memory of every process a benchmark part runs, and the load average meanwhile.

A sampler thread looks, every second, at the benchmark's own descendants (the
API, its worker, NATS, the load generator) and at the embedded PostgreSQL clusters
under the directories it is given (``pg_ctl`` daemonises them, so they are nobody's
children). Python processes and NATS report ``VmHWM``, the kernel's own peak resident
size, so a short spike between two samples is not missed. PostgreSQL is many processes
sharing ``shared_buffers``: adding their RSS would count that memory once per backend,
so its figure is the largest sum of their PSS (shared pages divided among the sharers)
seen at a sample.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Self

import psutil

INTERVAL_S = 1.0


def role_of(cmdline: list[str]) -> str | None:
    """Which part of the system a process is, from its command line (None: not ours to report)."""
    if not cmdline:
        return None
    if Path(cmdline[0]).name == "nats-server":
        return "nats"
    text = " ".join(cmdline)
    if "service.cli" in text or Path(cmdline[0]).name == "contacts" or "contacts serve" in text:
        if "worker" in cmdline:
            return "worker"
        if "relay" in cmdline:
            return "relay"  # the NATS relay, where the worker runs it as a process of its own
        return "api"  # `serve` is the API process; the worker is its child
    if "floor-serve" in text:
        return "floor"  # bench/floor.py: the plain CRUD service the writes are measured against
    if "-m bench serve" in text or "bench serve" in text:
        return "api"
    if Path(cmdline[0]).name == "wrk":
        return "load generator"
    if "locust" in text:
        return "load generator"
    if "bench.imports" in text:
        return "imports client"  # bench/imports.py: makes the files, posts them, reads the exports
    return None


def status_kb(pid: int, field: str) -> int:
    """A field of the process's /proc status in kB (VmHWM, VmRSS, ...); 0 when it is gone or has none."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _machine_busy_s() -> float:
    """CPU seconds every core of the machine spent on anything but idling, since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            ppid = int(text[text.rindex(")") + 2:].split(maxsplit=2)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    return children


def _descendants(children: dict[int, list[int]], pid: int) -> list[int]:
    found, stack = [], list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(children.get(child, []))
    return found


def _postmasters(roots: list[Path]) -> list[int]:
    pids = []
    for root in roots:
        # A data directory itself, or a service data dir (pg/), or a folder of those (*/pg/);
        # never a recursive walk, which would visit every file of every cluster.
        candidates = [root / "postmaster.pid", root / "pg" / "postmaster.pid", *root.glob("*/pg/postmaster.pid")]
        for pid_file in candidates:
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if pid > 0:  # negative while a standalone backend holds the directory
                pids.append(pid)
    return pids


class Sampler:
    """A daemon thread running ``_run`` from the start of a ``with`` block until its end sets ``_stop``."""

    def __init__(self, name: str, join_s: float = 10) -> None:
        self._stop = threading.Event()
        self._join_s = join_s
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self._join_s)


class PeakSampler(Sampler):
    """``with PeakSampler(roots) as s: …`` then ``s.peaks_mb()`` and ``s.load()``."""

    def __init__(self, pg_roots: list[Path] | None = None, interval_s: float = INTERVAL_S):
        super().__init__("peak-sampler")
        self.pg_roots = [Path(p) for p in pg_roots or []]
        self.interval_s = interval_s
        self.peak_kb: dict[str, int] = {}
        self.processes: dict[str, set[int]] = {}
        self.load_samples: list[float] = []
        self.load_start = [round(x, 2) for x in os.getloadavg()]
        self.load_end: list[float] = []
        self.errors = 0
        self.last_error = ""
        self._cpu: dict[int, list] = {}  # pid -> [role, CPU s when first seen, CPU s when last seen]
        self._samples = 0
        self._started = time.monotonic()
        self._ended: float | None = None
        self._machine_start = _machine_busy_s()
        self._machine_end: float | None = None
        me = psutil.Process().cpu_times()
        self._self_start = me.user + me.system
        self._self_end: float | None = None

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._ended = time.monotonic()
        self._machine_end = _machine_busy_s()
        me = psutil.Process().cpu_times()
        self._self_end = me.user + me.system
        self.load_end = [round(x, 2) for x in os.getloadavg()]

    def _note(self, role: str, kb: int, pid: int | None = None) -> None:
        if kb > self.peak_kb.get(role, 0):
            self.peak_kb[role] = kb
        if pid is not None:
            self.processes.setdefault(role, set()).add(pid)

    def _note_cpu(self, role: str, proc: psutil.Process) -> None:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            return
        seconds = times.user + times.system
        if proc.pid not in self._cpu:
            # A process already running at the first sample counts from there; a later one from its start.
            self._cpu[proc.pid] = [role, seconds if self._samples == 0 else 0.0, seconds]
        self._cpu[proc.pid][2] = seconds

    def sample(self) -> None:
        children = _children_map()  # one pass over /proc per sample
        for pid in _descendants(children, os.getpid()):
            try:
                proc = psutil.Process(pid)
                role = role_of(proc.cmdline())
            except psutil.Error:
                continue
            if role is not None:
                self._note(role, status_kb(pid, "VmHWM"), pid)
                self._note_cpu(role, proc)
        for pid in _postmasters(self.pg_roots):
            cluster = []
            for member in (pid, *_descendants(children, pid)):
                try:
                    cluster.append(psutil.Process(member))
                except psutil.Error:
                    continue
            self._note("postgresql", sum(_pss_kb(p.pid) for p in cluster), pid)
            for proc in cluster:
                self._note_cpu("postgresql", proc)
        self.load_samples.append(os.getloadavg()[0])
        self._samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample_safely()
            self._stop.wait(self.interval_s)
        self._sample_safely()

    def _sample_safely(self) -> None:
        try:
            self.sample()
        except Exception as exc:  # noqa: BLE001 - a process that vanished mid-sample: skip this round
            self.errors += 1
            self.last_error = repr(exc)

    def peaks_mb(self) -> dict[str, float]:
        return {role: round(kb / 1024, 1) for role, kb in sorted(self.peak_kb.items())}

    def cpu(self) -> dict[str, Any]:
        """CPU seconds (user + system) per role while sampled, and how many of the machine's cores it kept busy.

        Approximate: a PostgreSQL backend that exits between two samples loses up to its last
        second, which "other processes" (the machine's busy time less ours) then counts.
        """
        wall = (self._ended or time.monotonic()) - self._started
        seconds: dict[str, float] = {}
        for role, first, last in self._cpu.values():
            seconds[role] = seconds.get(role, 0.0) + max(last - first, 0.0)
        me = psutil.Process().cpu_times()
        seconds["benchmark client"] = (self._self_end or me.user + me.system) - self._self_start
        machine = (self._machine_end or _machine_busy_s()) - self._machine_start
        # Whatever else ran on the machine meanwhile (other people's tests, say): it shares the cores.
        seconds["other processes"] = max(machine - sum(seconds.values()), 0.0)
        return {"wall_s": round(wall, 1),
                "seconds": {role: round(s, 1) for role, s in sorted(seconds.items())},
                "cores_busy": {role: round(s / wall, 2) for role, s in sorted(seconds.items())} if wall else {}}

    def load(self) -> dict[str, Any]:
        """1-minute load average at the start, the end, and its highest and mean value in between."""
        samples = self.load_samples or [os.getloadavg()[0]]
        return {"start": self.load_start, "end": self.load_end or [round(x, 2) for x in os.getloadavg()],
                "max_1m": round(max(samples), 2), "mean_1m": round(sum(samples) / len(samples), 2)}
