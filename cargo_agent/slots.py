"""Host-wide build slots: N kernel locks, a FIFO queue in front of them, holder metadata.

Layout of the lock dir (never deleted while it may be in use):
  (N itself is not stored here: it lives in the host file, read on every run; see `resolve`)
  slot-<k>.lock       slot k: held with flock(LOCK_EX) by the build that owns it
  slot-<k>.json       who holds slot k (written by the holder; read by --status, which takes no lock)
  queue.lock, queue.seq   a short mutex and a counter for handing out tickets
  queue/<seq>-<pid>.ticket  a waiter's ticket, flock'ed by the waiter while it waits
  runs.jsonl          the run log (see report.py)

Why fcntl.flock and not filelock's FileLock: the slot lock must be *inherited* by every
process of the build (so that a SIGKILLed wrapper's build still holds its slot until the
last process exits), waiters must block in the kernel instead of polling, and lock files
must be opened without following symlinks. filelock offers none of the three.

Waiting costs nothing and never stalls:
- every waiter blocks in select() on an inotify fd, no thread and no polling: the queue dir
  wakes it when a ticket ahead leaves or its waiter dies (IN_DELETE, IN_CLOSE_WRITE), and, once
  it is the head, each slot's lock file wakes it when a holder lets go (IN_CLOSE: a release ends
  with a close of the lock file);
- every waiter touches its ticket every HEARTBEAT_SECONDS. A ticket left untouched for
  STALE_SECONDS belongs to a stopped waiter (Ctrl-Z, SIGSTOP, a frozen container): the waiters
  behind it skip it. When it resumes it touches its ticket again and waits in its old place; a
  dead waiter's ticket is unlocked by the kernel and removed.
Without inotify (a user's inotify instances used up) a waiter polls instead: the head every
FALLBACK_POLL_SECONDS, the others at the heartbeat.

A lock dir deleted under us (an operator, a tmp cleaner): waiters and holders compare the dir's
(st_dev, st_ino) with the one they locked in, and move to the new dir without losing count or
order (LockDirWatch, Slot.follow_lock_dir; docs/operator-guide.md says what happens).
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys
import time

from cargo_agent import host, jsontext, locations, lockdir
from cargo_agent.config import Config
from cargo_agent.errors import SlotWaitTimeoutError, UsageError
from cargo_agent.records import dataclass, field
from cargo_agent.signals import signal

TYPE_CHECKING = False  # collections.abc only for the checker: this module is on the compiling path
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

SLOT_ENV = "CARGO_AGENT_SLOT"
HEARTBEAT_SECONDS = 0.25  # a waiter touches its ticket this often
STALE_SECONDS = 1.2  # a ticket untouched this long belongs to a stopped waiter: skipped
FALLBACK_POLL_SECONDS = 0.01  # the head's poll when inotify is not available
_DEFERRED = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})  # while a ticket changes hands
PROGRESS_EVERY_SECONDS = 30.0


@dataclass
class SlotSettings:
    lock_dir: str
    count: int  # slots this invocation may use (<= ceiling)
    ceiling: int  # N, host-wide
    shared: bool  # the lock dir was set by the host file
    formula: str  # how N was derived, for --dry-run and docs
    mem_high: float
    mem_kill: float | None
    wait_timeout: float | None
    pressure_high: float | None = None
    pressure_kill: float | None = None


def learned_per_build(lock_dir: str) -> int | None:
    """A typical (median) build peak among recent runs in this lock dir's run log, if any."""
    from cargo_agent import report

    return report.learned_peak(lock_dir, typical=True) if os.path.isdir(lock_dir) else None


