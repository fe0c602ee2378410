"""What both paths share: the toolchain pin, finding the real cargo, and exec'ing into it.

A command that compiles nothing is `exec`'d straight into cargo from here (the fast path): only
`argv`, `toolchain`, `locations` and `errors` are imported before `execve`. The compiling path
uses the same pin and the same finder, so the two can never disagree.
"""

from __future__ import annotations

import os
import sys

from cargo_agent import locations, toolchain
from cargo_agent.argv import CargoCommand
from cargo_agent.errors import CargoNotFoundError, UsageError

TYPE_CHECKING = False  # no runtime collections.abc: on the pass-through path
if TYPE_CHECKING:
    from collections.abc import Mapping

TYPE_CHECKING = False  # mypy reads it as true; importing typing would cost the fast path
if TYPE_CHECKING:
    from cargo_agent.config import Config

CARGO_ENV = "CARGO_AGENT_CARGO"
SHIM_MARKER = b"cargo-agent-shim"  # appears in the first lines of shims/cargo


def start_dir(command: CargoCommand, cwd: str) -> str:
    """Where the package is, for the toolchain pin: the --manifest-path dir, else the working
    dir (after -C)."""
    manifest = command.manifest_path
    return os.path.dirname(os.path.join(cwd, manifest)) if manifest else cwd


def pin(command: CargoCommand, cwd: str, env: dict[str, str]) -> toolchain.Toolchain:
    """Choose the toolchain for `command`, check it is installed, and pin it in `env`."""
    chosen = toolchain.choose(command.toolchain, start_dir(command, cwd))
    toolchain.check(chosen, env)
    toolchain.apply(chosen, env)
    return chosen


def cargo_argv(command: CargoCommand) -> list[str]:
    """The arguments for the real cargo: the `+toolchain` is handed over by the pin instead."""
    return command.tokens[1:] if command.toolchain else list(command.tokens)


def _head(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(512)
    except OSError:
        return b""


def is_shim(path: str) -> bool:
    return SHIM_MARKER in _head(os.path.realpath(path))


def _is_shim_or_self(path: str) -> bool:
    real = os.path.realpath(path)
    if real == os.path.realpath(sys.argv[0]):
        return True
    head = _head(real)
    return SHIM_MARKER in head or (head.startswith(b"#!") and b"cargo_agent" in head)


def find_cargo(env: Mapping[str, str], configured: str | None) -> str:
    """The real cargo: `configured` (CARGO_AGENT_CARGO or the config key) if given, else the first
    `cargo` on PATH that is neither the shim nor cargo-agent itself."""
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        raise CargoNotFoundError(f"CARGO_AGENT_CARGO is set to '{configured}', which is not an executable file")
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", "cargo")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK) and not _is_shim_or_self(candidate):
            return candidate
    raise CargoNotFoundError(
        "cannot find the real cargo on PATH (only the cargo-agent shim, or nothing)",
        help=("install Rust with rustup, or set CARGO_AGENT_CARGO to the cargo executable",))


def real_cargo(env: Mapping[str, str]) -> str:
    """The real cargo for a run that has not loaded the settings: the config module (and TOML)
    is imported only when a host or user file exists."""
    configured = env.get(CARGO_ENV)
    if not configured and any(os.path.lexists(p) for p in locations.config_paths(env)):
        value = settings_for_non_compiling(env)["cargo"]
        configured = value if isinstance(value, str) else None
    return find_cargo(env, configured)


def settings_for_non_compiling(env: Mapping[str, str]) -> Config:
    """cargo-agent's settings for a command that compiles nothing. A config that cannot be used
    (a malformed file, a bad value, an unknown key) does not stop such a command: it runs with
    the defaults after one warning that names the problem. Compiling commands load the settings
    themselves and fail closed (exit 2)."""
    from cargo_agent import config as settings

    try:
        return settings.load(env)
    except UsageError as err:
        sys.stderr.write(f"warning: cargo-agent: config not used for this command, which compiles nothing: {err}\n")
        return settings.merge([])


def exec_cargo(command: CargoCommand, cwd: str, env: dict[str, str], cargo: str | None = None) -> int:
    """Replace this process with cargo: no slot, no supervision, only the toolchain pin."""
    pin(command, cwd, env)
    cargo = cargo or real_cargo(env)
    sys.stdout.flush()
    try:
        os.execve(cargo, [cargo, *cargo_argv(command)], env)
    except OSError as err:
        raise UsageError(f"cannot run {cargo}: {err.strerror}") from None
    return 0  # pragma: no cover - execve does not return
