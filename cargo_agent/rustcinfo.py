"""Facts about the rustc a build uses (`rustc -vV`, `rustc --print cfg`), cached per toolchain.

Calling rustc costs tens of milliseconds, so answers are cached in
`$XDG_CACHE_HOME/cargo-agent/rustc-info.json`, keyed by the toolchain and the mtime of its
rustc binary (an update of `stable` changes the key).
"""

from __future__ import annotations

import os

from cargo_agent import jsontext, locations
from cargo_agent import toolchain as toolchains
from cargo_agent.errors import UsageError

TYPE_CHECKING = False  # on the compiling path: a cache hit imports neither subprocess nor pathlib
if TYPE_CHECKING:
    from collections.abc import Mapping


class RustcInfo:
    __slots__ = ("host", "release")

    def __init__(self, host: str, release: str) -> None:
        self.host = host
        self.release = release  # e.g. "1.95.0" or "1.97.0-nightly"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RustcInfo) and (self.host, self.release) == (other.host, other.release)

    def __hash__(self) -> int:
        return hash((self.host, self.release))

    def __repr__(self) -> str:
        return f"RustcInfo({self.host!r}, {self.release!r})"

    @property
    def version(self) -> tuple[int, int]:
        parts = self.release.split("-")[0].split(".")
        try:
            return int(parts[0]), int(parts[1])
        except (IndexError, ValueError):
            return (0, 0)


def cache_path(env: Mapping[str, str]) -> str:
    return os.path.join(locations.cache_dir(env), "rustc-info.json")


def _cache_key(rustc: str, env: Mapping[str, str], extra: str) -> str:
    name = env.get("RUSTUP_TOOLCHAIN", "")
    directory = toolchains.toolchain_dir(name, env) if name else None
    binary = os.path.join(directory, "bin", "rustc") if directory else (toolchains.which(rustc, env) or rustc)
    try:
        stamp = str(os.stat(binary).st_mtime_ns)
    except OSError:
        stamp = "?"
    return f"{rustc}|{name}|{binary}|{stamp}|{extra}"


def _read_cache(path: str) -> dict[str, object]:
    try:
        with open(path, encoding="utf-8") as handle:
            cache = jsontext.loads(handle.read())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _cached(env: Mapping[str, str], key: str, compute: list[str]) -> str:
    path = cache_path(env)
    cache = _read_cache(path)
    if isinstance(cache.get(key), str):
        return str(cache[key])
    import subprocess

    try:
        result = subprocess.run(compute, env=dict(env), capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        from cargo_agent.errors import CargoNotFoundError

        fix = ("install Rust with rustup (https://rustup.rs), or set RUSTC to the rustc executable",)
        if env.get("RUSTC"):
            raise CargoNotFoundError(f"cannot find rustc: RUSTC is set to '{compute[0]}', which does not exist",
                                     help=fix) from None
        raise CargoNotFoundError("cannot find rustc on PATH", help=fix) from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"cannot run `{' '.join(compute)}`: it did not answer within 60s") from None
    except OSError as err:
        raise UsageError(f"cannot run `{' '.join(compute)}`: {(err.strerror or str(err)).lower()}") from None
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no output"])[0]
        raise UsageError(f"`{' '.join(compute)}` failed: {first}")
    _store(path, key, result.stdout)
    return result.stdout


def _store(path: str, key: str, value: str) -> None:
    """Add one entry. Agents that miss at the same time would lose each other's entries in a
    plain read-modify-write, so it runs under a file lock (a cold path: filelock's import and
    polling cost nothing that matters here)."""
    from filelock import FileLock, Timeout

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with FileLock(path + ".lock", timeout=10):
            cache = _read_cache(path)
            cache[key] = value
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(jsontext.dumps(cache))
            os.replace(tmp, path)
    except (OSError, Timeout):
        pass  # a cache we cannot write only costs time


def rustc_command(env: Mapping[str, str]) -> str:
    return env.get("RUSTC") or "rustc"


def info(env: Mapping[str, str]) -> RustcInfo:
    rustc = rustc_command(env)
    text = _cached(env, _cache_key(rustc, env, "-vV"), [rustc, "-vV"])
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return RustcInfo(fields.get("host", ""), fields.get("release", ""))


def cfg(env: Mapping[str, str], target: str) -> list[str]:
    rustc = rustc_command(env)
    text = _cached(env, _cache_key(rustc, env, f"cfg:{target}"), [rustc, "--print", "cfg", "--target", target])
    return [line.strip() for line in text.splitlines() if line.strip()]


def cfg_matches(expression: str, facts: list[str]) -> bool:
    """Evaluate a `cfg(...)` expression (all/any/not, `name`, `key = "value"`) against facts."""
    tokens = _cfg_tokens(expression.strip())
    if tokens[:2] != ["cfg", "("] or tokens[-1] != ")":
        return False
    position = 2
    facts_set = set(facts)

    def parse() -> bool:
        nonlocal position
        word = tokens[position]
        position += 1
        if word in ("all", "any", "not") and position < len(tokens) and tokens[position] == "(":
            position += 1
            results = []
            while tokens[position] != ")":
                results.append(parse())
                if tokens[position] == ",":
                    position += 1
            position += 1
            if word == "all":
                return all(results)
            if word == "any":
                return any(results)
            return not results[0] if results else True
        if position < len(tokens) and tokens[position] == "=":
            value = tokens[position + 1]
            position += 2
            return f'{word}="{value}"' in facts_set
        return word in facts_set

    try:
        return parse()
    except IndexError:
        return False


def _cfg_tokens(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "(),=":
            tokens.append(char)
            i += 1
        elif char == '"':
            end = text.find('"', i + 1)
            end = len(text) if end < 0 else end
            tokens.append(text[i + 1:end])
            i = end + 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in '(),="':
                j += 1
            tokens.append(text[i:j])
            i = j
    return tokens