def auto_slots(config: Config, env: Mapping[str, str], per_build: int | None = None,
               reserve: int | None = None, lock_dir: str | None = None) -> tuple[int, str]:
    """N from the memory limit in force and cores; per build, the median recent peak in the
    run log once there is one (admission sees to the big builds), else `per_build_memory`."""
    cores = host.cores
    limit = host.in_force()
    total = limit.limit
    learned = learned_per_build(lock_dir) if lock_dir is not None else None
    per_build = learned or int(config["per_build_memory"] if per_build is None else per_build)
    reserve = host.reserve_within(int(config["host_reserve"] if reserve is None else reserve), total)
    by_memory = max(1, (total - reserve) // max(1, per_build))
    n = max(1, min(by_memory, cores()))
    gib = 1 << 30
    what = "median of recent runs" if learned else "per_build_memory"
    formula = (f"min(floor(({total / gib:.1f}G {limit.source} - {reserve / gib:.2f}G reserve) / "
               f"{per_build / gib:.2f}G per build ({what})) = {by_memory}, {cores()} cores) = {n}")
    return n, formula


def lock_dir_of(config: Config, env: Mapping[str, str]) -> tuple[str, bool]:
    """The lock dir and whether it is shared (set by the host file) or this user's own."""
    return os.fspath(config["lock_dir"] or locations.default_lock_dir(env)), config.host_lock_dir is not None


def resolve(config: Config, env: Mapping[str, str], create: bool = True) -> SlotSettings:
    """N lives in the host file (`slots`), read on every run, so editing it changes N for the next
    run; without it, N is derived from memory and cores with the host file's (or the default)
    sizing. Nothing a lower layer says raises N: `slots` and the sizing keys from the
    environment, repo or user file only lower this run's own count."""
    lock_dir, shared = lock_dir_of(config, env)
    if create:
        lockdir.prepare(lock_dir, shared)
    if config.host_slots is not None:
        ceiling, formula = config.host_slots, f"slots = {config.host_slots} in {config.host['slots'][1]}"
        count = ceiling
    else:
        ceiling, formula = auto_slots(config, env, config.baseline("per_build_memory"),
                                      config.baseline("host_reserve"), lock_dir)
        own = (config["per_build_memory"], config["host_reserve"])
        tighter = own != (config.baseline("per_build_memory"), config.baseline("host_reserve"))
        count = min(ceiling, auto_slots(config, env)[0]) if tighter else ceiling
    requested = config["slots"]
    if requested:
        if requested > ceiling:
            _say_clamped(config, requested, ceiling)
        count = min(count, requested)
    return SlotSettings(lock_dir, count, ceiling, shared, formula, float(config["mem_high"]),
                        config["mem_kill"], config["wait_timeout"], config["pressure_high"], config["pressure_kill"])


def _say_clamped(config: Config, requested: int, ceiling: int) -> None:
    """A lower-trust layer may lower the slot count, never raise it: say so when it tried."""
    sys.stderr.write(f"warning: cargo-agent: {config.origins['slots']} asks for {requested} slots but the host "
                     f"has {ceiling}; using {ceiling}\n")


# ---- holders -------------------------------------------------------------------------

def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62 else None


def _pid(value: object) -> int | None:
    pid = _whole(value)
    return pid if pid is not None and 0 < pid < 1 << 31 else None


class Holder:
    """A slot holder's record (`slot-<k>.json`) or a waiter's ticket. Files in the lock dir may
    hold anything: a field of the wrong type reads as missing, a file that is not a JSON object
    reads as empty, and either is `malformed` (reported by --doctor, ignored everywhere else)."""

    __slots__ = ("admitted", "command", "cwd", "heartbeat", "malformed", "pid", "predicted", "queued", "seq", "slot",
                 "usable", "user")

    def __init__(self, data: object = None, malformed: bool = False) -> None:
        fields = data if isinstance(data, dict) else {}
        self.malformed = malformed or not isinstance(data, dict)
        self.pid = _pid(fields.get("pid"))
        self.slot = _whole(fields.get("slot"))
        self.seq = _whole(fields.get("seq"))
        user, cwd, command = fields.get("user"), fields.get("cwd"), fields.get("command")
        self.user = user if isinstance(user, str) else None
        self.cwd = cwd if isinstance(cwd, str) else None
        self.command = [w for w in command if isinstance(w, str)] if isinstance(command, list) else []
        self.admitted = _number(fields.get("admitted"))
        self.queued = _number(fields.get("queued"))
        self.usable = _whole(fields.get("usable"))  # a waiter: how many of the host's slots it may use
        self.heartbeat: float | None = None  # a waiter: when it last touched its ticket (its mtime)
        self.predicted = _whole(fields.get("predicted"))  # predicted peak memory, bytes
        wrong_type = any(fields.get(name) is not None and getattr(self, name) is None
                         for name in ("pid", "slot", "seq", "user", "cwd", "admitted", "queued", "predicted"))
        if wrong_type or (command is not None and (not isinstance(command, list) or len(self.command) != len(command))):
            self.malformed = True  # a field of the wrong type: still read, but named by --doctor

    @classmethod
    def parse(cls, text: str | None) -> Holder:
        try:
            return cls(jsontext.loads(text or ""))
        except ValueError:
            return cls(None, malformed=True)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Holder:
        try:
            return cls.parse(lockdir.read_text(path))
        except UsageError:
            return cls(None, malformed=True)

    def as_json(self) -> dict[str, object]:
        fields = {name: getattr(self, name) for name in self.__slots__ if name != "malformed"}
        return {k: v for k, v in fields.items() if v is not None}

    @property
    def shown_command(self) -> str:
        """The command line for a terminal: it may be another user's, so control characters are
        escaped (`lockdir.printable`)."""
        return lockdir.printable(" ".join(self.command))


@dataclass
class Slot:
    index: int
    fd: int
    path: str
    settings: SlotSettings
    nested: bool = False
    waited: float = 0.0
    meta_path: str | None = None
    queued_at: float | None = None  # wall clock, for the run report and handoff measurements
    admitted_at: float | None = None
    dir_identity: tuple[int, int] | None = None  # the lock dir this slot was taken in (see LockDirWatch)
    record: dict[str, object] | None = None  # what meta_path holds
    followed_fds: list[int] = field(default_factory=list)  # slots taken in a replacement lock dir
    follow_failed: bool = False
    released_at: float | None = None  # when release() let go of the lock

    def env_value(self) -> str:
        return f"{self.path}:{self.fd}:{os.getpid()}"

    def in_its_lock_dir(self) -> bool:
        """The lock dir at the path is still the one this slot was taken in (or followed to)."""
        return self.dir_identity is None or lock_dir_identity(self.settings.lock_dir) == self.dir_identity

    def release(self) -> None:
        """Give the slot back (at most once). The unlock comes before the close, so the head of
        the queue, woken by the close, finds the lock free; the lock file is then opened and
        closed once more, which wakes the head even when the build still holds copies of the fd
        (`run`, whose program keeps running)."""
        if self.nested or self.released_at is not None:
            return
        if self.meta_path is not None and self.in_its_lock_dir():
            lockdir.remove(self.meta_path)  # before the unlock, so we never delete the next holder's file
        self.released_at = time.time()
        for fd in [*self.followed_fds, self.fd]:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        try:
            os.close(lockdir.open_lock(self.path, self.settings.shared))
        except (OSError, UsageError):
            pass

    def follow_lock_dir(self) -> None:
        """Called while the build runs: when the lock dir was removed or replaced, take a slot in
        the new one (this slot's index if free) and write the holder record there, so that builds
        arriving later count this one. The build's processes keep the old slot's fd."""
        if self.nested or self.dir_identity is None or self.follow_failed or self.released_at is not None \
                or lock_dir_identity(self.settings.lock_dir) == self.dir_identity:
            return
        self.meta_path = None  # the record went with the old dir: never delete a file of the new one
        try:
            identity = _renew_lock_dir(self.settings)
            order = [self.index, *(k for k in range(self.settings.count) if k != self.index)]
            for k in order:
                fd = lockdir.open_lock(os.path.join(self.settings.lock_dir, f"slot-{k}.lock"), self.settings.shared)
                if lockdir.try_lock(fd):
                    self.followed_fds.append(fd)
                    meta_path = os.path.join(self.settings.lock_dir, f"slot-{k}.json")
                    lockdir.write_atomic(meta_path, jsontext.dumps({**(self.record or {}), "slot": k}).encode(),
                                         self.settings.shared)
                    self.meta_path, self.dir_identity = meta_path, identity
                    return
                os.close(fd)
            problem = f"every slot there is taken ({self.settings.count} usable)"
        except UsageError as err:
            problem = str(err)
        self.follow_failed = True
        sys.stderr.write(f"warning: cargo-agent: lock dir {self.settings.lock_dir} was removed or replaced while "
                         f"this build held a slot, and it could not take one in the new dir: {problem}\n")


def watching(slot: Slot, guard: Callable[[], bool] | None) -> Callable[[], bool] | None:
    """The supervisor's periodic check for a build holding `slot`: `guard` (the memory guard, if
    any), and before it the slot following a replaced lock dir."""
    if slot.nested:
        return guard

    def tick() -> bool:
        slot.follow_lock_dir()
        return guard() if guard is not None else False

    return tick


def age(since: float | None, now: float) -> float | None:
    return round(now - since, 1) if since is not None else None


def holder_meta(command: list[str], cwd: str) -> dict[str, object]:
    import pwd  # the real uid's name: an environment variable could name anyone

    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"pid": os.getpid(), "user": user, "command": command, "cwd": str(cwd), "admitted": time.time()}


