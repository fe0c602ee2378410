"""Finding the real cargo: never the PATH shim, never cargo-agent itself."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from cargo_agent.errors import CargoNotFoundError

SHIM_MARKER = b"cargo-agent-shim"  # appears in the first lines of shims/cargo


def _is_shim_or_self(path: str) -> bool:
    real = os.path.realpath(path)
    if real == os.path.realpath(sys.argv[0]):
        return True
    try:
        with open(real, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return False
    return SHIM_MARKER in head or (head.startswith(b"#!") and b"cargo_agent" in head)


def find(env: Mapping[str, str], configured: str | None) -> str:
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
