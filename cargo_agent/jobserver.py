"""The private pipe jobserver one build gets, in the GNU make protocol cargo speaks: each byte in
the pipe is one job a client may start on top of its implicit one. This module only deals with
the pipe (no lock dir, no host tokens: tokens.py decides when to lend and take back).

- cargo gets both ends (`pass_fds`) and `CARGO_MAKEFLAGS` in the form cargo itself hands build
  scripts, `-j --jobserver-fds=R,W --jobserver-auth=R,W`. The pipe style works with old and new
  GNU make (4.3 rejects `fifo:`); with it, cargo ignores `-j`, `build.jobs` and `CARGO_BUILD_JOBS`.
- The broker reads through its own open of the read end (`/proc/self/fd/R`, non-blocking), so
  cargo's end stays blocking: O_NONBLOCK belongs to an open file description, and make may not
  expect it.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # collections.abc only for the checker: this module is on the compiling path
if TYPE_CHECKING:
    from collections.abc import Mapping

MAKEFLAGS_ENV = "CARGO_MAKEFLAGS"


def makeflags(read_fd: int, write_fd: int) -> str:
    return f"-j --jobserver-fds={read_fd},{write_fd} --jobserver-auth={read_fd},{write_fd}"


def inherited(env: Mapping[str, str]) -> tuple[int, int] | None:
    """The pipe fds of a jobserver this process inherited: CARGO_MAKEFLAGS naming both ends of
    one open pipe, read and write (not fds that were closed and reused since)."""
    import fcntl
    import stat

    text = env.get(MAKEFLAGS_ENV) or ""
    for word in reversed(text.split()):
        for prefix in ("--jobserver-auth=", "--jobserver-fds="):
            if word.startswith(prefix):
                parts = word[len(prefix):].split(",")
                try:
                    fds = int(parts[0]), int(parts[1])
                    ends = [os.fstat(fd) for fd in fds]
                    modes = [fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE for fd in fds]
                except (IndexError, ValueError, OSError):
                    return None
                if all(stat.S_ISFIFO(e.st_mode) for e in ends) and ends[0].st_ino == ends[1].st_ino \
                        and modes == [os.O_RDONLY, os.O_WRONLY]:
                    return fds
                return None
    return None


class Pipe:
    """One build's jobserver pipe, starting empty."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()  # close-on-exec here; `pass_fds` hands them to cargo
        self._mine = os.open(f"/proc/self/fd/{self.read_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    @property
    def fds(self) -> tuple[int, int]:
        return self.read_fd, self.write_fd

    @property
    def makeflags(self) -> str:
        return makeflags(self.read_fd, self.write_fd)

    def waiting(self) -> int:
        """Bytes in the pipe that no client has taken (FIONREAD)."""
        import fcntl
        import termios

        # A bytes buffer, not array.array: `array` imports collections.abc (milliseconds a build).
        count = fcntl.ioctl(self._mine, termios.FIONREAD, b"\0\0\0\0")
        return int.from_bytes(count, sys.byteorder, signed=True)

    def put(self) -> None:
        """One byte: one more job. Never blocks (written only into an empty pipe)."""
        os.write(self.write_fd, b"+")

    def take(self, n: int) -> int:
        """Read back up to `n` bytes that sit unused; returns how many (never blocks)."""
        if n <= 0:
            return 0
        try:
            return len(os.read(self._mine, n))
        except (BlockingIOError, InterruptedError):
            return 0

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd, self._mine):
            os.close(fd)
