"""Reading TOML files with errors the user can act on (stdlib tomllib, tomli before 3.11)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cargo_agent.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def loads(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


TOMLDecodeError = tomllib.TOMLDecodeError


def read_toml(path: Path, missing_ok: bool = False) -> dict[str, Any] | None:
    """Parse a TOML file; a missing file is None when `missing_ok`, else an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return None
        raise UsageError(f"cannot read {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"cannot read {path}: it is a directory") from None
    except PermissionError:
        raise UsageError(f"cannot read {path}: permission denied") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read {path}: not UTF-8 text") from None
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"malformed TOML in {path}: {err}") from None
