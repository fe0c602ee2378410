"""Host-wide link slots and the linker wrapper (the "gate").

Links are where a build's memory spikes, and cargo cannot limit how many run at once. So every
link of every build on the host takes one of L link slots first: `<lock dir>/link-<k>.lock`,
held with flock by the gate (and inherited by the linker it runs), so a killed link frees its
slot when its last process is gone.

How a link reaches the gate, without changing what cargo fingerprints:
- cargo-agent sets RUSTC_WRAPPER to a small POSIX sh script (rustc-wrapper.sh, a few builtins
  per rustc call). For a rustc call that links it adds `-C linker=<gate>` and, where the linker
  in use is lld or mold, the thread cap (`link_threads`). Arguments a RUSTC_WRAPPER adds are
  invisible to cargo, so nothing is rebuilt when cargo-agent is used or dropped.
- The real linker, the one rustc would have run (the last `-C linker=` among rustc's args,
  which is where `target.<triple>.linker`, `CARGO_TARGET_<T>_LINKER` and `-C linker=` in any
  rustflags source land; else the target's default `cc`), is passed to the gate in
  CARGO_AGENT_GATE_LINKER. The gate is reached under that linker's own file name (a symlink),
  so rustc infers the same linker flavor and passes the same arguments (`-fuse-ld=lld`, ...).
- The gate (link-gate.sh, then `main` here) takes a slot and runs the real linker with the
  arguments unchanged, then records the link's peak memory (the kernel's accounting of the
  linker and its children) in `<lock dir>/links.jsonl`: the learned per-link estimate.
- A user's own rustc wrapper (RUSTC_WRAPPER, CARGO_BUILD_RUSTC_WRAPPER, build.rustc-wrapper)
  is chained, not replaced, after the `rustc_wrapper` setting had its say (sccache is still
  turned off by default).

No deadlock:
- a link never waits for a link slot while one of its ancestors holds one (a linker that runs
  a nested build): such a link runs at once, inside its ancestor's slot;
- no build slot is taken while a link slot is held: a cargo-agent build started below a link
  runs inside the enclosing build's slot (slots.py's nested rule), see `held_by_ancestor`.

Links of cross targets without a configured linker are not gated (the gate knows only the
host's default linker), and neither are rustdoc's doctest links (rustdoc does not go through
RUSTC_WRAPPER).
"""

from __future__ import annotations

import os
import sys
import time

from cargo_agent import jsontext, lockdir
from cargo_agent.errors import UsageError

TYPE_CHECKING = False  # no runtime typing import: this module is on the compiling path
if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping

    from cargo_agent.cargoconfig import CargoConfig
    from cargo_agent.config import Config
    from cargo_agent.envshape import Shaped

GATE_ENV = "CARGO_AGENT_GATE"  # <threads>:<host triple>:<lld by default 0/1>:<-Z threads off 0/1>
LOCKS_ENV = "CARGO_AGENT_GATE_LOCKS"  # <L>:<shared 0/1>:<lock dir>
CHAIN_ENV = "CARGO_AGENT_GATE_CHAIN"  # the user's own rustc wrapper
LINKER_ENV = "CARGO_AGENT_GATE_LINKER"  # set by the wrapper for each link: the real linker
WRAPPER_NAME = "cargo-agent-rustc-wrapper"
GATE_NAME = "cargo-agent-link-gate"
PACKAGE = os.path.dirname(os.path.abspath(__file__))
# rust-lld became the default linker of this target in Rust 1.90.
LLD_BY_DEFAULT = {"x86_64-unknown-linux-gnu": (1, 90)}
POLL_FIRST, POLL_MAX = 0.005, 0.1  # a waiting link polls the slots, backing off to 100 ms
# In the command line of every link gate (link-gate.sh): how a build finds a gate among its ancestors.
GATE_MARK = b"from cargo_agent.linkgate import main"
LINK_WAITS = "linkwait"  # <lock dir>/linkwait/<pid>.json: a link waiting for a slot (flock'ed)


# ---- install (cargo-agent side, once per build) ---------------------------------------

def _gate_dir(env: Mapping[str, str]) -> str:
    from cargo_agent import gatefiles

    return gatefiles.install(env, PACKAGE, WRAPPER_NAME, GATE_NAME)


