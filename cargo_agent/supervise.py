"""Run cargo under a supervisor that dies with its caller, and answer for everything it spawns.

Three parties take part in a run:

- **The wrapper** is this cargo-agent process, in its caller's process group. It waited in the
  queue and holds the slot. From here on it only relays: the signals it receives go to the
  supervisor, the memory guard may ask for a stop, and the outcome comes back over a pipe.
- **The supervisor** is forked by the wrapper into a process group of its own (in the same
  session), so a harness's `kill -9 -- -PGID` of the caller's group does not reach it. It is a
  child subreaper: every process of the build stays below it, `setsid` escapees included. It
  holds the read end of a pipe that only the wrapper can write to. When the wrapper dies, for any
  reason, the pipe reads EOF; the supervisor then SIGKILLs the whole tree at once and exits. The
  slot, and any fd handed to it (`RunSpec.pass_fds`, `RunSpec.keep_fds`), is free within
  milliseconds. It keeps no other fd of the wrapper: a lock the wrapper drops is dropped.
- **The build** is cargo in a process group of its own. When the wrapper is the terminal's
  foreground job, the build's group becomes the foreground group while it runs. Ctrl-C, Ctrl-\\
  and Ctrl-Z then reach cargo, rustc and the tests exactly as with bare cargo, and a program
  started by `cargo run` has the controlling terminal.

Job control:
- A Ctrl-Z that stops cargo is mirrored: the supervisor stops the rest of the tree, and the
  wrapper takes the terminal back and stops its own job, as the terminal would have. `fg` and `bg`
  continue everything.
- A wrapper stopped by SIGSTOP (a harness freezing its group, a frozen container) freezes the
  build too. SIGTSTP sent to the wrapper does the same, and the wrapper stops itself.
- SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the wrapper are forwarded to the build's group; a
  second SIGINT kills everything.

Limits and output:
- RLIMIT_AS applies to cargo and is inherited by rustc, linkers and tests.
- cargo's stderr is streamed live: through a pty when stderr is a terminal (so colours and the
  progress bar look as with bare cargo), else through a pipe. A bounded tail is kept for the
  report.
- While streaming, the supervisor notes when a test or program starts: that ends the build phase
  (see `retry_signature`), and for `run` it frees the slot.
"""

from __future__ import annotations

import os
import resource
import sys
import time

from cargo_agent import background
from cargo_agent.errors import EXIT_SIGNAL_BASE, EXIT_TIMEOUT
from cargo_agent.signals import signal

TYPE_CHECKING = False  # typing and dataclasses are not imported at run time: the compiling path is timed
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Job-control and terminal signals the supervisor ignores, and resets for cargo.
_IGNORED_IN_SUPERVISOR = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN,
                          signal.SIGTTOU)
_TERMINAL_STOPS = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
TAIL_BYTES = 256 * 1024
TICK_SECONDS = 0.25  # the supervisor's housekeeping: RSS, timeouts, job state, terminal size
GUARD_SECONDS = 0.25  # the wrapper's memory guard

# Commands on the wrapper -> supervisor pipe: a signal number (forward it), or one of these.
CMD_STOP, CMD_CONT, CMD_MEMORY_KILL = 0x80, 0x81, 0x82

OOM_MARKERS = ("memory allocation of ", "out of memory", "Out of memory", "Cannot allocate memory",
               "std::bad_alloc")
# Names of the tools whose own failure may be transient; anything else running means a test or
# program ran.
_TOOLS = frozenset({"cargo", "rustup", "rustc", "rustdoc", "clippy-driver", "cc", "c++", "gcc", "g++", "clang",
                    "clang++", "ld", "ld.lld", "ld.gold", "ld.bfd", "lld", "rust-lld", "collect2", "ar", "as",
                    "sccache", "make", "cmake", "sh", "bash", "dash"})


_PRCTL: list[Any] = []


def _prctl_function() -> Any:
    """prctl(2), through _ctypes, the C core of ctypes: `import ctypes` builds its whole zoo of C
    types first, 2-3 ms on every build, for this one call. Made once, before the fork (the
    supervisor then has it without loading anything). A Python whose _ctypes differs gets ctypes."""
    try:
        import _ctypes

        class _CInt(_ctypes._SimpleCData):  # type: ignore[type-arg]  # not subscriptable at run time
            _type_ = "i"

        class _Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = _CInt

        class _Process:
            _handle = _ctypes.dlopen(None)  # type: ignore[arg-type]  # None: this process, as dlopen(NULL)

        return _Function(("prctl", _Process()))  # type: ignore[arg-type]  # a library is what has _handle
    except Exception:  # noqa: BLE001 - any difference in the C core: the public module
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl


