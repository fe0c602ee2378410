"""Every file operation in a lock dir: the one place that creates, opens, reads, writes, renames
and changes modes of files there.

A lock dir may be shared by every member of a group, so anything in it may have been planted by
another user: a symlink to a file of yours, a hard link to a root-only file, a FIFO that blocks
an open, a directory where a file should be. So, here and only here:
- nothing is opened through a symlink (`O_NOFOLLOW`), nothing blocks on open (`O_NONBLOCK`, then
  the type is checked on the open fd), and only a regular file with one link is used;
- modes are set with `fchmod` on a file this process has just created (`O_EXCL`), never by path
  and never on a file someone else made;
- writes go to an `O_EXCL` temporary that is renamed over the target (the rename replaces a
  planted link itself, never what it points to);
- the directory of every file is opened without following links and the file is reached from
  that fd (`openat`, `renameat`, `unlinkat`), so a subdir swapped for a symlink leads nowhere;
- a file must be ours (or root's), or carry the group of a shared (setgid) dir;
- every failure is a `LockDirError`: one line naming the file, exit 2, never a traceback or a hang.
Readers of what these files hold (slots.Holder, report.RunRecord) treat it as hostile input too:
wrong shapes read as missing, and text is escaped before it reaches a terminal (`printable`).
"""

from __future__ import annotations

import errno
import os
import stat

from cargo_agent.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

# Read-only is enough for flock, and lets every member of a shared dir's group lock files that
# another member created.
READ = os.O_RDONLY
SAFE_OPEN = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
MAX_READ = 1 << 20  # no file cargo-agent writes in a lock dir is larger (the run log rotates at this)


class LockDirError(UsageError):
    """A file in the lock dir cannot be used safely (wrong type, a link, unreadable, disk full)."""


def file_mode(shared: bool) -> int:
    return 0o660 if shared else 0o600


def dir_mode(shared: bool) -> int:
    return 0o2770 if shared else 0o700


def _describe(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "it is a symlink; refusing to follow it"
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    if err.errno == errno.EISDIR:
        return "it is a directory"
    if err.errno == errno.ENOTDIR:
        return "a part of the path is not a directory"
    return (err.strerror or str(err)).lower()


def owner_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OSError):
        return f"uid {uid}"


def _parent(path: str, follow: bool = False) -> tuple[int, str]:
    """The directory of `path`, opened without following a link (a group member may have swapped
    a subdir like `queue` for a symlink), and the name inside it. Every operation below works on
    that fd (`*at` calls), so a swap after this check changes nothing. `follow`: the parent of
    the lock dir itself, which the operator chose (`/var/run` may well be a link)."""
    directory, name = os.path.split(path)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(directory or ".", flags)
    except OSError as err:
        why = "it is a symlink; refusing to follow it" if os.path.islink(directory) else _describe(err)
        raise LockDirError(f"cannot open {directory}: {why}") from None
    return fd, name


def _check_opened(fd: int, path: str, parent: int) -> None:
    """The open fd must be a regular file with one link: not a FIFO, device, directory, or a
    hard link to somebody's file; and it must be ours (or root's), or carry the group of a
    shared (setgid) dir."""
    info = os.fstat(fd)
    kind = None
    if stat.S_ISDIR(info.st_mode):
        kind = "a directory"
    elif stat.S_ISFIFO(info.st_mode):
        kind = "a FIFO"
    elif not stat.S_ISREG(info.st_mode):
        kind = "not a regular file"
    elif info.st_nlink != 1:
        kind = f"a file with {info.st_nlink} hard links"
    elif info.st_uid not in (os.geteuid(), 0):
        where = os.fstat(parent)
        if not (where.st_mode & stat.S_ISGID and info.st_gid == where.st_gid):
            kind = f"owned by {owner_name(info.st_uid)}, outside the lock dir's group"
    if kind is not None:
        os.close(fd)
        raise LockDirError(f"cannot use {path}: it is {kind}; refusing it",
                           help=("something other than cargo-agent put it there: remove it",))


def open_file(path: str | os.PathLike[str], flags: int, mode: int, create: bool = True,
              exclusive: bool = False) -> int:
    """Open a file of the lock dir, creating it with `mode` (whatever the umask) if asked and
    absent; `exclusive`: it must not exist yet. Never follows a link, never blocks, never
    changes a file it did not create."""
    path = os.fspath(path)
    access = flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
    extra = flags & os.O_APPEND  # never O_TRUNC: it would act before the checks (write_atomic replaces)
    parent, name = _parent(path)
    try:
        try:
            if create:
                try:
                    fd = os.open(name, access | extra | os.O_CREAT | os.O_EXCL | SAFE_OPEN, mode, dir_fd=parent)
                except FileExistsError:
                    if exclusive:
                        raise
                else:
                    os.fchmod(fd, mode)
                    os.set_blocking(fd, True)
                    return fd
            fd = os.open(name, access | extra | SAFE_OPEN, dir_fd=parent)
        except OSError as err:
            if isinstance(err, FileNotFoundError) and not create:
                raise
            raise LockDirError(f"cannot open {path}: {_describe(err)}") from None
        _check_opened(fd, path, parent)
    finally:
        os.close(parent)
    os.set_blocking(fd, True)
    return fd


