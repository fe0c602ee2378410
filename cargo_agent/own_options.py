"""Parsing of cargo-agent's own options, with click (never on the fast path). It only parses:
the commands themselves live in `commands/`.

None of them is a cargo global option, so `cargo-agent --version` and `cargo --help` through
the shim still reach cargo.
"""

from __future__ import annotations

from pathlib import Path

import click

from cargo_agent.errors import UsageError


class OwnOptions:
    """What the own options ask for: `command` is one of `commands/` (None: run cargo)."""

    __slots__ = ("as_json", "command", "dry_run", "shim_dir")

    def __init__(self, dry_run: bool = False, as_json: bool = False, command: str | None = None,
                 shim_dir: Path | None = None) -> None:
        self.dry_run = dry_run
        self.as_json = as_json
        self.command = command
        self.shim_dir = shim_dir


@click.command(context_settings={"help_option_names": ["--agent-help"]}, add_help_option=True)
@click.option("--dry-run", is_flag=True,
              help="Print the decision, toolchain, slots, env changes and argv; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output for --dry-run and --status.")
@click.option("--status", is_flag=True, help="Show slots, holders, the queue, memory and recent runs.")
@click.option("--doctor", is_flag=True, help="Check the set-up: real cargo, rustup, lock dir, config.")
@click.option("--install-shim", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write the `cargo` PATH shim into DIR and print the PATH line to use.")
@click.option("--agent-version", is_flag=True, help="Print cargo-agent's version.")
def _command(dry_run: bool, as_json: bool, status: bool, doctor: bool, install_shim: Path | None,
             agent_version: bool) -> OwnOptions:
    command = ("status" if status else "doctor" if doctor else "install-shim" if install_shim is not None
               else "version" if agent_version else None)
    return OwnOptions(dry_run, as_json, command, install_shim)


def parse(own: list[str]) -> OwnOptions:
    try:
        result = _command.main(own, prog_name="cargo-agent", standalone_mode=False)
    except click.exceptions.Exit as done:  # --agent-help printed
        raise SystemExit(done.exit_code) from None
    except click.ClickException as err:
        raise UsageError(err.format_message()) from None
    if not isinstance(result, OwnOptions):
        raise SystemExit(0)
    return result