def _config_wrapper(cargo_config: CargoConfig, cwd: str) -> str | None:
    """build.rustc-wrapper as cargo resolves it: a value with a slash is relative to the
    directory holding the `.cargo` dir of the file that sets it."""
    value = cargo_config.get("build.rustc-wrapper")
    if not isinstance(value, str) or not value:
        return None
    if "/" not in value or os.path.isabs(value):
        return value
    from cargo_agent.cargoconfig import load_file

    for path in cargo_config.files:
        build = load_file(str(path)).get("build")
        if isinstance(build, dict) and build.get("rustc-wrapper") == value:
            return os.path.join(os.path.dirname(os.path.dirname(os.fspath(path))), value)
    return os.path.join(cwd, value)  # from --config on the command line


def user_wrapper(env: Mapping[str, str], cargo_config: CargoConfig, cwd: str) -> str | None:
    """The rustc wrapper cargo would run (RUSTC_WRAPPER beats CARGO_BUILD_RUSTC_WRAPPER, which
    beats build.rustc-wrapper; an empty value means none). Inside a build cargo-agent already
    shaped (a nested build), RUSTC_WRAPPER is our own: the user's is the one it chains to."""
    for name in ("RUSTC_WRAPPER", "CARGO_BUILD_RUSTC_WRAPPER"):
        if name in env:
            if os.path.basename(env[name]) == WRAPPER_NAME:
                return env.get(CHAIN_ENV) or None
            return env[name] or None
    return _config_wrapper(cargo_config, cwd)


def asks_for_parallel_frontend(cargo_config: CargoConfig, env: Mapping[str, str]) -> bool:
    """Whether any rustflags source asks for rustc's parallel frontend (`-Z threads=N`)."""
    from cargo_agent.cargoconfig import string_list

    sources: list[list[str]] = []
    for name, value in env.items():
        if name in ("RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS") or (
                name.startswith("CARGO_TARGET_") and name.endswith("_RUSTFLAGS")):
            sources.append(value.split())
        elif name == "CARGO_ENCODED_RUSTFLAGS":
            sources.append(value.split("\x1f"))
    sources.append(string_list(cargo_config.get("build.rustflags")) or [])
    targets = cargo_config.get("target")
    if isinstance(targets, dict):
        sources += [string_list(t.get("rustflags")) or [] for t in targets.values() if isinstance(t, dict)]
    for flags in sources:
        for i, flag in enumerate(flags):
            if flag.startswith("-Zthreads=") or (flag == "-Z" and i + 1 < len(flags)
                                                 and flags[i + 1].startswith("threads=")):
                return True
    return False


def install(shaped: Shaped, cargo_config: CargoConfig, config: Config, lock_dir: str, shared: bool,
            link_slots: int, limit_as: int | None, cwd: str) -> list[str]:
    """Route this build's links through the gate. Returns notes to show when the build runs."""
    from cargo_agent import rustcinfo

    env = shaped.env
    notes: list[str] = []
    from cargo_agent.envshape import link_threads_cap

    threads = link_threads_cap(config)
    try:
        info = rustcinfo.info(env)
        host, version = info.host, info.version
    except UsageError:
        host, version = "", (0, 0)
    if host and "-linux" not in host:
        shaped.notes.append(f"links not gated: the link gate supports Linux hosts, not {host}")
        return notes
    since = LLD_BY_DEFAULT.get(host)
    lld = since is not None and version >= since
    # Under RLIMIT_AS the wrapper overrides any `-Z threads=N` it sees, whatever set it; the
    # note is for the rustflags sources cargo-agent can read.
    parallel = limit_as is not None
    if limit_as is not None and asks_for_parallel_frontend(cargo_config, env):
        note = (f"rustflags ask for rustc's parallel frontend (-Z threads), which fails under RLIMIT_AS: "
                f"this build runs without it (limit_as = {limit_as >> 20}M; set limit_as = 'unlimited' to keep it)")
        shaped.notes.append(note)
        notes.append(note)
    chain = user_wrapper(env, cargo_config, cwd)
    directory = _gate_dir(env)
    why = f"links take one of {link_slots} host-wide link slots"
    shaped.set_env("RUSTC_WRAPPER", os.path.join(directory, WRAPPER_NAME),
                   why + (f"; your rustc wrapper {chain} still runs" if chain else ""))
    shaped.set_env(GATE_ENV, f"{threads}:{host}:{int(lld)}:{int(parallel)}",
                   f"link threads capped at {threads} where the linker is lld or mold")
    shaped.set_env(LOCKS_ENV, f"{link_slots}:{int(shared)}:{lock_dir}", why)
    if chain:
        shaped.set_env(CHAIN_ENV, chain, "your rustc wrapper, run by cargo-agent's")
    elif CHAIN_ENV in env:
        del env[CHAIN_ENV]
    return notes


