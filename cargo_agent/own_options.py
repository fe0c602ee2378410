"""Parsing of cargo-agent's own options, with click (never on the fast path). It only parses:
the commands themselves live in `commands/`.

None of them is a cargo global option, so `cargo-agent --version` and `cargo --help` through
the shim still reach cargo.
"""

from __future__ import annotations

from pathlib import Path

import click

from cargo_agent.errors import UsageError
from cargo_agent.locations import CONFIG_PATH_ENV, DEFAULT_HOST_CONFIG

# The flag that asks for each own command, for messages.
COMMAND_FLAGS = {"status": "--status", "doctor": "--doctor", "install-shim": "--install-shim",
                 "version": "--agent-version"}


class OwnOptions:
    """What the own options ask for: `command` is one of `commands/` (None: run cargo)."""

    __slots__ = ("as_json", "command", "dry_run", "shim_dir")

    def __init__(self, dry_run: bool = False, as_json: bool = False, command: str | None = None,
                 shim_dir: Path | None = None) -> None:
        self.dry_run = dry_run
        self.as_json = as_json
        self.command = command
        self.shim_dir = shim_dir


def docs_location() -> str:
    """Where the docs are: the checkout's docs/ when there is one, else where to find them."""
    checkout = Path(__file__).resolve().parent.parent / "docs"
    if (checkout / "configuration.md").is_file():
        return str(checkout)
    return "docs/ in the cargo-agent source (README.md links every page)"


HELP = """Run a cargo command line through cargo-agent: the policy gate, host-wide build slots,
toolchain pinning and supervision. `cargo-agent ARGS` runs `cargo ARGS`; the options below are
cargo-agent's own and come first. Everything else, --help and --version included, is cargo's."""


def _epilog() -> str:
    # \b keeps click from rewrapping the docs paragraph.
    return ("Settings: each has a CARGO_AGENT_* environment variable and a config key in the host "
            f"file ({DEFAULT_HOST_CONFIG} or ${CONFIG_PATH_ENV}) or the user file "
            "(~/.config/cargo-agent/config.toml). Every variable, key and default: docs/configuration.md.\n\n"
            f"\b\nDocs: {docs_location()}\n"
            "agent-guide.md, operator-guide.md, configuration.md, errors.md, exit-codes.md")


class _Command(click.Command):
    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return ["[OPTIONS]", "[CARGO ARGS]..."]

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.epilog = _epilog()  # computed only when help is shown
        super().format_epilog(ctx, formatter)


@click.command(cls=_Command, help=HELP, context_settings={"help_option_names": ["--agent-help"]},
               add_help_option=True)
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
    asked = [name for name, given in (("status", status), ("doctor", doctor),
                                      ("install-shim", install_shim is not None), ("version", agent_version))
             if given]
    if len(asked) > 1:
        raise UsageError(f"{COMMAND_FLAGS[asked[0]]} and {COMMAND_FLAGS[asked[1]]} cannot be used together")
    command = asked[0] if asked else None
    if dry_run and command is not None:
        raise UsageError(f"unexpected argument '--dry-run' with {COMMAND_FLAGS[command]}: "
                         "it applies to a cargo command only")
    if as_json and not (dry_run or command == "status"):
        raise UsageError("unexpected argument '--json': it applies only to --status and --dry-run")
    return OwnOptions(dry_run, as_json, command, install_shim)


def help_text() -> str:
    with _command.make_context("cargo-agent", []) as ctx:
        return _command.get_help(ctx)


def parse(own: list[str], rest: list[str] | None = None) -> OwnOptions:
    """Parse the own options `own`; `rest` is the cargo command line after them, which an own
    command (`--status`, `--doctor`, ...) does not take. `--agent-help` is the command `help`:
    cli prints `help_text()` (so that a closed pipe is handled there, like any output)."""
    if "--agent-help" in own:
        return OwnOptions(command="help")
    try:
        result = _command.main(own, prog_name="cargo-agent", standalone_mode=False)
    except click.ClickException as err:
        raise UsageError(err.format_message()) from None
    assert isinstance(result, OwnOptions)  # the help option, the only other exit, is handled above
    if result.command is not None and rest:
        raise UsageError(f"unexpected argument '{_shown(rest[0])}' after {COMMAND_FLAGS[result.command]}: "
                         "it takes no cargo command")
    return result


def _shown(arg: str) -> str:
    """An argument as a message shows it: one line, whatever it holds."""
    return arg if arg.isprintable() else arg.encode("unicode_escape").decode("ascii")

