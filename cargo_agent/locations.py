"""Every path cargo-agent derives from the home dir or the XDG variables, in one place
(imported on the fast path: os only)."""

from __future__ import annotations

import os
from collections.abc import Mapping

CONFIG_PATH_ENV = "CARGO_AGENT_CONFIG"
DEFAULT_HOST_CONFIG = "/etc/cargo-agent.toml"


def home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def user_config_path(env: Mapping[str, str]) -> str:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(home(env), ".config")
    return os.path.join(base, "cargo-agent", "config.toml")


def host_config_path(env: Mapping[str, str]) -> str:
    return env.get(CONFIG_PATH_ENV) or DEFAULT_HOST_CONFIG


def cache_dir(env: Mapping[str, str]) -> str:
    """cargo-agent's own cache (rustc facts, per-checkout CARGO_HOMEs)."""
    return os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(home(env), ".cache"), "cargo-agent")


def cargo_home(env: Mapping[str, str]) -> str:
    return env.get("CARGO_HOME") or os.path.join(home(env), ".cargo")


def rustup_home(env: Mapping[str, str]) -> str:
    return env.get("RUSTUP_HOME") or os.path.join(home(env), ".rustup")


def default_lock_dir(env: Mapping[str, str]) -> str:
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "cargo-agent")
    return f"/tmp/cargo-agent-{os.getuid()}"
