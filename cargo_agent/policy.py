"""The policy gate: rules with stable names that refuse commands which compile the world.

- `unscoped-test`: a scoped subcommand (default `test`, `bench`, `nextest run`) whose package
  selection is more than one package of the workspace.
- `all-targets`: `--all-targets`, or `--lib --bins --tests --benches --examples` together.
- `all-features-tests`: `--all-features` together with `--tests` (or all targets).

A refusal names the rule, says why in one line, and gives the command to run instead with
real member names of this workspace, and how to override the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cargo_agent.argv import CargoCommand, parse_args
from cargo_agent.config import Config
from cargo_agent.errors import RefusedError
from cargo_agent.workspace import Location, selection

RULES = ("unscoped-test", "all-targets", "all-features-tests")
OVERRIDES = {
    "unscoped-test": ("allow_unscoped", "CARGO_AGENT_ALLOW_UNSCOPED"),
    "all-targets": ("allow_all_targets", "CARGO_AGENT_ALLOW_ALL_TARGETS"),
    "all-features-tests": ("allow_all_features_tests", "CARGO_AGENT_ALLOW_ALL_FEATURES_TESTS"),
}
SPELLED_OUT_ALL_TARGETS = ("--lib", "--bins", "--tests", "--benches", "--examples")
_SHOWN_MEMBERS = 4


@dataclass
class Decision:
    allowed: bool
    rule: str | None = None
    reason: str = ""
    fix: str | None = None
    members: list[str] = field(default_factory=list)

    def error(self) -> RefusedError:
        assert self.rule is not None
        setting, env = OVERRIDES[self.rule]
        help_lines = []
        if self.fix:
            help_lines.append(f"help: run instead: {self.fix}")
        if self.members:
            shown = ", ".join(self.members[:_SHOWN_MEMBERS])
            more = len(self.members) - _SHOWN_MEMBERS
            help_lines.append(f"note: workspace members: {shown}" + (f" (and {more} more)" if more > 0 else ""))
        help_lines.append(f"note: to allow it anyway set {env}=1, or `{setting} = true` "
                          "in [workspace.metadata.cargo-agent] of the root Cargo.toml")
        return RefusedError(f"refused by cargo-agent (rule {self.rule}): {self.reason}", help=tuple(help_lines))

    def as_json(self) -> dict[str, object]:
        return {"allowed": self.allowed, "rule": self.rule, "reason": self.reason, "fix": self.fix}


def _all_targets(flags: set[str]) -> bool:
    return "--all-targets" in flags or all(f in flags for f in SPELLED_OUT_ALL_TARGETS)


def _drop(args: list[str], names: set[str]) -> list[str]:
    """Remove whole options named in `names` (with their values) from an arg list."""
    parsed = parse_args(args)
    doomed = {o.index + k for o in parsed.options if o.name in names for k in range(o.span)}
    return [a for i, a in enumerate(args) if i not in doomed]


def _shell_join(tokens: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(t) for t in tokens)


def evaluate(command: CargoCommand, location: Location | None, config: Config,
             program: str = "cargo-agent") -> Decision:
    """Decide whether `command` may run. Non-compiling commands are always allowed."""
    if not command.compiles:
        return Decision(True)
    parsed = command.parsed
    flags = {o.name for o in parsed.options}
    resolved = command.resolved or ""
    violations: list[tuple[str, str]] = []
    members: list[str] = []
    fixed_args = list(command.expanded_args)

    scoped = set(config["scoped_subcommands"])
    # An explicit -p/--package (any spelling, repeated or not) is scoped by definition,
    # unless --workspace/--all is there too: then cargo selects the whole workspace.
    whole = parsed.has("--workspace", "--all")
    if resolved in scoped and location is not None and (whole or not parsed.has("--package")):
        chosen = selection(location, parsed.values("--package"), parsed.has("--workspace", "--all"),
                           parsed.values("--exclude"))
        if len(chosen.packages) > 1:
            members = location.workspace.member_names
            violations.append(("unscoped-test",
                               f"`{resolved}` selects {len(chosen.packages)} packages ({chosen.how}) of the "
                               f"workspace at {location.workspace.root_manifest.parent}"))
            fixed_args = _drop(fixed_args, {"--workspace", "--all", "--exclude", "--package"})
            # `nextest run`: the package goes after `run`, not before it.
            at = fixed_args.index(parsed.positionals[0]) + 1 if resolved == "nextest run" else 0
            fixed_args[at:at] = ["-p", chosen.packages[0]]
    if _all_targets(flags):
        violations.append(("all-targets", "it compiles every target (lib, bins, tests, benches, examples)"))
        fixed_args = _drop(fixed_args, {"--all-targets", *SPELLED_OUT_ALL_TARGETS})
        if resolved in ("test", "bench", "nextest run"):
            fixed_args.append("--lib")
    if "--all-features" in flags and ("--tests" in flags or _all_targets(flags)):
        violations.append(("all-features-tests", "`--all-features` with `--tests` builds every feature "
                                                 "combination's test targets"))
        fixed_args = _drop(fixed_args, {"--all-features"})

    active = [(rule, why) for rule, why in violations if not config[OVERRIDES[rule][0]]]
    if not active:
        return Decision(True)
    rule, reason = active[0]
    subcommand_index = command.subcommand_index or 0
    prefix = command.tokens[:subcommand_index]
    trailing = ["--", *command.trailing] if command.trailing is not None else []
    fix = _shell_join([program, *prefix, command.expanded[0], *fixed_args, *trailing])
    return Decision(False, rule, reason, fix, members)
