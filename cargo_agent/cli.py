"""cargo-agent's entry point: `main(argv) -> int`, the one place where errors become exit codes.

A run is one of: cargo-agent's own command (`commands/`), a command that compiles nothing
(exec'd straight into cargo by `passthrough`, before click, filelock or psutil are imported),
or a compiling command (`build`). Only cargo-agent's own options go through click.
"""

from __future__ import annotations

import os
import sys

from cargo_agent import argv as argv_model
from cargo_agent import passthrough
from cargo_agent.errors import EXIT_SIGNAL_BASE, CargoAgentError, OutputError, UsageError

TYPE_CHECKING = False  # no runtime typing import: every command starts here
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn, TextIO

# Loop detection. Every cargo-agent adds one to CARGO_AGENT_DEPTH for what it runs; a real nested
# build (a build script or test calling cargo) adds one level per nesting, a `cargo` wrapper that
# calls cargo-agent again (or CARGO_AGENT_CARGO naming one) adds one per round and soon hits the
# limit. The shim marks itself with CARGO_AGENT_SHIM_ACTIVE, cleared here, so a shim reached again
# before any cargo-agent ran (CARGO_AGENT_BIN naming a shim) stops itself.
DEPTH_ENV = "CARGO_AGENT_DEPTH"
SHIM_ACTIVE_ENV = "CARGO_AGENT_SHIM_ACTIVE"
MAX_DEPTH = 8

# cargo-agent's own options; none of them is a cargo global option.
OWN_FLAGS = frozenset({"--dry-run", "--json", "--status", "--doctor", "--agent-help", "--agent-version"})
OWN_VALUE_OPTIONS = frozenset({"--install-shim"})
INVOKED_AS_ENV = "CARGO_AGENT_INVOKED_AS"  # set by the shim (build.INVOKED_AS_ENV; not imported here)


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
        try:
            code = run(args, dict(os.environ))
            sys.stdout.flush()  # here, so that a closed pipe is seen here and not at interpreter exit
        except CargoAgentError as err:
            sys.stderr.write(err.render() + "\n")
            code = err.exit_code
        return code
    except KeyboardInterrupt:
        return EXIT_SIGNAL_BASE + 2
    except BrokenPipeError:
        return reader_went_away()


def launch() -> NoReturn:
    """The program (the launcher script, `python -m cargo_agent`): `main`, then a quick exit.
    Output is flushed first; the interpreter's teardown of every loaded module, a few
    milliseconds on each call, is skipped: nothing of cargo-agent's needs it (no atexit hooks,
    every file is closed by `with`, the broker thread has stopped)."""
    _standard_streams()
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - what cannot be written now was reported by main
            pass
    os._exit(code)


def _standard_streams() -> None:
    """fds 0-2 open, on /dev/null where the caller closed them (`>&-`): else the first file
    opened here would take the number, and cargo, inheriting it, would write into a lock file.
    Our stdout reports a failed write (a full disk, /dev/full) as an OutputError."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)
    sys.stdout = _Output(sys.stdout)


class _Output:
    """sys.stdout, with a failed write or flush raised as an OutputError (a closed pipe stays a
    BrokenPipeError: the reader went away, and cargo-agent stops quietly)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise OutputError(err) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise OutputError(err) from None

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def reader_went_away() -> int:
    """The reader of our output closed it (`cargo-agent --status | head -1`): stop quietly, as
    cargo does (`cargo --list | head -1` exits 0 without a word). Output still buffered goes to
    /dev/null, so that the interpreter's last flush does not complain either."""
    for stream in (sys.stdout, sys.stderr):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
    return 0


def _enter(env: dict[str, str]) -> None:
    text = env.get(DEPTH_ENV, "")
    depth = (int(text) if text.isascii() and text.isdigit() else 0) + 1
    env[DEPTH_ENV] = str(depth)
    env.pop(SHIM_ACTIVE_ENV, None)
    if depth > MAX_DEPTH:
        from cargo_agent.errors import CargoNotFoundError

        try:
            cargo = passthrough.real_cargo(env)
        except CargoAgentError:
            cargo = "the cargo it runs"
        raise CargoNotFoundError(
            f"cargo-agent started itself {MAX_DEPTH} times over: {cargo} runs cargo-agent again instead of cargo",
            help=("set CARGO_AGENT_CARGO to the real cargo executable (e.g. ~/.cargo/bin/cargo), or take the "
                  "wrapper that calls cargo-agent off PATH",))


