"""Reading TOML files with errors the user can act on (stdlib tomllib, tomli before 3.11).

Parsed files are cached (`<cache dir>/toml.marshal`), because the compiling path reads the same
manifests and config files on every call and importing tomllib alone costs more than the rest of
a no-op run. An entry is used only while the file's inode, size, mtime and ctime are what they
were when it was parsed; a file changed in the last two seconds is never cached (its timestamps
could still collide with a further write in the same clock tick), so a cached parse can never
stand for other content. The cache lives in the user's own cache dir: no other user and no repo
can write it.
"""

from __future__ import annotations

import os

from cargo_agent.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

CACHE_NAME = "toml.marshal"
CACHE_ENTRIES = 256
SETTLED_SECONDS = 2.0  # a file younger than this is parsed every time


class TOMLDecodeError(ValueError):
    """Malformed TOML (tomllib's error, without importing tomllib to name it)."""


def _tomllib() -> Any:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    return tomllib


_NOT_SIMPLE = object()
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def simple_table(text: str) -> dict[str, Any] | None:
    """The usual shape of a config file or manifest, read without tomllib: `[table]` headers and
    `key = value` lines whose values are plain strings (no escapes), whole numbers, decimals,
    booleans or one-line arrays of plain strings, with comments. None for anything else (tomllib
    then reads it). Where it answers, the answer is tomllib's (tests/tomlfile_test.py checks)."""
    if any((c < " " and c not in "\t\n\r") or c == "\x7f" for c in text) or "\r" in text.replace("\r\n", ""):
        return None
    root: dict[str, Any] = {}
    table = root
    for raw in text.split("\n"):
        line = raw.rstrip("\r").strip(" \t")
        if not line or line[0] == "#":
            continue
        if line[0] == "[":
            end = line.find("]")
            name = line[1:end].strip(" \t") if end > 0 else ""
            if line.startswith("[[") or not _is_key(name) or name in root or not _only_comment(line[end + 1:]):
                return None
            table = root[name] = {}
            continue
        key, eq, rest = line.partition("=")
        key = key.strip(" \t")
        if not eq or not _is_key(key) or key in table:
            return None
        value = _simple_value(rest.strip(" \t"))
        if value is _NOT_SIMPLE:
            return None
        table[key] = value
    return root


def _is_key(name: str) -> bool:
    return bool(name) and all(c in _KEY_CHARS for c in name)


def _only_comment(rest: str) -> bool:
    rest = rest.strip(" \t")
    return not rest or rest[0] == "#"


def _string_at(text: str) -> tuple[str, str] | None:
    """A plain string at the start of `text` and what follows it; None if it is not one."""
    if not text or text[0] not in "\"'":
        return None
    end = text.find(text[0], 1)
    if end < 0 or text.startswith(text[0] * 3) or (text[0] == '"' and "\\" in text[1:end]):
        return None
    return text[1:end], text[end + 1:]


def _simple_value(text: str) -> object:
    string = _string_at(text)
    if string is not None:
        return string[0] if _only_comment(string[1]) else _NOT_SIMPLE
    if text.startswith("["):
        items: list[str] = []
        rest = text[1:].lstrip(" \t")
        while not rest.startswith("]"):
            string = _string_at(rest)
            if string is None:
                return _NOT_SIMPLE
            items.append(string[0])
            rest = string[1].lstrip(" \t")
            if rest.startswith(","):
                rest = rest[1:].lstrip(" \t")
            elif not rest.startswith("]"):
                return _NOT_SIMPLE
        return items if _only_comment(rest[1:]) else _NOT_SIMPLE
    word, _, comment = text.partition("#")
    word = word.rstrip(" \t")
    if comment and not text[len(word):].lstrip(" \t").startswith("#"):
        return _NOT_SIMPLE
    if word in ("true", "false"):
        return word == "true"
    sign = word[:1] if word[:1] in "+-" else ""
    whole, dot, fraction = word[len(sign):].partition(".")
    if not (whole.isascii() and whole.isdigit()) or (len(whole) > 1 and whole[0] == "0") or len(whole) > 18:
        return _NOT_SIMPLE
    if not dot:
        return int(sign + whole)
    if not (fraction.isascii() and fraction.isdigit()):
        return _NOT_SIMPLE
    return float(sign + whole + "." + fraction)


