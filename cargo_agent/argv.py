"""A model of a cargo command line.

`cargo [+toolchain] [global options] <subcommand> [args] [-- trailing]` is split into its
parts without reordering or dropping anything: `CargoCommand.tokens` is always the argv as
given, and every edit cargo-agent makes later is an explicit, reported change.
Aliases (user `[alias]` and `CARGO_ALIAS_<NAME>` first, then the built-in `b c d t r rm`, as
cargo does) are expanded into `CargoCommand.expanded` for the policy; cargo still receives the
alias itself. Option parsing stops at the first `--`, also when an alias's expansion holds it.

This module is on the fast path (every `cargo-agent version` imports it), so it uses plain
classes instead of dataclasses and imports nothing at run time (types only for the checker).
"""

from __future__ import annotations

from cargo_agent.errors import UsageError

TYPE_CHECKING = False  # no runtime typing or collections.abc: every command imports this module
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    AliasLookup = Callable[[str], "list[str] | None"]

BUILTIN_ALIASES = {"b": "build", "c": "check", "d": "doc", "t": "test", "r": "run", "rm": "remove"}

# cargo's own subcommands: a user alias cannot shadow them (cargo ignores such an alias).
BUILTIN_SUBCOMMANDS = frozenset({
    "add", "bench", "build", "check", "clean", "config", "doc", "fetch", "fix", "generate-lockfile",
    "git-checkout", "help", "info", "init", "install", "locate-project", "login", "logout", "metadata",
    "new", "owner", "package", "pkgid", "publish", "read-manifest", "remove", "report", "run", "rustc",
    "rustdoc", "search", "test", "tree", "uninstall", "update", "vendor", "verify-project", "version",
    "yank",
})

# Subcommands that compile nothing: they never take a slot and run on the fast path.
# Unknown external subcommands count as compiling, which is the safe side.
NON_COMPILING = frozenset({
    "add", "clean", "config", "fetch", "fmt", "generate-lockfile", "git-checkout", "help", "info",
    "init", "locate-project", "login", "logout", "metadata", "new", "owner", "pkgid", "read-manifest",
    "remove", "report", "search", "tree", "uninstall", "update", "vendor", "verify-project", "version",
    "yank",
})

# Global options that take a value: long name -> short letter (or "").
_GLOBAL_VALUE_LONG = {"--color": "", "--config": "", "--explain": ""}
_GLOBAL_VALUE_SHORT = {"C", "Z"}
_GLOBAL_FLAGS_LONG = {"--verbose", "--quiet", "--locked", "--offline", "--frozen", "--version", "--list",
                      "--help"}
_GLOBAL_FLAGS_SHORT = {"v", "q", "V", "h"}

# Options of subcommands (cargo's and common external ones) that take a value, so that their
# value is not read as a flag or a positional. Optional-value options (`--timings[=..]`) are not here.
_VALUE_LONG = frozenset({
    "package", "exclude", "features", "target", "target-dir", "manifest-path", "lockfile-path", "jobs",
    "profile", "bin", "example", "test", "bench", "message-format", "color", "config", "artifact-dir",
    "registry", "index", "root", "edition", "name", "vcs", "depth", "format", "prefix", "invert",
    "edges", "charset", "filter-platform", "format-version", "filter-expr", "partition", "test-threads",
    "build-jobs", "retries", "cargo-profile", "archive-file", "run-ignored", "explain",
})
_VALUE_SHORT = frozenset({"p", "F", "j", "C", "Z", "E", "P"})


class Option:
    """One option occurrence in the subcommand args: `name` is canonical (`--package`, `-v`)."""

    __slots__ = ("index", "name", "span", "value")

    def __init__(self, name: str, value: str | None, index: int, span: int) -> None:
        self.name = name
        self.value = value
        self.index = index  # index of the option's first token in the args list
        self.span = span  # how many tokens it covers (2 for `-p foo`, 1 for `-pfoo`)

    def __repr__(self) -> str:
        return f"Option({self.name!r}, {self.value!r}, {self.index}, {self.span})"


_SHORT_TO_LONG = {"p": "--package", "F": "--features", "j": "--jobs", "C": "-C", "Z": "-Z",
                  "E": "--filter-expr", "P": "--profile", "v": "--verbose", "q": "--quiet",
                  "h": "--help", "r": "--release", "V": "--version"}


class ParsedArgs:
    __slots__ = ("end", "options", "positionals")

    def __init__(self, options: tuple[Option, ...], positionals: tuple[str, ...], end: int) -> None:
        self.options = options
        self.positionals = positionals
        self.end = end  # index of the `--` that ended option parsing, or len(args)

    def has(self, *names: str) -> bool:
        return any(option.name in names for option in self.options)

    def values(self, *names: str) -> list[str]:
        return [o.value for o in self.options if o.name in names and o.value is not None]


