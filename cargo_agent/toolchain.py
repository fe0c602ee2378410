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

from cargo_agent.errors import UsageError
from cargo_agent.locations import rustup_home

TYPE_CHECKING = False  # no runtime collections.abc: on the pass-through path
if TYPE_CHECKING:
    from collections.abc import Mapping

FILE_NAMES = ("rust-toolchain", "rust-toolchain.toml")  # legacy name first: it wins in one dir
# On the fast path: plain os.path and a plain class, no pathlib/dataclasses/platform imports.


class Toolchain:
    def __init__(self, name: str | None, source: str, file: str | None = None) -> None:
        self.name = name  # value for RUSTUP_TOOLCHAIN: a channel/toolchain name or a directory
        self.source = source  # what chose it, for messages and --dry-run
        self.file = file

    @property
    def is_path(self) -> bool:
        return self.name is not None and os.sep in self.name


def find_file(start: str | os.PathLike[str]) -> str | None:
    directory = os.path.abspath(start)
    while True:
        for name in FILE_NAMES:
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate):
                return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def parse_file(path: str) -> str:
    """The toolchain a rust-toolchain(.toml) file names: a channel, or a path for `path = ...`."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read toolchain file {path}: {getattr(err, 'strerror', None) or err}") from None
    stripped = text.strip()
    from cargo_agent.tomlfile import simple_table  # the usual file, read without tomllib

    simple = simple_table(text)
    if simple is not None and isinstance(simple.get("toolchain"), dict):
        return _from_table(simple["toolchain"], path)
    if os.path.basename(path) == "rust-toolchain" and stripped and "\n" not in stripped and "=" not in stripped \
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
    return _from_table(table, path)


def _from_table(table: dict[str, object], path: str) -> str:
    channel, directory = table.get("channel"), table.get("path")
    if channel is not None and directory is not None:
        raise UsageError(f"malformed toolchain file {path}: `channel` and `path` cannot both be set")
    if isinstance(directory, str) and directory:
        return directory if os.path.isabs(directory) else os.path.realpath(
            os.path.join(os.path.dirname(path), directory))
    if isinstance(channel, str) and channel:
        _check_channel(channel, path)
        return channel
    raise UsageError(f"malformed toolchain file {path}: [toolchain] needs a `channel` or `path` string")


def _check_channel(channel: str, path: str) -> None:
    if any(c.isspace() for c in channel) or os.sep in channel:
        raise UsageError(f"malformed toolchain file {path}: invalid channel '{channel}'")


def choose(override: str | None, start: str | os.PathLike[str]) -> Toolchain:
    if override:
        return Toolchain(override, f"+{override} on the command line")
    path = find_file(start)
    if path is not None:
        return Toolchain(parse_file(path), str(path), path)
    return Toolchain(None, "rustup's default")


def which(program: str, env: Mapping[str, str]) -> str | None:
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def has_rustup(env: Mapping[str, str]) -> bool:
    return which("rustup", env) is not None or os.path.isdir(os.path.join(rustup_home(env), "toolchains"))


def toolchain_dir(name: str, env: Mapping[str, str]) -> str | None:
    """The installed toolchain dir for a name (`stable`, `1.92`, `nightly-2026-01-01`, a linked name)."""
    if os.sep in name:
        return name if os.path.isdir(os.path.join(name, "bin")) else None
    toolchains = os.path.join(rustup_home(env), "toolchains")
    exact = os.path.join(toolchains, name)
    if os.path.isdir(exact):
        return exact
    prefix = f"{name}-{os.uname().machine}-"
    try:
        entries = sorted(os.listdir(toolchains))
    except OSError:
        return None
    return next((os.path.join(toolchains, e) for e in entries if e.startswith(prefix)), None)


def check(toolchain: Toolchain, env: Mapping[str, str]) -> None:
    """Fail before any build starts when the chosen toolchain cannot be used."""
    if toolchain.name is None:
        return
    if not has_rustup(env):
        if toolchain.file is None:
            raise UsageError(f"cannot use +{toolchain.name}: rustup is not installed on this host")
        warn_if_rustc_differs(toolchain, env)
        return
    if toolchain_dir(toolchain.name, env) is None:
        origin = "from the command line" if toolchain.file is None else f"from {toolchain.file}"
        hint = (f"rustup toolchain install {toolchain.name}" if not toolchain.is_path
                else f"check that {toolchain.name} is a toolchain directory with bin/cargo")
        raise UsageError(f"toolchain '{toolchain.name}' ({origin}) is not installed", help=(hint,))


def pin_matches(channel: str, release: str) -> bool:
    """Whether `rustc -V`'s release (`1.95.0`, `1.97.0-nightly`, `1.96.0-beta.2`) is what a
    channel (`stable`, `nightly-2026-01-01`, `1.95`, `1.95.0`) asks for."""
    kind = channel.split("-", 1)[0]
    if kind == "stable":
        return "-" not in release
    if kind in ("nightly", "beta"):
        return f"-{kind}" in release
    number = release.split("-", 1)[0]
    return number == kind or number.startswith(kind + ".")


def warn_if_rustc_differs(toolchain: Toolchain, env: Mapping[str, str]) -> None:
    """Without rustup nothing can switch toolchains: say so when the pin and rustc disagree."""
    import subprocess
    import sys

    if toolchain.name is None or toolchain.is_path:
        return
    rustc = env.get("RUSTC") or which("rustc", env)
    if rustc is None:
        return
    try:
        version = subprocess.run([rustc, "-V"], capture_output=True, text=True, timeout=30, env=dict(env)).stdout
    except (OSError, subprocess.TimeoutExpired):
        return
    parts = version.split()
    release = parts[1] if len(parts) > 1 else ""
    if release and not pin_matches(toolchain.name, release):
        sys.stderr.write(f"warning: {toolchain.file} pins '{toolchain.name}' but rustc is {release}, and "
                         "there is no rustup on this host to switch toolchains\n")


def apply(toolchain: Toolchain, env: dict[str, str]) -> None:
    env["RUSTUP_AUTO_INSTALL"] = "0"
    if toolchain.name is not None:
        env["RUSTUP_TOOLCHAIN"] = toolchain.name
