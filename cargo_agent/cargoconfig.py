"""cargo's own configuration, as cargo would see it: `.cargo/config(.toml)` files from the
working dir up to `/`, then `$CARGO_HOME`, then `--config` values on the command line.

Deeper files win over shallower ones; arrays are joined with the higher-precedence items
last (as cargo does). Only the keys cargo-agent needs are read by callers: `alias`,
`build.*`, `target.*`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cargo_agent.tomlfile import TOMLDecodeError, loads, read_toml


def cargo_home(env: Mapping[str, str]) -> Path:
    from cargo_agent import locations

    return Path(locations.cargo_home(env))


def config_files(cwd: Path, env: Mapping[str, str]) -> list[Path]:
    """Config files cargo reads, highest precedence first."""
    found: list[Path] = []
    seen_dirs: set[Path] = set()
    for directory in [cwd, *cwd.parents]:
        seen_dirs.add(directory / ".cargo")
        found += _config_in(directory / ".cargo")
    home = cargo_home(env)
    if home not in seen_dirs:
        found += _config_in(home)
    return found


def _config_in(directory: Path) -> list[Path]:
    # cargo prefers the legacy extension-less name when both exist.
    for name in ("config", "config.toml"):
        candidate = directory / name
        if candidate.is_file():
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


def parse_cli_config(value: str, cwd: Path) -> dict[str, Any] | None:
    """A `--config` value: `KEY=VALUE` in TOML dotted form, or a path to a TOML file.
    None when it is neither; cargo will say what is wrong with it."""
    try:
        return loads(value)
    except TOMLDecodeError:
        pass
    path = cwd / value
    if path.is_file():
        return read_toml(path)
    return None


@dataclass
class CargoConfig:
    data: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # highest precedence first

    def get(self, dotted: str) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def load(cwd: Path, env: Mapping[str, str], cli_configs: Sequence[str] = ()) -> CargoConfig:
    files = config_files(cwd, env)
    data: dict[str, Any] = {}
    for path in reversed(files):
        merge_into(data, read_toml(path) or {})
    for value in cli_configs:
        parsed = parse_cli_config(value, cwd)
        if parsed is not None:
            merge_into(data, parsed)
    return CargoConfig(data, files)


def string_list(value: Any) -> list[str] | None:
    """A cargo "string or array" value (rustflags, alias): strings split on whitespace."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return None
