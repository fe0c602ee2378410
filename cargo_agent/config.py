"""Settings: one table, parsers for each kind of value, and the layering of sources.

Layers, highest precedence first: the environment (`CARGO_AGENT_*`), a file named by
`CARGO_AGENT_CONFIG` while the host file exists, the repo (`[workspace.metadata.cargo-agent]` /
`[package.metadata.cargo-agent]` in the root Cargo.toml), the user file, the host file, the
defaults.

The host file is policy. For a limit (a setting with a `tighter` function), a value the host
file sets is a bound: every lower layer may tighten it, never loosen it (`merge` puts the
winning lower value through `tighter(host value, lower value)` and records the clamp). A rule
switch the host file turns off stays off. A repo (often cloned from a stranger) may toggle rules
and tighten limits, but may not set a key that names a program or a path outside the repo
(`repo=False`).
"""

from __future__ import annotations

import os

from cargo_agent import locations
from cargo_agent.errors import ConfigError

# On the compiling path: plain classes, string paths, and `re` imported by the parsers that
# use it, only when a value is given; pathlib, dataclasses and typing cost more to import than
# loading the settings does.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, TypeVar

    T = TypeVar("T")
UNLIMITED = None  # value of a size or duration setting that means "no limit"


# ---- value kinds ---------------------------------------------------------------------

def _text(raw: object) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, (int, float, str)):
        return str(raw).strip()
    raise ValueError


def _digits(text: str) -> bool:
    """[0-9]+ (str.isdigit alone also takes other scripts' digits and superscripts)."""
    return text.isascii() and text.isdigit()


def _decimal(text: str) -> bool:
    """[0-9]+(.[0-9]+)?: no sign, no exponent, no bare dot. (The parsers use str methods, not
    `re`, which costs milliseconds to import on a compiling command that sets a duration.)"""
    whole, dot, fraction = text.partition(".")
    return _digits(whole) and (not dot or _digits(fraction))


def parse_positive_int(raw: object) -> int:
    text = _text(raw)
    if not _digits(text) or int(text) < 1:
        raise ValueError
    return int(text)


def parse_auto_or_positive_int(raw: object) -> int | None:
    """`auto` (None) or a whole number >= 1."""
    if _text(raw).lower() == "auto":
        return None
    return parse_positive_int(raw)


def parse_percent(raw: object) -> float:
    text = _text(raw).removesuffix("%").strip()
    value = float(text) if _decimal(text) else -1.0
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


_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}
SIZE_MAX = (1 << 63) - 1  # the largest rlimit (and size) the platform takes
LIMIT_AS_MIN = 256 << 20  # below this, rustc cannot even start


def parse_size(raw: object) -> int | None:
    """Bytes from `4G`, `4096M`, `12GiB`, `512k` (a unit is required: a bare `8` is refused,
    not read as 8 bytes); `unlimited` -> None."""
    text = _text(raw).lower()
    if text in ("unlimited", "none", "infinity"):
        return UNLIMITED
    # <decimal><whitespace?><unit letter>, then an optional `b` or `ib`
    text = text.removesuffix("ib") if text.endswith("ib") else text.removesuffix("b")
    number = text[:-1].rstrip()
    if not text or text[-1] not in _SIZE_UNITS or not _decimal(number):
        raise ValueError
    unit = _SIZE_UNITS[text[-1]]
    try:
        size = int(float(number) * unit) if "." in number else int(number) * unit
    except OverflowError:  # more digits than a float holds (inf): far above SIZE_MAX
        raise ValueError from None
    if size < 1 or size > SIZE_MAX:
        raise ValueError
    return size


def parse_limit_as(raw: object) -> int | None:
    """RLIMIT_AS: a size of at least 256M that the platform can hold, or `unlimited`."""
    size = parse_size(raw)
    if size is not None and size < LIMIT_AS_MIN:
        raise ValueError
    return size