def open_lock(path: str | os.PathLike[str], shared: bool) -> int:
    """A lock file, opened (and created if missing) for flock."""
    return open_file(path, READ, file_mode(shared))


def read_text(path: str | os.PathLike[str]) -> str | None:
    """The text of a small file of the lock dir; None if it does not exist."""
    try:
        fd = open_file(path, READ, 0, create=False)
    except FileNotFoundError:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            return handle.read(MAX_READ).decode("utf-8", "replace")
    except OSError as err:
        raise LockDirError(f"cannot read {os.fspath(path)}: {_describe(err)}") from None


def lines_from_end(path: str | os.PathLike[str], chunk: int = 64 << 10) -> Iterator[str]:
    """The lines of a file of the lock dir, the last first, read in chunks from its end: the
    newest records of a long log without reading it whole (builds do this on every run).
    Nothing if it does not exist; at most MAX_READ bytes, as read_text."""
    try:
        fd = open_file(path, READ, 0, create=False)
    except FileNotFoundError:
        return
    try:
        end = os.fstat(fd).st_size
        floor = max(0, end - MAX_READ)
        carry = b""
        while end > floor:
            start = max(floor, end - chunk)
            pieces = (os.pread(fd, end - start, start) + carry).split(b"\n")
            end = start
            # The first piece may go on before `start`: kept for the next chunk (and dropped
            # at the MAX_READ cut, where it is only the end of a line).
            carry = pieces.pop(0) if start > 0 else b""
            for piece in reversed(pieces):
                yield piece.decode("utf-8", "replace")
    except OSError as err:
        raise LockDirError(f"cannot read {os.fspath(path)}: {_describe(err)}") from None
    finally:
        os.close(fd)


