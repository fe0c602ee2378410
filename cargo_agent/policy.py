"""The policy gate: one table of rules with stable names that refuse commands which compile
the world. The gate (`evaluate`) and the lint (lint.py) both read `RULES` and `check`.

- `unscoped-test`: a scoped subcommand (default `test`, `bench`, `nextest run|list|archive`,
  `miri test`) whose package selection, resolved as cargo resolves it (`-p` globs against real
  members, `--workspace` minus `--exclude`, `default-members`, `--manifest-path`), holds more
  than `max_packages` packages.
- `all-targets`: `--all-targets`, or every target kind named (`--lib --bins --tests --benches
  --examples`, where `--bin '*'` counts as `--bins` and so on), for any number of packages.
- `all-features-tests`: `--all-features` with `--tests` (or `--test '*'`, or all targets).

A refusal names the rule, says why in one line, gives the command to run instead with real
member names of this workspace, and how to override the rule.

Plain classes, no dataclasses: this module is on the compiling path.
"""

from __future__ import annotations

from cargo_agent.argv import CargoCommand, Option, ParsedArgs, parse_args
from cargo_agent.config import Config
from cargo_agent.errors import RefusedError
from cargo_agent.locations import DEFAULT_HOST_CONFIG
from cargo_agent.workspace import Location, Selection, focus_members, is_glob, selection, spec_name

TYPE_CHECKING = False  # collections.abc only for the checker: this module is on the compiling path
if TYPE_CHECKING:
    from collections.abc import Callable


class Rule:
    """One rule: what it refuses, why, what to run instead, and how it is turned off."""

    __slots__ = ("code", "env", "fix", "host_may_forbid", "name", "reason", "refuses", "setting")

    def __init__(self, name: str, code: str, refuses: str, reason: str, fix: str, setting: str, env: str,
                 host_may_forbid: bool = True) -> None:
        self.name = name
        self.code = code  # the lint's code for it
        self.refuses = refuses
        self.reason = reason
        self.fix = fix
        self.setting = setting  # the config key that turns it off
        self.env = env  # the env var of that setting
        self.host_may_forbid = host_may_forbid  # whether the host file may pin the setting to false

    def __repr__(self) -> str:
        return f"Rule({self.name!r})"


RULES: tuple[Rule, ...] = (
    Rule("unscoped-test", "CA002",
         "a scoped subcommand (`test`, `bench`, `nextest run`, ...) whose package selection has more than "
         "`max_packages` packages",
         "it compiles and runs the tests of every package it selects",
         "select one package: `-p <package>` (or `--manifest-path <member>/Cargo.toml`)",
         "allow_unscoped", "CARGO_AGENT_ALLOW_UNSCOPED"),
    Rule("all-targets", "CA003",
         "`--all-targets`, or every target kind named (`--lib --bins --tests --benches --examples`, "
         "`--bin '*'` for `--bins` ...)",
         "it compiles every target: lib, bins, tests, benches and examples",
         "name the targets you need: `--lib`, `--tests`, `--test <name>`",
         "allow_all_targets", "CARGO_AGENT_ALLOW_ALL_TARGETS"),
    Rule("all-features-tests", "CA004",
         "`--all-features` with `--tests` (or `--test '*'`, or all targets)",
         "it compiles every test target with every optional feature, and the dependencies those features "
         "pull in, turned on",
         "name the features you need: `--features a,b`",
         "allow_all_features_tests", "CARGO_AGENT_ALLOW_ALL_FEATURES_TESTS"),
)
RULE = {rule.name: rule for rule in RULES}

# Target kinds: the flag naming all of them, and the option whose `*` glob means the same.
TARGET_KINDS = (("--lib", None), ("--bins", "--bin"), ("--tests", "--test"), ("--benches", "--bench"),
                ("--examples", "--example"))
SPELLED_OUT_ALL_TARGETS = tuple(flag for flag, _ in TARGET_KINDS)
# Subcommands whose fix for all-targets keeps the unit tests (`--lib`).
_TEST_RUNS = ("test", "bench", "nextest run", "nextest list", "nextest archive", "miri test")
_SELECTION_OPTIONS = frozenset({"--workspace", "--all", "--exclude", "--package"})
PLACEHOLDER = "<package>"  # in a fix when nothing tells which package the caller works on
_SHOWN_MEMBERS = 4
_SHOWN_SELECTED = 8


class Violation:
    __slots__ = ("chosen", "detail", "rule")

    def __init__(self, rule: Rule, detail: str, chosen: Selection | None = None) -> None:
        self.rule = rule
        self.detail = detail  # what in this command breaks the rule, for the message
        self.chosen = chosen  # unscoped-test: the packages selected