def run(args: list[str], env: dict[str, str]) -> int:
    _enter(env)
    if args[:1] == ["agent"]:  # `cargo agent ...` runs us as `cargo-agent agent ...`
        args = args[1:]
        explicit = cargo_plus_toolchain(env)
        own, rest = split_own_options(args)
        if explicit and rest and not rest[0].startswith("+"):
            args = [*own, "+" + explicit, *rest]
    own, rest = split_own_options(args)
    options = None
    if own:
        from cargo_agent import own_options

        options = own_options.parse(own, rest)
        if options.command is not None:
            return run_own_command(options, env)
    command = argv_model.parse(rest)
    cwd = os.getcwd()
    if command.directory is not None:
        cwd = os.path.realpath(os.path.join(cwd, command.directory))
    if options is None and asks_for_cargos_help(command):
        return help_with_a_note(command, cwd, env)
    if options is None and surely_compiles_nothing(command):
        return passthrough.exec_cargo(command, cwd, env)
    from cargo_agent import build

    return build.run(command, cwd, env, dry_run=bool(options and options.dry_run),
                     as_json=bool(options and options.as_json))


def asks_for_cargos_help(command: argv_model.CargoCommand) -> bool:
    """`cargo-agent`, `cargo-agent --help`, `cargo-agent help`: cargo's overview, which says
    nothing about cargo-agent's own options. (`help build`, `build --help` are cargo's alone.)"""
    if command.subcommand is None:
        return command.top_level in (None, "--help")
    return command.subcommand == "help" and not command.args and command.trailing is None


def help_with_a_note(command: argv_model.CargoCommand, cwd: str, env: dict[str, str]) -> int:
    """cargo's help, unchanged on stdout with cargo's exit code, then one line on stderr that
    points to cargo-agent's own help. cargo runs as a child (not exec'd) so the note comes last."""
    passthrough.pin(command, cwd, env)
    cargo = passthrough.real_cargo(env)
    sys.stdout.flush()
    try:
        pid = os.posix_spawn(cargo, [cargo, *passthrough.cargo_argv(command)], env)
    except OSError as err:
        raise UsageError(f"cannot run {cargo}: {err.strerror}") from None
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code < 0:
        return EXIT_SIGNAL_BASE - code
    if env.get(INVOKED_AS_ENV) == "cargo":
        sys.stderr.write("note: this `cargo` runs through cargo-agent; its own options: cargo-agent --agent-help\n")
    else:
        sys.stderr.write("note: cargo-agent's own options (--dry-run, --status, --doctor, ...): "
                         "cargo-agent --agent-help\n")
    return code


def cargo_plus_toolchain(env: dict[str, str]) -> str | None:
    """The toolchain of `cargo +nightly agent ...`. rustup's proxy takes the `+nightly` off the
    command line and hands it on as RUSTUP_TOOLCHAIN with RUSTUP_TOOLCHAIN_SOURCE=cli; it then
    counts as an explicit `+toolchain` (which beats a rust-toolchain file), unlike a
    RUSTUP_TOOLCHAIN merely inherited from the environment."""
    if env.get("RUSTUP_TOOLCHAIN_SOURCE") != "cli":
        return None
    name = env.get("RUSTUP_TOOLCHAIN", "")
    return name if name and not any(c.isspace() or c in "/\\" for c in name) else None


def surely_compiles_nothing(command: argv_model.CargoCommand) -> bool:
    """True when no alias can change the verdict: a built-in subcommand (cargo never lets an
    alias shadow one) or a help request. Anything else is decided after alias expansion."""
    return not command.compiles and (command.subcommand is None
                                     or command.subcommand in argv_model.BUILTIN_SUBCOMMANDS
                                     or command.wants_help)


def run_own_command(options: object, env: dict[str, str]) -> int:
    from cargo_agent import own_options

    assert isinstance(options, own_options.OwnOptions)
    if options.command == "help":
        sys.stdout.write(own_options.help_text() + "\n")
        return 0
    if options.command == "status":
        from cargo_agent.commands import status

        return status.run(env, options.as_json)
    if options.command == "doctor":
        from cargo_agent.commands import doctor

        return doctor.run(env)
    if options.command == "install-shim":
        from cargo_agent.commands import install_shim

        assert options.shim_dir is not None
        return install_shim.run(options.shim_dir)
    from cargo_agent import __version__

    print(f"cargo-agent {__version__}")
    return 0