def inherited_slot(env: Mapping[str, str], settings: SlotSettings) -> Slot | None:
    """The slot of an ancestor build we run inside (a build script or test calling cargo).

    CARGO_AGENT_SLOT names `<slot file>:<fd>:<holder pid>`. It is honoured only when the slot
    file is one of this lock dir's, it is locked now, its holder record names that pid, and
    that pid is one of our ancestors: setting the variable by hand gets around nothing. The
    fd is passed on when it was inherited; a child that closed its fds still counts as nested.
    """
    value = env.get(SLOT_ENV)
    if not value:
        return None
    try:
        path_text, fd_text, pid_text = value.rsplit(":", 2)
        fd, holder = int(fd_text), int(pid_text)
    except ValueError:
        return None
    path = path_text
    parent, name = os.path.split(path)
    if parent != os.fspath(settings.lock_dir) or not (name.startswith("slot-") and name.endswith(".lock")):
        return None
    try:
        index = int(name[len("slot-"):-len(".lock")])
        on_disk = os.stat(path, follow_symlinks=False)
    except (ValueError, OSError):
        return None
    record = Holder.read(os.path.join(settings.lock_dir, f"slot-{index}.json"))
    if record.pid != holder or holder not in host.ancestors() or not lockdir.is_locked(path, lockdir.locked_inodes()):
        return None
    try:
        opened = os.fstat(fd)
        inherited = (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)
    except OSError:
        inherited = False
    return Slot(index, fd if inherited else -1, path, settings, nested=True)


# ---- a lock dir that disappears ------------------------------------------------------

def lock_dir_identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the directory at `path` now; None if there is none."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


def _renew_lock_dir(settings: SlotSettings) -> tuple[int, int] | None:
    """Use the dir at the path now, creating it if it is gone (with the same checks); its identity."""
    lockdir.prepare(settings.lock_dir, settings.shared)
    return lock_dir_identity(settings.lock_dir)


