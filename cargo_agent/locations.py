"""Every path cargo-agent derives from the home dir or the XDG variables, in one place
(imported on the fast path: os only).

The host file: `/etc/cargo-agent.toml` when it exists, whatever the environment says: agents
control their environment, so `CARGO_AGENT_CONFIG` cannot replace the operator's policy. Where no
`/etc` file exists (tests, rootless installs), `CARGO_AGENT_CONFIG` names the host file instead.
With an `/etc` file present, a file named by `CARGO_AGENT_CONFIG` is still read, as one more
lower layer, clamped by the host file like the environment is.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # no runtime collections.abc: on the pass-through path
if TYPE_CHECKING:
    from collections.abc import Mapping

CONFIG_PATH_ENV = "CARGO_AGENT_CONFIG"
LOCK_DIR_ENV = "CARGO_AGENT_LOCK_DIR"
# The operator's file. A module constant, not an env var: tests patch it in-process, an agent
# cannot move it.
DEFAULT_HOST_CONFIG = "/etc/cargo-agent.toml"


def home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def user_config_path(env: Mapping[str, str]) -> str:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(home(env), ".config")
    return os.path.join(base, "cargo-agent", "config.toml")


def host_config_path(env: Mapping[str, str]) -> str:
    """The operator's file: the /etc file when it exists, else the one CARGO_AGENT_CONFIG names."""
    if os.path.lexists(DEFAULT_HOST_CONFIG):
        return DEFAULT_HOST_CONFIG
    return env.get(CONFIG_PATH_ENV) or DEFAULT_HOST_CONFIG


def named_config_path(env: Mapping[str, str]) -> str | None:
    """A file CARGO_AGENT_CONFIG names while the /etc file exists: a lower layer, not the host's."""
    named = env.get(CONFIG_PATH_ENV)
    if named and os.path.lexists(DEFAULT_HOST_CONFIG) and named != DEFAULT_HOST_CONFIG:
        return named
    return None


def config_paths(env: Mapping[str, str]) -> list[str]:
    """Every cargo-agent config file that may be read, highest precedence first."""
    named = named_config_path(env)
    return [*([named] if named else []), user_config_path(env), host_config_path(env)]


def cache_dir(env: Mapping[str, str]) -> str:
    """cargo-agent's own cache (rustc facts, per-checkout CARGO_HOMEs)."""
    return os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(home(env), ".cache"), "cargo-agent")


def cargo_home(env: Mapping[str, str]) -> str:
    return env.get("CARGO_HOME") or os.path.join(home(env), ".cargo")


def rustup_home(env: Mapping[str, str]) -> str:
    return env.get("RUSTUP_HOME") or os.path.join(home(env), ".rustup")


def default_lock_dir(env: Mapping[str, str]) -> str:
    """One pool per user: the same dir for every shell, cron job and `docker exec` of a user, so
    it depends on the uid only (not on XDG_RUNTIME_DIR, which a login shell has and cron lacks)."""
    return f"/tmp/cargo-agent-{os.getuid()}"