class Decision:
    __slots__ = ("allowed", "also", "fix", "locked_by", "max_locked", "members", "reason", "rule", "selected")

    def __init__(self, allowed: bool, rule: str | None = None, reason: str = "", fix: str | None = None,
                 members: list[str] | None = None, selected: list[str] | None = None,
                 locked_by: str | None = None, max_locked: bool = False, also: list[str] | None = None) -> None:
        self.allowed = allowed
        self.rule = rule
        self.reason = reason
        self.fix = fix
        self.members = members or []  # every workspace member (unscoped-test)
        self.selected = selected or []  # the packages the command selects (unscoped-test)
        self.locked_by = locked_by  # the host file keeps the rule on: no lower override would work
        self.max_locked = max_locked  # the host file sets max_packages: no lower layer may raise it
        self.also = also or []  # members the caller also changed, beyond what one fix may name

    def error(self) -> RefusedError:
        assert self.rule is not None
        rule = RULE[self.rule]
        help_lines = []
        if self.fix:
            help_lines.append(f"help: run instead: {self.fix}")
        if self.also:
            help_lines.append(f"help: you also changed {', '.join(self.also)}: test each the same way, with its "
                              "own -p")
        if self.members:
            shown = ", ".join(self.members[:_SHOWN_MEMBERS])
            more = len(self.members) - _SHOWN_MEMBERS
            help_lines.append(f"note: workspace members: {shown}" + (f" (and {more} more)" if more > 0 else ""))
        # Name only overrides that would work: none below a host file that keeps the rule on.
        if self.locked_by:
            help_lines.append(f"note: the host policy keeps this rule on ({self.locked_by} = false); "
                              f"{rule.env} and `{rule.setting}` in a repo or user file cannot turn it off")
        else:
            raise_max = rule.name == "unscoped-test" and not self.max_locked
            help_lines.append(f"note: to allow it anyway set {rule.env}=1, or `{rule.setting} = true` "
                              "in [workspace.metadata.cargo-agent] of the root Cargo.toml or in your user config "
                              "file" + ("; or raise max_packages (CARGO_AGENT_MAX_PACKAGES)" if raise_max else ""))
        help_lines.append(f"note: an operator allows it for the whole host with `{rule.setting} = true` "
                          f"in the host file ({DEFAULT_HOST_CONFIG})")
        return RefusedError(f"refused by cargo-agent (rule {self.rule}): {self.reason}", help=tuple(help_lines))

    def as_json(self) -> dict[str, object]:
        return {"allowed": self.allowed, "rule": self.rule, "reason": self.reason, "fix": self.fix,
                "selected": self.selected}


# ---- what a command does ----------------------------------------------------------------

def _every(value: str | None) -> bool:
    """A target glob that matches every name: `*`, `**`."""
    return bool(value) and set(value or "") == {"*"}


def _names_all(parsed: ParsedArgs, flag: str, option: str | None) -> bool:
    return parsed.has(flag) or (option is not None and any(_every(v) for v in parsed.values(option)))


def all_targets(parsed: ParsedArgs) -> bool:
    return parsed.has("--all-targets") or all(_names_all(parsed, flag, option) for flag, option in TARGET_KINDS)


def all_tests(parsed: ParsedArgs) -> bool:
    return _names_all(parsed, "--tests", "--test") or all_targets(parsed)


def _target_option(option: Option) -> bool:
    """Options that make up all-targets: dropped from the fix."""
    if option.name == "--all-targets" or option.name in SPELLED_OUT_ALL_TARGETS:
        return True
    return any(option.name == name for _, name in TARGET_KINDS) and _every(option.value)


def guess_selection(parsed: ParsedArgs, manifest_path: str | None) -> Selection | None:
    """The selection in a workspace nobody can read (the lint, with no Cargo.toml around):
    `open` when it may hold any number of packages; None when it cannot be told at all
    (a `--manifest-path` to somewhere else)."""
    if parsed.has("--workspace", "--all"):
        return Selection([], "--workspace", open=True)
    if parsed.has("--package"):
        # A `-p` without its value (`xargs -n1 cargo test -p`) names one package all the same.
        specs = [o.value if o.value is not None else f"<{o.index}>" for o in parsed.options if o.name == "--package"]
        names = list(dict.fromkeys(spec_name(s) for s in specs if not is_glob(s)))
        return Selection(names, "-p", open=any(is_glob(s) for s in specs))
    if manifest_path is not None and manifest_path.removeprefix("./") != "Cargo.toml":
        return None
    return Selection([], "the whole workspace", open=True)


def _listed(names: list[str]) -> str:
    more = len(names) - _SHOWN_SELECTED
    return ", ".join(names[:_SHOWN_SELECTED]) + (f" and {more} more" if more > 0 else "")


def selected(command: CargoCommand, location: Location | None, guess: bool = False) -> Selection | None:
    """The packages `command` selects in `location`'s workspace (see `check` for `guess`)."""
    parsed = command.parsed
    if location is not None:
        return selection(location, parsed.values("--package"), parsed.has("--workspace", "--all"),
                         parsed.values("--exclude"))
    return guess_selection(parsed, command.manifest_path) if guess else None