def loads(text: str) -> dict[str, Any]:
    simple = simple_table(text)
    if simple is not None:
        return simple
    tomllib = _tomllib()
    try:
        result: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TOMLDecodeError(str(err)) from None
    return result


class _Cache:
    """path -> (signature, marshalled table). Loaded once per process, written back on a miss."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.entries: dict[str, tuple[tuple[int, int, int, int], bytes]] | None = None
        self.dirty = False

    def load(self, env: Mapping[str, str]) -> dict[str, tuple[tuple[int, int, int, int], bytes]]:
        if self.entries is None:
            import marshal

            from cargo_agent import locations

            self.path = os.path.join(locations.cache_dir(env), CACHE_NAME)
            try:
                with open(self.path, "rb") as handle:
                    loaded = marshal.loads(handle.read())  # load(file) reads object by object: 10x slower
                self.entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError, EOFError, TypeError):
                self.entries = {}
        return self.entries

    def save(self) -> None:
        """Write the cache back (atomically; losing a race only loses entries, never adds stale ones)."""
        if not self.dirty or self.path is None or self.entries is None:
            return
        import marshal

        self.dirty = False
        while len(self.entries) > CACHE_ENTRIES:
            del self.entries[next(iter(self.entries))]
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(tmp, "wb") as handle:
                marshal.dump(self.entries, handle)
            os.replace(tmp, self.path)
        except (OSError, ValueError):
            try:
                os.unlink(tmp)
            except OSError:
                pass


_CACHE = _Cache()


def _signature(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def read_toml(path: str | os.PathLike[str], missing_ok: bool = False,
              env: Mapping[str, str] | None = None, cache: bool = True) -> dict[str, Any] | None:
    """Parse a TOML file; a missing file is None when `missing_ok`, else an error. Only a regular
    file is read: a FIFO planted where a manifest or config file should be cannot hang us.
    `cache=False`: parse it every time (the host file: policy must not come from a cache the user
    can write)."""
    import marshal
    import stat

    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise UsageError(f"cannot read {name}: no such file") from None
    except PermissionError:
        raise UsageError(f"cannot read {name}: permission denied") from None
    except OSError as err:
        raise UsageError(f"cannot read {name}: {err.strerror or err}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"cannot read {name}: it is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"cannot read {name}: not a regular file")
        entries = _CACHE.load(os.environ if env is None else env) if cache else {}
        signature = _signature(info)
        cached = entries.get(name)
        if isinstance(cached, tuple) and len(cached) == 2 and cached[0] == signature:
            try:
                data = marshal.loads(cached[1])
            except (ValueError, EOFError, TypeError):
                data = None
            if isinstance(data, dict):
                return data
        try:
            raw = handle.read()
        except OSError as err:
            raise UsageError(f"cannot read {name}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"cannot read {name}: not UTF-8 text") from None
    try:
        data = loads(text)
    except TOMLDecodeError as err:
        raise UsageError(f"malformed TOML in {name}: {err}") from None
    if cache:
        _remember(entries, name, signature, info, data)
    return data


def _remember(entries: dict[str, tuple[tuple[int, int, int, int], bytes]], name: str,
              signature: tuple[int, int, int, int], info: os.stat_result, data: dict[str, Any]) -> None:
    import marshal
    import time

    now = time.time()
    if now - info.st_ctime <= SETTLED_SECONDS or now - info.st_mtime <= SETTLED_SECONDS:
        return
    try:
        entries[name] = (signature, marshal.dumps(data))
    except ValueError:
        return  # a value marshal cannot hold (a TOML date): parse it every time
    _CACHE.dirty = True
    _CACHE.save()
