"""Host-wide build slots: N kernel locks, a FIFO queue in front of them, holder metadata.

Layout of the lock dir (never deleted while it may be in use):
  slots               the host-wide slot count N (written once; every wrapper agrees on it)
  slot-<k>.lock       slot k: held with flock(LOCK_EX) by the build that owns it
  slot-<k>.json       who holds slot k (written by the holder; read by --status, which takes no lock)
  queue.lock, queue.seq   a short mutex and a counter for handing out tickets
  queue/<seq>-<pid>.ticket  a waiter's ticket, flock'ed by the waiter while it waits
  runs.jsonl          the run log (see report.py)

Why fcntl.flock and not filelock's FileLock: the slot lock must be *inherited* by every
process of the build (so that a SIGKILLed wrapper's build still holds its slot until the
last process exits), waiters must block in the kernel instead of polling, and lock files
must be opened without following symlinks. filelock offers none of the three.

Handoff: each waiter blocks in the kernel on its predecessor's ticket; only the head of the
queue polls the slots (every 2 ms), so a freed slot goes to the oldest waiter within a few
milliseconds. A dead waiter's ticket is unlocked by the kernel and skipped.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cargo_agent import memory
from cargo_agent.config import Config
from cargo_agent.errors import SlotWaitTimeoutError, UsageError

SLOT_ENV = "CARGO_AGENT_SLOT"
HEAD_POLL_SECONDS = 0.002
PROGRESS_EVERY_SECONDS = 30.0
# Read-only is enough for flock, and lets every member of a shared dir's group lock files that
# another member created.
LOCK_FLAGS = os.O_RDONLY | os.O_CREAT


@dataclass
class SlotSettings:
    lock_dir: Path
    count: int  # slots this invocation may use (<= ceiling)
    ceiling: int  # N, host-wide
    shared: bool  # the lock dir was set by the host file
    formula: str  # how N was derived, for --dry-run and docs
    mem_high: float
    mem_kill: float | None
    wait_timeout: float | None


def default_lock_dir(env: Mapping[str, str]) -> Path:
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "cargo-agent"
    return Path(f"/tmp/cargo-agent-{os.getuid()}")


def auto_slots(config: Config, env: Mapping[str, str]) -> tuple[int, str]:
    from cargo_agent.envshape import cores

    total = memory.total_memory(env)
    per_build, reserve = int(config["per_build_memory"]), int(config["host_reserve"])
    by_memory = max(1, (total - reserve) // per_build)
    n = max(1, min(by_memory, cores()))
    gib = 1 << 30
    formula = (f"min(floor(({total / gib:.1f}G total - {reserve / gib:g}G reserve) / "
               f"{per_build / gib:g}G per build) = {by_memory}, {cores()} cores) = {n}")
    return n, formula


def prepare_lock_dir(path: Path, shared: bool) -> None:
    """Create the dir 0700 if missing; refuse one that is unsafe to trust."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(path, 0o700)
            if shared:
                os.chmod(path, 0o2770)  # the host config shares it: group-usable, setgid
        except FileExistsError:
            pass
        except OSError as err:
            raise UsageError(f"cannot create lock dir {path}: {err.strerror}") from None
        info = os.lstat(path)
    except OSError as err:
        raise UsageError(f"cannot use lock dir {path}: {err.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise UsageError(f"lock dir {path} is a symlink; refusing to follow it",
                         help=("point CARGO_AGENT_LOCK_DIR at a real directory",))
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"lock dir {path} is not a directory")
    if shared:
        if info.st_mode & stat.S_IWOTH:
            raise UsageError(f"shared lock dir {path} is world-writable; refusing it",
                             help=(f"chmod o-w {path} (use a group and setgid for sharing)",))
    else:
        if info.st_uid != os.getuid():
            raise UsageError(f"lock dir {path} is owned by uid {info.st_uid}, not by you (uid {os.getuid()})",
                             help=("remove it, or set CARGO_AGENT_LOCK_DIR to a directory of your own",))
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UsageError(f"lock dir {path} is group- or world-writable (mode {stat.S_IMODE(info.st_mode):o})",
                             help=(f"chmod 700 {path}",))
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"lock dir {path} is not writable by you")