def _open_slots(settings: SlotSettings, count: int) -> dict[int, int]:
    return {k: lockdir.open_lock(os.path.join(settings.lock_dir, f"slot-{k}.lock"), settings.shared)
            for k in range(count)}


class LockDirWatch:
    """A waiter's watch on its lock dir being removed or replaced (an operator, a tmp cleaner):
    the directory at the path is no longer the one it queued in, so its ticket, and the slots
    of the builds running, no longer count for anyone arriving later.

    The waiter then queues again in the new dir: it enqueues there before it lets go of its old
    ticket, so the waiters behind it, woken only by that, follow in their order. It keeps fds
    on every slot file of the old dir (opened when it started waiting), and the head admits
    nobody while an old slot is held by a build that has no slot in the new dir (holders take
    one within a supervisor tick; a build whose wrapper died never does, and counts until it
    ends)."""

    def __init__(self, settings: SlotSettings) -> None:
        self.settings = settings
        self.identity = lock_dir_identity(settings.lock_dir)
        self.fds = list(_open_slots(settings, settings.ceiling).values())
        self.old_fds: list[int] = []  # on slot files of a replaced dir

    def moved(self) -> bool:
        return lock_dir_identity(self.settings.lock_dir) != self.identity

    def requeue(self, ticket: Ticket, meta: dict[str, object]) -> Ticket:
        """A ticket in the dir at the path now, taken before the old one is let go."""
        sys.stderr.write(f"warning: cargo-agent: lock dir {self.settings.lock_dir} was removed or replaced; "
                         "queueing again in the new one\n")
        self.identity = _renew_lock_dir(self.settings)
        self.old_fds += self.fds
        self.fds = list(_open_slots(self.settings, self.settings.ceiling).values())
        new = _enqueue(self.settings, meta)
        os.close(ticket.fd)  # not removed by path: that name may belong to a ticket of the new dir
        return new

    def slots(self, count: int) -> dict[int, int]:
        """The head's fds on slots 0..count-1; none if the dir vanished meanwhile (then the next
        poll sees it moved and queues again)."""
        try:
            return _open_slots(self.settings, count)
        except lockdir.LockDirError:
            if self.moved():
                return {}
            raise

    def follow(self, ticket: Ticket, meta: dict[str, object], fds: dict[int, int]) -> tuple[Ticket, dict[int, int]]:
        """For the head: queue again if the dir moved, and (re)open the slots of the dir now."""
        if self.moved():
            ticket = self.requeue(ticket, meta)
        for fd in fds.values():
            os.close(fd)
        return ticket, self.slots(self.settings.count)

    def record(self, path: str, data: dict[str, object]) -> str | None:
        """Write the holder record; None if the dir vanished at that moment (the holder's first
        supervisor tick then takes a slot in the new dir)."""
        try:
            lockdir.write_atomic(path, jsontext.dumps(data).encode(), self.settings.shared)
            return path
        except lockdir.LockDirError:
            if self.moved():
                return None
            raise

    def unregistered(self) -> int:
        """Old slots still held by a build that holds no slot in the new dir."""
        if not self.old_fds:
            return 0
        locks = lockdir.locked_inodes()
        registered = {h.pid for h in holders(self.settings)}
        count = 0
        for fd in list(self.old_fds):
            if lockdir.try_lock(fd):  # free: its build is gone
                self.old_fds.remove(fd)
                os.close(fd)
                continue
            info = os.fstat(fd)
            if locks.get((info.st_dev, info.st_ino)) not in registered:
                count += 1
        return count

    def close(self) -> None:
        for fd in self.fds + self.old_fds:
            os.close(fd)
        self.fds, self.old_fds = [], []


# ---- the queue -----------------------------------------------------------------------

@dataclass
class Ticket:
    seq: int
    fd: int
    path: str
    queued: float  # wall clock, taken under the queue mutex: tickets' order is this order


