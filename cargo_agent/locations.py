"""Where cargo-agent's own config files live (imported on the fast path: os only)."""

from __future__ import annotations

import os
from collections.abc import Mapping

CONFIG_PATH_ENV = "CARGO_AGENT_CONFIG"
DEFAULT_HOST_CONFIG = "/etc/cargo-agent.toml"


def user_config_path(env: Mapping[str, str]) -> str:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return os.path.join(base, "cargo-agent", "config.toml")


def host_config_path(env: Mapping[str, str]) -> str:
    return env.get(CONFIG_PATH_ENV) or DEFAULT_HOST_CONFIG