def slot_count(config: Config, lock_dir: str, env: Mapping[str, str]) -> tuple[int, str]:
    """L: the setting, else min(floor((limit - reserve) / per-link peak), cores), at least 1."""
    from cargo_agent import host, report

    if config["link_slots"]:
        return int(config["link_slots"]), f"link_slots = {config['link_slots']} ({config.origins.get('link_slots')})"
    limit = host.in_force()
    reserve = host.reserve_within(int(config["host_reserve"]), limit.limit)
    learned = report.learned_peak(lock_dir, report.LINKS)
    per_link = learned or int(config["per_build_memory"])
    source = "learned from recent links" if learned else "per_build_memory, no link learned yet"
    by_memory = max(1, (limit.limit - reserve) // max(1, per_link))
    count = max(1, min(by_memory, host.cores()))
    return count, (f"min(floor(({limit.limit / (1 << 30):.1f}G {limit.source} - {reserve / (1 << 30):.2f}G reserve) / "
                   f"{per_link / (1 << 20):.0f}M per link ({source})) = {by_memory}, {host.cores()} cores) = {count}")


# ---- the slots -----------------------------------------------------------------------

def _slot_files(lock_dir: str) -> list[str]:
    return sorted(n for n in lockdir.listdir(lock_dir) if n.startswith("link-") and n.endswith(".lock"))


def held_by_ancestor(lock_dir: str) -> bool:
    """Whether one of our ancestors holds a link slot of this lock dir (we run below a link):
    an ancestor that is a link gate, holding the flock of one of the dir's link slots. The
    command line is looked at first: only a necessary condition (it is easy to fake), it
    spares every build outside a link the read of /proc/locks (see lockdir.lock_holders)."""
    from cargo_agent import host

    gates = {pid for pid in host.ancestors() if GATE_MARK in host.command_line(pid)}
    if not gates:
        return False
    names = _slot_files(lock_dir)
    if not names:
        return False
    locks = lockdir.locked_inodes()
    holders = {lockdir.lock_holder(os.path.join(lock_dir, n), locks) for n in names} - {None}
    return bool(holders & gates)


class LinkHolder:
    """A link slot's holder record, or a waiting link's record (anything in them may be planted:
    fields of the wrong type read as missing)."""

    __slots__ = ("build", "linker", "output", "pid", "since", "slot")

    def __init__(self, data: object) -> None:
        fields = data if isinstance(data, dict) else {}

        def whole(key: str) -> int | None:
            value = fields.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        self.pid, self.build, self.slot = whole("pid"), whole("build"), whole("slot")
        since = fields.get("since")
        self.since = float(since) if isinstance(since, (int, float)) and not isinstance(since, bool) else None
        linker, output = fields.get("linker"), fields.get("output")
        self.linker = linker if isinstance(linker, str) else None
        self.output = output if isinstance(output, str) else None

    @classmethod
    def read(cls, path: str) -> LinkHolder:
        try:
            return cls(jsontext.loads(lockdir.read_text(path) or ""))
        except (ValueError, UsageError):
            return cls(None)

    def as_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}


def holders(lock_dir: str) -> list[LinkHolder]:
    """Link slots held now, with their records (no lock taken)."""
    locks = lockdir.locked_inodes()
    found = []
    for name in _slot_files(lock_dir):
        pid = lockdir.lock_holder(os.path.join(lock_dir, name), locks)
        if pid is None:
            continue
        record = LinkHolder.read(os.path.join(lock_dir, name[:-len(".lock")] + ".json"))
        record.slot = int(name[len("link-"):-len(".lock")]) if name[5:-5].isdigit() else None
        record.pid = record.pid or pid
        found.append(record)
    return found


def waiters(lock_dir: str) -> list[LinkHolder]:
    directory = os.path.join(lock_dir, LINK_WAITS)
    names = sorted(lockdir.listdir(directory))
    locks = lockdir.locked_inodes()
    return [LinkHolder.read(os.path.join(directory, n)) for n in names
            if n.endswith(".json") and lockdir.is_locked(os.path.join(directory, n), locks)]


# ---- the gate (linker side, once per link) -------------------------------------------

