"""Settings: one table, parsers for each kind of value, and the layering of sources.

Layers, highest precedence first: environment (`CARGO_AGENT_*`), the repo
(`[workspace.metadata.cargo-agent]` / `[package.metadata.cargo-agent]` in the root
Cargo.toml), the user file, the host file, the defaults. Host resources (`slots`,
`lock_dir`) are the exception: they belong to whoever runs the host, so a lower-trust
layer (user, repo, environment) may lower the slot count but never raise it, and may not
move the lock dir away from one the host file set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cargo_agent import locations
from cargo_agent.errors import ConfigError

T = TypeVar("T")
UNLIMITED = None  # value of a size or duration setting that means "no limit"


# ---- value kinds ---------------------------------------------------------------------

def _text(raw: object) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, (int, float, str)):
        return str(raw).strip()
    raise ValueError


def parse_positive_int(raw: object) -> int:
    text = _text(raw)
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise ValueError
    return int(text)


def parse_auto_or_positive_int(raw: object) -> int | None:
    """`auto` (None) or a whole number >= 1."""
    if _text(raw).lower() == "auto":
        return None
    return parse_positive_int(raw)


def parse_percent(raw: object) -> float:
    text = _text(raw).removesuffix("%").strip()
    value = float(text) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text) else -1.0
    if not 0 < value <= 100:
        raise ValueError
    return value


def parse_percent_or_off(raw: object) -> float | None:
    if _text(raw).lower() in ("off", "none"):
        return None
    return parse_percent(raw)


def _required(value: T | None) -> T:
    """A size or duration where 'unlimited'/'none' is not accepted."""
    if value is None:
        raise ValueError
    return value


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_MAX_SIZE = (1 << 63) - 1  # the largest resource limit setrlimit takes here


def parse_size(raw: object) -> int | None:
    """Bytes from `4G`, `4096M`, `12GiB`, `512k`, `1073741824`; `unlimited` -> None."""
    text = _text(raw).lower()
    if text in ("unlimited", "none", "infinity"):
        return UNLIMITED
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?", text)
    if not match or (match.group(2) == "" and text.endswith("b")):  # `b`/`ib` only after a unit
        raise ValueError
    size = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if not 1 <= size <= _MAX_SIZE:  # also rejects a number too long for a float (inf)
        raise ValueError
    return int(size)


def parse_size_required(raw: object) -> int:
    return _required(parse_size(raw))


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(raw: object) -> float | None:
    """Seconds from `90s`, `30m`, `1h`, `1h30m`, `2.5` (plain seconds); `none`/`off` -> None."""
    text = _text(raw).lower().replace(" ", "")
    if text in ("none", "off", "unlimited"):
        return UNLIMITED
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        seconds = float(text)
    elif text and re.fullmatch(f"(?:{_DURATION_PART.pattern})+", text):
        seconds = sum(float(n) * _DURATION_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    else:
        raise ValueError
    if seconds <= 0:
        raise ValueError
    return seconds


def parse_duration_required(raw: object) -> float:
    return _required(parse_duration(raw))


def parse_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = _text(raw).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError


def parse_list(raw: object) -> tuple[str, ...]:
    """A TOML array of strings, or a comma-separated string (env vars)."""
    if isinstance(raw, list):
        if not all(isinstance(item, str) for item in raw):
            raise ValueError
        items = [item.strip() for item in raw]
    else:
        items = [item.strip() for item in _text(raw).split(",")]
    return tuple(item for item in items if item)


_SUBCOMMAND = re.compile(r"[a-z0-9][a-z0-9_-]*( [a-z0-9][a-z0-9_-]*)?")


def parse_subcommand_list(raw: object) -> tuple[str, ...]:
    """A list of subcommands (`test`, `nextest run`, an external `fuzz`)."""
    items = parse_list(raw)
    if not all(_SUBCOMMAND.fullmatch(item) for item in items):
        raise ValueError
    return items


def parse_path(raw: object) -> str:
    text = _text(raw)
    if not text:
        raise ValueError
    return os.path.expanduser(text)


def choice(*choices: str) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        text = _text(raw).lower()
        if text not in choices:
            raise ValueError
        return text

    return parse


# ---- the table -----------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    key: str  # config file key (kebab-case also accepted)
    env: str
    parse: Callable[[object], Any]
    accepts: str  # what the error message says is accepted
    default: object  # the parsed default; "auto" settings are resolved later
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting("slots", "CARGO_AGENT_SLOTS", parse_auto_or_positive_int, "a whole number >= 1 or 'auto'",
            None, "Build slots on the host: how many compiling commands run at once. `auto` derives it "
            "from memory and cores (see docs/operator-guide.md). Lower-trust layers may only lower it."),
    Setting("lock_dir", "CARGO_AGENT_LOCK_DIR", parse_path, "a directory path",
            None, "Where slot locks, the queue and the run log live. Default "
            "`$XDG_RUNTIME_DIR/cargo-agent` or `/tmp/cargo-agent-<uid>`. Set in the host file, "
            "it cannot be changed by lower-trust layers."),
    Setting("wait_timeout", "CARGO_AGENT_WAIT_TIMEOUT", parse_duration,
            "a duration like 90s, 30m, 1h, plain seconds, or 'none'",
            None, "Give up waiting for a slot after this long (exit 75)."),
    Setting("mem_high", "CARGO_AGENT_MEM_HIGH", parse_percent, "a percentage in (0, 100]",
            85.0, "Do not admit a new build while memory use is above this percentage."),
    Setting("mem_kill", "CARGO_AGENT_MEM_KILL", parse_percent_or_off, "a percentage in (0, 100] or 'off'",
            95.0, "While memory use stays above this, stop the most recently admitted build."),
    Setting("per_build_memory", "CARGO_AGENT_PER_BUILD_MEMORY", parse_size_required,
            "a size like 4G, 4096M, 12GiB", 4 << 30, "Memory one build is expected to use (auto slots)."),
    Setting("host_reserve", "CARGO_AGENT_HOST_RESERVE", parse_size_required,
            "a size like 2G, 2048M", 2 << 30, "Memory kept back for the host (auto slots)."),
    Setting("jobs", "CARGO_AGENT_JOBS", parse_auto_or_positive_int, "a whole number >= 1 or 'auto'",
            None, "Cap on cargo's `--jobs` per build; `auto` is max(1, cores / slots)."),
    Setting("test_threads", "CARGO_AGENT_TEST_THREADS", parse_auto_or_positive_int,
            "a whole number >= 1 or 'auto'", None,
            "Cap on RUST_TEST_THREADS and NEXTEST_TEST_THREADS; `auto` is min(cores, 8)."),
    Setting("link_threads", "CARGO_AGENT_LINK_THREADS", parse_auto_or_positive_int,
            "a whole number >= 1 or 'auto'", None,
            "Threads lld may use per link (only added where the linker is lld); `auto` is the jobs cap."),
    Setting("limit_as", "CARGO_AGENT_LIMIT_AS", parse_size, "a size like 4G, 4096M, 12GiB, or 'unlimited'",
            4 << 30, "RLIMIT_AS (address space) of cargo and everything it starts."),
    Setting("limit_as_exempt", "CARGO_AGENT_LIMIT_AS_EXEMPT", parse_subcommand_list,
            "a comma-separated list of subcommand names, or sanitizer",
            ("fuzz", "miri", "sanitizer"),
            "Workloads that reserve huge address space by design and run without RLIMIT_AS."),
    Setting("timeout", "CARGO_AGENT_TIMEOUT", parse_duration,
            "a duration like 90s, 30m, 1h, plain seconds, or 'none'", None,
            "Stop the whole build after this long (exit 124)."),
    Setting("soft_timeout", "CARGO_AGENT_SOFT_TIMEOUT", parse_duration,
            "a duration like 90s, 30m, 1h, plain seconds, or 'none'", None,
            "After this long, warn once with the elapsed time and what is still running."),
    Setting("kill_grace", "CARGO_AGENT_KILL_GRACE", parse_duration_required,
            "a duration like 10s or plain seconds", 10.0,
            "Time between SIGTERM and SIGKILL when a build is stopped."),
    Setting("retries", "CARGO_AGENT_RETRIES", lambda raw: parse_positive_int(raw) if _text(raw) != "0" else 0,
            "a whole number >= 0", 2, "Retries after a transient resource failure (rustc EAGAIN)."),
    Setting("report", "CARGO_AGENT_REPORT", parse_bool, "1/0, true/false, yes/no, on/off", False,
            "Print a one-line run summary on stderr when the build ends."),
    Setting("rustc_wrapper", "CARGO_AGENT_RUSTC_WRAPPER", choice("keep", "clear-sccache", "clear"),
            "keep, clear-sccache or clear", "clear-sccache",
            "What to do with RUSTC_WRAPPER / build.rustc-wrapper."),
    Setting("isolate_cargo_home", "CARGO_AGENT_ISOLATE_CARGO_HOME", parse_bool,
            "1/0, true/false, yes/no, on/off", False,
            "Give each checkout its own CARGO_HOME (seeded with your config and credentials)."),
    Setting("scoped_subcommands", "CARGO_AGENT_SCOPED_SUBCOMMANDS", parse_subcommand_list,
            "a comma-separated list of subcommands, e.g. test, bench, nextest run, build",
            ("test", "bench", "nextest run", "nextest list", "nextest archive", "miri test"),
            "Subcommands that build test targets: their package selection may hold at most "
            "`max_packages` packages (rule unscoped-test)."),
    Setting("max_packages", "CARGO_AGENT_MAX_PACKAGES", parse_positive_int, "a whole number >= 1", 1,
            "The most packages a scoped subcommand may select (`-p` globs, repeated `-p`, `--workspace`, "
            "`default-members` all count) before rule unscoped-test refuses it."),
    Setting("allow_unscoped", "CARGO_AGENT_ALLOW_UNSCOPED", parse_bool, "1/0, true/false, yes/no, on/off",
            False, "Turn off rule unscoped-test."),
    Setting("allow_all_targets", "CARGO_AGENT_ALLOW_ALL_TARGETS", parse_bool,
            "1/0, true/false, yes/no, on/off", False, "Turn off rule all-targets."),
    Setting("allow_all_features_tests", "CARGO_AGENT_ALLOW_ALL_FEATURES_TESTS", parse_bool,
            "1/0, true/false, yes/no, on/off", False, "Turn off rule all-features-tests."),
    Setting("cargo", "CARGO_AGENT_CARGO", parse_path, "a path to a cargo executable", None,
            "The real cargo; default: the first `cargo` on PATH that is not the shim or cargo-agent."),
)

SETTINGS_BY_KEY = {setting.key: setting for setting in SETTINGS}

def user_config_path(env: Mapping[str, str]) -> Path:
    return Path(locations.user_config_path(env))


def host_config_path(env: Mapping[str, str]) -> Path:
    return Path(locations.host_config_path(env))


# ---- layering ------------------------------------------------------------------------

@dataclass
class Layer:
    name: str  # "environment", "repo", "user", "host"
    values: dict[str, tuple[Any, str]]  # key -> (parsed value, origin e.g. "CARGO_AGENT_SLOTS")


@dataclass
class Config:
    values: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)  # key -> where the value came from
    host_slots: int | None = None  # the host file's slot count (the ceiling), if it set one
    host_lock_dir: str | None = None

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def _parse(setting: Setting, raw: object, origin: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError:
        shown = raw if isinstance(raw, str) else repr(raw)
        if not shown.isprintable():  # the message stays one line, whatever the value holds
            shown = shown.encode("unicode_escape").decode("ascii")
        raise ConfigError(f"invalid value '{shown}' for {origin}: expected {setting.accepts}") from None


def env_layer(env: Mapping[str, str]) -> Layer:
    values = {}
    for setting in SETTINGS:
        if setting.env in env:
            values[setting.key] = (_parse(setting, env[setting.env], setting.env), setting.env)
    return Layer("environment", values)


def table_layer(name: str, table: Mapping[str, object], where: str) -> Layer:
    """A layer from a TOML table; `where` is e.g. `/etc/cargo-agent.toml` for messages."""
    values = {}
    for raw_key, raw in table.items():
        key = raw_key.replace("-", "_")
        setting = SETTINGS_BY_KEY.get(key)
        if setting is None:
            known = ", ".join(s.key for s in SETTINGS)
            raise ConfigError(f"unknown key '{raw_key}' in {where}", help=(f"known keys: {known}",))
        values[key] = (_parse(setting, raw, f"{where}:{raw_key}"), f"{where}:{raw_key}")
    return Layer(name, values)


def file_layer(name: str, path: Path) -> Layer:
    """A layer from a cargo-agent config file; a missing file is an empty layer."""
    if not os.path.lexists(path):
        return Layer(name, {})  # the usual case: no file, and no TOML import on the fast path
    from cargo_agent.tomlfile import read_toml

    data = read_toml(path, missing_ok=True)
    return table_layer(name, data or {}, str(path))


def repo_layer(manifest: Mapping[str, Any] | None, manifest_path: Path | None) -> Layer:
    if not manifest or manifest_path is None:
        return Layer("repo", {})
    for section in ("workspace", "package"):
        table = manifest.get(section, {}).get("metadata", {}).get("cargo-agent")
        if table is not None:
            if not isinstance(table, dict):
                raise ConfigError(f"[{section}.metadata.cargo-agent] in {manifest_path} is not a table")
            return table_layer("repo", table, f"{manifest_path}:[{section}.metadata.cargo-agent]")
    return Layer("repo", {})


def merge(layers_high_to_low: list[Layer]) -> Config:
    """Apply precedence. Host resources are kept apart: `host_slots`/`host_lock_dir` hold what
    the host file says, and `values["slots"]` the lowest count any other layer asks for;
    `slots.resolve` combines them (a request may lower the ceiling, never raise it)."""
    values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
    origins: dict[str, str] = {s.key: "default" for s in SETTINGS}
    for layer in reversed(layers_high_to_low):
        for key, (value, origin) in layer.values.items():
            values[key], origins[key] = value, origin
    config = Config(values, origins)
    host = next((layer for layer in layers_high_to_low if layer.name == "host"), Layer("host", {}))
    if "slots" in host.values:
        config.host_slots = host.values["slots"][0]
    requests = [(value, origin) for layer in layers_high_to_low if layer.name != "host"
                for key, (value, origin) in layer.values.items() if key == "slots" and value is not None]
    values["slots"], origins["slots"] = min(requests) if requests else (None, "default")
    if "lock_dir" in host.values:
        config.host_lock_dir = host.values["lock_dir"][0]
        values["lock_dir"], origins["lock_dir"] = host.values["lock_dir"]
    return config


def load(env: Mapping[str, str], manifest: Mapping[str, Any] | None = None,
         manifest_path: Path | None = None) -> Config:
    layers = [
        env_layer(env),
        repo_layer(manifest, manifest_path),
        file_layer("user", user_config_path(env)),
        file_layer("host", host_config_path(env)),
    ]
    return merge(layers)