def parse_args(args: Sequence[str]) -> ParsedArgs:
    """Parse subcommand args into options and positionals, up to the first `--`: what follows
    it goes to the program cargo runs (test binaries, the bin), as clap does."""
    options: list[Option] = []
    positionals: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            break
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token.partition("=")
            if eq:
                options.append(Option(name, value, i, 1))
            elif name[2:] in _VALUE_LONG and i + 1 < len(args) and not args[i + 1].startswith("-"):
                options.append(Option(name, args[i + 1], i, 2))
                i += 1
            else:
                options.append(Option(name, None, i, 1))
        elif token.startswith("-") and len(token) > 1:
            cluster = token[1:]
            for pos, letter in enumerate(cluster):
                name = _SHORT_TO_LONG.get(letter, f"-{letter}")
                if letter in _VALUE_SHORT:
                    rest = cluster[pos + 1:].removeprefix("=")
                    if rest:
                        options.append(Option(name, rest, i, 1))
                    elif i + 1 < len(args) and not args[i + 1].startswith("-"):
                        options.append(Option(name, args[i + 1], i, 2))
                        i += 1
                    else:
                        options.append(Option(name, None, i, 1))
                    break
                options.append(Option(name, None, i, 1))
        else:
            positionals.append(token)
        i += 1
    return ParsedArgs(tuple(options), tuple(positionals), i)


# External subcommands whose first positional says what they do: the policy judges
# `nextest run` or `miri test`, not `nextest` or `miri`.
_SECOND_WORDS = {
    "nextest": {"run": "run", "r": "run", "list": "list", "archive": "archive"},
    "miri": {"test": "test", "t": "test", "run": "run", "r": "run", "nextest": "nextest"},
}


class CargoCommand:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens  # the command line as given (after cargo-agent's own options)
        self.toolchain: str | None = None  # from a leading `+toolchain`
        self.directory: str | None = None  # -C DIR
        self.global_configs: list[str] = []  # --config values before the subcommand
        self.global_unstable: list[str] = []  # -Z values before the subcommand
        self.top_level: str | None = None  # --version / --list / --explain / --help before the subcommand
        self.subcommand: str | None = None  # as typed (may be an alias)
        self.subcommand_index: int | None = None  # index in tokens
        self.args: list[str] = []  # subcommand args before `--`
        self.trailing: list[str] | None = None  # after `--`
        self.expanded: list[str] = []  # [subcommand, *args] with aliases expanded (may hold a `--`)
        self.alias_chain: list[str] = []
        self.alias_globals: list[str] = []  # global options that alias expansions put before their subcommand

    @property
    def resolved(self) -> str | None:
        """The real subcommand after alias expansion (`nextest run`, `miri test` for those two)."""
        if not self.expanded:
            return None
        head = self.expanded[0]
        words = _SECOND_WORDS.get(head)
        if words is not None:
            rest = parse_args(self.expanded[1:]).positionals
            second = words.get(rest[0]) if rest else None
            if second is not None:
                return f"{head} {second}"
        return head

    @property
    def expanded_args(self) -> list[str]:
        return self.expanded[1:]

    @property
    def configs(self) -> list[str]:
        """`--config` values, before and after the subcommand (cargo's are global options),
        including those an alias expansion holds."""
        from_aliases = _globals(self.alias_globals).global_configs if self.alias_globals else []
        return [*self.global_configs, *from_aliases, *self.parsed.values("--config")]

    @property
    def unstable(self) -> list[str]:
        from_aliases = _globals(self.alias_globals).global_unstable if self.alias_globals else []
        return [*self.global_unstable, *from_aliases, *self.parsed.values("-Z")]

    @property
    def parsed(self) -> ParsedArgs:
        return parse_args(self.expanded_args)

    @property
    def manifest_path(self) -> str | None:
        """The `--manifest-path` value after alias expansion and before any `--`, or None."""
        return next(iter(self.parsed.values("--manifest-path")), None)

    @property
    def wants_help(self) -> bool:
        return self.top_level is not None or self.parsed.has("--help") or self.resolved == "help"

    @property
    def compiles(self) -> bool:
        """False for commands that compile nothing: they run at once, without a slot."""
        if self.wants_help or self.resolved is None:
            return False
        return self.resolved not in NON_COMPILING