def check(command: CargoCommand, location: Location | None, config: Config, guess: bool = False) -> list[Violation]:
    """Every rule `command` breaks, overrides not applied. Without a `location`, the
    unscoped-test rule applies only when `guess` (the lint): then an unreadable workspace
    counts as one of many packages."""
    if not command.compiles:
        return []
    parsed = command.parsed
    resolved = command.resolved or ""
    found: list[Violation] = []
    if resolved in set(config["scoped_subcommands"]):
        limit = config["max_packages"]
        chosen = selected(command, location, guess)
        if chosen is not None and (len(chosen.packages) > limit or chosen.open):
            if chosen.open:
                detail = f"`{resolved}` may select any number of packages ({chosen.how})"
            else:
                detail = (f"`{resolved}` selects {len(chosen.packages)} packages ({_listed(chosen.packages)}; "
                          f"{chosen.how}), more than max_packages ({limit})")
            after = command.expanded_args[parsed.end + 1:]
            if command.alias_chain and parse_args(after).has(*_SELECTION_OPTIONS):
                detail += (f" (alias `{command.alias_chain[0]}` holds a `--`: the selection after it goes to the "
                           "test binaries, not to cargo)")
            found.append(Violation(RULE["unscoped-test"], detail, chosen))
    if all_targets(parsed):
        spelled = "`--all-targets`" if parsed.has("--all-targets") else "naming every target kind"
        found.append(Violation(RULE["all-targets"], spelled))
    if parsed.has("--all-features") and all_tests(parsed):
        found.append(Violation(RULE["all-features-tests"], "`--all-features` with the test targets"))
    return found


# ---- the gate ---------------------------------------------------------------------------

def _drop(args: list[str], doomed_option: Callable[[Option], bool]) -> list[str]:
    """Remove whole options for which `doomed_option(option)` is true (with their values)."""
    parsed = parse_args(args)
    doomed = {o.index + k for o in parsed.options if doomed_option(o) for k in range(o.span)}
    return [a for i, a in enumerate(args) if i not in doomed]


def _shell_join(tokens: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(t) for t in tokens)


def _fixed_args(command: CargoCommand, active: list[Violation], picked: list[str] | None = None) -> list[str]:
    """The command's expanded args with each active violation fixed; the result passes the gate."""
    resolved = command.resolved or ""
    args = list(command.expanded_args)
    rules = {v.rule.name: v for v in active}
    if "all-targets" in rules:
        args = _drop(args, _target_option)
        if resolved in _TEST_RUNS:
            end = parse_args(args).end
            args[end:end] = ["--lib"]
    if "all-features-tests" in rules:
        args = _drop(args, lambda o: o.name == "--all-features" or (o.name == "--test" and _every(o.value)))
    violation = rules.get("unscoped-test")
    if violation is not None and violation.chosen is not None and violation.chosen.packages:
        args = _drop(args, lambda o: o.name in _SELECTION_OPTIONS)
        # `nextest run`, `miri test`: the package goes after the second word, not before it.
        words = len(resolved.split()) - 1
        positionals = parse_args(args).positionals
        at = args.index(positionals[words - 1]) + 1 if words and len(positionals) >= words else 0
        args[at:at] = [arg for name in picked or [PLACEHOLDER] for arg in ("-p", name)]
    return args


def evaluate(command: CargoCommand, location: Location | None, config: Config,
             program: str = "cargo-agent") -> Decision:
    """Decide whether `command` may run. Non-compiling commands are always allowed."""
    active = [v for v in check(command, location, config) if not config[v.rule.setting]]
    if not active:
        return Decision(True)
    first = active[0]
    prefix = command.tokens[:command.subcommand_index or 0]
    trailing = ["--", *command.trailing] if command.trailing is not None else []
    # unscoped-test: name the packages the caller works on (cwd, else git changes), else a placeholder.
    chosen = next((v.chosen for v in active if v.rule.name == "unscoped-test" and v.chosen), None)
    focus = [n for n in focus_members(location) if n in chosen.packages] if chosen and location else []
    picked, also = focus[:config["max_packages"]], focus[config["max_packages"]:]
    fix = _shell_join([program, *prefix, *command.alias_globals, command.expanded[0],
                       *_fixed_args(command, active, picked), *trailing]).replace(f"'{PLACEHOLDER}'", PLACEHOLDER)
    reason = f"{first.detail}: {first.rule.reason}"
    packages = first.chosen.packages if first.chosen is not None else []
    members = location.workspace.member_names if location is not None and first.chosen is not None else []
    return Decision(False, first.rule.name, reason, fix, members, packages,
                    config.host_forbids(first.rule.setting), "max_packages" in config.host, also)