def parse_size_required(raw: object) -> int:
    return _required(parse_size(raw))


_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration_parts(text: str) -> list[tuple[str, str]] | None:
    """`1h30m` -> [("1", "h"), ("30", "m")]: one or more <decimal><unit>; None if not that."""
    parts = []
    i = 0
    while i < len(text):
        j = i
        while j < len(text) and text[j] in "0123456789.":
            j += 1
        unit = "ms" if text.startswith("ms", j) else text[j:j + 1]
        if not _decimal(text[i:j]) or unit not in _DURATION_SECONDS:
            return None
        parts.append((text[i:j], unit))
        i = j + len(unit)
    return parts or None


def parse_duration(raw: object) -> float | None:
    """Seconds from `90s`, `30m`, `1h`, `1h30m`, `2.5` (plain seconds); `none`/`off` -> None."""
    text = _text(raw).lower().replace(" ", "")
    if text in ("none", "off", "unlimited"):
        return UNLIMITED
    if _decimal(text):
        seconds = float(text)
    else:
        parts = _duration_parts(text)
        if not parts:
            raise ValueError
        seconds = sum(float(n) * _DURATION_SECONDS[unit] for n, unit in parts)
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


_SUBCOMMAND_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"


def _subcommand(item: str) -> bool:
    """One or two words (`test`, `nextest run`) of [a-z0-9][a-z0-9_-]*, one space between."""
    words = item.split(" ")
    return len(words) <= 2 and all(
        word and word[0] in _SUBCOMMAND_FIRST and all(c in _SUBCOMMAND_FIRST or c in "_-" for c in word)
        for word in words)


def parse_subcommand_list(raw: object) -> tuple[str, ...]:
    """A list of subcommands (`test`, `nextest run`, an external `fuzz`)."""
    items = parse_list(raw)
    if not all(_subcommand(item) for item in items):
        raise ValueError
    return items


def parse_path(raw: object) -> str:
    text = _text(raw)
    if not text:
        raise ValueError
    return os.path.expanduser(text)


def parse_absolute_path(raw: object) -> str:
    """An absolute path (`~` expanded): a relative one would name another dir in every checkout."""
    if not isinstance(raw, str):  # `lock_dir = 5` is a number, not a path
        raise ValueError
    path = parse_path(raw)
    if not os.path.isabs(path):
        raise ValueError
    return os.path.normpath(path)


def choice(*choices: str) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        text = _text(raw).lower()
        if text not in choices:
            raise ValueError
        return text

    return parse


# ---- how a limit tightens ------------------------------------------------------------
# Each takes (the host file's value, a lower layer's value) and returns the value obeying both.

def at_most(host: Any, lower: Any) -> Any:
    """A number where smaller is stricter; None (`unlimited`, `none`, `off`, `auto`) sets no bound."""
    if host is None:
        return lower
    if lower is None:
        return host
    return min(host, lower)


def at_least(host: Any, lower: Any) -> Any:
    """A number where larger is stricter (memory assumed per build, memory kept back)."""
    return max(host, lower)


def both_allow(host: Any, lower: Any) -> Any:
    """A rule switch: the rule is off only if the host file does not keep it on."""
    return bool(host) and bool(lower)


def host_decides(host: Any, lower: Any) -> Any:
    """A host resource no lower layer may change (the shared lock dir)."""
    return host


def fewer(host: Any, lower: Any) -> Any:
    """An exemption list: only what the host file also exempts."""
    return tuple(item for item in lower if item in host)


def more(host: Any, lower: Any) -> Any:
    """A list of what a rule covers: the host's, plus whatever a lower layer adds."""
    return tuple(host) + tuple(item for item in lower if item not in host)


# ---- the table -----------------------------------------------------------------------

