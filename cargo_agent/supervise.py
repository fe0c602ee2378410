"""Run cargo as a supervised child and answer for everything it spawns.

- cargo gets its own session (and so its own process group); SIGINT, SIGTERM, SIGHUP and
  SIGQUIT sent to cargo-agent are forwarded to that group; a second Ctrl-C kills everything.
- cargo-agent is a child subreaper, so descendants that leave the group or the session are
  reparented to it and stay findable; on timeout or when cargo has exited, every descendant
  still alive is stopped (TERM, grace, KILL).
- If cargo-agent itself is SIGKILLed nothing here runs: then the slot lock, inherited by
  every process of the build, stays held until the last of them exits (see slots.py).
- RLIMIT_AS on cargo (inherited by rustc, linkers, tests); stderr is streamed live (through a
  pty when it is a terminal, so colours and the progress bar look as with bare cargo) and
  its tail is scanned for transient resource failures, which are retried with fewer jobs.
"""

from __future__ import annotations

import ctypes
import os
import random
import re
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cargo_agent.errors import EXIT_SIGNAL_BASE, EXIT_TIMEOUT

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
TAIL_BYTES = 256 * 1024

# Known transient resource failures of rustc, linkers and the OS (EAGAIN = errno 11).
TRANSIENT_PATTERNS = (
    re.compile(r"Resource temporarily unavailable.*(rustc|linker|fork|spawn|thread|exec)"
               r"|(rustc|linker|fork|spawn|thread|exec).*Resource temporarily unavailable", re.I),
    re.compile(r"WouldBlock"),
    re.compile(r"os error 11\b"),
    re.compile(r"failed to spawn helper thread"),
    re.compile(r"could not exec the linker.*(EAGAIN|os error 11|temporarily unavailable)", re.I | re.S),
    re.compile(r"ThreadPoolBuildError"),
)
# Never retried, whatever else the output says: a real test failure.
TEST_FAILURE_PATTERNS = (re.compile(r"test result: FAILED"), re.compile(r"error: test failed"),
                         re.compile(r"error: \d+ targets? failed"))
OOM_PATTERNS = (re.compile(r"memory allocation of \d+ bytes failed"), re.compile(r"out of memory", re.I),
                re.compile(r"Cannot allocate memory"), re.compile(r"std::bad_alloc"))


def transient_failure(text: str) -> str | None:
    """The matching transient-failure line, or None (also None for a test failure)."""
    if any(p.search(text) for p in TEST_FAILURE_PATTERNS):
        return None
    for line in text.splitlines():
        if any(p.search(line) for p in TRANSIENT_PATTERNS):
            return line.strip()
    return None


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> None:
    try:
        _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


@dataclass
class RunSpec:
    cargo: str
    argv: list[str]
    env: dict[str, str]
    limit_as: int | None = None
    timeout: float | None = None
    soft_timeout: float | None = None
    kill_grace: float = 10.0
    pass_fds: tuple[int, ...] = ()
    limit_as_setting: str = "CARGO_AGENT_LIMIT_AS"


@dataclass
class Outcome:
    exit_code: int
    timed_out: bool = False
    signalled: int | None = None  # a signal we forwarded, or that killed cargo
    stopped: int = 0  # processes cargo-agent had to stop
    stderr_tail: str = ""
    peak_rss: int = 0
    memory_killed: bool = False


@dataclass
class _State:
    forwarded: int | None = None
    interrupts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


def has_children() -> bool:
    """Whether any process is our child. As a subreaper, every live descendant of a build that
    ended is below one of our children, so no child means nothing was left behind; this costs a
    few reads of /proc instead of importing psutil."""
    try:
        tasks = os.listdir("/proc/self/task")
        return any(open(f"/proc/self/task/{t}/children").read().strip() for t in tasks)
    except OSError:
        return True  # cannot tell: let psutil look