def become_subreaper() -> None:
    try:
        if not _PRCTL:
            _PRCTL.append(_prctl_function())
        _PRCTL[0](PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class RunSpec:
    __slots__ = ("argv", "cargo", "env", "keep_fds", "kill_grace", "limit_as", "limit_as_setting", "pass_fds",
                 "soft_timeout", "timeout")

    def __init__(self, cargo: str, argv: list[str], env: dict[str, str], limit_as: int | None = None,
                 timeout: float | None = None, soft_timeout: float | None = None, kill_grace: float = 10.0,
                 pass_fds: tuple[int, ...] = (), limit_as_setting: str = "CARGO_AGENT_LIMIT_AS",
                 keep_fds: tuple[int, ...] = ()) -> None:
        self.cargo = cargo
        self.argv = argv
        self.env = env
        self.limit_as = limit_as
        self.timeout = timeout
        self.soft_timeout = soft_timeout
        self.kill_grace = kill_grace
        self.pass_fds = pass_fds  # handed to cargo (the slot lock): held until the build is gone
        self.limit_as_setting = limit_as_setting
        self.keep_fds = keep_fds  # kept open by the supervisor only: released when it exits


class Outcome:
    """How one supervised run ended; crosses from the supervisor to the wrapper as JSON."""

    __slots__ = ("exit_code", "kernel_peak", "memory_killed", "peak_rss", "program_started", "running", "signalled",
                 "stderr_tail", "stopped", "timed_out", "wrapper_stops")

    def __init__(self, exit_code: int, timed_out: bool = False, signalled: int | None = None, stopped: int = 0,
                 stderr_tail: str = "", peak_rss: int = 0, memory_killed: bool = False,
                 program_started: bool = False, running: list[str] | None = None, wrapper_stops: int = 0,
                 kernel_peak: int = 0) -> None:
        self.exit_code = exit_code
        self.timed_out = timed_out
        self.signalled = signalled  # a signal we forwarded, or that killed cargo
        self.stopped = stopped  # processes cargo-agent had to stop
        self.stderr_tail = stderr_tail
        self.peak_rss = peak_rss
        self.memory_killed = memory_killed
        self.program_started = program_started  # a test or program ran (the build phase was over)
        self.running = running if running is not None else []  # what was running when it was stopped
        self.wrapper_stops = wrapper_stops  # times the build was stopped (Ctrl-Z, SIGSTOP of the caller)
        # The largest process among the waited-for build (the kernel's accounting in the supervisor,
        # whose children they are): a floor for runs too short to sample.
        self.kernel_peak = kernel_peak

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Outcome) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"Outcome({self.as_dict()!r})"