def _output(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "-o" and i + 1 < len(args):
            return args[i + 1]
    return None


def _build_pid(env: Mapping[str, str]) -> int | None:
    value = env.get("CARGO_AGENT_SLOT", "")
    tail = value.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _record(args: list[str], real: str, env: Mapping[str, str], slot: int | None = None) -> bytes:
    data = {"pid": os.getpid(), "build": _build_pid(env), "linker": real, "output": _output(args),
            "since": time.time(), "slot": slot}
    return jsontext.dumps({k: v for k, v in data.items() if v is not None}).encode()


def _take(lock_dir: str, count: int, shared: bool, args: list[str], real: str,
          env: Mapping[str, str]) -> tuple[int, int, float]:
    """(fd, slot, seconds waited): poll the L slots, backing off; while waiting, a flock'ed
    record in linkwait/ shows this link in --status."""
    fds = [lockdir.open_lock(os.path.join(lock_dir, f"link-{k}.lock"), shared) for k in range(count)]
    started = time.monotonic()
    wait_fd, wait_path = -1, ""
    delay = POLL_FIRST
    try:
        while True:
            for k, fd in enumerate(fds):
                if lockdir.try_lock(fd):
                    fds[k] = -1
                    return fd, k, time.monotonic() - started
            if wait_fd < 0:
                import fcntl

                waits = os.path.join(lock_dir, LINK_WAITS)
                lockdir.make_dir(waits, shared)
                wait_path = os.path.join(waits, f"{os.getpid()}.json")
                lockdir.remove(wait_path)
                wait_fd = lockdir.open_file(wait_path, os.O_RDWR, lockdir.file_mode(shared))
                fcntl.flock(wait_fd, fcntl.LOCK_EX)
                lockdir.write_fd(wait_fd, _record(args, real, env), wait_path)
            time.sleep(delay)
            delay = min(POLL_MAX, delay * 2)
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        if wait_fd >= 0:
            lockdir.remove(wait_path)
            os.close(wait_fd)


def _run(command: list[str], keep_fd: int) -> tuple[int, int]:
    """Run the real linker (holding `keep_fd` too); forward termination signals to it.
    Returns (wait status, peak RSS in bytes of the linker and its waited-for children)."""
    from cargo_agent.signals import signal

    if keep_fd >= 0:
        os.set_inheritable(keep_fd, True)
    try:
        pid = os.posix_spawnp(command[0], command, dict(os.environ))
    except OSError as err:
        sys.stderr.write(f"error: cargo-agent link gate: cannot run linker `{command[0]}`: "
                         f"{(err.strerror or str(err)).lower()}\n")
        return 127 << 8, 0

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            return status, int(usage.ru_maxrss) * 1024
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0, 0


def _exit_like(status: int) -> int:
    """Our exit code for the linker's wait status; a linker killed by a signal kills us alike,
    so rustc reports the signal."""
    from cargo_agent.signals import signal

    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)  # SIGKILL and SIGSTOP take no handler: already default
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.waitstatus_to_exitcode(status)


def main(args: list[str], env: MutableMapping[str, str] | None = None) -> int:
    """The gate: take a link slot, run the real linker with `args` unchanged, free the slot."""
    env = os.environ if env is None else env
    real = env.get(LINKER_ENV) or "cc"
    command = [real, *args]
    count_text, _, rest = env.get(LOCKS_ENV, "").partition(":")
    shared_text, _, lock_dir = rest.partition(":")
    if not count_text.isdigit() or int(count_text) < 1 or not lock_dir:
        status, _ = _run(command, -1)  # not under cargo-agent's build: nothing to gate
        return _exit_like(status)
    if held_by_ancestor(lock_dir):
        status, _ = _run(command, -1)  # a link below a link: never wait while holding a slot
        return _exit_like(status)
    if not os.path.isdir(lock_dir):  # removed under the build (a tmp cleaner): link, and say so
        sys.stderr.write(f"warning: cargo-agent link gate: lock dir {lock_dir} is gone; this link runs "
                         "without a link slot\n")
        status, _ = _run(command, -1)
        return _exit_like(status)
    shared = shared_text == "1"
    try:
        fd, slot, waited = _take(lock_dir, int(count_text), shared, args, real, env)
    except UsageError as err:
        sys.stderr.write(f"error: cargo-agent link gate: {err}\n")
        return 1
    record_path = os.path.join(lock_dir, f"link-{slot}.json")
    started = time.monotonic()
    try:
        try:
            lockdir.write_atomic(record_path, _record(args, real, env, slot), shared)
        except UsageError:
            pass  # the record only feeds --status
        status, peak = _run(command, fd)
    finally:
        lockdir.remove(record_path)  # before the unlock, so we never delete the next holder's record
        os.close(fd)
    if peak:
        from cargo_agent import report

        report.append(lock_dir,
                      {"time": time.time(), "peak_rss": peak, "seconds": round(time.monotonic() - started, 3),
                       "waited": round(waited, 3), "linker": real, "output": _output(args),
                       "exit": os.waitstatus_to_exitcode(status) if status else 0}, shared, report.LINKS)
    return _exit_like(status)