def _enqueue(settings: SlotSettings, meta: dict[str, object]) -> Ticket:
    """A new ticket at the end of the queue (called with interrupts deferred, see `acquire`)."""
    queue = os.path.join(settings.lock_dir, "queue")
    lockdir.make_dir(queue, settings.shared)
    mutex = lockdir.open_lock(os.path.join(settings.lock_dir, "queue.lock"), settings.shared)
    try:
        # A short critical section. Bounded by wait_timeout: a process holding queue.lock for
        # good (a group member's, in a shared dir) must not hang every wrapper past it.
        if not lockdir.lock_within(mutex, settings.wait_timeout):
            mutex_path = os.path.join(settings.lock_dir, "queue.lock")
            holder = lockdir.lock_holder(mutex_path, lockdir.locked_inodes())
            who, look = (f"pid {holder}", f"ps -p {holder}") if holder else ("a process", "cat /proc/locks")
            raise SlotWaitTimeoutError(f"gave up waiting for {mutex_path}: {who} has held "
                                       "it for longer than the wait timeout", help=(f"see what holds it: {look}",))
        counter = os.path.join(settings.lock_dir, "queue.seq")
        text = (lockdir.read_text(counter) or "").strip()
        seq = int(text) + 1 if text.isdigit() and len(text) <= 12 else 1  # planted junk restarts it
        lockdir.write_atomic(counter, f"{seq}\n".encode(), settings.shared)  # only ever under the mutex
        path = os.path.join(queue, f"{seq:012d}-{os.getpid()}.ticket")
        lockdir.remove(path)  # a leftover of a dead waiter with our pid, or a plant: never reused
        fd = lockdir.open_file(path, os.O_RDWR, lockdir.file_mode(settings.shared), exclusive=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
        queued = time.time()
        try:
            lockdir.write_fd(fd, jsontext.dumps({**meta, "queued": queued}).encode(), path)
        except UsageError:
            lockdir.remove(path)
            os.close(fd)
            raise
        return Ticket(seq, fd, path, queued)
    finally:
        os.close(mutex)


def _tickets(settings: SlotSettings) -> list[tuple[int, str]]:
    queue = os.path.join(settings.lock_dir, "queue")
    found = []
    for name in lockdir.listdir(queue):
        if name.endswith(".ticket"):
            try:
                found.append((int(name.split("-", 1)[0]), os.path.join(queue, name)))
            except ValueError:
                continue
    return sorted(found)


def _heartbeat(ticket: Ticket) -> None:
    try:
        os.utime(ticket.fd)
    except OSError:
        pass


def _ahead(settings: SlotSettings, ticket: Ticket) -> tuple[int, int] | None:
    """(seq, an open fd) of the nearest ticket ahead of ours whose waiter is alive and not
    stopped, or None when we are the head. Dead waiters' tickets are removed; stopped ones are
    only skipped."""
    now = time.time()
    for seq, path in reversed([t for t in _tickets(settings) if t[0] < ticket.seq]):
        try:
            fd = lockdir.open_file(path, lockdir.READ, 0, create=False)
        except (OSError, UsageError):
            continue
        if lockdir.try_lock(fd, shared=True):
            lockdir.remove(path)  # its owner is gone (tickets are locked before the mutex is released)
            os.close(fd)
            continue
        if now - os.fstat(fd).st_mtime <= STALE_SECONDS:
            return seq, fd
        os.close(fd)
    return None


def _left(fd: int) -> bool:
    """The waiter of this ticket (held open) let go of it, died, or is stopped."""
    return lockdir.try_lock(fd, shared=True) or time.time() - os.fstat(fd).st_mtime > STALE_SECONDS


def _position(settings: SlotSettings, ticket: Ticket) -> int:
    locks = lockdir.locked_inodes()
    return 1 + sum(1 for seq, path in _tickets(settings) if seq < ticket.seq and lockdir.is_locked(path, locks))


def holders(settings: SlotSettings) -> list[Holder]:
    """Slots that are held now, with their holders' records (no lock is taken)."""
    locks = lockdir.locked_inodes()
    found = []
    for k in range(settings.ceiling):
        path = os.path.join(settings.lock_dir, f"slot-{k}.lock")
        pid = lockdir.lock_holder(path, locks)
        if pid is None:
            continue
        holder = Holder.read(os.path.join(settings.lock_dir, f"slot-{k}.json"))
        holder.slot = k
        if holder.pid is None:
            holder.pid = pid
        found.append(holder)
    return found


def queue_entries(settings: SlotSettings) -> list[Holder]:
    locks = lockdir.locked_inodes()
    entries = []
    for seq, path in _tickets(settings):
        if not lockdir.is_locked(path, locks):
            continue
        entry = Holder.read(path)
        entry.seq = seq
        try:
            entry.heartbeat = os.stat(path, follow_symlinks=False).st_mtime
        except OSError:
            pass
        entries.append(entry)
    return sorted([*entries, *_asides(settings, 1 << 62)], key=lambda e: e.seq or 0)


def is_stale(entry: Holder, now: float) -> bool:
    """A waiter that has not touched its ticket for STALE_SECONDS: stopped, so skipped."""
    return entry.heartbeat is not None and now - entry.heartbeat > STALE_SECONDS


# inotify (linux/inotify.h)
_IN_CLOSE_WRITE, _IN_CLOSE_NOWRITE, _IN_MOVED_FROM, _IN_DELETE = 0x08, 0x10, 0x40, 0x200
_IN_ONLYDIR, _IN_DONT_FOLLOW = 0x01000000, 0x02000000


class _Wakeup:
    """What a waiter blocks on: an inotify fd (queue dir; slot lock files once it is the head),
    or, without inotify, a short sleep."""

    def __init__(self, settings: SlotSettings) -> None:
        self.settings = settings
        self.fd: int | None = None
        self.watching_slots = False
        try:
            import ctypes

            self.libc = ctypes.CDLL(None, use_errno=True)
            fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd < 0:
            return
        self.fd = fd
        queue_mask = _IN_DELETE | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_ONLYDIR
        if not self._watch(os.path.join(settings.lock_dir, "queue"), queue_mask):
            self.close()

    def _watch(self, path: str, mask: int) -> bool:
        return bool(self.libc.inotify_add_watch(self.fd, os.fsencode(path), mask | _IN_DONT_FOLLOW) >= 0)

    def watch_slots(self, paths: list[str]) -> None:
        """We are the head: wake on slot releases too (or, without inotify, poll quickly)."""
        if self.watching_slots:
            return
        self.watching_slots = True
        if self.fd is None:
            return
        for path in paths:
            if not self._watch(path, _IN_CLOSE_WRITE | _IN_CLOSE_NOWRITE):
                self.close()  # cannot see every slot: poll instead
                return

    def wait(self, timeout: float) -> bool:
        """Block until something may have changed, or `timeout`; True when woken by an event."""
        import select

        if self.fd is None:
            time.sleep(min(timeout, FALLBACK_POLL_SECONDS) if self.watching_slots else timeout)
            return False
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _terminal_width() -> int:
    try:
        return max(20, os.get_terminal_size(sys.stderr.fileno()).columns)
    except (OSError, ValueError):
        return 80


@dataclass
class _Progress:
    settings: SlotSettings
    started: float = field(default_factory=time.monotonic)
    last: float = 0.0
    shown: bool = False
    tty: bool = field(default_factory=lambda: sys.stderr.isatty())

    def update(self, ticket: Ticket, reason: str | None = None) -> None:
        now = time.monotonic()
        elapsed = now - self.started
        due = (now - self.last >= 1.0) if self.tty else (
            (not self.shown and elapsed >= 1.0) or (self.shown and now - self.last >= PROGRESS_EVERY_SECONDS))
        if not due:
            return
        self.last, self.shown = now, True
        sys.stderr.write(("\r\x1b[K" + self.line(ticket, reason, _terminal_width() - 1)) if self.tty
                         else self.line(ticket, reason) + "\n")
        sys.stderr.flush()

    def line(self, ticket: Ticket, reason: str | None, width: int | None = None) -> str:
        """What we wait for, most useful first (a narrow terminal cuts the end)."""
        from cargo_agent.supervise import format_duration

        held = holders(self.settings)
        usable = [h for h in held if h.slot is not None and h.slot < self.settings.count]
        wall = time.time()
        parts = [f"cargo-agent: waiting {format_duration(time.monotonic() - self.started)} for a build slot, "
                 f"position {_position(self.settings, ticket)}, {len(usable)}/{self.settings.count} busy"]
        if reason:
            parts.append(reason)
        if usable:
            parts.append("held by " + ", ".join(
                f"pid {h.pid} `{h.shown_command[:40]}` {format_duration(age(h.admitted, wall) or 0)}"
                for h in usable[:3]))
        if self.settings.count < self.settings.ceiling:
            parts.append(f"you may use {self.settings.count} of the host's {self.settings.ceiling} slots")
        line = "; ".join(parts)
        if width is not None and len(line) > width:
            line = line[:max(0, width - 3)] + "..."
        return line

    def done(self) -> None:
        if self.tty and self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _hold_back(settings: SlotSettings, env: Mapping[str, str]) -> str | None:
    """Why the head may not take a free slot now (memory above mem_high), or None."""
    reading = host.read(env)
    if reading.used_percent > settings.mem_high:
        return (f"memory at {reading.used_percent:.0f}% is above mem_high "
                f"{settings.mem_high:g}% ({reading.source})")
    return None


def acquire(settings: SlotSettings, command: list[str], cwd: str, env: Mapping[str, str],
            predicted: int | None = None) -> Slot:
    """Wait in FIFO order for a slot, and for memory (see `memory_verdict`); raise on wait
    timeout. `predicted` is this command's predicted peak memory in bytes. No thread, no busy
    loop: see the module doc."""
    meta = {**holder_meta(command, cwd), "usable": settings.count}
    if predicted is not None:
        meta["predicted"] = predicted
    aside = False
    progress = _Progress(settings)
    deadline = progress.started + settings.wait_timeout if settings.wait_timeout else None
    watch = LockDirWatch(settings)
    # Ctrl-C and friends wait until the ticket is in hand and its cleanup armed: an interrupt can
    # never leave a ticket behind.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        ticket = _enqueue(settings, meta)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        watch.close()
        raise
    queued_at = ticket.queued
    wakeup: _Wakeup | None = None
    fds: dict[int, int] = {}
    ahead_fd: int | None = None  # the ticket ahead of ours, held open (see the lock dir case below)
    timeout = HEARTBEAT_SECONDS
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        while True:
            _heartbeat(ticket)
            if watch.moved():
                # The lock dir was removed or replaced: queue again in the new one, once the waiter
                # ahead of us (whose old ticket we hold open) did, so the order is kept.
                if ahead_fd is None or _left(ahead_fd):
                    ticket = watch.requeue(ticket, meta)
                    _heartbeat(ticket)
                    for fd in [*fds.values(), *([ahead_fd] if ahead_fd is not None else [])]:
                        os.close(fd)
                    fds, ahead_fd = {}, None
                    if wakeup is not None:
                        wakeup.close()
                        wakeup = None
                    continue
                time.sleep(HEARTBEAT_SECONDS)
                continue
            reason = None
            ahead = _ahead(settings, ticket)
            if ahead_fd is not None:
                os.close(ahead_fd)
            ahead_fd = ahead[1] if ahead is not None else None
            head = ahead is None
            if head and wakeup is not None:  # watch before looking: no release can slip in between
                wakeup.watch_slots([os.path.join(settings.lock_dir, f"slot-{k}.lock") for k in range(settings.count)])
            if head:
                fds = fds or watch.slots(settings.count)
                if not fds:
                    continue  # the dir vanished under us: the next round queues again
                reason = _hold_back(settings, env)
                if reason is None and watch.unregistered():
                    reason = "builds of the replaced lock dir have not taken a slot in the new one yet"
                if reason is None:
                    slot, reason, too_big = _take_free_slot(settings, env, predicted, ticket, fds, meta, progress,
                                                            queued_at, watch)
                    if slot is not None:
                        return slot
                    if too_big and not aside:  # let smaller commands behind us go first
                        ticket, aside = _step_aside(settings, ticket, meta), True
            _check_deadline(deadline, settings, ticket, reason)
            progress.update(ticket, reason)
            if wakeup is None:  # set up only now, then look once more: no wake-up can be missed
                wakeup = _Wakeup(settings)
                continue
            woke = wakeup.wait(timeout)
            # A killed holder's lock goes a moment after the close that woke us: look again soon.
            timeout = 0.005 if woke and head and reason is None and timeout == HEARTBEAT_SECONDS \
                else HEARTBEAT_SECONDS
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)  # an interrupt waits for the cleanup
        try:
            if not watch.moved():  # else that name may belong to a ticket of the new dir
                lockdir.remove(ticket.path)
            os.close(ticket.fd)
            for fd in [*fds.values(), *([ahead_fd] if ahead_fd is not None else [])]:
                os.close(fd)
            if wakeup is not None:
                wakeup.close()
            watch.close()
            progress.done()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _take_free_slot(settings: SlotSettings, env: Mapping[str, str], predicted: int | None, ticket: Ticket,
                    fds: dict[int, int], meta: dict[str, object], progress: _Progress, queued_at: float,
                    watch: LockDirWatch) -> tuple[Slot | None, str | None, bool]:
    """A free slot, if there is one and the memory verdict admits this command: (slot, None,
    False); else (None, why not, whether the command's own predicted peak is what does not fit)."""
    for k, fd in fds.items():
        if not lockdir.try_lock(fd):
            continue
        if watch.moved():
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None, None, False
        reason, too_big, record, meta_path = _decide(settings, env, predicted, ticket, meta, k, watch)
        if reason is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None, reason, too_big
        del fds[k]
        return Slot(k, fd, os.path.join(settings.lock_dir, f"slot-{k}.lock"), settings,
                    waited=time.monotonic() - progress.started, meta_path=meta_path,
                    queued_at=queued_at, admitted_at=time.time(), dir_identity=watch.identity,
                    record=record), None, False
    return None, None, False


