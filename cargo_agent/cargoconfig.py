"""cargo's own configuration, as cargo would see it: `.cargo/config(.toml)` files from the
working dir up to `/`, then `$CARGO_HOME`, then `--config` values on the command line.

Deeper files win over shallower ones; arrays are joined with the higher-precedence items
last (as cargo does). Each file's `include` list is followed as cargo 1.95 follows it (checked
against real cargo, see tests/cargoconfig_test.py):
- an item is a path string or `{ path = "...", optional = true }`; a path is relative to the
  directory of the file that names it (to the working dir in a `--config KEY=VALUE`) and must
  end in `.toml`;
- included files are merged before the file that includes them, in list order, so the
  including file wins over them and a later include wins over an earlier one; includes nest;
- a missing required include, a missing `path`, a wrong type and a file included twice from
  one top-level file (cargo calls that a cycle) are errors; a missing optional one is skipped.

Aliases are read as cargo reads them: from files and `CARGO_ALIAS_<NAME>`, never from
`--config` (cargo expands aliases before it applies `--config`). Callers read `alias`,
`build.*` and `target.*`.
"""

from __future__ import annotations

import os

from cargo_agent.errors import UsageError
from cargo_agent.locations import cargo_home
from cargo_agent.tomlfile import TOMLDecodeError, loads, read_toml

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

# Paths are plain strings (os.path): this module is on the compiling path, where importing
# pathlib and dataclasses costs more than reading the files.


def _ancestry(directory: str) -> list[str]:
    """`directory` and its ancestors up to `/`, nearest first."""
    found = [directory]
    while (parent := os.path.dirname(found[-1])) != found[-1]:
        found.append(parent)
    return found