def format_duration(seconds: float) -> str:
    """`2s`, `1m05s`, `1h02m05s`: whole seconds, no leading zero unit; `?` for no real duration
    (a record of the lock dir may hold anything)."""
    if not 0 <= seconds < 1e12:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_size(size: float) -> str:
    """`4 GiB`, `512 MiB`, `1.5 GiB`, `800 B`."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.3g} {unit}"
    return f"{int(size)} B"


def has_children() -> bool:
    """Whether any process is our child. As a subreaper, every live descendant of a build that
    ended is below one of our children, so no child means nothing was left behind; this costs a
    few reads of /proc instead of importing psutil."""
    return bool(_children())


def _children() -> list[int]:
    try:
        pids: list[int] = []
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as handle:
                pids += [int(p) for p in handle.read().split()]
        return pids
    except (OSError, ValueError):
        return [-1]  # cannot tell: let psutil look


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


def running_names(processes: list[Any]) -> list[str]:
    """`rustc ×3`, `slowtest-1a2b3c` ...: what was running, most frequent first."""
    import psutil

    counts: dict[str, int] = {}
    for process in processes:
        try:
            name = process.name()
        except psutil.Error:
            continue
        counts[name] = counts.get(name, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [f"{name} ×{count}" if count > 1 else name for name, count in ordered]


def stop_all(group: int | None, grace: float, child: Any = None) -> int:
    """TERM the group and every descendant, wait `grace`, KILL what is left. Returns how many.

    `child` (cargo, a `_Child`) is waited for through its own object only: if psutil reaped it,
    its exit status, how cargo really ended, would be lost."""
    import psutil

    child_pid = child.pid if child is not None else None
    victims = [p for p in descendants() if p.pid != child_pid]
    counted = len(victims) + (1 if child is not None and child.poll() is None else 0)
    if not counted and group is None:
        return 0
    if group is not None:
        _killpg(group, signal.SIGTERM)
        _killpg(group, signal.SIGCONT)  # a stopped build cannot act on TERM
    for process in victims:
        try:
            process.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGCONT)
        except psutil.Error:
            pass
    started = time.monotonic()
    _, alive = psutil.wait_procs(victims, timeout=grace)
    if child is not None and not child.wait(max(0.0, grace - (time.monotonic() - started))):
        child.kill()
        child.wait(None)
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


def kill_tree_now(group: int | None, keep: int | None = None) -> None:
    """SIGKILL the group and every descendant until none is left (forks racing with us included:
    their orphans come back to us, the subreaper). `keep` (cargo) is killed but not reaped."""
    for _ in range(100):
        if group is not None:
            _killpg(group, signal.SIGKILL)
        victims = descendants()
        if not victims:
            break
        for process in victims:
            try:
                process.kill()
            except Exception:  # noqa: BLE001 - it may be gone already
                pass
        import psutil

        psutil.wait_procs([p for p in victims if p.pid != keep], timeout=0.2)
        _reap(keep)
    _reap(keep)


def _killpg(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(keep: int | None = None) -> None:
    """Collect exited children (orphans reparented to us, the subreaper), never `keep` (cargo,
    whose exit status belongs to its Popen)."""
    if keep is None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
    for pid in _children():
        if pid > 0 and pid != keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def proc_state(pid: int) -> str:
    """A process's state letter from /proc (`T` stopped, `Z` zombie, ...); `?` if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except InterruptedError:
            continue


# ---- phase detection and the retry rule ------------------------------------------------------

def _strip_ansi(line: str) -> str:
    if "\x1b" not in line:
        return line
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", line)


def starts_program(line: str) -> bool:
    """Whether a line of cargo's stderr says it starts a test or program: `     Running
    unittests ...`, `     Running \\`target/debug/app\\``, `   Doc-tests name`. In verbose mode
    cargo also says `Running` for every rustc call and build script: those are not programs."""
    line = _strip_ansi(line).rstrip("\r")
    if line.startswith("   Doc-tests "):
        return True
    if not line.startswith("     Running "):
        return False
    rest = line[len("     Running "):]
    if not rest.startswith("`"):
        return True  # `unittests src/lib.rs (...)`, `tests/it.rs (...)`: a test binary
    for word in rest.strip("`").split():
        base = os.path.basename(word.strip("'\""))
        if base in ("rustc", "rustdoc", "clippy-driver") or base.startswith(("build-script-", "build_script_")):
            return False  # verbose mode: a compiler call or a build script
    return True


def is_program_exe(exe: str, tools: frozenset[str] = _TOOLS) -> bool:
    """A process running a test binary (they live in the target dir's `deps/`), not a tool.
    (`run`'s program is seen as cargo's own process changing its executable: cargo execs it.)"""
    base = os.path.basename(exe)
    if not exe or base in tools or base.startswith(("build-script-", "build_script_", "python")):
        return False
    return "/deps/" in exe


# Signatures of a transient resource failure (EAGAIN = errno 11). They count only where rustc,
# the linker or cargo itself wrote them; see `retry_signature`.
_EAGAIN_TEXT = ("Resource temporarily unavailable", "os error 11")
_ICE_TEXT = (*_EAGAIN_TEXT, "failed to spawn helper thread", "WouldBlock", "ThreadPoolBuildError")
_LINKER_TEXT = (*_EAGAIN_TEXT, "failed to create thread", "std::system_error")
TEST_FAILURE_MARKERS = ("test result: FAILED", "error: test failed", "failures:", "doctest failed")