# ---- memory admission ----------------------------------------------------------------

def _step_aside(settings: SlotSettings, ticket: Ticket, meta: dict[str, object]) -> Ticket:
    """A head whose predicted peak does not fit lets the queue behind it move: its ticket
    becomes a flock'ed `.aside` marker (not a ticket: nobody waits on it), and it goes on
    polling. Heads behind it are admitted only while it still does not fit."""
    path = ticket.path.removesuffix(".ticket") + ".aside"
    lockdir.remove(path)
    fd = lockdir.open_file(path, os.O_RDWR, lockdir.file_mode(settings.shared), exclusive=True)
    fcntl.flock(fd, fcntl.LOCK_EX)
    lockdir.write_fd(fd, jsontext.dumps({**meta, "queued": time.time()}).encode(), path)
    lockdir.remove(ticket.path)  # the next waiter now becomes the head
    os.close(ticket.fd)
    return Ticket(ticket.seq, fd, path, ticket.queued)


def _asides(settings: SlotSettings, before: int) -> list[Holder]:
    """Live step-aside markers of waiters queued before `before`, oldest first."""
    queue = os.path.join(settings.lock_dir, "queue")
    names = sorted(lockdir.listdir(queue))
    locks = lockdir.locked_inodes()
    found = []
    for name in names:
        seq_text = name.split("-", 1)[0]
        if name.endswith(".aside") and seq_text.isdigit() and int(seq_text) < before \
                and lockdir.is_locked(os.path.join(queue, name), locks):
            entry = Holder.read(os.path.join(queue, name))
            entry.seq = int(seq_text)
            found.append(entry)
    return found