def _read_ceiling(path: Path) -> int | None:
    try:
        text = (path / "slots").read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise UsageError(f"cannot read {path / 'slots'}: {err.strerror}") from None
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"invalid slot count '{text}' in {path / 'slots'}: expected a whole number >= 1")
    return int(text)


def _write_ceiling(path: Path, n: int) -> None:
    tmp = path / f".slots.{os.getpid()}"
    tmp.write_text(f"{n}\n")
    tmp.chmod(0o644)  # every wrapper on the host reads it
    try:
        os.link(tmp, path / "slots")  # atomic create-if-absent: the first wrapper decides N
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def resolve(config: Config, env: Mapping[str, str], create: bool = True) -> SlotSettings:
    shared = config.host_lock_dir is not None
    lock_dir = Path(config["lock_dir"]) if config["lock_dir"] else default_lock_dir(env)
    if create:
        prepare_lock_dir(lock_dir, shared)
    if config.host_slots is not None:
        ceiling, formula = config.host_slots, f"slots = {config.host_slots} in the host config"
    else:
        ceiling, formula = auto_slots(config, env)
    stored = _read_ceiling(lock_dir) if lock_dir.is_dir() else None
    if stored is None and create:
        _write_ceiling(lock_dir, ceiling)
        stored = _read_ceiling(lock_dir)
    if stored is not None and stored != ceiling:
        ceiling, formula = stored, f"{stored}, from {lock_dir / 'slots'} (shared by every wrapper on the host)"
    requested = config["slots"]
    count = min(ceiling, requested) if requested else ceiling
    return SlotSettings(lock_dir, count, ceiling, shared, formula, float(config["mem_high"]),
                        config["mem_kill"], config["wait_timeout"])


# ---- low-level locks -----------------------------------------------------------------

def share(fd: int, mode: int) -> None:
    """Give a file we created the mode asked for, whatever our umask: in a shared lock dir the
    group must be able to use what any member created. Only the owner may chmod; others skip."""
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, mode)
    except OSError:
        pass