def retry_signature(tail: str) -> str | None:
    """The line that makes a failure safe to retry, or None.

    Only a transient resource failure (EAGAIN) that rustc, the linker or cargo reported about
    themselves counts:
    - under `error: linking with ...` or `error: could not exec the linker ...`: the linker's
      own output (its `= note:` lines), not the command line;
    - in cargo's `Caused by:` chain when it could not start a process (`never executed`);
    - in a compiler panic (`error: the compiler unexpectedly panicked`);
    - in a C++ runtime abort of rustc or LLVM (`terminate called ... what(): ...`).
    Never: a genuine compile error (`error[E...]`), source lines quoted in a diagnostic, a build
    script's output (`--- stdout` / `--- stderr`), `compile_error!` text, or a test failure."""
    lines = [_strip_ansi(line).rstrip("\r") for line in tail.splitlines()]
    text = "\n".join(lines)
    if any(marker in text for marker in TEST_FAILURE_MARKERS):
        return None
    if any(line.startswith("error[E") for line in lines):
        return None
    ice = "error: the compiler unexpectedly panicked" in text
    spawn_failed = "(never executed)" in text
    block: str | None = None  # the kind of tool output we are in
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped in ("--- stdout", "--- stderr") or stripped.startswith("-->"):
            block = "user"  # a build script's output, or a diagnostic about user code
            continue
        if line and not line[0].isspace() and line != "Caused by:":
            block = None
            if line.startswith(("error: linking with `", "error: could not exec the linker `")):
                block = "linker"
            elif line.startswith("error: "):
                block = "cargo"
            elif line.startswith("thread '") and " panicked at " in line:
                # The panic message is on this line (old format) or the next one.
                message = line + "\n" + (lines[i + 1] if i + 1 < len(lines) else "")
                if ice and any(t in message for t in _ICE_TEXT):
                    return message.strip()
            elif line.startswith("terminate called after throwing"):
                block = "abort"
            continue  # a header is never the signature: only what the tool said under it
        if block is None or block == "user" or _is_source_line(stripped):
            continue
        if block == "linker":
            note = stripped[len("= note:"):].strip() if stripped.startswith("= note:") else stripped
            if note.startswith(('"', "LC_ALL=", "env ")):  # the linker's command line: user paths
                continue
            if any(t in note for t in _LINKER_TEXT):
                return stripped
        elif block == "cargo":
            if spawn_failed and any(t in stripped for t in _EAGAIN_TEXT):
                return stripped
        elif block == "abort" and stripped.startswith("what():") and any(t in stripped for t in _EAGAIN_TEXT):
            return stripped
    return None


def _is_source_line(stripped: str) -> bool:
    """A source line quoted in a diagnostic (`12 |     code`, `|`, `-->`, `::: path`)."""
    if stripped.startswith(("|", "-->", ":::", "...")):
        return True
    head, bar, _ = stripped.partition("|")
    return bool(bar) and head.strip().isdigit()


def retryable(outcome: Outcome, subcommand: str | None) -> str | None:
    """The signature that makes this failure safe to run again, or None. Never for `run` (the
    program's side effects would repeat), never once a test or program ran, never after a
    timeout, a signal or a memory stop."""
    if subcommand == "run" or outcome.exit_code == 0 or outcome.timed_out or outcome.signalled is not None \
            or outcome.memory_killed or outcome.program_started:
        return None
    return retry_signature(outcome.stderr_tail)


def backoff(attempt: int) -> float:
    """Jittered exponential backoff: about 0.5 s, 1 s, 2 s, ..."""
    import random

    return 0.5 * (2.0 ** attempt) * random.uniform(0.5, 1.5)


def oom_hint(outcome: Outcome, spec: RunSpec) -> str | None:
    if spec.limit_as is None or outcome.exit_code == 0:
        return None
    if any(marker in outcome.stderr_tail for marker in OOM_MARKERS):
        gib = spec.limit_as / (1 << 30)
        return (f"note: a process ran out of address space under the {gib:g}G limit; raise it with "
                f"{spec.limit_as_setting}=8G (or 'unlimited')")
    return None


# ---- the terminal ---------------------------------------------------------------------------

class _Terminal:
    """The caller's controlling terminal, when it has one: the build gets its foreground while it
    runs, and the wrapper takes it back to stop its own job or when the build ends."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.build_group: int | None = None

    @classmethod
    def open(cls) -> _Terminal | None:
        try:
            return cls(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC))
        except OSError:
            return None

    def foreground(self) -> int | None:
        try:
            return os.tcgetpgrp(self.fd)
        except OSError:
            return None

    def ours(self) -> bool:
        return self.foreground() == os.getpgrp()

    def give(self, group: int) -> None:
        self._set(group)

    def take_back(self) -> None:
        """Back to our group, if the build's group (or nobody alive) has it."""
        current = self.foreground()
        if current is None or current == os.getpgrp():
            return
        if current == self.build_group or not _group_alive(current):
            self._set(os.getpgrp())

    def _set(self, group: int) -> None:
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # allowed from a background group
        try:
            os.tcsetpgrp(self.fd, group)
        except OSError:
            pass
        finally:
            signal.signal(signal.SIGTTOU, previous)

    def close(self) -> None:
        os.close(self.fd)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# ---- the wrapper's side ---------------------------------------------------------------------

