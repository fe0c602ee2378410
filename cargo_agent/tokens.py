"""Host CPU tokens, and the private jobserver through which each build gets them.

The pool: C tokens, the lock files `cpu-<k>.lock` (k < C) of the lock dir, each held with
flock(LOCK_EX) by the supervising cargo-agent process. The fds are never inherited by the build,
so a token lives exactly as long as the process that holds it, and the kernel frees a SIGKILLed
holder's tokens at once. C is the `cpus` setting or the CPUs this process may use
(`host.cpus()`: affinity, cgroup CPU quota), whichever is lower.

One build:
- Before cargo starts, cargo-agent takes one token for cargo's implicit job, waiting for it as
  for a slot. A waiter holds `cpu-wait.lock` shared, so `--status` and every broker see it.
- cargo gets a private pipe jobserver (jobserver.py: `CARGO_MAKEFLAGS`, both fds inherited by cargo only,
  exactly the form cargo hands its own build scripts). With an inherited jobserver cargo ignores
  `-j`, `build.jobs` and `CARGO_BUILD_JOBS`: the pipe alone decides how many jobs run.
- A broker thread polls the pipe every 15 ms (FIONREAD):
  - pipe empty, under the build's cap, nobody waiting for an implicit token, a token free:
    take it and write one byte;
  - pipe empty and no token free: say so (hold `cpu-want.lock` shared) until one comes;
  - a byte unused for 60 ms while another build wants a token, or at once while a build waits
    for its implicit token: read it back and free the token. With nobody else asking, one spare
    byte stays in the pipe, so a lone build's next job starts without a round trip.
- When cargo has exited, every lent token is freed with the pipe; the implicit one after the build.

What tokens do not cover: threads inside one job (rustc's codegen workers ask the jobserver, but
LLVM and the parallel frontend have threads of their own), test binaries (capped by the test-thread
cap), and linkers' own threads (the lld cap). A job whose process is SIGKILLed never returns its
byte; its token is held until the build ends.

Nested cargo (a build script or test running cargo through the shim) takes no slot and no token:
it joins the jobserver it inherited (CARGO_MAKEFLAGS naming both ends of one open pipe; cargo lets
build scripts and test binaries inherit it), or, where it inherited none (its fds were closed),
runs on its parent's token plus whatever free tokens a broker of its own can lend it without
ever waiting.
"""

from __future__ import annotations

import os
import sys
import time

from cargo_agent import background, jobserver, lockdir

TYPE_CHECKING = False  # typing and pathlib are not imported at run time: the compiling path is timed
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import TypeVar

    from cargo_agent.config import Config
    from cargo_agent.supervise import RunSpec

    T = TypeVar("T")
    Path = str | os.PathLike[str]

TOKEN_PREFIX = "cpu-"
WAIT_FILE = "cpu-wait.lock"  # held shared by builds waiting for their implicit token
WANT_FILE = "cpu-want.lock"  # held shared by brokers whose pipe is dry and found no free token
POLL_SECONDS = 0.015
IDLE_SECONDS = 0.06
WAIT_POLL_SECONDS = 0.005
PROGRESS_EVERY_SECONDS = 30.0


class Pool:
    __slots__ = ("count", "formula", "lock_dir", "shared")

    def __init__(self, lock_dir: Path, count: int, formula: str, shared: bool) -> None:
        self.lock_dir = lock_dir
        self.count = count  # C: tokens on the host
        self.formula = formula  # how C was found, for --dry-run and --status
        self.shared = shared

    def path(self, k: int) -> str:
        return os.path.join(self.lock_dir, f"{TOKEN_PREFIX}{k}.lock")


def resolve(config: Config, lock_dir: Path, shared: bool) -> Pool:
    from cargo_agent import host

    detected, how = host.cpus()
    requested = config["cpus"]
    if requested is None:
        return Pool(lock_dir, detected, how, shared)
    origin = config.origins.get("cpus", "cpus")
    if requested > detected:
        return Pool(lock_dir, detected,
                    f"{requested} from {origin}, lowered to the {detected} CPUs this host may use ({how})", shared)
    return Pool(lock_dir, requested, f"{requested} from {origin}", shared)


# ---- holding tokens ----------------------------------------------------------------------