def open_shared(path: Path, flags: int, mode: int) -> int:
    """Open (creating if asked) a file of the lock dir: never through a symlink, never inherited
    by accident, and with `mode` whatever our umask (see `share`). Every file cargo-agent
    creates in a lock dir goes through here."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    share(fd, mode)
    return fd


def open_lock(path: Path, mode: int = 0o600) -> int:
    try:
        return open_shared(path, LOCK_FLAGS, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UsageError(f"lock file {path} is a symlink; refusing to follow it") from None
        raise UsageError(f"cannot open lock file {path}: {err.strerror}") from None


def try_lock(fd: int, shared: bool = False) -> bool:
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def locked_inodes() -> dict[tuple[int, int], int]:
    """(device, inode) -> pid for every flock held on the host, from /proc/locks (no locking)."""
    found: dict[tuple[int, int], int] = {}
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[-4] != "->":
            try:
                major, minor, inode = parts[5].split(":")
                found[(os.makedev(int(major, 16), int(minor, 16)), int(inode))] = int(parts[4])
            except ValueError:
                continue
    return found


def _is_locked(path: Path, locks: dict[tuple[int, int], int]) -> bool:
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) in locks


# ---- holders -------------------------------------------------------------------------

@dataclass
class Slot:
    index: int
    fd: int
    path: Path
    settings: SlotSettings
    nested: bool = False
    waited: float = 0.0
    meta_path: Path | None = None
    queued_at: float | None = None  # wall clock, for the run report and handoff measurements
    admitted_at: float | None = None

    def env_value(self) -> str:
        return f"{self.path}:{self.fd}:{os.getpid()}"

    def release(self) -> None:
        if self.nested:
            return
        if self.meta_path is not None:
            try:
                self.meta_path.unlink()  # before the unlock, so we never delete the next holder's file
            except OSError:
                pass
        os.close(self.fd)


def shown_command(value: object) -> str:
    """A command recorded in holder or ticket metadata, as one line."""
    return " ".join(str(word) for word in value) if isinstance(value, list) else ""


def age(since: object, now: float) -> float | None:
    return round(now - float(since), 1) if isinstance(since, (int, float)) else None


def _write_json(path: Path, data: dict[str, object], mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = open_shared(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def holder_meta(command: list[str], cwd: Path) -> dict[str, object]:
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"pid": os.getpid(), "user": user, "command": command, "cwd": str(cwd), "admitted": time.time()}


def _ancestors() -> set[int]:
    pids: set[int] = set()
    pid = os.getppid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            pid = int(fields[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


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
    path = Path(path_text)
    if path.parent != settings.lock_dir or not (path.name.startswith("slot-") and path.name.endswith(".lock")):
        return None
    try:
        index = int(path.name[len("slot-"):-len(".lock")])
        record = json.loads((settings.lock_dir / f"slot-{index}.json").read_text())
        on_disk = os.stat(path, follow_symlinks=False)
    except (ValueError, OSError):
        return None
    if record.get("pid") != holder or holder not in _ancestors() or not _is_locked(path, locked_inodes()):
        return None
    try:
        opened = os.fstat(fd)
        inherited = (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)
    except OSError:
        inherited = False
    return Slot(index, fd if inherited else -1, path, settings, nested=True)


# ---- the queue -----------------------------------------------------------------------

@dataclass
class Ticket:
    seq: int
    fd: int
    path: Path


def _enqueue(settings: SlotSettings, meta: dict[str, object]) -> Ticket:
    queue = settings.lock_dir / "queue"
    mode = 0o660 if settings.shared else 0o600
    try:
        os.mkdir(queue, 0o700)
        if settings.shared:
            os.chmod(queue, 0o2770)  # group-writable and setgid, whatever our umask
    except FileExistsError:
        pass
    except OSError as err:
        raise UsageError(f"cannot use lock dir {settings.lock_dir}: {err.strerror}") from None
    mutex = open_lock(settings.lock_dir / "queue.lock", mode)
    try:
        fcntl.flock(mutex, fcntl.LOCK_EX)  # a short critical section; blocks in the kernel
        counter = settings.lock_dir / "queue.seq"
        try:
            seq = int(counter.read_text().strip() or 0) + 1
        except (FileNotFoundError, ValueError):
            seq = 1
        path = queue / f"{seq:012d}-{os.getpid()}.ticket"
        try:
            counter_fd = open_shared(counter, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(counter_fd, "w") as handle:  # only ever written under the queue mutex
                handle.write(f"{seq}\n")
            fd = open_shared(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
        except OSError as err:
            raise UsageError(f"cannot use lock dir {settings.lock_dir}: {err.strerror} ({err.filename})") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({**meta, "queued": time.time()}).encode())
        return Ticket(seq, fd, path)
    finally:
        os.close(mutex)


def _tickets(settings: SlotSettings) -> list[tuple[int, Path]]:
    queue = settings.lock_dir / "queue"
    found = []
    try:
        names = os.listdir(queue)
    except FileNotFoundError:
        return []
    for name in names:
        if name.endswith(".ticket"):
            try:
                found.append((int(name.split("-", 1)[0]), queue / name))
            except ValueError:
                continue
    return sorted(found)


def _live_predecessor(settings: SlotSettings, ticket: Ticket) -> tuple[int, int] | None:
    """(fd, seq) of the nearest live ticket ahead of ours; dead tickets are removed."""
    ahead = [(seq, path) for seq, path in _tickets(settings) if seq < ticket.seq]
    for seq, path in reversed(ahead):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        if try_lock(fd, shared=True):
            # Its owner is gone (tickets are locked before the queue mutex is released).
            try:
                path.unlink()
            except OSError:
                pass
            os.close(fd)
            continue
        return fd, seq
    return None


def _position(settings: SlotSettings, ticket: Ticket) -> int:
    locks = locked_inodes()
    return 1 + sum(1 for seq, path in _tickets(settings) if seq < ticket.seq and _is_locked(path, locks))


def holders(settings: SlotSettings) -> list[dict[str, object]]:
    """Slots that are held now, with their holders' metadata (no lock is taken)."""
    locks = locked_inodes()
    found = []
    for k in range(settings.ceiling):
        path = settings.lock_dir / f"slot-{k}.lock"
        if not _is_locked(path, locks):
            continue
        meta: dict[str, object] = {"slot": k}
        try:
            meta.update(json.loads((settings.lock_dir / f"slot-{k}.json").read_text()))
        except (OSError, ValueError):
            meta["pid"] = locks.get((os.stat(path).st_dev, os.stat(path).st_ino))
        found.append(meta)
    return found


