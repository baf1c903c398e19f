"""Process and machine counters from ``/proc`` (Linux only): RSS, CPU time, load, CPU model."""

from __future__ import annotations

import os
import time

#: Clock ticks per second, the unit of ``utime``/``stime`` in ``/proc/<pid>/stat``.
CLK_TCK = os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM``, ``RssAnon``, ``RssFile`` and ``RssShmem`` of ``pid``, in KiB."""
    wanted = {"VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"}
    out: dict[str, int] = {}
    with open("/proc/%d/status" % pid, encoding="ascii") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in wanted:
                out[name] = int(rest.split()[0])
    return out


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS``)."""
    return memory_kib(pid)["VmRSS"]


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time of ``pid`` (all its threads) in clock ticks."""
    with open("/proc/%d/stat" % pid, encoding="ascii") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2 :].split()
    # After "pid (comm) ": state is field 3, utime field 14, stime field 15 (1-based).
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` in seconds."""
    return cpu_ticks(pid) / CLK_TCK


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, from ``/proc/stat``."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def cpu_model() -> str | None:
    """The first ``model name`` of ``/proc/cpuinfo``, or None when there is none."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, encoding="ascii") as f:
                raw = f.read()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
        if ppid == pid:
            found.append(int(name))
    return found


def tree_cpu_ns(pid: int) -> int:
    """CPU time of ``pid`` and of every process below it (a gateway started with
    ``--processes N`` serves from its children), in nanoseconds; see :func:`cpu_ns`."""
    total, todo, seen = 0, [pid], set()
    while todo and len(seen) < 1000:  # bounded: a process tree, not a fork bomb
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total += cpu_ns(current)
        todo.extend(children(current))
    return total


def cpu_ns(pid: int) -> int:
    """CPU time of ``pid`` (all its threads) in nanoseconds, from ``schedstat`` when the kernel
    has it (exact), else from the tick counters of ``stat``."""
    total = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid), encoding="ascii") as f:
                    total += int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return 0
    if total:
        return total
    try:
        return cpu_ticks(pid) * 1_000_000_000 // CLK_TCK
    except OSError:
        return 0


class CPUWindow:
    """CPU use of some processes, of the caller (``self``) and of the whole machine between
    ``start()`` and ``stop()``. :func:`combine` adds several windows up."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._t0 = 0.0
        self._ns: dict[str, int] = {}
        self._machine = (0, 0)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._ns = {k: tree_cpu_ns(p) for k, p in self.pids.items()}
        self._ns["self"] = time.process_time_ns()
        self._machine = machine_ticks()

    def stop(self) -> dict[str, float]:
        """Raw deltas (``*_ns``, ``wall_s``, machine ticks) and percentages, see :func:`rates`."""
        raw: dict[str, float] = {"wall_s": max(time.monotonic() - self._t0, 1e-9)}
        for k, p in self.pids.items():
            raw[k + "_ns"] = tree_cpu_ns(p) - self._ns[k]
        raw["self_ns"] = time.process_time_ns() - self._ns["self"]
        busy, total = machine_ticks()
        raw["machine_busy_ticks"] = busy - self._machine[0]
        raw["machine_total_ticks"] = total - self._machine[1]
        return rates(raw)


def rates(raw: dict[str, float]) -> dict[str, float]:
    """Add ``<name>_cpu_pct`` (percent of one core) for each ``<name>_ns``, and
    ``machine_busy_pct`` (percent of all cores), to a dict of raw deltas."""
    out = {k: v for k, v in raw.items() if not k.endswith("_pct")}
    wall = out["wall_s"]
    for k, v in list(out.items()):
        if k.endswith("_ns"):
            out[k[:-3] + "_cpu_pct"] = 100.0 * v / 1e9 / wall
    total = out.get("machine_total_ticks", 0)
    out["machine_busy_pct"] = 100.0 * out.get("machine_busy_ticks", 0) / total if total else 0.0
    return out


def combine(windows: list[dict[str, float]]) -> dict[str, float]:
    """Several windows as one: raw deltas summed, percentages recomputed."""
    raw: dict[str, float] = {}
    for w in windows:
        for k, v in w.items():
            if k.endswith(("_ns", "_ticks")) or k == "wall_s":
                raw[k] = raw.get(k, 0) + v
    return rates(raw) if raw else {}