class SupervisorError(Exception):
    """The supervisor could not start cargo (the message is the OS error)."""


def run_once(spec: RunSpec, memory_guard: Callable[[], bool] | None = None,
             on_program_start: Callable[[], None] | None = None) -> Outcome:
    """Run cargo once under a forked supervisor; see the module doc. `memory_guard` is asked
    every GUARD_SECONDS here, in the wrapper; `on_program_start` is called here once a test or
    program starts (for `run`: give the slot back)."""
    become_subreaper()  # if the supervisor itself dies, its orphans come to us
    terminal = _Terminal.open()
    hand_over = terminal is not None and terminal.ours()
    life_r, life_w = os.pipe()
    report_r, report_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    wrapper = os.getpid()
    pid = os.fork()
    if pid == 0:  # the supervisor
        code = 0
        try:
            os.close(life_w)
            os.close(report_r)
            _Supervisor(spec, life_r, report_w, terminal.fd if terminal and hand_over else None,
                        terminal.fd if terminal else None, wrapper, os.getpgrp()).run()
        except BaseException:  # noqa: BLE001 - the supervisor must always end with _exit
            code = 70
            try:
                import traceback

                _write_all(2, ("cargo-agent supervisor: " + traceback.format_exc()).encode())
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)
    os.close(life_r)
    os.close(report_w)
    relay = _Relay(pid, life_w, report_r, terminal, hand_over, memory_guard, on_program_start)
    try:
        return relay.wait()
    finally:
        relay.close()


