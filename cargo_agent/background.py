"""A daemon thread on the documented low-level `_thread` module: `threading` brings
`functools` and `collections` with it, a few milliseconds on every build, for the two
threads a build has (the token broker; the supervisor's stderr pump)."""

from __future__ import annotations

import _thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class Stop:
    """A flag one thread sets and another waits on (threading.Event's set/wait, nothing more)."""

    def __init__(self) -> None:
        self._set = False  # read first: the lock is briefly taken by every wait() of a set Stop
        self._lock = _thread.allocate_lock()
        self._lock.acquire()  # held while not set

    def set(self) -> None:
        self._set = True
        if self._lock.locked():
            try:
                self._lock.release()
            except RuntimeError:  # set by another thread meanwhile
                pass

    def wait(self, timeout: float) -> bool:
        """True once set (at once if it was), False after `timeout` seconds."""
        if self._set:
            return True
        if self._lock.acquire(timeout=timeout):
            try:
                self._lock.release()
            except RuntimeError:  # released by a set() meanwhile: still set
                pass
            return True
        return self._set


class Thread:
    """Runs `target` in a daemon thread once started; `join` waits for it to return."""

    def __init__(self, target: Callable[[], None]) -> None:
        self._target = target
        self._done = Stop()
        self.started = False

    def start(self) -> None:
        _thread.start_new_thread(self._run, ())  # raises when no thread can be made: not started
        self.started = True

    def _run(self) -> None:
        try:
            self._target()
        finally:
            self._done.set()

    def join(self, timeout: float | None = None) -> bool:
        """True once the thread has returned (at once if it never started)."""
        if not self.started:
            return True
        return self._done.wait(-1 if timeout is None else timeout)

    def alive(self) -> bool:
        return self.started and not self._done.wait(0)