def wait_for_exit(proc: Any, timeout: float) -> bool:
    """Wait up to `timeout` for the child to exit, waking at once when it does (pidfd), instead
    of Popen.wait's sleep-polling, which adds up to 50 ms to every build."""
    import select

    if proc.returncode is not None:
        return True
    pidfd = getattr(proc, "_cargo_agent_pidfd", None)
    if pidfd is None and hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(proc.pid)
            proc._cargo_agent_pidfd = pidfd
        except OSError:
            pidfd = None
    if pidfd is not None:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        if not ready:
            return False
        proc.wait()
        os.close(pidfd)
        proc._cargo_agent_pidfd = None
        return True
    import subprocess

    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def descendants() -> list[Any]:
    """Every live descendant of this process (orphans included: we are a subreaper)."""
    import psutil

    try:
        return [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


def tree_rss() -> int:
    """The memory the build's process tree holds: each process's private resident memory, plus
    the largest file-backed resident set once (every rustc maps the same compiler libraries;
    summing plain RSS would count them once per process). See host.tree_rss."""
    import psutil

    private = shared = 0
    for process in descendants():
        try:
            info = process.memory_info()
        except psutil.Error:
            continue
        private += max(0, info.rss - info.shared)
        shared = max(shared, info.shared)
    return private + shared


def stop_all(group: int | None, grace: float, child: Any = None) -> int:
    """TERM the group and every descendant, wait `grace`, KILL what is left. Returns how many.

    `child` (cargo's Popen) is waited for through Popen only: if psutil reaped it, Popen would
    see ECHILD and report exit code 0, hiding how cargo really ended."""
    import psutil

    child_pid = child.pid if child is not None else None
    victims = [p for p in descendants() if p.pid != child_pid]
    counted = len(victims) + (1 if child is not None and child.poll() is None else 0)
    if not counted and group is None:
        return 0
    if group is not None:
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for process in victims:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    started = time.monotonic()
    _, alive = psutil.wait_procs(victims, timeout=grace)
    if child is not None:
        import subprocess

        try:
            child.wait(timeout=max(0.0, grace - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    # New processes may have been forked meanwhile: take a fresh snapshot for the KILL round.
    survivors = {p.pid: p for p in [*alive, *descendants()] if p.pid != child_pid}
    for process in survivors.values():
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(list(survivors.values()), timeout=2)
    _reap()
    return counted + len([p for p in survivors.values() if p not in victims])


def _reap() -> None:
    """Collect orphaned zombies reparented to us (we are a subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _set_limit_as(limit_as: int | None) -> None:
    """RLIMIT_AS for the child; never raises (an exception in a pre-exec hook is a traceback).
    Where the hard limit cannot be raised (no privileges), the child stays under it."""
    wanted = resource.RLIM_INFINITY if limit_as is None else limit_as
    try:
        resource.setrlimit(resource.RLIMIT_AS, (wanted, wanted))
        return
    except (OSError, ValueError):
        pass
    try:
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        infinite = resource.RLIM_INFINITY
        soft = hard if wanted == infinite else wanted if hard == infinite else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    except (OSError, ValueError):
        pass


def _preexec(limit_as: int | None) -> Callable[[], None]:
    def setup() -> None:
        os.setsid()
        # If cargo-agent dies, cargo is told to stop; the rest of the build keeps the slot lock.
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        _set_limit_as(limit_as)
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)

    return setup


class _StderrPump:
    """Copies cargo's stderr to ours live and keeps a bounded tail for scanning."""

    def __init__(self) -> None:
        self.tail = bytearray()
        self.master: int | None = None
        if sys.stderr.isatty():
            import pty
            import termios

            self.master, self.slave = pty.openpty()
            attrs = termios.tcgetattr(self.slave)
            attrs[1] &= ~termios.OPOST  # no \n -> \r\n translation: bytes pass as cargo wrote them
            termios.tcsetattr(self.slave, termios.TCSANOW, attrs)
            self.copy_winsize()
            self.read_fd = self.master
        else:
            self.read_fd, self.slave = os.pipe()
        self.thread = threading.Thread(target=self._pump, daemon=True)

    def copy_winsize(self) -> None:
        """Our terminal's size onto cargo's pty (through the master: the slave end is closed here
        once cargo has it)."""
        import fcntl
        import termios

        if self.master is None:
            return
        try:
            size = fcntl.ioctl(sys.stderr.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
        except OSError:
            pass

    def start(self) -> None:
        os.close(self.slave)
        self.thread.start()

    def _pump(self) -> None:
        out = sys.stderr.buffer
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:  # EIO: the pty's last writer is gone
                break
            if not chunk:
                break
            try:
                out.write(chunk)
                out.flush()
            except (OSError, ValueError):
                pass
            self.tail += chunk
            if len(self.tail) > TAIL_BYTES:
                del self.tail[:-TAIL_BYTES]

    def finish(self, wait: float) -> str:
        self.thread.join(wait)
        if not self.thread.is_alive():
            os.close(self.read_fd)
        return self.tail.decode("utf-8", "replace")


def run_once(spec: RunSpec, memory_guard: Callable[[], bool] | None = None) -> Outcome:
    import subprocess

    become_subreaper()
    state = _State()
    pump = _StderrPump()
    proc = subprocess.Popen([spec.cargo, *spec.argv], env=spec.env, stderr=pump.slave,
                            pass_fds=spec.pass_fds, preexec_fn=_preexec(spec.limit_as))
    pump.start()
    group = proc.pid

    def forward(signum: int, _frame: object) -> None:
        with state.lock:
            if signum == signal.SIGINT:
                state.interrupts += 1
            state.forwarded = state.forwarded or signum
            target = signal.SIGKILL if state.interrupts >= 2 else signum
        try:
            os.killpg(group, target)
        except ProcessLookupError:
            pass
        if target == signal.SIGKILL:
            for process in descendants():
                try:
                    process.kill()
                except Exception:  # noqa: BLE001 - it may be gone already
                    pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    if pump.master is not None:  # a resized terminal resizes cargo's pty (and its progress bar)
        previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, lambda _s, _f: pump.copy_winsize())
    started = time.monotonic()
    outcome = Outcome(exit_code=0)
    warned = False
    try:
        while True:
            if wait_for_exit(proc, 0.25):
                break
            elapsed = time.monotonic() - started
            outcome.peak_rss = max(outcome.peak_rss, tree_rss())
            if spec.soft_timeout and not warned and elapsed >= spec.soft_timeout:
                warned = True
                names = sorted({p.name() for p in descendants()})
                sys.stderr.write(f"warning: cargo-agent: still running after {format_duration(elapsed)}: "
                                 f"{', '.join(names) or 'nothing'}\n")
            if spec.timeout and elapsed >= spec.timeout:
                outcome.timed_out = True
                outcome.stopped = stop_all(group, spec.kill_grace, proc)
                break
            if memory_guard is not None and memory_guard():
                outcome.memory_killed = True
                outcome.stopped = stop_all(group, spec.kill_grace, proc)
                break
        if not outcome.timed_out and has_children():  # stop_all finds (and counts) what is left
            outcome.stopped += stop_all(None, min(spec.kill_grace, 2.0))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _reap()
    outcome.stderr_tail = pump.finish(wait=1.0)
    code = proc.returncode
    if outcome.timed_out:
        outcome.exit_code = EXIT_TIMEOUT
    elif state.forwarded is not None:
        outcome.signalled = state.forwarded
        outcome.exit_code = EXIT_SIGNAL_BASE + (signal.SIGKILL if state.interrupts >= 2 else state.forwarded)
    elif code < 0:
        outcome.signalled = -code
        outcome.exit_code = EXIT_SIGNAL_BASE - code
    else:
        outcome.exit_code = code
    return outcome


def backoff(attempt: int) -> float:
    """Jittered exponential backoff: about 0.5 s, 1 s, 2 s, ..."""
    return 0.5 * (2.0 ** attempt) * random.uniform(0.5, 1.5)


def oom_hint(outcome: Outcome, spec: RunSpec) -> str | None:
    if spec.limit_as is None or outcome.exit_code == 0:
        return None
    if any(p.search(outcome.stderr_tail) for p in OOM_PATTERNS):
        gib = spec.limit_as / (1 << 30)
        return (f"note: a process ran out of address space under the {gib:g}G limit; raise it with "
                f"{spec.limit_as_setting}=8G (or 'unlimited')")
    return None
