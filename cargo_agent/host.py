"""Facts about the host, from one place: the cores this process may use, the memory limit in
force, memory use, pressure (PSI), and the memory of process trees.

The memory limit in force is the one with the least room left among:
- cgroup v2 `memory.max` of our own cgroup and of every ancestor up to the mount's root;
- cgroup v1 `memory.limit_in_bytes` of our own memory cgroup and its ancestors (containers);
- MemTotal (use: MemTotal - MemAvailable).
A cgroup's use is its charge minus its file cache, which the kernel reclaims under the limit
(as MemAvailable counts cache as available): a cgroup full of the target dir's cache still has
room for a build.

Test hooks may only make readings worse, so they can never switch memory control off:
- `CARGO_AGENT_MEMORY_SOURCE` names a file holding a used percentage; the reading is the
  higher of that and the real one;
- `CARGO_AGENT_PRESSURE_SOURCE` names a directory holding `memory` and/or `io` files in the
  format of /proc/pressure/*; each figure read is the higher of that and the real one.
"""

from __future__ import annotations

import os

from cargo_agent.errors import UsageError

TYPE_CHECKING = False  # collections.abc only for the checker: this module is on the compiling path
if TYPE_CHECKING:
    from collections.abc import Mapping

SOURCE_ENV = "CARGO_AGENT_MEMORY_SOURCE"
PRESSURE_ENV = "CARGO_AGENT_PRESSURE_SOURCE"
PROC = "/proc"
UNLIMITED_CGROUP = 1 << 60  # cgroup v1 says "no limit" with a page-rounded 2^63 - 1


def cores() -> int:
    """The cores this process may run on (its CPU affinity), else the online count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except (OSError, ValueError):
        return None


class Limit:
    """A memory limit and the use counted against it, in bytes."""

    __slots__ = ("limit", "source", "used")

    def __init__(self, limit: int, used: int, source: str) -> None:
        self.limit, self.used, self.source = limit, max(0, used), source

    @property
    def room(self) -> int:
        return self.limit - self.used

    def __repr__(self) -> str:
        return f"Limit({self.limit}, {self.used}, {self.source!r})"


class Reading:
    """Memory use against the limit in force."""

    __slots__ = ("source", "total", "used", "used_percent")

    def __init__(self, used_percent: float, total: int, source: str, used: int = 0) -> None:
        self.used_percent, self.total, self.source, self.used = used_percent, total, source, used


def meminfo(proc_root: str = PROC) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in (_read(os.path.join(proc_root, "meminfo")) or "").splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return fields


def _unescape(text: str) -> str:
    """A mountinfo path: spaces, tabs, newlines and backslashes come octal-escaped."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def _mounts(proc_root: str) -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, fs type, super options) of every cgroup mount."""
    found = []
    for line in (_read(os.path.join(proc_root, "self", "mountinfo")) or "").splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or not tail[0].startswith("cgroup"):
            continue
        found.append((_unescape(fields[3]), _unescape(fields[4]), tail[0], set(tail[2].split(","))))
    return found


_CGROUP_DIRS: dict[bool, list[str]] = {}  # this process's own, found once: a build asks several times


def _cgroup_dirs(proc_root: str, v2: bool) -> list[str]:
    """Our own cgroup directory (memory controller for v1, the unified one for v2) and its
    ancestors up to the mount point, innermost first."""
    if proc_root != PROC:
        return _find_cgroup_dirs(proc_root, v2)
    if v2 not in _CGROUP_DIRS:
        _CGROUP_DIRS[v2] = _find_cgroup_dirs(proc_root, v2)
    return _CGROUP_DIRS[v2]


def _find_cgroup_dirs(proc_root: str, v2: bool) -> list[str]:
    lines = (_read(os.path.join(proc_root, "self", "cgroup")) or "").splitlines()
    path = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if (v2 and parts[0] == "0" and parts[1] == "") or (not v2 and "memory" in parts[1].split(",")):
            path = parts[2]
            break
    if path is None:
        return []
    for root, point, kind, options in _mounts(proc_root):
        if (kind == "cgroup2") != v2 or (not v2 and "memory" not in options):
            continue
        relative = path[len(root):] if root != "/" and (path == root or path.startswith(root + "/")) else path
        directory = os.path.normpath(point + "/" + relative.lstrip("/"))
        dirs = []
        while True:
            dirs.append(directory)
            if directory == point or len(directory) <= len(point):
                break
            directory = os.path.dirname(directory)
        return dirs
    return []


def _stat_field(text: str | None, name: str) -> int:
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


