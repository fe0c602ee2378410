"""`cargo-agent --install-shim DIR`: write the `cargo` PATH shim."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from cargo_agent.errors import UsageError

SHIM_SOURCE = Path(__file__).resolve().parent.parent / "shim.sh"


def run(directory: Path) -> int:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "cargo"
        tmp = directory / f".cargo.{os.getpid()}"
        tmp.write_text(SHIM_SOURCE.read_text())
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRUSR)
        os.replace(tmp, target)
    except OSError as err:
        raise UsageError(f"cannot write the shim into {directory}: {err.strerror}") from None
    print(f"wrote {target}")
    print(f'export PATH="{directory.resolve()}:$PATH"')
    sys.stdout.flush()
    return 0
