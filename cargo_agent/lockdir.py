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
- every failure is a `LockDirError`: one line naming the file, exit 2, never a traceback or a hang.
"""

from __future__ import annotations

import errno
import os
import stat

from cargo_agent.errors import UsageError

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
    return (err.strerror or str(err)).lower()


def _check_opened(fd: int, path: str) -> None:
    """The open fd must be a regular file with one link: not a FIFO, device, directory, or a
    hard link to somebody's file."""
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
    if kind is not None:
        os.close(fd)
        raise LockDirError(f"cannot use {path}: it is {kind}; refusing it",
                           help=("something other than cargo-agent put it there: remove it",))


def open_file(path: str | os.PathLike[str], flags: int, mode: int, create: bool = True) -> int:
    """Open a file of the lock dir, creating it with `mode` (whatever the umask) if asked and
    absent. Never follows a link, never blocks, never changes a file it did not create."""
    path = os.fspath(path)
    access = flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
    extra = flags & os.O_APPEND  # never O_TRUNC: it would act before the checks (write_atomic replaces)
    try:
        if create:
            try:
                fd = os.open(path, access | extra | os.O_CREAT | os.O_EXCL | SAFE_OPEN, mode)
            except FileExistsError:
                pass
            else:
                os.fchmod(fd, mode)
                os.set_blocking(fd, True)
                return fd
        fd = os.open(path, access | extra | SAFE_OPEN)
    except OSError as err:
        if isinstance(err, FileNotFoundError) and not create:
            raise
        raise LockDirError(f"cannot open {path}: {_describe(err)}") from None
    _check_opened(fd, path)
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


def write_atomic(path: str | os.PathLike[str], data: bytes, shared: bool) -> None:
    """Replace `path` with `data`: an O_EXCL temporary beside it, renamed over it."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | SAFE_OPEN, file_mode(shared))
        try:
            os.fchmod(fd, file_mode(shared))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise LockDirError(f"cannot write {path}: {_describe(err)}") from None


def append(path: str | os.PathLike[str], data: bytes, shared: bool) -> None:
    fd = open_file(path, os.O_WRONLY | os.O_APPEND, file_mode(shared))
    try:
        os.write(fd, data)
    except OSError as err:
        raise LockDirError(f"cannot write {os.fspath(path)}: {_describe(err)}") from None
    finally:
        os.close(fd)


def make_dir(path: str | os.PathLike[str], shared: bool) -> None:
    """A directory of the lock dir (or the lock dir itself), created with its mode set on the
    directory opened without following links (no chmod-by-path race). An existing one is
    checked, not changed."""
    path = os.fspath(path)
    mode = dir_mode(shared)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    except OSError as err:
        raise LockDirError(f"cannot create {path}: {_describe(err)}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise LockDirError(f"cannot create {path}: {_describe(err)}") from None
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


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
        make_dir(path, shared)
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
        if info.st_uid != os.getuid():
            raise LockDirError(f"lock dir {path} is owned by uid {info.st_uid}, not by you (uid {os.getuid()})",
                               help=("remove it, or set CARGO_AGENT_LOCK_DIR to a directory of your own",))
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise LockDirError(f"lock dir {path} is group- or world-writable (mode {stat.S_IMODE(info.st_mode):o})",
                               help=(f"chmod 700 {path}",))
    if not os.access(path, os.W_OK | os.X_OK):
        raise LockDirError(f"lock dir {path} is not writable by you")


def remove(path: str | os.PathLike[str]) -> None:
    """Unlink a file of the lock dir (a link itself, never its target); gone already is fine."""
    try:
        os.unlink(path)
    except OSError:
        pass


def try_lock(fd: int, shared: bool = False) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def locked_inodes() -> dict[tuple[int, int], int]:
    """(device, inode) -> pid for every flock held on the host, from /proc/locks (no locking)."""
    found: dict[tuple[int, int], int] = {}
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
                found[(os.makedev(int(major, 16), int(minor, 16)), int(inode))] = int(parts[4])
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