def _flock(fd: int, operation: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _probe_busy(fd: int) -> bool:
    """True when some other open file description holds a lock on `fd`'s file (someone waits)."""
    import fcntl

    if _flock(fd, fcntl.LOCK_EX):
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    return True


class Tokens:
    """The host tokens this process holds. Every lock file is opened once, through lockdir (no
    link is followed, a FIFO or directory in its place is an error, never a hang)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.fds: list[int] = []  # token k's lock file, then the wait and want files (twice each)
        self.held: list[int] = []  # token indices, in the order they were taken
        self.wanting = False
        self._next = os.getpid() % max(1, pool.count)  # builds start their search at different tokens
        try:
            markers = [os.path.join(pool.lock_dir, name) for name in (WAIT_FILE, WANT_FILE)]
            for path in [*(pool.path(k) for k in range(pool.count)), *markers, *markers]:
                self.fds.append(lockdir.open_lock(path, pool.shared))
        except BaseException:
            self.close()
            raise
        # One fd to hold each marker and another to probe it: a probe must not meet our own lock.
        self.wait_fd, self.want_fd, self.probe_wait_fd, self.probe_want_fd = self.fds[pool.count:]

    def try_take(self) -> bool:
        import fcntl

        count = self.pool.count
        for step in range(count):
            k = (self._next + step) % count
            if k not in self.held and _flock(self.fds[k], fcntl.LOCK_EX):
                self.held.append(k)
                self._next = (k + 1) % count
                return True
        return False

    def give_back(self, n: int) -> int:
        """Free up to `n` tokens (the newest first); returns how many."""
        import fcntl

        freed = 0
        while freed < n and self.held:
            fcntl.flock(self.fds[self.held.pop()], fcntl.LOCK_UN)
            freed += 1
        return freed

    def waiters(self) -> bool:
        """Whether a build is waiting for its implicit token."""
        return _probe_busy(self.probe_wait_fd)

    def wanters(self) -> bool:
        """Whether another build's broker found no free token for its dry pipe."""
        return _probe_busy(self.probe_want_fd)

    def want(self, on: bool) -> None:
        import fcntl

        if on and not self.wanting:
            self.wanting = _flock(self.want_fd, fcntl.LOCK_SH)
        elif not on and self.wanting:
            fcntl.flock(self.want_fd, fcntl.LOCK_UN)
            self.wanting = False

    def close(self) -> None:
        """Free every token (closing the fds drops the locks)."""
        for fd in self.fds:
            os.close(fd)
        self.fds, self.held, self.wanting = [], [], False


def acquire_first(pool: Pool, wait_timeout: float | None) -> tuple[Tokens, float]:
    """Take the token of cargo's implicit job, waiting for one if every token is held. Returns
    the tokens and the seconds waited; raises SlotWaitTimeoutError after `wait_timeout`."""
    import fcntl

    tokens = Tokens(pool)
    started = time.monotonic()
    try:
        if tokens.try_take():
            return tokens, 0.0
        registered = False
        shown = 0.0
        while True:
            if not registered:  # a broker's momentary probe may hold it: try again next round
                registered = _flock(tokens.wait_fd, fcntl.LOCK_SH)
            if tokens.try_take():
                break
            elapsed = time.monotonic() - started
            if wait_timeout is not None and elapsed >= wait_timeout:
                from cargo_agent.errors import SlotWaitTimeoutError
                from cargo_agent.supervise import format_duration

                raise SlotWaitTimeoutError(
                    f"gave up waiting for a CPU token after {format_duration(wait_timeout)} "
                    f"({_held_text(pool)})",
                    help=("see who holds them: cargo-agent --status; or raise CARGO_AGENT_WAIT_TIMEOUT",))
            if elapsed >= 1.0 and (not shown or elapsed - shown >= PROGRESS_EVERY_SECONDS):
                shown = elapsed
                sys.stderr.write(f"cargo-agent: waiting for a CPU token: {_held_text(pool)}, {int(elapsed)}s\n")
                sys.stderr.flush()
            time.sleep(WAIT_POLL_SECONDS)
        if registered:
            fcntl.flock(tokens.wait_fd, fcntl.LOCK_UN)
    except BaseException:
        tokens.close()
        raise
    return tokens, time.monotonic() - started


# ---- who holds what (no lock taken) --------------------------------------------------

def _inode(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def held_by(pool: Pool) -> dict[int, int]:
    """pid -> tokens it holds now, from /proc/locks."""
    holders = lockdir.lock_holders()
    counts: dict[int, int] = {}
    for k in range(pool.count):
        key = _inode(pool.path(k))
        for pid in holders.get(key, []) if key else []:
            counts[pid] = counts.get(pid, 0) + 1
    return counts


def waiting(pool: Pool) -> list[int]:
    """Pids of builds waiting for their implicit token."""
    key = _inode(os.path.join(pool.lock_dir, WAIT_FILE))
    return sorted(set(lockdir.lock_holders().get(key, []))) if key else []


def _held_text(pool: Pool) -> str:
    counts = held_by(pool)
    who = ", ".join(f"pid {pid}: {n}" for pid, n in sorted(counts.items(), key=lambda kv: -kv[1])[:4])
    return f"{sum(counts.values())}/{pool.count} held" + (f" ({who})" if who else "")


# ---- the jobserver and its broker ----------------------------------------------------

class Broker:
    """Lends host tokens to one build's jobserver pipe while cargo runs (a daemon thread)."""

    def __init__(self, tokens: Tokens, pipe: jobserver.Pipe, cap: int) -> None:
        self.tokens = tokens
        self.pipe = pipe
        self.cap = cap  # bytes (extra tokens) this build may have
        self.lent = 0  # host tokens behind bytes that are in the pipe or in cargo's hands
        self.peak = 0
        self.cpu_seconds = 0.0
        self.polls = 0
        self._idle_since: float | None = None
        self._stop = background.Stop()
        self._thread = background.Thread(self._run)

    def start(self) -> None:
        if self.cap > 0:  # with -j 1 there is nothing to lend
            self._thread.start()

    def stop(self) -> None:
        """Stop lending and free every lent token (the bytes die with the pipe)."""
        self._stop.set()
        self._thread.join()
        self.tokens.give_back(self.lent)
        self.lent = 0
        self.tokens.want(False)

    def _take_back(self, n: int) -> None:
        got = self.pipe.take(n)
        # Bytes beyond what we lent were written by something in the build: dropped, not counted.
        self.lent -= self.tokens.give_back(min(got, self.lent))

    def _run(self) -> None:
        try:
            while not self._stop.wait(POLL_SECONDS):
                self.step(time.monotonic())
        finally:
            self.cpu_seconds = time.thread_time()

    def step(self, now: float) -> None:
        """One poll: lend a token to a dry pipe, or take back what sits unused."""
        self.polls += 1
        in_pipe = self.pipe.waiting()
        if in_pipe == 0:
            self._idle_since = None
            if self.lent >= self.cap or self.tokens.waiters():
                self.tokens.want(False)
                return
            if self.tokens.try_take():
                self.tokens.want(False)
                self.pipe.put()
                self.lent += 1
                self.peak = max(self.peak, self.lent)
            else:
                self.tokens.want(True)
            return
        self.tokens.want(False)
        if self._idle_since is None:
            self._idle_since = now
        if self.tokens.waiters():
            self._take_back(in_pipe)  # a build waits for its first token: at once
            self._idle_since = None
        elif now - self._idle_since >= IDLE_SECONDS:
            keep = 0 if self.tokens.wanters() else 1  # with nobody asking, one spare stays
            if in_pipe > keep:
                self._take_back(in_pipe - keep)
            self._idle_since = now


class BuildCpu:
    """The CPU side of one build: its implicit token (or its parent's jobserver) and, while cargo
    runs, the broker."""

    def __init__(self, pool: Pool, tokens: Tokens | None, inherited: tuple[int, int] | None,
                 waited: float) -> None:
        self.pool = pool
        self.tokens = tokens
        self.inherited = inherited
        self.waited = waited
        self.peak = 1 if inherited is None and tokens is not None and tokens.held else 0
        self.broker_cpu_seconds = 0.0
        self.broker_polls = 0
        self._broker: Broker | None = None

    def run(self, spec: RunSpec, jobs: int, body: Callable[[], T]) -> T:
        """Run `body` (one supervised cargo run) with the build's jobserver in `spec`."""
        base_fds = spec.pass_fds
        if self.inherited is not None:  # nested: join the parent's jobserver as it is
            spec.pass_fds = (*base_fds, *self.inherited)
            try:
                return body()
            finally:
                spec.pass_fds = base_fds
        tokens = self.tokens if self.tokens is not None else Tokens(self.pool)
        self.tokens = tokens
        pipe = jobserver.Pipe()
        implicit = len(tokens.held)
        broker = Broker(tokens, pipe, max(0, min(jobs, self.pool.count) - 1))
        spec.env[jobserver.MAKEFLAGS_ENV] = pipe.makeflags
        spec.pass_fds = (*base_fds, *pipe.fds)
        self._broker = broker
        broker.start()
        try:
            return body()
        finally:
            if self._broker is not None:
                broker.stop()
                self._broker = None
            spec.pass_fds = base_fds
            pipe.close()
            self.peak = max(self.peak, implicit + broker.peak)
            self.broker_cpu_seconds += broker.cpu_seconds
            self.broker_polls += broker.polls

    def record(self) -> dict[str, object]:
        """Fields of the run record."""
        return {"tokens_peak": self.peak, "token_wait_seconds": round(self.waited, 3),
                "broker_cpu_seconds": round(self.broker_cpu_seconds, 4), "broker_polls": self.broker_polls,
                "jobserver": "inherited" if self.inherited is not None else "private"}

    def give_back(self) -> None:
        """Cargo has built the program and started it (`cargo run`): stop lending and free every
        token now, while the program runs on."""
        if self._broker is not None:
            self._broker.stop()
            self._broker = None
        self.release()

    def release(self) -> None:
        if self.tokens is not None:
            self.tokens.close()
            self.tokens = None


def for_build(pool: Pool, nested: bool, env: Mapping[str, str], wait_timeout: float | None) -> BuildCpu:
    """A top-level build takes its implicit token (waiting if need be); a nested one takes none."""
    if nested:
        inherited = jobserver.inherited(env)
        return BuildCpu(pool, None, inherited, 0.0)
    tokens, waited = acquire_first(pool, wait_timeout)
    return BuildCpu(pool, tokens, None, waited)