def _others_held(settings: SlotSettings, own_slot: int | None) -> bool:
    """Whether a slot other than `own_slot` may be held by a build: it has a holder record, or
    its lock is held (lockdir.held_elsewhere: a probe, no /proc/locks). Only then are the
    holders counted from /proc/locks, whose first read in a process takes the kernel's
    file-lock lock for writing and waits for an RCU grace period (milliseconds), on every build
    of an idle host. A record alone does not tell: a holder can have none (a build that took a
    slot in a replaced lock dir and could not write its record there, a full disk; one between
    taking that slot and writing its record, not under the queue mutex)."""
    for k in range(settings.ceiling):
        if k == own_slot:
            continue
        if os.path.lexists(os.path.join(settings.lock_dir, f"slot-{k}.json")) \
                or lockdir.held_elsewhere(os.path.join(settings.lock_dir, f"slot-{k}.lock")) is not False:
            return True
    return False


def memory_verdict(settings: SlotSettings, env: Mapping[str, str], predicted: int | None,
                   seq: int | None = None, own_slot: int | None = None) -> tuple[str | None, bool]:
    """(why a build may not start now, or None; whether its prediction is what does not fit).

    Held back while memory or I/O pressure is above `pressure_high`, while memory use is
    above `mem_high`, or while the predicted peak does not fit under `mem_high` of the limit
    in force next to what the running builds are predicted to still need (their predicted
    peak minus their tree's RSS now). With no build running, a build is admitted whatever its
    prediction (it could never fit otherwise). Earlier waiters that stepped aside go first
    as soon as they fit."""
    if settings.pressure_high is not None:
        pressure = host.pressure(env)
        for what, value in (("memory pressure (PSI some avg10)", pressure.memory_some),
                            ("I/O pressure (PSI full avg10)", pressure.io_full)):
            if value > settings.pressure_high:
                return (f"{what} at {value:.0f}% is above pressure_high {settings.pressure_high:g}% "
                        f"({pressure.source})", False)
    reading = host.read(env)
    if reading.used_percent > settings.mem_high:
        return (f"memory at {reading.used_percent:.0f}% is above mem_high {settings.mem_high:g}% "
                f"({reading.source})", False)
    if predicted is None or not reading.total:
        return None, False
    held = [h for h in holders(settings) if h.slot != own_slot] \
        if _others_held(settings, own_slot) else []  # the slot we try-locked is not a build
    if not held:
        return None, False
    budget = int(reading.total * settings.mem_high / 100)
    rss = host.tree_rss([h.pid for h in held if h.pid is not None])
    still = sum(max(0, (h.predicted or 0) - rss.get(h.pid or 0, 0)) for h in held)
    for earlier in _asides(settings, seq if seq is not None else 1 << 62):
        if earlier.predicted is not None and reading.used + still + earlier.predicted <= budget:
            return (f"an earlier build predicted at {earlier.predicted >> 20} MiB fits now and goes first", False)
    if reading.used + still + predicted > budget:
        return (f"predicted peak {predicted >> 20} MiB does not fit: {reading.used >> 20} MiB used + "
                f"{still >> 20} MiB still needed by {len(held)} running builds > {budget >> 20} MiB "
                f"(mem_high {settings.mem_high:g}% of {reading.total >> 20} MiB, {reading.source})", True)
    return None, False