def write_fd(fd: int, data: bytes, path: str | os.PathLike[str]) -> None:
    """All of `data` to a file of the lock dir opened here (a full disk is an error, not a traceback)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as err:
        raise LockDirError(f"cannot write {os.fspath(path)}: {_describe(err)}") from None


def write_atomic(path: str | os.PathLike[str], data: bytes, shared: bool) -> None:
    """Replace `path` with `data`: an O_EXCL temporary beside it, renamed over it (the rename
    replaces a planted link itself, never what it points to)."""
    path = os.fspath(path)
    parent, name = _parent(path)
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | SAFE_OPEN, file_mode(shared), dir_fd=parent)
        try:
            os.fchmod(fd, file_mode(shared))
            write_fd(fd, data, path)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
    except (OSError, LockDirError) as err:
        try:
            os.unlink(tmp, dir_fd=parent)
        except OSError:
            pass
        if isinstance(err, LockDirError):
            raise
        raise LockDirError(f"cannot write {path}: {_describe(err)}") from None
    finally:
        os.close(parent)


def append(path: str | os.PathLike[str], data: bytes, shared: bool) -> None:
    fd = open_file(path, os.O_WRONLY | os.O_APPEND, file_mode(shared))
    try:
        write_fd(fd, data, path)
    finally:
        os.close(fd)


def rename(path: str | os.PathLike[str], new_name: str) -> None:
    """Rename a file of the lock dir within its directory (a link is renamed itself, never followed)."""
    path = os.fspath(path)
    parent, name = _parent(path)
    try:
        os.replace(name, new_name, src_dir_fd=parent, dst_dir_fd=parent)
    except OSError as err:
        raise LockDirError(f"cannot rename {path}: {_describe(err)}") from None
    finally:
        os.close(parent)


def listdir(path: str | os.PathLike[str]) -> list[str]:
    """Names in a directory of the lock dir (a symlink, a FIFO or a missing dir lists nothing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return []
    try:
        return os.listdir(fd)
    except OSError:
        return []
    finally:
        os.close(fd)


def make_dir(path: str | os.PathLike[str], shared: bool, top: bool = False) -> None:
    """A directory of the lock dir (`top`: the lock dir itself), created with its mode set on the
    directory opened without following links (no chmod-by-path race). An existing one is
    checked, not changed."""
    path = os.fspath(path)
    mode = dir_mode(shared)
    parent, name = _parent(path, follow=top)
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                raise LockDirError(f"cannot use {path}: it is a symlink; refusing to follow it",
                                   help=("something other than cargo-agent put it there: remove it",)) from None
            if not stat.S_ISDIR(info.st_mode):
                raise LockDirError(f"cannot use {path}: it is not a directory; refusing it",
                                   help=("something other than cargo-agent put it there: remove it",)) from None
            return
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            if os.fstat(fd).st_uid != os.geteuid():  # swapped for someone else's between mkdir and open
                raise LockDirError(f"cannot create {path}: it was replaced while being created")
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    except OSError as err:
        raise LockDirError(f"cannot create {path}: {_describe(err)}") from None
    finally:
        os.close(parent)


def prepare(path: str | os.PathLike[str], shared: bool) -> None:
    """Create the lock dir if missing; refuse one that is unsafe to trust."""
    path = os.fspath(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        except OSError as err:
            raise LockDirError(f"cannot create lock dir {path}: {_describe(err)}") from None
        make_dir(path, shared, top=True)
        info = os.lstat(path)
    except OSError as err:
        raise LockDirError(f"cannot use lock dir {path}: {_describe(err)}") from None
    if stat.S_ISLNK(info.st_mode):
        raise LockDirError(f"lock dir {path} is a symlink; refusing to follow it",
                           help=("point CARGO_AGENT_LOCK_DIR at a real directory",))
    if not stat.S_ISDIR(info.st_mode):
        raise LockDirError(f"lock dir {path} is not a directory")
    if shared:
        if info.st_mode & stat.S_IWOTH:
            raise LockDirError(f"shared lock dir {path} is world-writable; refusing it",
                               help=(f"chmod o-w {path} (use a group and setgid for sharing)",))
    else:
        me = os.geteuid()
        if info.st_uid != me:
            owner = owner_name(info.st_uid)
            raise LockDirError(
                f"lock dir {path} belongs to {owner} (uid {info.st_uid}), not to you ({owner_name(me)}, uid {me})",
                help=(f"set CARGO_AGENT_LOCK_DIR to a directory of your own, the same in every shell and job "
                      f"(it is your slot pool), e.g. {os.path.join(os.path.expanduser('~'), '.cargo-agent-locks')}",
                      f"note: only {owner} or root can remove {path}"))
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise LockDirError(f"lock dir {path} is group- or world-writable (mode {stat.S_IMODE(info.st_mode):o})",
                               help=(f"chmod 700 {path}",))
    if not os.access(path, os.W_OK | os.X_OK):
        raise LockDirError(f"lock dir {path} is not writable by you")


def lock_within(fd: int, timeout: float | None) -> bool:
    """flock(LOCK_EX) on `fd`, giving up after `timeout` seconds (None: wait in the kernel). For
    the short mutexes of a lock dir: a group member holding one forever must not hang everyone."""
    import fcntl

    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    import time

    deadline = time.monotonic() + timeout
    pause = 0.001
    while not try_lock(fd):
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
    return True


def remove(path: str | os.PathLike[str]) -> None:
    """Unlink a file of the lock dir (a link itself, never its target); gone already is fine."""
    try:
        parent, name = _parent(os.fspath(path))
    except LockDirError:
        return
    try:
        os.unlink(name, dir_fd=parent)
    except OSError:
        pass
    finally:
        os.close(parent)


def printable(text: str, limit: int | None = None) -> str:
    """`text` from a file of the lock dir (another user's command line), safe for a terminal:
    control characters (escape sequences, newlines, carriage returns) are shown escaped."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return text if limit is None else text[:limit]


def try_lock(fd: int, shared: bool = False) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def held_elsewhere(path: str | os.PathLike[str]) -> bool | None:
    """Whether another open file holds a flock on this lock file, without reading /proc/locks: a
    non-blocking shared try, let go at once. False if there is no such file; None if it cannot
    be told (not a file this module would open)."""
    import fcntl

    try:
        fd = open_file(path, READ, 0, create=False)
    except FileNotFoundError:
        return False
    except (OSError, UsageError):
        return None
    try:
        if try_lock(fd, shared=True):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    except OSError:
        return None
    finally:
        os.close(fd)


def locked_inodes() -> dict[tuple[int, int], int]:
    """(device, inode) -> pid (the first listed) for every flock held on the host (no locking)."""
    return {key: pids[0] for key, pids in lock_holders().items()}


def lock_holders() -> dict[tuple[int, int], list[int]]:
    """(device, inode) -> pids of every holder of a flock on it (shared locks have several),
    from /proc/locks (no locking). Not cheap: the kernel takes its file-lock lock for writing to
    show the file, which waits for an RCU grace period, milliseconds on a process's first
    read; paths every build takes look for a cheaper sign first."""
    found: dict[tuple[int, int], list[int]] = {}
    try:
        with open("/proc/locks") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[-4] != "->":
            try:
                major, minor, inode = parts[5].split(":")
                key = (os.makedev(int(major, 16), int(minor, 16)), int(inode))
                found.setdefault(key, []).append(int(parts[4]))
            except ValueError:
                continue
    return found


def is_locked(path: str | os.PathLike[str], locks: dict[tuple[int, int], int]) -> bool:
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) in locks


def lock_holder(path: str | os.PathLike[str], locks: dict[tuple[int, int], int]) -> int | None:
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return locks.get((info.st_dev, info.st_ino))
