"""The error types and exit codes of cargo-agent.

Every user-facing failure is raised as a `CargoAgentError` (or subclass) anywhere in the
package and turned into a one-line `error:` message plus exit code in exactly one place,
`cli.main`. Anything else escaping is a bug and gets a traceback.
"""

from __future__ import annotations

# One table, rendered into docs/exit-codes.md by tests/docs_test.py.
EXIT_USAGE = 2  # refused by policy, or bad input (option, env var, config, file)
EXIT_OUTPUT = 74  # EX_IOERR: cargo-agent's own output could not be written
EXIT_SLOT_WAIT_TIMEOUT = 75  # EX_TEMPFAIL: gave up waiting for a build slot or a CPU token
EXIT_TIMEOUT = 124  # like timeout(1)
EXIT_CARGO_NOT_FOUND = 127  # like a shell's "command not found" (cargo or rustc)
EXIT_SIGNAL_BASE = 128  # killed by signal N -> 128 + N

EXIT_CODES: tuple[tuple[str, str], ...] = (
    ("0, 1, 101, ...", "cargo's own exit code, passed through unchanged"),
    ("2", "refused by a policy rule, or bad input (option, env var, config value, file)"),
    ("74", "cargo-agent could not write its own output (stdout on a full disk, `/dev/full`, an I/O error)"),
    ("75", "gave up waiting for a build slot or a CPU token (`CARGO_AGENT_WAIT_TIMEOUT`)"),
    ("124", "the build ran past `CARGO_AGENT_TIMEOUT` and was stopped"),
    ("127", "no real cargo or rustc found (`CARGO_AGENT_CARGO`, `RUSTC`, PATH)"),
    ("128+N", "cargo (or cargo-agent while waiting) was killed by signal N; 130 for Ctrl-C"),
)


class CargoAgentError(Exception):
    """A failure the user can act on: printed as `error: <message>` plus `help:` lines.

    A plain class, not a dataclass: this module is on the fast path, where every import counts."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE, help: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.help = help

    def __str__(self) -> str:
        return self.message

    def render(self) -> str:
        lines = [f"error: {self.message}"]
        lines += [line if line.startswith(("help:", "note:")) else f"help: {line}" for line in self.help]
        return "\n".join(lines)


class UsageError(CargoAgentError):
    """Bad input: a command line, env var, config value or file cargo-agent cannot use."""


class ConfigError(UsageError):
    """A setting with a value that is not accepted, naming where it came from."""


class RefusedError(CargoAgentError):
    """A policy rule refused the command."""


class CargoNotFoundError(CargoAgentError):
    def __init__(self, message: str, help: tuple[str, ...] = ()) -> None:
        super().__init__(message, EXIT_CARGO_NOT_FOUND, help)


class SlotWaitTimeoutError(CargoAgentError):
    def __init__(self, message: str, help: tuple[str, ...] = ()) -> None:
        super().__init__(message, EXIT_SLOT_WAIT_TIMEOUT, help)


class OutputError(CargoAgentError):
    """Writing cargo-agent's own output (a status, a plan) failed: one line, not a traceback."""

    def __init__(self, err: OSError) -> None:
        reason = (err.strerror or str(err)).lower()
        super().__init__(f"cannot write cargo-agent's output: {reason}", EXIT_OUTPUT)