def _decide(settings: SlotSettings, env: Mapping[str, str], predicted: int | None, ticket: Ticket,
            meta: dict[str, object], k: int, watch: LockDirWatch
            ) -> tuple[str | None, bool, dict[str, object] | None, str | None]:
    """With slot k locked: the memory verdict and, on admission, the holder record (and where it
    was written), under the queue mutex, so that two waiters (a head and one that stepped aside)
    never both take the same room."""
    mutex = lockdir.open_lock(os.path.join(settings.lock_dir, "queue.lock"), settings.shared)
    try:
        if not lockdir.lock_within(mutex, settings.wait_timeout):
            return "the queue mutex is held by another process", False, None, None
        reason, too_big = memory_verdict(settings, env, predicted, ticket.seq, k)
        if reason is not None:
            return reason, too_big, None, None
        record = {**meta, "slot": k, "admitted": time.time()}
        return None, False, record, watch.record(os.path.join(settings.lock_dir, f"slot-{k}.json"), record)
    finally:
        os.close(mutex)


def _check_deadline(deadline: float | None, settings: SlotSettings, ticket: Ticket, reason: str | None = None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        from cargo_agent.supervise import format_duration

        busy = len([h for h in holders(settings) if h.slot is not None and h.slot < settings.count])
        raise SlotWaitTimeoutError(
            f"gave up waiting for a build slot after {format_duration(settings.wait_timeout or 0)} "
            f"({busy}/{settings.count} slots busy, position {_position(settings, ticket)} in queue"
            + (f"; {reason}" if reason else "") + ")",
            help=("retry later: the slots are busy with other builds, nothing is wrong with yours",
                  "see who holds the slots: cargo-agent --status; or raise CARGO_AGENT_WAIT_TIMEOUT"))


def newest_holder_pid(settings: SlotSettings) -> int | None:
    """The most recently admitted holder, when there are several (the oldest is never it)."""
    held = [h for h in holders(settings) if h.admitted is not None]
    if len(held) < 2:
        return None
    return max(held, key=lambda h: h.admitted or 0.0).pid
