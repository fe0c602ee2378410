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


# ---- CPU -----------------------------------------------------------------------------

def _cgroup_dirs(proc_root: Path, v1_controller: str) -> list[tuple[str, Path, Path]]:
    """(version, cgroup dir, mount point) of this process for cgroup v2 and for the v1 hierarchy
    that carries `v1_controller`, found through mountinfo (so a hierarchy mounted anywhere, or
    a container's namespaced view, is read where it really is)."""
    try:
        memberships = (proc_root / "self" / "cgroup").read_text().splitlines()
        mounts = (proc_root / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in memberships:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        version = "v2" if parts[0] == "0" and parts[1] == "" else "v1"
        if version == "v1" and v1_controller not in parts[1].split(","):
            continue
        for mount in mounts:
            fields = mount.split()
            if "-" not in fields:
                continue
            tail = fields[fields.index("-") + 1:]
            if len(tail) < 3 or len(fields) < 5:
                continue
            kind, options = tail[0], tail[2].split(",")
            if (version == "v2" and kind != "cgroup2") or (
                    version == "v1" and (kind != "cgroup" or v1_controller not in options)):
                continue
            root, point = fields[3], fields[4]
            path = parts[2]
            if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
                continue
            relative = path[len(root):] if root != "/" else path
            found.append((version, Path(point) / relative.lstrip("/"), Path(point)))
            break
    return found


def _read_quota(directory: Path, version: str) -> float | None:
    """CPUs granted by one cgroup's quota, or None for no quota."""
    try:
        if version == "v2":
            quota_text, _, period_text = (directory / "cpu.max").read_text().strip().partition(" ")
            if quota_text == "max":
                return None
            quota, period = int(quota_text), int(period_text or "100000")
        else:
            quota = int((directory / "cpu.cfs_quota_us").read_text().strip())
            period = int((directory / "cpu.cfs_period_us").read_text().strip())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def cpu_limit(proc_root: Path = Path("/proc")) -> tuple[float, str] | None:
    """The tightest cgroup CPU quota over this process's cgroup and its ancestors, in CPUs, with
    the file it came from; None when no quota applies (cgroup v2 `cpu.max`, v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`)."""
    best: tuple[float, str] | None = None
    for version, directory, mount in _cgroup_dirs(proc_root, "cpu"):
        current = directory
        while True:
            quota = _read_quota(current, version)
            if quota is not None and (best is None or quota < best[0]):
                name = "cpu.max" if version == "v2" else "cpu.cfs_quota_us"
                best = (quota, str(current / name))
            if current == mount or current.parent == current:
                break
            current = current.parent
    return best


def cpus(proc_root: Path = Path("/proc")) -> tuple[int, str]:
    """The CPUs this process may keep busy: its affinity, lowered by a cgroup CPU quota (rounded
    up: 1.5 CPUs of quota keeps two jobs busy), with how that was found."""
    import math

    count = cores()
    limit = cpu_limit(proc_root)
    if limit is not None and math.ceil(limit[0]) < count:
        return max(1, math.ceil(limit[0])), f"cgroup CPU quota {limit[0]:g} CPUs ({limit[1]})"
    return count, f"{count} cores (CPU affinity)"
