"""cargo-agent's entry point.

Order matters for speed: a command that compiles nothing is exec'd straight into cargo
(with the toolchain pin) before click, filelock or psutil are imported. Only cargo-agent's
own options (`--dry-run`, `--status`, ...) go through click.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from cargo_agent import argv as argv_model
from cargo_agent import locations, realcargo, toolchain
from cargo_agent.errors import EXIT_SIGNAL_BASE, CargoAgentError, UsageError

# cargo-agent's own options; none of them is a cargo global option.
OWN_FLAGS = frozenset({"--dry-run", "--json", "--status", "--doctor", "--agent-help", "--agent-version"})
OWN_VALUE_OPTIONS = frozenset({"--install-shim"})


def split_own_options(args: list[str]) -> tuple[list[str], list[str]]:
    """Leading cargo-agent options, then the cargo command line."""
    i = 0
    while i < len(args):
        name = args[i].split("=", 1)[0]
        if args[i] in OWN_FLAGS:
            i += 1
        elif name in OWN_VALUE_OPTIONS:
            i += 1 if "=" in args[i] else 2
        else:
            break
    return args[:i], args[i:]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(args, dict(os.environ))
    except CargoAgentError as err:
        sys.stderr.write(err.render() + "\n")
        return err.exit_code
    except KeyboardInterrupt:
        return EXIT_SIGNAL_BASE + 2
    except BrokenPipeError:
        return 1


def run(args: list[str], env: dict[str, str]) -> int:
    if args[:1] == ["agent"]:  # `cargo agent ...` runs us as `cargo-agent agent ...`
        args = args[1:]
    own, rest = split_own_options(args)
    options = None
    if own:
        from cargo_agent import own_options

        options = own_options.parse(own)
        if options.action is not None:
            return options.action(rest, env)
    command = argv_model.parse(rest)
    cwd = os.getcwd()
    if command.directory is not None:
        cwd = os.path.realpath(os.path.join(cwd, command.directory))
    if options is None and not command.compiles and (command.subcommand is None
                                                     or command.subcommand in argv_model.BUILTIN_SUBCOMMANDS
                                                     or command.wants_help):
        return exec_passthrough(command, cwd, env)
    from pathlib import Path

    from cargo_agent import build

    return build.run(command, Path(cwd), env, options)


def manifest_arg(command: argv_model.CargoCommand) -> str | None:
    return next(iter(command.parsed.values("--manifest-path")), None)


def start_dir(command: argv_model.CargoCommand, cwd: str) -> str:
    """Where the package is, for the toolchain pin: the --manifest-path dir, else the working
    dir (after -C)."""
    manifest = manifest_arg(command)
    return os.path.dirname(os.path.join(cwd, manifest)) if manifest else cwd


def exec_passthrough(command: argv_model.CargoCommand, cwd: str | os.PathLike[str], env: dict[str, str]) -> int:
    """Replace this process with cargo: no slot, no supervision, only the toolchain pin."""
    chosen = toolchain.choose(command.toolchain, start_dir(command, os.fspath(cwd)))
    toolchain.check(chosen, env)
    toolchain.apply(chosen, env)
    cargo = realcargo.find(env, env.get("CARGO_AGENT_CARGO") or _configured_cargo(env))
    tokens = command.tokens[1:] if command.toolchain else command.tokens
    sys.stdout.flush()
    try:
        os.execve(cargo, [cargo, *tokens], env)
    except OSError as err:
        raise UsageError(f"cannot run {cargo}: {err.strerror}") from None
    return 0  # pragma: no cover - execve does not return


def _configured_cargo(env: dict[str, str]) -> str | None:
    """`cargo` from the host or user file; the config module is imported only if one exists."""
    if not any(os.path.lexists(p) for p in (locations.host_config_path(env), locations.user_config_path(env))):
        return None
    from cargo_agent import config as settings

    value = settings.load(env)["cargo"]
    return value if isinstance(value, str) else None