class Setting:
    __slots__ = ("accepts", "default", "env", "key", "meaning", "parse", "repo", "tighter")

    def __init__(self, key: str, env: str, parse: Callable[[object], Any], accepts: str, default: object,
                 meaning: str, tighter: Callable[[Any, Any], Any] | None = None, repo: bool = True) -> None:
        self.key = key  # config file key (kebab-case also accepted)
        self.env = env
        self.parse = parse
        self.accepts = accepts  # what the error message says is accepted
        self.default = default  # the parsed default; "auto" settings are resolved later
        self.meaning = meaning
        # A limit: (host value, lower value) -> the value obeying both. When the host file sets the
        # key, lower layers may tighten it, never loosen it. None: not a limit (lower layers win).
        # A new limit declares it here, e.g. `tighter=at_most` for a count or a size.
        self.tighter = tighter
        self.repo = repo  # False: it names a program or a path outside the repo; a repo may not set it


SETTINGS: tuple[Setting, ...] = (
    Setting("slots", "CARGO_AGENT_SLOTS", parse_auto_or_positive_int, "a whole number >= 1 or 'auto'",
            None, "Build slots on the host: how many compiling commands run at once. `auto` derives it "
            "from memory and cores (see docs/operator-guide.md). Lower-trust layers may only lower it.",
            tighter=at_most),
    Setting("lock_dir", "CARGO_AGENT_LOCK_DIR", parse_absolute_path, "an absolute directory path",
            None, "Where slot locks, the queue and the run log live. Default `/tmp/cargo-agent-<uid>` "
            "(one pool per user). Set in the host file, it is shared by the group and cannot be changed "
            "by lower-trust layers; a repo may not set it.", tighter=host_decides, repo=False),
    Setting("wait_timeout", "CARGO_AGENT_WAIT_TIMEOUT", parse_duration,
            "a duration like 90s, 30m, 1h, plain seconds, or 'none'",
            None, "Give up waiting for a slot after this long (exit 75).", tighter=at_most),
    Setting("mem_high", "CARGO_AGENT_MEM_HIGH", parse_percent, "a percentage in (0, 100]",
            85.0, "Admit a build only while its predicted peak fits under this share of the memory limit in "
            "force, next to what running builds are predicted to still need (and never while use is above it).",
            tighter=at_most),
    Setting("mem_kill", "CARGO_AGENT_MEM_KILL", parse_percent_or_off, "a percentage in (0, 100] or 'off'",
            95.0, "While memory use stays above this, stop the most recently admitted build (never the oldest).",
            tighter=at_most),
    Setting("per_build_memory", "CARGO_AGENT_PER_BUILD_MEMORY", parse_size_required,
            "a size like 4G, 4096M, 12GiB (a unit is required)", 4 << 30,
            "Memory a build is expected to peak at when its command has no history in the run log "
            "(admission, auto slots, link slots).", tighter=at_least),
    Setting("host_reserve", "CARGO_AGENT_HOST_RESERVE", parse_size_required,
            "a size like 2G, 2048M (a unit is required)", 2 << 30,
            "Memory kept back for the host (auto slots, link slots); at most a quarter of the memory limit in "
            "force.", tighter=at_least),
    Setting("cpus", "CARGO_AGENT_CPUS", parse_auto_or_positive_int, "a whole number >= 1 or 'auto'",
            None, "CPU tokens on the host: compile jobs running at once across every build. `auto` is the "
            "CPUs this process may use (affinity, cgroup CPU quota); a larger value is lowered to that.",
            tighter=at_most),
    Setting("jobs", "CARGO_AGENT_JOBS", parse_auto_or_positive_int, "a whole number >= 1 or 'auto'",
            None, "Most CPU tokens one build may hold, and the highest `--jobs` it keeps; `auto` is every "
            "token of the host (`cpus`).", tighter=at_most),
    Setting("test_threads", "CARGO_AGENT_TEST_THREADS", parse_auto_or_positive_int,
            "a whole number >= 1 or 'auto'", None,
            "Cap on RUST_TEST_THREADS and NEXTEST_TEST_THREADS; `auto` is min(cores, 8).", tighter=at_most),
    Setting("link_threads", "CARGO_AGENT_LINK_THREADS", parse_auto_or_positive_int,
            "a whole number >= 1 or 'auto'", None,
            "Threads lld or mold may use per link (only added where the linker is one of them); "
            "`auto` is min(cores, 8).", tighter=at_most),
    Setting("link_slots", "CARGO_AGENT_LINK_SLOTS", parse_auto_or_positive_int, "a whole number >= 1 or 'auto'",
            None, "Links that may run at once on the host, across all builds. `auto` is "
            "min(floor((memory limit - host_reserve) / per-link peak), cores), at least 1, where the per-link "
            "peak is the highest of recent links (else `per_build_memory`).", tighter=at_most),
    Setting("pressure_high", "CARGO_AGENT_PRESSURE_HIGH", parse_percent_or_off,
            "a percentage in (0, 100] or 'off'", 25.0,
            "Do not admit a new build while memory pressure (PSI `some` avg10) or I/O pressure (PSI `full` "
            "avg10) is above this.", tighter=at_most),
    Setting("pressure_kill", "CARGO_AGENT_PRESSURE_KILL", parse_percent_or_off,
            "a percentage in (0, 100] or 'off'", 60.0,
            "While full memory pressure (PSI `full` avg10) stays above this, stop the most recently admitted "
            "build (never the oldest).", tighter=at_most),
    Setting("limit_as", "CARGO_AGENT_LIMIT_AS", parse_limit_as,
            "a size like 4G, 4096M or 12GiB (a unit is required; from 256M up to 8E), or 'unlimited'",
            4 << 30, "RLIMIT_AS (address space) of cargo and everything it starts. Under it a build runs "
            "without rustc's parallel frontend (`-Z threads`), which fails under RLIMIT_AS.", tighter=at_most),
    Setting("limit_as_exempt", "CARGO_AGENT_LIMIT_AS_EXEMPT", parse_subcommand_list,
            "a comma-separated list of subcommand names, or sanitizer",
            ("fuzz", "miri", "sanitizer"),
            "Workloads that reserve huge address space by design and run without RLIMIT_AS.", tighter=fewer),
    Setting("timeout", "CARGO_AGENT_TIMEOUT", parse_duration,
            "a duration like 90s, 30m, 1h, plain seconds, or 'none'", None,
            "Stop the whole build after this long (exit 124).", tighter=at_most),
    Setting("soft_timeout", "CARGO_AGENT_SOFT_TIMEOUT", parse_duration,
            "a duration like 90s, 30m, 1h, plain seconds, or 'none'", None,
            "After this long, warn once with the elapsed time and what is still running."),
    Setting("kill_grace", "CARGO_AGENT_KILL_GRACE", parse_duration_required,
            "a duration like 10s or plain seconds", 10.0,
            "Time between SIGTERM and SIGKILL when a build is stopped.", tighter=at_most),
    Setting("retries", "CARGO_AGENT_RETRIES", lambda raw: parse_positive_int(raw) if _text(raw) != "0" else 0,
            "a whole number >= 0", 2, "Retries after a transient resource failure (rustc EAGAIN).",
            tighter=at_most),
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
            "`max_packages` packages (rule unscoped-test).", tighter=more),
    Setting("max_packages", "CARGO_AGENT_MAX_PACKAGES", parse_positive_int, "a whole number >= 1", 1,
            "The most packages a scoped subcommand may select (`-p` globs, repeated `-p`, `--workspace`, "
            "`default-members` all count) before rule unscoped-test refuses it.", tighter=at_most),
    Setting("allow_unscoped", "CARGO_AGENT_ALLOW_UNSCOPED", parse_bool, "1/0, true/false, yes/no, on/off",
            False, "Turn off rule unscoped-test.", tighter=both_allow),
    Setting("allow_all_targets", "CARGO_AGENT_ALLOW_ALL_TARGETS", parse_bool,
            "1/0, true/false, yes/no, on/off", False, "Turn off rule all-targets.", tighter=both_allow),
    Setting("allow_all_features_tests", "CARGO_AGENT_ALLOW_ALL_FEATURES_TESTS", parse_bool,
            "1/0, true/false, yes/no, on/off", False, "Turn off rule all-features-tests.",
            tighter=both_allow),
    Setting("cargo", "CARGO_AGENT_CARGO", parse_path, "a path to a cargo executable", None,
            "The real cargo; default: the first `cargo` on PATH that is not the shim or cargo-agent. "
            "A repo may not set it.", repo=False),
)