def queue_entries(settings: SlotSettings) -> list[dict[str, object]]:
    locks = locked_inodes()
    entries = []
    for seq, path in _tickets(settings):
        if not _is_locked(path, locks):
            continue
        try:
            meta = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            meta = {}
        entries.append({"seq": seq, **meta})
    return entries


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
        held = holders(self.settings)
        busy = f"{len(held)}/{self.settings.count} slots busy"
        now = time.time()
        who = "; ".join(f"pid {h.get('pid')} {shown_command(h.get('command'))[:40]} "
                        f"({age(h.get('admitted'), now)}s)" for h in held[:3])
        line = (f"cargo-agent: waiting for a build slot: {busy}, position {_position(self.settings, ticket)} "
                f"in queue, {int(elapsed)}s" + (f"; {reason}" if reason else "") + (f"; held by {who}" if who else ""))
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line[:200])
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _wait_on(fd: int, timeout: float | None) -> bool:
    """Block in the kernel until the predecessor's ticket is unlocked (or `timeout` passes)."""
    done = threading.Event()

    def block() -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            pass
        done.set()

    threading.Thread(target=block, daemon=True).start()
    return done.wait(timeout)


def acquire(settings: SlotSettings, command: list[str], cwd: Path, env: Mapping[str, str]) -> Slot:
    """Wait in FIFO order for a slot (and for memory below mem_high); raise on wait timeout."""
    meta = holder_meta(command, cwd)
    mode = 0o660 if settings.shared else 0o600
    progress = _Progress(settings)
    deadline = progress.started + settings.wait_timeout if settings.wait_timeout else None
    queued_at = time.time()
    ticket = _enqueue(settings, meta)
    try:
        while True:  # wait to become the head of the queue
            predecessor = _live_predecessor(settings, ticket)
            if predecessor is None:
                break
            fd, _ = predecessor
            try:
                while not _wait_on(fd, 1.0):
                    _check_deadline(deadline, settings, ticket)
                    progress.update(ticket)
            finally:
                os.close(fd)
        fds = {k: open_lock(settings.lock_dir / f"slot-{k}.lock", mode) for k in range(settings.count)}
        try:
            while True:  # the head polls the slots
                reading = memory.read(env)
                reason = None
                if reading.used_percent > settings.mem_high:
                    reason = (f"memory at {reading.used_percent:.0f}% is above mem_high "
                              f"{settings.mem_high:g}% ({reading.source})")
                else:
                    for k, fd in fds.items():
                        if try_lock(fd):
                            meta_path = settings.lock_dir / f"slot-{k}.json"
                            _write_json(meta_path, {**meta, "slot": k, "admitted": time.time()}, mode)
                            slot = Slot(k, fd, settings.lock_dir / f"slot-{k}.lock", settings,
                                        waited=time.monotonic() - progress.started, meta_path=meta_path,
                                        queued_at=queued_at, admitted_at=time.time())
                            del fds[k]
                            return slot
                _check_deadline(deadline, settings, ticket, reason)
                progress.update(ticket, reason)
                time.sleep(HEAD_POLL_SECONDS if reason is None else 0.2)
        finally:
            for fd in fds.values():
                os.close(fd)
    finally:
        progress.done()
        try:
            ticket.path.unlink()
        except OSError:
            pass
        os.close(ticket.fd)


def _check_deadline(deadline: float | None, settings: SlotSettings, ticket: Ticket, reason: str | None = None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        from cargo_agent.supervise import format_duration

        busy = len(holders(settings))
        raise SlotWaitTimeoutError(
            f"gave up waiting for a build slot after {format_duration(settings.wait_timeout or 0)} "
            f"({busy}/{settings.count} slots busy, position {_position(settings, ticket)} in queue"
            + (f"; {reason}" if reason else "") + ")",
            help=("see who holds the slots: cargo-agent --status; or raise CARGO_AGENT_WAIT_TIMEOUT",))


def newest_holder_pid(settings: SlotSettings) -> int | None:
    held = [h for h in holders(settings) if isinstance(h.get("admitted"), (int, float))]
    if not held:
        return None
    newest = max(held, key=lambda h: float(h["admitted"]))  # type: ignore[arg-type]
    pid = newest.get("pid")
    return pid if isinstance(pid, int) else None
