"""`cargo-agent --doctor`: check the set-up and show where everything comes from.

One `name: value` line per check, details indented below it: the config files read (and a
`CARGO_AGENT_CONFIG` naming nothing), the real cargo and whether `cargo` on PATH is the shim,
rustup, the lock dir (per user or shared, and anything in it that is planted or malformed), N and
where it lives, and every setting with its source and any clamp by the host policy. Exit 1 when
something would stop a build; notes and warnings alone exit 0. Doctor never crashes and never
blocks: every check is isolated, and the lock dir is only read through `lockdir`.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from cargo_agent import config as settings
from cargo_agent import locations, lockdir, passthrough, report, slots, toolchain, workspace
from cargo_agent.errors import CargoAgentError

Lines = list[str]
# The files cargo-agent (and the helpers beside slots: CPU tokens, link slots) keeps in a lock dir.
KNOWN_FILE = re.compile(r"(slot|cpu|link)-[0-9]+\.(lock|json)|queue\.(lock|seq)|runs\.(lock|jsonl|jsonl\.1)"
                        r"|links\.(jsonl|jsonl\.1)"
                        r"|\..+\.[0-9]+\.[0-9a-f]{8}")  # a temporary of write_atomic
TICKET = re.compile(r"[0-9]+-[0-9]+\.ticket")


class Problem(Exception):
    """A check whose finding would stop a build (doctor exits 1), with its details."""

    def __init__(self, message: str, details: Lines) -> None:
        super().__init__(message)
        self.details = details


def run(env: dict[str, str]) -> int:
    found: dict[str, object] = {}
    problems = 0

    def load() -> settings.Config:
        """The settings a build here would get: with the repo of the current directory, if any."""
        if "config" not in found:
            location = workspace.locate(Path(os.getcwd()), None)
            root = location.workspace if location else None
            found["config"] = settings.load(env, root.root_data if root else None,
                                            root.root_manifest if root else None)
        value = found["config"]
        assert isinstance(value, settings.Config)
        return value

    checks: list[tuple[str, Callable[[], tuple[str, Lines]]]] = [
        ("config", lambda: config_files(env, load)),
        ("real cargo", lambda: (passthrough.real_cargo(env), [])),
        ("cargo on PATH", lambda: cargo_on_path(env)),
        ("rustup", lambda: (toolchain.which("rustup", env) or "not found (+toolchain will not work)", [])),
        ("lock dir", lambda: lock_dir(load(), env)),
        ("slots", lambda: slot_count(load(), env)),
        ("memory limit", lambda: memory_limit(env)),
        ("settings", lambda: sources(load())),
    ]
    for name, check in checks:
        try:
            value, details = check()
        except Problem as err:
            problems += 1
            print(f"{name}: error: {err}")
            for line in err.details:
                print(f"  {line}")
            continue
        except CargoAgentError as err:
            problems += 1
            print(f"{name}: error: {lockdir.printable(err.message)}")
            continue
        except Exception as err:  # noqa: BLE001 - doctor reports, it does not crash
            problems += 1
            print(f"{name}: error: {lockdir.printable(str(err))}")
            continue
        print(f"{name}: {value}")
        for line in details:
            print(f"  {line}")
    return 0 if problems == 0 else 1


# ---- config files ------------------------------------------------------------------------

def config_files(env: dict[str, str], load: Callable[[], settings.Config]) -> tuple[str, Lines]:
    host = locations.host_config_path(env)
    named = env.get(locations.CONFIG_PATH_ENV)
    details: Lines = []
    on_etc = os.path.lexists(locations.DEFAULT_HOST_CONFIG)
    details.append(f"host file (policy): {host}: {_presence(host)}" + ("" if on_etc or not named else
                                                                        f" (named by {locations.CONFIG_PATH_ENV})"))
    if on_etc:
        details += _host_file_safety(host)
    if named and named != host:
        if on_etc:
            details.append(f"{locations.CONFIG_PATH_ENV}={named}: {_presence(named)}; read below the host file "
                           f"{host}, which it cannot replace (the host file's limits clamp it)")
        if not os.path.lexists(named):
            details.append(f"warning: {locations.CONFIG_PATH_ENV} names {named}, which does not exist: "
                           "nothing is read from it")
    elif named and not os.path.lexists(named):
        details.append(f"warning: {locations.CONFIG_PATH_ENV} names {named}, which does not exist: "
                       "nothing is read from it")
    user = locations.user_config_path(env)
    details.append(f"user file: {user}: {_presence(user)}")
    config = load()  # raises on a bad file or value: reported as this check's error
    repo = next((layer for layer in config.layers if layer.name == "repo" and layer.exists), None)
    if repo is not None:
        details.append(f"repo: {repo.path}: sets {', '.join(repo.values) or 'nothing'}")
    details += [f"clamped by the host policy: {key}" for key in config.clamped]
    loaded = [layer.path for layer in config.layers if layer.exists and layer.path and layer.name != "repo"]
    return ("files read: " + ", ".join(loaded) if loaded else "no config files (defaults and environment)"), details


def _presence(path: str) -> str:
    if not os.path.lexists(path):
        return "not present"
    return "read" if os.access(path, os.R_OK) else "present but not readable by you"


def _host_file_safety(path: str) -> Lines:
    """The host file is policy only if agents cannot edit it."""
    try:
        info = os.stat(path)
    except OSError:
        return []
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or info.st_uid != 0:
        owner = lockdir.owner_name(info.st_uid)
        return [f"warning: {path} is owned by {owner} with mode {stat.S_IMODE(info.st_mode):o}: whoever can "
                "write it sets the policy (make it root's, mode 644)"]
    return []


# ---- cargo -------------------------------------------------------------------------------

def cargo_on_path(env: dict[str, str]) -> tuple[str, Lines]:
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", "cargo")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            if passthrough.is_shim(candidate):
                return f"{candidate} is the cargo-agent shim: `cargo` runs through cargo-agent", []
            return (f"{candidate} is not the shim: plain `cargo` bypasses cargo-agent",
                    ["install the shim: cargo-agent --install-shim DIR, and put DIR first on PATH"])
    return "no cargo on PATH", []


# ---- the lock dir --------------------------------------------------------------------------

def lock_dir(config: settings.Config, env: dict[str, str]) -> tuple[str, Lines]:
    path, shared = slots.lock_dir_of(config, env)
    kind = (f"shared: set by the host file ({config.host['lock_dir'][1]})" if shared
            else "per user: yours alone" + (f", from {config.origins['lock_dir']}"
                                            if config.origins["lock_dir"] != "default" else ""))
    if not os.path.lexists(path):
        return f"{path} ({kind}); not created yet, the first build makes it", []
    lockdir.prepare(path, shared)  # only checks an existing dir: owner, mode, type
    info = os.lstat(path)
    owner = f"owner {lockdir.owner_name(info.st_uid)}, group {_group_name(info.st_gid)}, " \
            f"mode {stat.S_IMODE(info.st_mode):o}"
    planted, malformed, notes = scan(path)
    details = notes + [f"malformed record ignored: {item}" for item in malformed]
    details += [f"planted: {item}" for item in planted]
    if planted:
        raise Problem(f"{path} ({kind}; {owner}) holds files cargo-agent refuses to use: remove them", details)
    return f"{path} ({kind}; {owner})", details


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OSError):
        return f"gid {gid}"


def scan(where: str | os.PathLike[str]) -> tuple[Lines, Lines, Lines]:
    """(files that would stop a build: links, FIFOs, directories where files belong;
    records that are ignored: JSON of the wrong shape or not JSON; notes)."""
    path = Path(where)
    planted: Lines = []
    malformed: Lines = []
    notes: Lines = []
    names = sorted(lockdir.listdir(path))
    for name in names:
        shown = lockdir.printable(name, 80)
        try:
            info = os.lstat(path / name)
        except OSError:
            continue
        if name == "queue":
            if not stat.S_ISDIR(info.st_mode):
                planted.append(f"{shown} is {_kind(info.st_mode)}, not a directory")
            continue
        if name == "slots":
            notes.append(f"note: {shown} is an older cargo-agent's slot count, ignored (N lives in the host file)")
            continue
        if not KNOWN_FILE.fullmatch(name):
            continue  # not a name cargo-agent uses: never opened, so harmless
        if not stat.S_ISREG(info.st_mode):
            planted.append(f"{shown} is {_kind(info.st_mode)}")
        elif info.st_nlink != 1:
            planted.append(f"{shown} has {info.st_nlink} hard links")
        elif name.endswith(".json"):
            record = slots.Holder.read(path / name)
            if record.malformed:
                malformed.append(f"{shown} (not a JSON object, or unreadable)")
    for name in sorted(lockdir.listdir(path / "queue")):
        if not TICKET.fullmatch(name):
            continue
        shown = lockdir.printable(name, 80)
        try:
            info = os.lstat(path / "queue" / name)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            planted.append(f"queue/{shown} is {_kind(info.st_mode)}")
        elif slots.Holder.read(path / "queue" / name).malformed and info.st_size:
            malformed.append(f"queue/{shown} (not a JSON object, or unreadable)")
    if "runs.jsonl" in names:
        bad = report.read_log(path)[1]
        if bad:
            malformed.append(f"runs.jsonl: {bad} line{'s' if bad != 1 else ''} not a JSON object")
    return planted, malformed, notes


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


# ---- memory ------------------------------------------------------------------------------

def memory_limit(env: dict[str, str]) -> tuple[str, Lines]:
    """The memory limit in force and where it comes from; every other limit found, and pressure."""
    from cargo_agent import host

    limit = host.in_force()
    others = [f"also {other.limit >> 20} MiB, {other.used >> 20} MiB used ({other.source})"
              for other in host.limits() if other.source != limit.source]
    pressure = host.pressure(env)
    return (f"{limit.limit >> 20} MiB, {limit.used >> 20} MiB used, from {limit.source}",
            [*others, f"pressure: memory some {pressure.memory_some:g}%, full {pressure.memory_full:g}%, "
                      f"I/O full {pressure.io_full:g}% (avg10, {pressure.source})"])


# ---- slots and settings -----------------------------------------------------------------------

def slot_count(config: settings.Config, env: dict[str, str]) -> tuple[str, Lines]:
    resolved = slots.resolve(config, env, create=False)
    where = (f"N lives in the host file: `slots` in {config.host['slots'][1].rsplit(':', 1)[0]}"
             if config.host_slots is not None else
             f"N is derived on every run from memory and cores; to fix it, set `slots` in the host file "
             f"({locations.DEFAULT_HOST_CONFIG})")
    return (f"N = {resolved.ceiling} ({resolved.formula}); a build here may use {resolved.count}", [where])


def sources(config: settings.Config) -> tuple[str, Lines]:
    details = [lockdir.printable(config.explain(setting.key)) for setting in settings.SETTINGS]
    policy = "host policy sets: " + ", ".join(sorted(config.host)) if config.host else \
        "no host policy: every layer may set any value"
    return policy, details