def join(base: str, relative: str) -> str:
    """`base / relative` as pathlib joins them (and as cargo resolves an include): `.` and empty
    parts dropped, `..` kept, no symlink resolved."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    start = "/" if relative.startswith("/") else base
    return os.path.join(start, *parts) if parts else start


def config_files(cwd: str | os.PathLike[str], env: Mapping[str, str], home: bool = True) -> list[str]:
    """Config files cargo reads, highest precedence first (without their includes)."""
    found: list[str] = []
    seen_dirs: set[str] = set()
    for directory in _ancestry(os.path.normpath(os.fspath(cwd))):
        dot_cargo = os.path.join(directory, ".cargo")
        seen_dirs.add(dot_cargo)
        found += _config_in(dot_cargo)
    cargo_home_dir = os.path.normpath(cargo_home(env))
    if home and cargo_home_dir not in seen_dirs:
        found += _config_in(cargo_home_dir)
    return found


def _config_in(directory: str) -> list[str]:
    # cargo prefers the legacy extension-less name when both exist.
    for name in ("config", "config.toml"):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return [candidate]
    return []


def merge_into(low: dict[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(low.get(key), dict):
            merge_into(low[key], value)
        elif isinstance(value, list) and isinstance(low.get(key), list):
            low[key] = low[key] + value
        else:
            low[key] = _copy(value)
    return low


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


# ---- include --------------------------------------------------------------------------

def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return "datetime"


def _include_items(raw: object, where: str) -> list[tuple[str, bool]]:
    """(path, optional) pairs of an `include` value, checked as cargo checks them."""
    if not isinstance(raw, list):
        raise UsageError(f"expected a list of strings or a list of tables, but found {_type_name(raw)} "
                         f"at `include` in `{where}`")
    items = []
    for number, item in enumerate(raw):
        if isinstance(item, str):
            items.append((item, False))
            continue
        if not isinstance(item, dict):
            raise UsageError(f"expected a string or table, but found {_type_name(item)} "
                             f"at `include[{number}]` in `{where}`")
        path, optional = item.get("path"), item.get("optional", False)
        if path is None:
            raise UsageError(f"missing field `path` at `include[{number}]` in `{where}`")
        if not isinstance(path, str):
            raise UsageError(f"expected a string, but found {_type_name(path)} "
                             f"at `include[{number}].path` in `{where}`")
        if not isinstance(optional, bool):
            raise UsageError(f"expected a boolean, but found {_type_name(optional)} "
                             f"at `include[{number}].optional` in `{where}`")
        items.append((path, optional))
    return items


def _read_included(path: str, raw: str, where: str) -> dict[str, Any] | None:
    """An included file's table; None when it does not exist. Only regular files are read, so
    a FIFO planted where an include points cannot hang the gate."""
    import stat

    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise UsageError(f"failed to load config include `{raw}` from `{where}`: "
                         f"cannot read {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(info.st_mode):
        what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise UsageError(f"failed to load config include `{raw}` from `{where}`: {path} is {what}")
    try:
        return read_toml(path) or {}
    except UsageError as err:
        raise UsageError(f"failed to load config include `{raw}` from `{where}`: {err.message}") from None


def resolve_includes(data: dict[str, Any], base: str, where: str, seen: set[str]) -> dict[str, Any]:
    """`data` with its `include` list followed: the included tables merged first, in order,
    then `data` itself. `base` is the directory relative paths start from; `seen` holds every
    file already loaded for the same top-level file."""
    if "include" not in data:
        return data
    items = _include_items(data.pop("include"), where)
    merged: dict[str, Any] = {}
    for raw, optional in items:
        if not raw.endswith(".toml"):
            raise UsageError(f"expected a config include path ending with `.toml`, but found `{raw}` "
                             f"from `{where}`")
        path = join(base, raw)  # like cargo: `.` dropped, `..` kept, no symlinks resolved
        if path in seen:
            raise UsageError(f"config `include` cycle detected with path `{path}`")
        included = _read_included(path, raw, where)
        if included is None:
            if optional:
                continue
            raise UsageError(f"failed to load config include `{raw}` from `{where}`: "
                             f"cannot read {path}: no such file")
        seen.add(path)
        merge_into(merged, resolve_includes(included, os.path.dirname(path), path, seen))
    return merge_into(merged, data)


def load_file(path: str) -> dict[str, Any]:
    """One config file with its includes."""
    return resolve_includes(read_toml(path) or {}, os.path.dirname(path), path, {path})


def parse_cli_config(value: str, cwd: str) -> dict[str, Any] | None:
    """A `--config` value: `KEY=VALUE` in TOML dotted form, or a path to a TOML file.
    None when it is neither; cargo will say what is wrong with it."""
    try:
        data = loads(value)
    except TOMLDecodeError:
        pass
    else:
        return resolve_includes(data, cwd, f"--config {value}", set())
    path = join(cwd, value)
    if os.path.isfile(path):
        return load_file(path)
    return None


# ---- the merged view --------------------------------------------------------------------

class CargoConfig:
    __slots__ = ("data", "file_data", "files")

    def __init__(self, data: dict[str, Any] | None = None, files: list[str] | None = None,
                 file_data: dict[str, Any] | None = None) -> None:
        self.data = data if data is not None else {}  # files, then --config values
        self.files = files if files is not None else []  # highest precedence first (without includes)
        self.file_data = file_data if file_data is not None else {}  # files only: where aliases come from

    def get(self, dotted: str) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def alias(self, name: str, env: Mapping[str, str]) -> list[str] | None:
        """A user alias as cargo reads it: `CARGO_ALIAS_<NAME>` beats a string in the files, and
        is appended to a list in the files (cargo merges the two); `--config` does not count."""
        from_env = env.get("CARGO_ALIAS_" + name.upper().replace("-", "_"))
        aliases = self.file_data.get("alias")
        in_files = aliases.get(name) if isinstance(aliases, dict) else None
        if in_files is not None:
            value = string_list(in_files)
            if value is None:
                raise UsageError(f"alias.{name} in cargo config is neither a string nor a list of strings")
            if isinstance(in_files, list) and from_env is not None:
                return [*value, *from_env.split()]
            if from_env is None:
                return value
        return from_env.split() if from_env is not None else None


def load(cwd: str | os.PathLike[str], env: Mapping[str, str], cli_configs: Sequence[str] = (),
         home: bool = True) -> CargoConfig:
    """Everything cargo would read; `home=False` leaves out `$CARGO_HOME` (the lint reads a
    repo's own config only)."""
    cwd = os.fspath(cwd)
    files = config_files(cwd, env, home)
    data: dict[str, Any] = {}
    for path in reversed(files):
        merge_into(data, load_file(path))
    file_data = _copy(data)
    for value in cli_configs:
        parsed = parse_cli_config(value, cwd)
        if parsed is not None:
            merge_into(data, parsed)
    return CargoConfig(data, files, file_data)


def string_list(value: Any) -> list[str] | None:
    """A cargo "string or array" value (rustflags, alias): strings split on whitespace."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return None