def _split_value(token: str, i: int, tokens: Sequence[str], name: str) -> tuple[str, int]:
    """The value of a value-taking option at tokens[i]: attached (`--x=v`, `-Cv`) or next token."""
    if "=" in token and token.startswith("--"):
        return token.split("=", 1)[1], i
    if not token.startswith("--") and len(token) > 2:
        return token[2:].removeprefix("="), i
    if i + 1 >= len(tokens):
        raise UsageError(f"a value is required for '{name}' but none was supplied")
    return tokens[i + 1], i + 1


def _parse_globals(command: CargoCommand, tokens: list[str], i: int) -> int:
    """Read cargo's global options from tokens[i:] into `command`; the index where they stop
    (the subcommand, a `--`, or the end)."""
    while i < len(tokens):
        token = tokens[i]
        long_name = token.split("=", 1)[0]
        if token == "--":
            return i
        if long_name in _GLOBAL_VALUE_LONG:
            value, i = _split_value(token, i, tokens, long_name)
            if long_name == "--config":
                command.global_configs.append(value)
            elif long_name == "--explain":
                command.top_level = "--explain"
        elif token in _GLOBAL_FLAGS_LONG:
            if token in ("--version", "--list", "--help"):
                command.top_level = command.top_level or token
        elif token.startswith("-") and not token.startswith("--") and len(token) > 1:
            for pos, letter in enumerate(token[1:], start=1):
                if letter in _GLOBAL_VALUE_SHORT:
                    value, i = _split_value("-" + letter + token[pos + 1:], i, tokens, f"-{letter}")
                    if letter == "C":
                        command.directory = value
                    else:
                        command.global_unstable.append(value)
                    break
                if letter == "V":
                    command.top_level = command.top_level or "--version"
                elif letter == "h":
                    command.top_level = command.top_level or "--help"
        elif not token.startswith("--"):
            return i
        # else: an unknown global option: cargo will judge it; we pass it through untouched
        i += 1
    return i


def _globals(tokens: list[str]) -> CargoCommand:
    scratch = CargoCommand(list(tokens))
    _parse_globals(scratch, scratch.tokens, 0)
    return scratch


def parse(tokens: Sequence[str]) -> CargoCommand:
    """Split a cargo command line; raises UsageError only for a malformed line."""
    tokens = list(tokens)
    command = CargoCommand(tokens=tokens)
    i = 0
    if tokens and tokens[0].startswith("+"):
        command.toolchain = tokens[0][1:]
        if not command.toolchain or any(c.isspace() or c in "/\\" for c in command.toolchain):
            raise UsageError(f"invalid toolchain name '{tokens[0]}'",
                             help=("write `+stable`, `+nightly`, `+1.92.0` or another installed toolchain",))
        i = 1
    i = _parse_globals(command, tokens, i)
    if i < len(tokens) and tokens[i] == "--":
        command.trailing = tokens[i + 1:]
    elif i < len(tokens):
        command.subcommand = tokens[i]
        command.subcommand_index = i
        rest = tokens[i + 1:]
        if "--" in rest:
            cut = rest.index("--")
            command.args, command.trailing = rest[:cut], rest[cut + 1:]
        else:
            command.args = rest
    command.expanded = [command.subcommand, *command.args] if command.subcommand else []
    return command


_MAX_ALIAS_DEPTH = 32


def expand_aliases(command: CargoCommand, lookup: AliasLookup) -> CargoCommand:
    """Expand aliases of the subcommand as cargo does: a user alias (`lookup`) first, so a user
    `t` or `c` shadows the built-in one, then the built-in aliases; cargo's own subcommands are
    never aliased. Global options at the head of an expansion are set aside in `alias_globals`,
    and a `--` in an expansion ends option parsing for everything after it."""
    if command.subcommand is None:
        return command
    expanded = [command.subcommand, *command.args]
    chain: list[str] = []
    alias_globals: list[str] = []
    while True:
        head = expanded[0]
        if head in BUILTIN_SUBCOMMANDS:
            break
        replacement = lookup(head)
        if replacement is None:
            builtin = BUILTIN_ALIASES.get(head)
            if builtin is None:
                break
            replacement = [builtin]
        if head in chain or len(chain) >= _MAX_ALIAS_DEPTH:
            raise UsageError(f"alias {command.subcommand} has unresolvable recursive definition: "
                             + " -> ".join([*chain, head]))
        if not replacement:
            raise UsageError(f"alias {head} expands to nothing")
        chain.append(head)
        at = _parse_globals(CargoCommand(list(replacement)), list(replacement), 0)
        alias_globals += replacement[:at]
        if at >= len(replacement) or replacement[at] == "--":
            expanded = []  # only global options: cargo asks for a subcommand
            break
        expanded = [*replacement[at:], *expanded[1:]]
    command.expanded = expanded
    command.alias_chain = chain
    command.alias_globals = alias_globals
    return command