class _Relay:
    """The wrapper while the supervisor runs the build."""

    def __init__(self, pid: int, life_w: int, report_r: int, terminal: _Terminal | None, hand_over: bool,
                 memory_guard: Callable[[], bool] | None, on_program_start: Callable[[], None] | None) -> None:
        self.pid = pid
        self.life_w = life_w
        self.report_r = report_r
        self.terminal = terminal
        self.handed = hand_over
        self.memory_guard = memory_guard
        self.on_program_start = on_program_start
        self.interrupts = 0
        self.memory_kill_sent = False
        self.outcome: Outcome | None = None
        self.error: str | None = None
        self.previous: dict[int, Any] = {}
        for sig in (*FORWARDED_SIGNALS, signal.SIGTSTP):
            self.previous[sig] = signal.signal(sig, self._on_signal)

    def send(self, command: int) -> None:
        try:
            os.write(self.life_w, bytes([command]))
        except OSError:
            pass  # the supervisor is gone

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGTSTP:
            self.suspend(terminal_stop=False)
            return
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts >= 2:
                signum = signal.SIGKILL
        self.send(signum)

    def suspend(self, terminal_stop: bool) -> None:
        """Stop the build and our own job; when continued, continue the build (and give it the
        terminal again if we are in the foreground)."""
        self.send(CMD_STOP)
        if self.terminal is not None and self.handed:
            self.terminal.take_back()
        previous = signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        try:
            # A Ctrl-Z meant for the whole foreground job stops all of it, as the terminal would
            # have; in an orphaned group the kernel discards it and we go straight on.
            if terminal_stop and self.handed:
                os.killpg(os.getpgrp(), signal.SIGTSTP)
            else:
                os.kill(os.getpid(), signal.SIGTSTP)
        finally:
            signal.signal(signal.SIGTSTP, previous)
        if self.terminal is not None and self.terminal.ours() and self.terminal.build_group is not None:
            self.terminal.give(self.terminal.build_group)
            self.handed = True
        self.send(CMD_CONT)

    def _event(self, line: bytes) -> None:
        from cargo_agent import jsontext

        kind, body = line[:1], line[1:]
        if kind == b"G" and self.terminal is not None:
            self.terminal.build_group = int(body)
        elif kind == b"P":
            if self.on_program_start is not None:
                self.on_program_start()
        elif kind == b"Z":
            self.suspend(terminal_stop=True)
        elif kind == b"O":
            data = jsontext.loads(body.decode("utf-8", "replace"))
            self.outcome = Outcome(**data)
        elif kind == b"E":
            self.error = body.decode("utf-8", "replace")

    def wait(self) -> Outcome:
        import select

        buffer = b""
        while True:
            guard = self.memory_guard is not None and not self.memory_kill_sent
            ready, _, _ = select.select([self.report_r], [], [], GUARD_SECONDS if guard else None)
            if ready:
                try:
                    data = os.read(self.report_r, 1 << 16)
                except OSError:
                    data = b""
                if not data:
                    break
                buffer += data
                while b"\n" in buffer and self.outcome is None:
                    line, buffer = buffer.split(b"\n", 1)
                    self._event(line)
                if self.outcome is not None:
                    break  # the build is over; the supervisor is only exiting now
            elif guard and self.memory_guard is not None and self.memory_guard():
                self.memory_kill_sent = True
                self.send(CMD_MEMORY_KILL)
        if self.outcome is not None:
            try:  # collected now if it is gone already; else when we exit (no need to wait for it)
                os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pass
            return self.outcome
        _, status = os.waitpid(self.pid, 0)
        if self.error is not None:
            raise SupervisorError(self.error)
        # The supervisor died: what it left is ours (we are a subreaper).
        stopped = stop_all(None, 2.0)
        code = EXIT_SIGNAL_BASE + os.WTERMSIG(status) if os.WIFSIGNALED(status) else 1
        sys.stderr.write(f"error: cargo-agent's supervisor ended unexpectedly (status {code}); "
                         f"stopped {stopped} processes\n")
        return Outcome(exit_code=code, stopped=stopped)

    def close(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.terminal is not None:
            if self.handed:
                self.terminal.take_back()
            self.terminal.close()
        for fd in (self.life_w, self.report_r):
            try:
                os.close(fd)
            except OSError:
                pass


# ---- the supervisor's side ------------------------------------------------------------------

class _Child:
    """cargo, started with posix_spawn (vfork: no copy of the supervisor's pages, unlike Popen
    with a preexec function). `returncode` follows Popen: -N when killed by signal N."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is lost, never wait forever
                self.returncode = 1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None) -> bool:
        """Wait until it exits (True) or `timeout` passes (False)."""
        if timeout is None:
            while self.returncode is None:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    self.returncode = os.waitstatus_to_exitcode(status)
                except ChildProcessError:
                    self.returncode = 1
            return True
        end = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= end:
                return False
            time.sleep(0.02)
        return True

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _limit_address_space(pid: int, limit_as: int | None) -> None:
    """RLIMIT_AS of the spawned cargo (soft and hard); never raises. Where the hard limit cannot
    be raised (an inherited `ulimit -v`, no privileges), cargo stays under it: asked for
    `unlimited`, it keeps the inherited limit; asked for more than it, it gets the inherited one."""
    wanted = resource.RLIM_INFINITY if limit_as is None else limit_as
    try:
        resource.prlimit(pid, resource.RLIMIT_AS, (wanted, wanted))
        return
    except (OSError, ValueError):
        pass
    try:
        hard = resource.prlimit(pid, resource.RLIMIT_AS)[1]
        infinite = resource.RLIM_INFINITY
        soft = hard if wanted == infinite else wanted if hard == infinite else min(wanted, hard)
        resource.prlimit(pid, resource.RLIMIT_AS, (soft, hard))
    except (OSError, ValueError):
        pass


def _spawn(spec: RunSpec, stderr: int, terminal: int | None, wrapper_group: int) -> _Child:
    """Start cargo in a process group of its own, with default signal dispositions, stderr on
    `stderr`, the fds of `spec.pass_fds`, its RLIMIT_AS (soft and hard), and the terminal's
    foreground when the wrapper had it."""
    for fd in spec.pass_fds:
        os.set_inheritable(fd, True)
    pid = os.posix_spawn(spec.cargo, [spec.cargo, *spec.argv], spec.env, setpgroup=0,
                         file_actions=[(os.POSIX_SPAWN_DUP2, stderr, 2)],
                         setsigdef=(*FORWARDED_SIGNALS, *_IGNORED_IN_SUPERVISOR, signal.SIGCHLD))
    # Before cargo starts any rustc (it reads its config first): inherited by the whole build.
    _limit_address_space(pid, spec.limit_as)
    if terminal is not None:
        try:  # take the foreground from the wrapper's job only (SIGTTOU is ignored here)
            if os.tcgetpgrp(terminal) == wrapper_group:
                os.tcsetpgrp(terminal, pid)
        except OSError:
            pass
    return _Child(pid)


class _StderrPump:
    """Copies cargo's stderr to ours live, keeps a bounded tail, and hands complete lines to
    `on_line` until it returns False."""

    def __init__(self, on_line: Callable[[str], bool]) -> None:
        self.tail = bytearray()
        self.master: int | None = None
        self.on_line: Callable[[str], bool] | None = on_line
        self.partial = b""
        self.size: bytes | None = None
        if os.isatty(2):
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
        self.thread = background.Thread(self._pump)

    def copy_winsize(self) -> None:
        """Our terminal's size onto cargo's pty, when it changed (polled: the terminal's SIGWINCH
        goes to the build, the foreground group)."""
        import fcntl
        import termios

        if self.master is None:
            return
        try:
            size = fcntl.ioctl(2, termios.TIOCGWINSZ, b"\0" * 8)
            if size != self.size:
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
                self.size = size
        except OSError:
            pass

    def start(self) -> None:
        os.close(self.slave)
        self.thread.start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:  # EIO: the pty's last writer is gone
                break
            if not chunk:
                break
            try:
                _write_all(2, chunk)
            except OSError:
                pass
            self.tail += chunk
            if len(self.tail) > TAIL_BYTES:
                del self.tail[:-TAIL_BYTES]
            if self.on_line is not None:
                self._lines(chunk)

    def _lines(self, chunk: bytes) -> None:
        data = self.partial + chunk
        *complete, self.partial = data.split(b"\n")
        if len(self.partial) > 4096:
            self.partial = b""
        for raw in complete:
            if (b"Running" in raw or b"Doc-tests" in raw) and self.on_line is not None \
                    and not self.on_line(raw.decode("utf-8", "replace")):
                self.on_line = None
                return

    def finish(self, wait: float) -> str:
        if self.thread.join(wait):
            os.close(self.read_fd)
        return self.tail.decode("utf-8", "replace")


class _Supervisor:
    def __init__(self, spec: RunSpec, life_r: int, report_w: int, hand_over: int | None, terminal: int | None,
                 wrapper: int, wrapper_group: int) -> None:
        import _thread

        self.spec = spec
        self.life_r = life_r
        self.report_w = report_w
        self.hand_over = hand_over
        self.terminal = terminal
        self.wrapper = wrapper
        self.wrapper_group = wrapper_group
        self.outcome = Outcome(exit_code=0)
        self.forwarded: int | None = None
        self.escalated = False
        self.frozen = False
        self.auto_frozen = False
        self.group = 0
        self.write_lock = _thread.allocate_lock()
        self.program_reported = False
        self.cargo_exes: set[str] = set()

    def report(self, line: str) -> None:
        with self.write_lock:
            try:
                _write_all(self.report_w, line.encode() + b"\n")
            except OSError:
                pass

    def program_started(self) -> None:
        if not self.program_reported:
            self.program_reported = True
            self.outcome.program_started = True
            self.report("P")

    def _on_line(self, line: str) -> bool:
        if starts_program(line):
            self.program_started()
            return False  # nothing more to look for: stop scanning the program's output
        return True

    def _close_inherited(self) -> None:
        keep = {0, 1, 2, self.life_r, self.report_w, *self.spec.pass_fds, *self.spec.keep_fds}
        if self.terminal is not None:
            keep.add(self.terminal)
        try:
            fds = [int(name) for name in os.listdir("/proc/self/fd")]
        except OSError:
            return
        for fd in fds:
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def run(self) -> None:
        import select

        os.setpgid(0, 0)  # out of the caller's group: its SIGKILL does not reach us
        for sig in _IGNORED_IN_SUPERVISOR:
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self._close_inherited()
        become_subreaper()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        pump = _StderrPump(self._on_line)
        spec = self.spec
        try:
            proc = _spawn(spec, pump.slave, self.hand_over, self.wrapper_group)
        except OSError as err:
            self.report("E" + f"cannot run {spec.cargo}: {(err.strerror or str(err)).lower()}")
            return
        pump.start()
        self.group = proc.pid
        self.report(f"G{proc.pid}")
        self.cargo_exes = {self._exe(proc.pid), "cargo", "rustup"}
        started = time.monotonic()
        last_tick = started  # the first tick after TICK_SECONDS: a quick build never loads psutil
        warned = False
        while True:
            try:
                ready, _, _ = select.select([self.life_r, wake_r], [], [], TICK_SECONDS)
            except InterruptedError:
                ready = []
            if self.life_r in ready:
                try:
                    commands = os.read(self.life_r, 256)
                except OSError:
                    commands = b""
                if not commands:  # the wrapper is gone: nothing of the build may outlive it
                    kill_tree_now(self.group)
                    return
                for command in commands:
                    self._command(command, proc)
            if wake_r in ready:
                try:
                    while os.read(wake_r, 512):
                        pass
                except OSError:
                    pass
            self._check_stopped(proc)
            if proc.poll() is not None or self.outcome.memory_killed:
                break
            now = time.monotonic()
            if now - last_tick < TICK_SECONDS:
                continue
            last_tick = now
            elapsed = now - started
            self._tick(proc, pump)
            if spec.soft_timeout and not warned and elapsed >= spec.soft_timeout:
                warned = True
                names = running_names(descendants())
                _write_all(2, (f"warning: cargo-agent: still running after {format_duration(elapsed)}: "
                               f"{', '.join(names) or 'nothing'}\n").encode())
            if spec.timeout and elapsed >= spec.timeout:
                self.outcome.timed_out = True
                self.outcome.running = running_names(descendants())
                self.outcome.stopped = stop_all(self.group, spec.kill_grace, proc)
                break
        if not self.outcome.timed_out and not self.outcome.memory_killed and has_children():
            self.outcome.stopped += stop_all(None, min(spec.kill_grace, 2.0))
        _reap()
        self.outcome.stderr_tail = pump.finish(wait=1.0)
        code = proc.returncode
        outcome = self.outcome
        if outcome.timed_out:
            outcome.exit_code = EXIT_TIMEOUT
        elif self.forwarded is not None:
            outcome.signalled = self.forwarded
            outcome.exit_code = EXIT_SIGNAL_BASE + (signal.SIGKILL if self.escalated else self.forwarded)
        elif code is not None and code < 0:
            outcome.signalled = -code
            outcome.exit_code = EXIT_SIGNAL_BASE - code
        else:
            outcome.exit_code = code or 0
        outcome.kernel_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        from cargo_agent import jsontext

        self.report("O" + jsontext.dumps(outcome.as_dict()))

    @staticmethod
    def _exe(pid: int) -> str:
        try:
            return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            return ""

    def _tick(self, proc: Any, pump: _StderrPump) -> None:
        import psutil

        processes = descendants()
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
                if not self.program_reported and is_program_exe(process.exe()):
                    self.program_started()
            except psutil.Error:
                pass
        self.outcome.peak_rss = max(self.outcome.peak_rss, total)
        if not self.program_reported:
            exe = self._exe(proc.pid)  # `cargo run` execs the program in cargo's own process
            if exe and exe not in self.cargo_exes:
                self.program_started()
        self._follow_wrapper()
        pump.copy_winsize()
        _reap(keep=proc.pid)

    def _check_stopped(self, proc: Any) -> None:
        """cargo stopped by the terminal (Ctrl-Z, or a background read/write): tell the wrapper,
        which stops its job as the terminal would have."""
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WSTOPPED | os.WNOHANG)
        except (ChildProcessError, OSError):
            return
        if info is not None and info.si_code == os.CLD_STOPPED and info.si_status in _TERMINAL_STOPS:
            self.outcome.wrapper_stops += 1
            self.report(f"Z{info.si_status}")

    def _follow_wrapper(self) -> None:
        """A wrapper stopped by SIGSTOP (its whole group frozen by a harness) freezes the build;
        when it is continued, so is the build."""
        stopped = proc_state(self.wrapper) in ("T", "t")
        if stopped and not self.frozen:
            self._freeze()
            self.auto_frozen = True
            self.outcome.wrapper_stops += 1
        elif not stopped and self.frozen and self.auto_frozen:
            self._thaw()

    def _signal_tree(self, signum: int) -> None:
        _killpg(self.group, signum)
        for process in descendants():
            try:
                process.send_signal(signum)
            except Exception:  # noqa: BLE001 - it may be gone already
                pass

    def _freeze(self) -> None:
        self._signal_tree(signal.SIGSTOP)
        self.frozen, self.auto_frozen = True, False

    def _thaw(self) -> None:
        self._signal_tree(signal.SIGCONT)
        self.frozen = self.auto_frozen = False

    def _command(self, command: int, proc: Any) -> None:
        if command == CMD_STOP:
            self._freeze()
        elif command == CMD_CONT:
            self._thaw()
        elif command == CMD_MEMORY_KILL:
            self.outcome.memory_killed = True
            self.outcome.running = running_names(descendants())
            self.outcome.stopped = stop_all(self.group, self.spec.kill_grace, proc)
        elif 0 < command < 65:
            self.forwarded = self.forwarded or command
            if command == signal.SIGKILL:
                self.escalated = True
                kill_tree_now(self.group, keep=proc.pid)
            else:
                _killpg(self.group, command)
            if self.frozen:
                self._thaw()  # a stopped build cannot act on the signal