def _number(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def limits(proc_root: str = PROC) -> list[Limit]:
    """Every memory limit that applies to this process: MemTotal first, then cgroup limits."""
    fields = meminfo(proc_root)
    total = fields.get("MemTotal", 0)
    found = []
    if total:
        available = fields.get("MemAvailable", fields.get("MemFree", 0))
        found.append(Limit(total, total - available, "MemTotal (/proc/meminfo)"))
    for directory in _cgroup_dirs(proc_root, v2=True):
        limit = _number(_read(os.path.join(directory, "memory.max")))
        current = _number(_read(os.path.join(directory, "memory.current")))
        if limit is None or current is None or limit <= 0:
            continue  # "max", or no memory controller here
        stat = _read(os.path.join(directory, "memory.stat"))
        cache = _stat_field(stat, "inactive_file") + _stat_field(stat, "active_file")
        found.append(Limit(limit, current - cache, f"cgroup v2 memory.max of {directory}"))
    for directory in _cgroup_dirs(proc_root, v2=False):
        limit = _number(_read(os.path.join(directory, "memory.limit_in_bytes")))
        usage = _number(_read(os.path.join(directory, "memory.usage_in_bytes")))
        if limit is None or usage is None or limit <= 0 or limit >= UNLIMITED_CGROUP:
            continue
        stat = _read(os.path.join(directory, "memory.stat"))
        cache = (_stat_field(stat, "total_inactive_file") + _stat_field(stat, "total_active_file")) or (
            _stat_field(stat, "inactive_file") + _stat_field(stat, "active_file"))
        found.append(Limit(limit, usage - cache, f"cgroup v1 memory.limit_in_bytes of {directory}"))
    return found


def in_force(proc_root: str = PROC) -> Limit:
    """The limit with the least room left (a cgroup limit above MemTotal never wins)."""
    found = limits(proc_root)
    if not found:
        return Limit(0, 0, "unknown (no /proc/meminfo)")
    return min(found, key=lambda limit: (limit.room, limit.limit))


def _simulated_percent(env: Mapping[str, str]) -> float | None:
    simulated = env.get(SOURCE_ENV)
    if not simulated:
        return None
    text = (_read(simulated) or "").strip().rstrip("%").strip()
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise UsageError(f"invalid value '{simulated}' for {SOURCE_ENV}: "
                         "expected a readable file holding a percentage") from None
    return value


def read(env: Mapping[str, str], proc_root: str = PROC) -> Reading:
    """Memory use against the limit in force; the test hook can only raise it."""
    limit = in_force(proc_root)
    percent = 100.0 * limit.used / limit.limit if limit.limit else 0.0
    simulated = _simulated_percent(env)
    if simulated is not None and simulated > percent:
        used = int(limit.limit * simulated / 100)
        return Reading(simulated, limit.limit, f"{limit.source}, raised by {SOURCE_ENV}", used)
    return Reading(percent, limit.limit, limit.source, limit.used)


def reserve_within(reserve: int, limit: int) -> int:
    """Memory kept back for the host, at most a quarter of the limit in force: a 2G host reserve
    would leave nothing of a 1G container."""
    return min(reserve, limit // 4) if limit else reserve


def total_memory(env: Mapping[str, str], proc_root: str = PROC) -> int:
    """The limit in force, for sizing slots (0 when unknown)."""
    return in_force(proc_root).limit


# ---- pressure ------------------------------------------------------------------------

class Pressure:
    """avg10 percentages of /proc/pressure/{memory,io} (0.0 where absent)."""

    __slots__ = ("io_full", "io_some", "memory_full", "memory_some", "source")

    def __init__(self) -> None:
        self.memory_some = self.memory_full = self.io_some = self.io_full = 0.0
        self.source = "/proc/pressure"

    def as_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


def _psi(text: str | None) -> dict[str, float]:
    """{"some": avg10, "full": avg10} of one /proc/pressure file."""
    found: dict[str, float] = {}
    for line in (text or "").splitlines():
        kind, *fields = line.split()
        for field in fields:
            if field.startswith("avg10="):
                try:
                    found[kind] = max(0.0, min(100.0, float(field[6:])))
                except ValueError:
                    pass
    return found


def pressure(env: Mapping[str, str], proc_root: str = PROC) -> Pressure:
    result = Pressure()
    hook = env.get(PRESSURE_ENV)
    for resource in ("memory", "io"):
        real = _psi(_read(os.path.join(proc_root, "pressure", resource)))
        fake = _psi(_read(os.path.join(hook, resource))) if hook else {}
        for kind in ("some", "full"):
            value = real.get(kind, 0.0)
            if fake.get(kind, 0.0) > value:
                value = fake[kind]
                result.source = f"/proc/pressure, raised by {PRESSURE_ENV}"
            setattr(result, f"{resource}_{kind}", value)
    return result


# ---- process trees -------------------------------------------------------------------

def ancestors(proc_root: str = PROC) -> set[int]:
    """The pids of our parent, its parent, ... up to (not including) init."""
    pids: set[int] = set()
    pid = os.getppid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        text = _read(os.path.join(proc_root, str(pid), "stat"))
        try:
            pid = int((text or "").rsplit(")", 1)[1].split()[1])
        except (IndexError, ValueError):
            break
    return pids


def command_line(pid: int, proc_root: str = PROC) -> bytes:
    """A process's argv as the kernel shows it (NUL-separated); empty when it cannot be read."""
    try:
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def tree_rss(roots: list[int], proc_root: str = PROC) -> dict[int, int]:
    """The memory each root's process tree holds, from one pass over /proc: every process's
    private resident memory (statm resident - shared), plus the largest file-backed resident
    set once. Plain RSS summed over a build would count the compiler's shared libraries once
    per rustc, and overstate a build several times over."""
    page = os.sysconf("SC_PAGE_SIZE")
    parent: dict[int, int] = {}
    memory: dict[int, tuple[int, int]] = {}
    try:
        names = os.listdir(proc_root)
    except OSError:
        return {root: 0 for root in roots}
    for name in names:
        if not name.isdigit():
            continue
        text = _read(os.path.join(proc_root, name, "stat"))
        statm = (_read(os.path.join(proc_root, name, "statm")) or "").split()
        if not text or len(statm) < 3:
            continue
        try:
            parent[int(name)] = int(text.rsplit(")", 1)[-1].split()[1])
            resident, shared = int(statm[1]) * page, int(statm[2]) * page
        except (IndexError, ValueError):
            continue
        memory[int(name)] = (max(0, resident - shared), shared)
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    totals = {}
    for root in roots:
        seen, todo, private, shared = set(), [root], 0, 0
        while todo:
            pid = todo.pop()
            if pid in seen or pid not in memory:
                continue
            seen.add(pid)
            private += memory[pid][0]
            shared = max(shared, memory[pid][1])
            todo.extend(children.get(pid, ()))
        totals[root] = private + shared
    return totals


# ---- CPU -----------------------------------------------------------------------------

def _cpu_cgroup_dirs(proc_root: str, v1_controller: str) -> list[tuple[str, str, str]]:
    """(version, cgroup dir, mount point) of this process for cgroup v2 and for the v1 hierarchy
    that carries `v1_controller`, found through mountinfo (so a hierarchy mounted anywhere, or
    a container's namespaced view, is read where it really is)."""
    try:
        with open(os.path.join(proc_root, "self", "cgroup")) as handle:
            memberships = handle.read().splitlines()
        with open(os.path.join(proc_root, "self", "mountinfo")) as handle:
            mounts = handle.read().splitlines()
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
            found.append((version, os.path.normpath(os.path.join(point, relative.lstrip("/"))), point))
            break
    return found


def _read_quota(directory: str, version: str) -> float | None:
    """CPUs granted by one cgroup's quota, or None for no quota."""
    try:
        if version == "v2":
            quota_text, _, period_text = (_read(os.path.join(directory, "cpu.max")) or "").strip().partition(" ")
            if quota_text == "max":
                return None
            quota, period = int(quota_text), int(period_text or "100000")
        else:
            quota = int((_read(os.path.join(directory, "cpu.cfs_quota_us")) or "").strip())
            period = int((_read(os.path.join(directory, "cpu.cfs_period_us")) or "").strip())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def cpu_limit(proc_root: str = PROC) -> tuple[float, str] | None:
    """The tightest cgroup CPU quota over this process's cgroup and its ancestors, in CPUs, with
    the file it came from; None when no quota applies (cgroup v2 `cpu.max`, v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`)."""
    best: tuple[float, str] | None = None
    for version, directory, mount in _cpu_cgroup_dirs(proc_root, "cpu"):
        current = directory
        while True:
            quota = _read_quota(current, version)
            if quota is not None and (best is None or quota < best[0]):
                name = "cpu.max" if version == "v2" else "cpu.cfs_quota_us"
                best = (quota, os.path.join(current, name))
            parent = os.path.dirname(current)
            if current == mount or parent == current:
                break
            current = parent
    return best


def cpus(proc_root: str = PROC) -> tuple[int, str]:
    """The CPUs this process may keep busy: its affinity, lowered by a cgroup CPU quota (rounded
    up: 1.5 CPUs of quota keeps two jobs busy), with how that was found."""
    import math

    count = cores()
    limit = cpu_limit(proc_root)
    if limit is not None and math.ceil(limit[0]) < count:
        return max(1, math.ceil(limit[0])), f"cgroup CPU quota {limit[0]:g} CPUs ({limit[1]})"
    return count, f"{count} cores (CPU affinity)"
