"""Facts about the host, from one place: the cores this process may use, and memory readings
for admission, auto slots and the kill guard.

Memory: cgroup v2 (`memory.max` / `memory.current` of our own cgroup) when it has a limit, else
`/proc/meminfo` (MemTotal, MemAvailable). `CARGO_AGENT_MEMORY_SOURCE` names a file holding a
used percentage: the hook tests use to simulate a host under pressure. Anyone can set it, so it
can only make a reading worse: the real reading wins when it is higher.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cargo_agent.errors import UsageError

SOURCE_ENV = "CARGO_AGENT_MEMORY_SOURCE"


def cores() -> int:
    """The cores this process may run on (its CPU affinity), else the online count."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Reading:
    used_percent: float
    total: int  # bytes (0 when unknown, e.g. a simulated reading)
    source: str


def _cgroup_v2_dir(proc_root: Path) -> Path | None:
    try:
        lines = (proc_root / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return Path("/sys/fs/cgroup") / line[3:].lstrip("/")
    return None


def _from_cgroup(directory: Path) -> Reading | None:
    try:
        limit = (directory / "memory.max").read_text().strip()
        current = int((directory / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    if limit == "max" or not limit.isdigit() or int(limit) <= 0:
        return None
    return Reading(100.0 * current / int(limit), int(limit), f"cgroup {directory}")


def meminfo(proc_root: Path = Path("/proc")) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in (proc_root / "meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return fields


def read(env: Mapping[str, str], proc_root: Path = Path("/proc")) -> Reading:
    real = _real_reading(proc_root)
    simulated = env.get(SOURCE_ENV)
    if simulated:
        try:
            percent = float(Path(simulated).read_text().strip().rstrip("%"))
        except (OSError, ValueError):
            raise UsageError(f"invalid value '{simulated}' for {SOURCE_ENV}: "
                             "expected a readable file holding a percentage") from None
        if not percent <= real.used_percent:  # a simulated reading only ever makes it worse (NaN too)
            return Reading(percent if percent == percent else 100.0, real.total, f"file {simulated}")
    return real


def _real_reading(proc_root: Path) -> Reading:
    cgroup = _cgroup_v2_dir(proc_root)
    reading = _from_cgroup(cgroup) if cgroup else None
    if reading is not None:
        return reading
    fields = meminfo(proc_root)
    total = fields.get("MemTotal", 0)
    available = fields.get("MemAvailable", fields.get("MemFree", 0))
    used = 100.0 * (1 - available / total) if total else 0.0
    return Reading(used, total, "/proc/meminfo")


def total_memory(env: Mapping[str, str]) -> int:
    """Total memory for sizing: the cgroup limit when there is one, else MemTotal."""
    cgroup = _cgroup_v2_dir(Path("/proc"))
    reading = _from_cgroup(cgroup) if cgroup else None
    return reading.total if reading else meminfo().get("MemTotal", 0)
