"""`cargo-agent --install-shim DIR`: write the `cargo` PATH shim.

The shim gets the absolute path of the cargo-agent that wrote it as its default, so it works for
agents whose PATH does not include cargo-agent's venv (CARGO_AGENT_BIN still overrides it)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from cargo_agent.errors import UsageError

SHIM_SOURCE = Path(__file__).resolve().parent.parent / "shim.sh"
PLACEHOLDER = "@CARGO_AGENT_BIN@"


def running_launcher() -> str | None:
    """The cargo-agent executable this process was started as, or None (`python -m cargo_agent`)."""
    launcher = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(launcher) == "cargo-agent" and os.access(launcher, os.X_OK):
        return launcher
    return None


def render(agent: str | None) -> str:
    text = SHIM_SOURCE.read_text()
    if agent is None:
        return text
    if any(c in agent for c in "\"'`$\\\n"):
        raise UsageError(f"cannot write the shim: the cargo-agent path '{agent}' has quotes or '$' in it")
    return text.replace(PLACEHOLDER, agent)


def run(directory: Path) -> int:
    agent = running_launcher()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "cargo"
        tmp = directory / f".cargo.{os.getpid()}"
        tmp.write_text(render(agent))
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRUSR)
        os.replace(tmp, target)
    except OSError as err:
        raise UsageError(f"cannot write the shim into {directory}: {err.strerror}") from None
    print(f"wrote {target} (it runs {agent or 'CARGO_AGENT_BIN, else the cargo-agent on PATH'})")
    print(f'export PATH="{directory.resolve()}:$PATH"')
    sys.stdout.flush()
    return 0