SETTINGS_BY_KEY = {setting.key: setting for setting in SETTINGS}

def user_config_path(env: Mapping[str, str]) -> str:
    return locations.user_config_path(env)


def host_config_path(env: Mapping[str, str]) -> str:
    return locations.host_config_path(env)


# ---- showing values --------------------------------------------------------------------

_NONE_SHOWN: dict[Callable[[object], Any], str] = {
    parse_auto_or_positive_int: "auto", parse_size: "unlimited", parse_limit_as: "unlimited", parse_duration: "none",
    parse_percent_or_off: "off"}


def _duration(seconds: float) -> str:
    if not seconds.is_integer():
        return f"{seconds:g}s"
    whole, parts = int(seconds), list[str]()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size or (unit == "s" and not parts):
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts)


def shown(key: str, value: object) -> str:
    """A value as a config file would spell it (`4G`, `1h`, `auto`, `off`)."""
    setting = SETTINGS_BY_KEY.get(key)
    if value is None:
        return _NONE_SHOWN.get(setting.parse, "(not set)") if setting else "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(value) or "(none)"
    if setting is not None and setting.parse in (parse_size, parse_size_required, parse_limit_as) \
            and isinstance(value, int):
        for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
            if value % (1 << shift) == 0:
                return f"{value >> shift}{unit}"
    if setting is not None and setting.parse in (parse_duration, parse_duration_required) \
            and isinstance(value, (int, float)):
        return _duration(float(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ---- layering ------------------------------------------------------------------------

class Layer:
    __slots__ = ("exists", "name", "path", "values")

    def __init__(self, name: str, values: dict[str, tuple[Any, str]], path: str | None = None,
                 exists: bool = False) -> None:
        self.name = name  # "environment", "named" (CARGO_AGENT_CONFIG below a host file), "repo", "user", "host"
        self.values = values  # key -> (parsed value, origin e.g. "CARGO_AGENT_SLOTS")
        self.path = path  # the file it was read from
        self.exists = exists  # the file exists (a missing file is an empty layer)


class Clamp:
    """A lower layer asked for more than the host file allows."""

    __slots__ = ("asked", "asked_by", "host_origin")

    def __init__(self, asked: Any, asked_by: str, host_origin: str) -> None:
        self.asked = asked
        self.asked_by = asked_by  # e.g. "CARGO_AGENT_TIMEOUT" or "/repo/Cargo.toml:[...]:timeout"
        self.host_origin = host_origin  # e.g. "/etc/cargo-agent.toml:timeout"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Clamp) and (self.asked, self.asked_by, self.host_origin) == (
            other.asked, other.asked_by, other.host_origin)

    def __repr__(self) -> str:
        return f"Clamp({self.asked!r}, {self.asked_by!r}, {self.host_origin!r})"


class Config:
    __slots__ = ("clamped", "host", "layers", "origins", "values")

    def __init__(self, values: dict[str, Any], origins: dict[str, str] | None = None,
                 host: dict[str, tuple[Any, str]] | None = None, clamped: dict[str, Clamp] | None = None,
                 layers: list[Layer] | None = None) -> None:
        self.values = values
        self.origins = origins if origins is not None else {}  # key -> where the value came from
        self.host = host if host is not None else {}  # what the host file sets: key -> (value, origin)
        self.clamped = clamped if clamped is not None else {}  # key -> what was asked and clamped
        self.layers = layers if layers is not None else []

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def host_slots(self) -> int | None:
        """The host file's slot count (the ceiling N), if it sets a number."""
        value = self.host.get("slots", (None, ""))[0]
        return value if isinstance(value, int) else None

    @property
    def host_lock_dir(self) -> str | None:
        value = self.host.get("lock_dir", (None, ""))[0]
        return value if isinstance(value, str) else None

    def baseline(self, key: str) -> Any:
        """What the host file sets for `key`, else the default: the value no lower layer changes
        (auto slots are sized from it, so that nobody's environment raises N)."""
        return self.host[key][0] if key in self.host else SETTINGS_BY_KEY[key].default

    def explain(self, key: str) -> str:
        """`key = value (where it came from)`, and the clamp when the host policy applied one."""
        origin = self.origins[key]
        line = f"{key} = {shown(key, self.values[key])} ({'default' if origin == 'default' else 'from ' + origin})"
        clamp = self.clamped.get(key)
        if clamp is not None:
            line += f"; clamped by host policy: {clamp.asked_by} asked for {shown(key, clamp.asked)}"
        return line

    def clamp_warnings(self) -> list[str]:
        """One line for each value the host policy clamped (a run says what it did not honour)."""
        lines = []
        for key, clamp in self.clamped.items():
            if key == "slots":
                lines.append(f"warning: cargo-agent: {clamp.asked_by} asks for {clamp.asked} slots but the host "
                             f"has {self.values[key]}; using {self.values[key]}")
            else:
                lines.append(f"warning: cargo-agent: {clamp.asked_by} asks for {key} = {shown(key, clamp.asked)} "
                             f"but the host policy ({clamp.host_origin}) allows "
                             f"{shown(key, self.values[key])}; using that")
        return lines

    def host_forbids(self, key: str) -> str | None:
        """Where the host file keeps a rule switch off (None if a lower layer may turn it on)."""
        value, origin = self.host.get(key, (True, ""))
        return origin if value is False else None


def _parse(setting: Setting, raw: object, origin: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError:
        shown_value = raw if isinstance(raw, str) else repr(raw)
        if not shown_value.isprintable():  # the message stays one line, whatever the value holds
            shown_value = shown_value.encode("unicode_escape").decode("ascii")
        raise ConfigError(f"invalid value '{shown_value}' for {origin}: expected {setting.accepts}") from None


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
            raise ConfigError(f"unknown key '{raw_key}' in {where}" + _did_you_mean(raw_key),
                              help=(f"known keys: {known}",))
        if name == "repo" and not setting.repo:
            raise ConfigError(f"'{raw_key}' in {where} is not accepted from a repo: it names a program "
                              "or a path outside the repo",
                              help=(f"remove it; to choose it yourself, set {setting.env} or `{key}` in "
                                    "~/.config/cargo-agent/config.toml",))
        values[key] = (_parse(setting, raw, f"{where}:{raw_key}"), f"{where}:{raw_key}")
    return Layer(name, values)


def _did_you_mean(raw_key: str) -> str:
    """`; did you mean 'slots'?` for a key close to a known one, spelled as the user spells keys."""
    import difflib

    close = difflib.get_close_matches(raw_key.replace("-", "_"), SETTINGS_BY_KEY, n=1)
    if not close:
        return ""
    return f"; did you mean '{close[0].replace('_', '-') if '-' in raw_key else close[0]}'?"


def file_layer(name: str, path: str) -> Layer:
    """A layer from a cargo-agent config file; a missing file is an empty layer, and so is
    /dev/null (`CARGO_AGENT_CONFIG=/dev/null`: no file). The host file is parsed every time,
    never taken from the parse cache: that cache lives in a dir the user (and so an agent, through
    XDG_CACHE_HOME) can write, so an entry for the host file could be forged."""
    if not os.path.lexists(path):
        return Layer(name, {}, str(path))  # the usual case: no file, and no TOML import on the fast path
    if os.path.realpath(path) == os.devnull:
        return Layer(name, {}, str(path), exists=True)
    from cargo_agent.tomlfile import read_toml

    data = read_toml(path, missing_ok=True, cache=name != "host")
    layer = table_layer(name, data or {}, str(path))
    layer.path, layer.exists = str(path), data is not None
    return layer


def repo_layer(manifest: Mapping[str, Any] | None, manifest_path: str | os.PathLike[str] | None) -> Layer:
    if not manifest or manifest_path is None:
        return Layer("repo", {})
    for section in ("workspace", "package"):
        # `metadata` may be any TOML value for cargo; only a table holds a cargo-agent table
        metadata = manifest.get(section)
        metadata = metadata.get("metadata") if isinstance(metadata, dict) else None
        table = metadata.get("cargo-agent") if isinstance(metadata, dict) else None
        if table is not None:
            if not isinstance(table, dict):
                raise ConfigError(f"[{section}.metadata.cargo-agent] in {manifest_path} is not a table")
            layer = table_layer("repo", table, f"{manifest_path}:[{section}.metadata.cargo-agent]")
            layer.path, layer.exists = str(manifest_path), True
            return layer
    return Layer("repo", {})


def merge(layers_high_to_low: list[Layer]) -> Config:
    """Apply precedence, then host policy: for each limit the host file sets, the value that won
    among the lower layers is put through the setting's `tighter`, so it can only be as strict
    as the host's or stricter. What was asked and clamped is kept for --dry-run and --doctor."""
    values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
    origins: dict[str, str] = {s.key: "default" for s in SETTINGS}
    for layer in reversed(layers_high_to_low):
        for key, (value, origin) in layer.values.items():
            values[key], origins[key] = value, origin
    # Slots, as always: every lower layer may lower the count, so the lowest request wins.
    requests = [value for layer in layers_high_to_low if layer.name != "host"
                for key, value in layer.values.items() if key == "slots" and value[0] is not None]
    if requests:
        values["slots"], origins["slots"] = min(requests)
    host = next((layer for layer in layers_high_to_low if layer.name == "host"), Layer("host", {}))
    config = Config(values, origins, dict(host.values), layers=list(layers_high_to_low))
    for key, (bound, host_origin) in host.values.items():
        tighter = SETTINGS_BY_KEY[key].tighter
        if tighter is None or origins[key] == host_origin:
            continue
        asked = values[key]
        obeyed = tighter(bound, asked)
        if obeyed != asked:
            config.clamped[key] = Clamp(asked, origins[key], host_origin)
            values[key] = obeyed
            origins[key] = host_origin if obeyed == bound else f"{origins[key]} within {host_origin}"
    return config


def load(env: Mapping[str, str], manifest: Mapping[str, Any] | None = None,
         manifest_path: str | os.PathLike[str] | None = None) -> Config:
    named = locations.named_config_path(env)
    layers = [
        env_layer(env),
        *([file_layer("named", named)] if named else []),
        repo_layer(manifest, manifest_path),
        file_layer("user", user_config_path(env)),
        file_layer("host", host_config_path(env)),
    ]
    config = merge(layers)
    check(config)
    return config


def check(config: Config) -> None:
    """Settings that are each valid but contradict each other once merged: exit 2, naming both
    and where each came from."""
    high, kill = config["mem_high"], config["mem_kill"]
    if kill is not None and kill < high:
        raise ConfigError(f"mem_kill {kill:g}% ({config.origins['mem_kill']}) is below mem_high {high:g}% "
                          f"({config.origins['mem_high']}): expected mem_kill >= mem_high, or mem_kill 'off'")
