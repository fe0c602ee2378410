"""Which Rust toolchain a command runs with.

Precedence (highest first): a leading `+toolchain` argument; the nearest `rust-toolchain` /
`rust-toolchain.toml` walking up from the package dir (in one dir the legacy
`rust-toolchain` wins, as with rustup); otherwise whatever rustup would pick. The file pin
deliberately beats an inherited `RUSTUP_TOOLCHAIN`: shared runners set it, and a repo's pin
is what its code is written for. The choice is handed to cargo as `RUSTUP_TOOLCHAIN`, with
`RUSTUP_AUTO_INSTALL=0`, because concurrent rustup installs are not safe: a toolchain that
is not installed is an error before any build starts.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cargo_agent.errors import UsageError

FILE_NAMES = ("rust-toolchain", "rust-toolchain.toml")  # legacy name first: it wins in one dir


@dataclass(frozen=True)
class Toolchain:
    name: str | None  # value for RUSTUP_TOOLCHAIN: a channel/toolchain name or a directory
    source: str  # what chose it, for messages and --dry-run
    file: Path | None = None

    @property
    def is_path(self) -> bool:
        return self.name is not None and os.sep in self.name


def find_file(start: Path) -> Path | None:
    for directory in [start, *start.parents]:
        for name in FILE_NAMES:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def parse_file(path: Path) -> str:
    """The toolchain a rust-toolchain(.toml) file names: a channel, or a path for `path = ...`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read toolchain file {path}: {getattr(err, 'strerror', None) or err}") from None
    stripped = text.strip()
    if path.name == "rust-toolchain" and stripped and "\n" not in stripped and "=" not in stripped \
            and "[" not in stripped:
        _check_channel(stripped, path)
        return stripped
    from cargo_agent.tomlfile import TOMLDecodeError, loads

    try:
        data = loads(text)
    except TOMLDecodeError as err:
        raise UsageError(f"malformed toolchain file {path}: {err}") from None
    table = data.get("toolchain")
    if not isinstance(table, dict):
        raise UsageError(f"malformed toolchain file {path}: no [toolchain] table")
    channel, directory = table.get("channel"), table.get("path")
    if channel is not None and directory is not None:
        raise UsageError(f"malformed toolchain file {path}: `channel` and `path` cannot both be set")
    if isinstance(directory, str) and directory:
        return str((path.parent / directory).resolve()) if not os.path.isabs(directory) else directory
    if isinstance(channel, str) and channel:
        _check_channel(channel, path)
        return channel
    raise UsageError(f"malformed toolchain file {path}: [toolchain] needs a `channel` or `path` string")


def _check_channel(channel: str, path: Path) -> None:
    if any(c.isspace() for c in channel) or os.sep in channel:
        raise UsageError(f"malformed toolchain file {path}: invalid channel '{channel}'")


def choose(override: str | None, start: Path) -> Toolchain:
    if override:
        return Toolchain(override, f"+{override} on the command line")
    path = find_file(start)
    if path is not None:
        return Toolchain(parse_file(path), str(path), path)
    return Toolchain(None, "rustup's default")


def rustup_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("RUSTUP_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".rustup"))


def which(program: str, env: Mapping[str, str]) -> str | None:
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def has_rustup(env: Mapping[str, str]) -> bool:
    return which("rustup", env) is not None or (rustup_home(env) / "toolchains").is_dir()


def toolchain_dir(name: str, env: Mapping[str, str]) -> Path | None:
    """The installed toolchain dir for a name (`stable`, `1.92`, `nightly-2026-01-01`, a linked name)."""
    if os.sep in name:
        return Path(name) if (Path(name) / "bin").is_dir() else None
    toolchains = rustup_home(env) / "toolchains"
    exact = toolchains / name
    if exact.is_dir():
        return exact
    prefix = f"{name}-{platform.machine()}-"
    try:
        entries = sorted(os.listdir(toolchains))
    except OSError:
        return None
    return next((toolchains / e for e in entries if e.startswith(prefix)), None)


def check(toolchain: Toolchain, env: Mapping[str, str]) -> None:
    """Fail before any build starts when the chosen toolchain cannot be used."""
    if toolchain.name is None:
        return
    if not has_rustup(env):
        if toolchain.file is None:
            raise UsageError(f"cannot use +{toolchain.name}: rustup is not installed on this host")
        return  # a file pin without rustup: cargo-agent warns later if rustc's version differs
    if toolchain_dir(toolchain.name, env) is None:
        origin = "from the command line" if toolchain.file is None else f"from {toolchain.file}"
        hint = (f"rustup toolchain install {toolchain.name}" if not toolchain.is_path
                else f"check that {toolchain.name} is a toolchain directory with bin/cargo")
        raise UsageError(f"toolchain '{toolchain.name}' ({origin}) is not installed", help=(hint,))


def apply(toolchain: Toolchain, env: dict[str, str]) -> None:
    env["RUSTUP_AUTO_INSTALL"] = "0"
    if toolchain.name is not None:
        env["RUSTUP_TOOLCHAIN"] = toolchain.name
