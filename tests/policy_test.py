"""The policy gate over real fixture workspaces on disk, table-driven."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_tree

from cargo_agent import argv, build, policy
from cargo_agent.errors import RefusedError

# Alias expansion that loops fails in a minute, not after the suite's 300 s default.
pytestmark = pytest.mark.timeout(60)

OK = None

# (workspace fixture, subdir to run in, argv, expected rule or None, extra env)
CASES = [
    # unscoped-test in a virtual workspace
    ("virtual_ws", ".", ["test"], "unscoped-test", {}),
    ("virtual_ws", ".", ["t"], "unscoped-test", {}),
    ("virtual_ws", ".", ["bench"], "unscoped-test", {}),
    ("virtual_ws", ".", ["nextest", "run"], "unscoped-test", {}),
    ("virtual_ws", ".", ["nextest", "r"], "unscoped-test", {}),
    ("virtual_ws", ".", ["test", "--workspace"], "unscoped-test", {}),
    ("virtual_ws", ".", ["test", "--all"], "unscoped-test", {}),
    ("virtual_ws", ".", ["test", "--", "--all-targets"], "unscoped-test", {}),
    ("virtual_ws", ".", ["+stable", "test"], "unscoped-test", {}),
    ("virtual_ws", ".", ["-v", "--locked", "test"], "unscoped-test", {}),
    ("virtual_ws", ".", ["--config", "build.jobs=1", "test"], "unscoped-test", {}),
    ("virtual_ws", ".", ["--color", "never", "-q", "test", "--lib"], "unscoped-test", {}),
    # issue 16: -p counts what it selects (was OK: "-p is scoped in every spelling")
    ("virtual_ws", ".", ["test", "-p", "alpha*", "-p", "beta", "-p", "gamma"], "unscoped-test", {}),
    ("virtual_ws", ".", ["test", "--workspace", "--exclude", "beta"], "unscoped-test", {}),
    ("virtual_ws", ".", ["test", "--workspace", "--exclude", "beta", "--exclude", "gamma"], OK, {}),
    ("virtual_ws", ".", ["test", "-p", "*"], "unscoped-test", {}),  # issue 16 (was OK)
    ("virtual_ws", ".", ["test", "-p", "a*", "-p", "b*", "-p", "g*"], "unscoped-test", {}),
    ("virtual_ws", ".", ["test", "-p", "alpha", "-p", "beta", "-p", "gamma"], "unscoped-test", {}),
    ("virtual_ws", ".", ["test", "--package=*"], "unscoped-test", {}),
    ("virtual_ws", ".", ["test", "-p*"], "unscoped-test", {}),
    ("virtual_ws", ".", ["test", "-p", "[ab]*"], "unscoped-test", {}),
    ("virtual_ws", ".", ["test", "-p", "a*"], OK, {}),
    ("virtual_ws", ".", ["test", "-p", "[!ab]*"], OK, {}),  # gamma only
    ("virtual_ws", ".", ["test", "-p", "alph?", "-p", "alpha", "-p", "alpha@0.1.0", "-p", "alpha:0.1.0"], OK, {}),
    ("virtual_ws", ".", ["test", "-p", "zeta*"], OK, {}),  # matches nothing: cargo says so
    ("virtual_ws", ".", ["test", "-p", "*"], OK, {"CARGO_AGENT_MAX_PACKAGES": "3"}),
    ("virtual_ws", ".", ["test", "-p", "a*", "-p", "b*"], OK, {"CARGO_AGENT_MAX_PACKAGES": "2"}),
    ("virtual_ws", ".", ["test", "--workspace"], OK, {"CARGO_AGENT_MAX_PACKAGES": "3"}),
    ("virtual_ws", ".", ["test", "--workspace", "-p", "alpha"], "unscoped-test", {}),  # --workspace wins
    ("virtual_ws", ".", ["test", "--workspace", "--exclude", "[bg]*"], OK, {}),
    ("virtual_ws", ".", ["test", "--all", "--exclude=*a"], OK, {}),  # every name here ends in a
    ("virtual_ws", ".", ["test", "--workspace", "--exclude", "z*"], "unscoped-test", {}),
    ("virtual_ws", ".", ["test", "--manifest-path", "crates/alpha/Cargo.toml", "-p", "beta", "-p", "gamma"],
     "unscoped-test", {}),
    ("virtual_ws", ".", ["test", "--manifest-path=./Cargo.toml"], "unscoped-test", {}),
    ("virtual_ws", ".", ["nextest", "list"], "unscoped-test", {}),
    ("virtual_ws", ".", ["nextest", "archive", "--archive-file", "a.tar.zst"], "unscoped-test", {}),
    ("virtual_ws", ".", ["nextest", "list", "-p", "beta"], OK, {}),
    ("virtual_ws", ".", ["miri", "test"], "unscoped-test", {}),
    ("virtual_ws", ".", ["miri", "test", "-p", "beta"], OK, {}),
    ("virtual_ws", ".", ["test", "--no-run", "-p", "alpha"], OK, {}),
    ("virtual_ws", ".", ["test", "--manifest-path", "Cargo.toml"], "unscoped-test", {}),
    ("virtual_ws", ".", ["test", "--manifest-path", "crates/alpha/Cargo.toml"], OK, {}),
    ("virtual_ws", ".", ["test", "-p", "alpha"], OK, {}),
    ("virtual_ws", ".", ["test", "-palpha"], OK, {}),
    ("virtual_ws", ".", ["test", "--package=alpha"], OK, {}),
    ("virtual_ws", ".", ["test", "--package", "alpha", "-p", "beta"], "unscoped-test", {}),  # issue 16 (was OK)
    ("virtual_ws", ".", ["+nightly", "-vv", "t", "-p", "beta", "--", "--nocapture"], OK, {}),
    ("virtual_ws", ".", ["nextest", "run", "-p", "alpha"], OK, {}),
    ("virtual_ws", "crates/alpha", ["test"], OK, {}),
    ("virtual_ws", "crates/alpha/src", ["test"], OK, {}),
    ("virtual_ws", "crates/alpha", ["test", "--workspace"], "unscoped-test", {}),
    ("virtual_ws", "crates/alpha", ["-C", "..", "test"], "unscoped-test", {}),
    ("virtual_ws", ".", ["-C", "crates/beta", "test"], OK, {}),
    ("virtual_ws", ".", ["build"], OK, {}),
    ("virtual_ws", ".", ["check", "--workspace"], OK, {}),
    ("virtual_ws", ".", ["test"], OK, {"CARGO_AGENT_ALLOW_UNSCOPED": "1"}),
    ("virtual_ws", ".", ["check", "--workspace"], "unscoped-test", {"CARGO_AGENT_SCOPED_SUBCOMMANDS": "test,check"}),
    ("virtual_ws", ".", ["xt"], "unscoped-test", {"CARGO_ALIAS_XT": "test --lib"}),
    ("virtual_ws", ".", ["xt", "-p", "alpha"], OK, {"CARGO_ALIAS_XT": "test --lib"}),
    ("virtual_ws", ".", ["outer"], "unscoped-test", {"CARGO_ALIAS_OUTER": "inner", "CARGO_ALIAS_INNER": "t"}),
    # user aliases shadow the built-in b/c/d/t/r/rm (checked against real cargo: tests/policy_cargo_test.py)
    ("virtual_ws", ".", ["c"], "unscoped-test", {"CARGO_ALIAS_C": "test --workspace --no-run"}),
    ("virtual_ws", ".", ["t"], OK, {"CARGO_ALIAS_T": "test -p alpha"}),
    ("virtual_ws", ".", ["t", "-p", "beta"], "unscoped-test", {"CARGO_ALIAS_T": "test -p alpha"}),
    ("virtual_ws", ".", ["rm"], "unscoped-test", {"CARGO_ALIAS_RM": "test"}),
    ("virtual_ws", ".", ["xt"], OK, {"CARGO_ALIAS_XT": "t -p beta", "CARGO_ALIAS_T": "test"}),
    ("virtual_ws", ".", ["test"], "unscoped-test", {"CARGO_ALIAS_TEST": "test -p alpha"}),  # cargo's own wins
    # an alias ending its options at `--` hands what follows to the test binaries
    ("virtual_ws", ".", ["tt", "-p", "alpha"], "unscoped-test", {"CARGO_ALIAS_TT": "test --no-fail-fast --"}),
    ("virtual_ws", ".", ["tt", "--", "-p", "alpha"], "unscoped-test", {"CARGO_ALIAS_TT": "test --"}),
    ("virtual_ws", ".", ["tt"], OK, {"CARGO_ALIAS_TT": "test -p alpha --"}),
    ("virtual_ws", ".", ["bt", "--all-targets"], OK, {"CARGO_ALIAS_BT": "test -p alpha --"}),
    # global options at the head of an alias
    ("virtual_ws", ".", ["lt"], "unscoped-test", {"CARGO_ALIAS_LT": "--locked test"}),
    ("virtual_ws", ".", ["lt", "-p", "beta"], OK, {"CARGO_ALIAS_LT": "--locked -v test"}),
    # all-targets
    ("virtual_ws", ".", ["build", "--all-targets"], "all-targets", {}),
    ("virtual_ws", ".", ["check", "-p", "alpha", "--all-targets"], "all-targets", {}),
    ("virtual_ws", ".", ["b", "--lib", "--bins", "--tests", "--benches", "--examples"], "all-targets", {}),
    ("virtual_ws", ".", ["build", "--lib", "--bin", "*", "--test", "*", "--bench", "*", "--example", "*"],
     "all-targets", {}),
    ("virtual_ws", ".", ["check", "-p", "alpha", "--lib", "--bin=*", "--tests", "--bench", "**", "--examples"],
     "all-targets", {}),
    ("virtual_ws", ".", ["build", "--lib", "--bin", "x*", "--test", "*", "--bench", "*", "--example", "*"], OK, {}),
    ("single_ws", ".", ["build", "--all-targets"], "all-targets", {}),  # one package is no exception
    ("single_ws", ".", ["test", "--all-targets"], "all-targets", {}),
    ("virtual_ws", ".", ["build", "--lib", "--bins", "--tests"], OK, {}),
    ("virtual_ws", ".", ["clippy", "--all-targets"], "all-targets", {}),
    ("virtual_ws", ".", ["build", "--", "--all-targets"], OK, {}),
    ("virtual_ws", ".", ["build", "--all-targets"], OK, {"CARGO_AGENT_ALLOW_ALL_TARGETS": "yes"}),
    # all-features-tests
    ("virtual_ws", ".", ["check", "--all-features", "--tests"], "all-features-tests", {}),
    ("virtual_ws", ".", ["check", "-p", "alpha", "--all-features", "--tests"], "all-features-tests", {}),
    ("virtual_ws", ".", ["check", "--all-features"], OK, {}),
    ("virtual_ws", ".", ["check", "--tests"], OK, {}),
    ("virtual_ws", ".", ["check", "-p", "alpha", "--all-features", "--test", "*"], "all-features-tests", {}),
    ("virtual_ws", ".", ["check", "-p", "alpha", "--all-features", "--test", "it"], OK, {}),
    ("virtual_ws", ".", ["check", "-p", "alpha", "--all-features", "--", "--tests"], OK, {}),
    ("virtual_ws", ".", ["check", "--all-features", "--tests"], OK, {"CARGO_AGENT_ALLOW_ALL_FEATURES_TESTS": "1"}),
    # single-package root and root package workspaces
    ("single_ws", ".", ["test"], OK, {}),
    ("single_ws", ".", ["test", "--workspace"], OK, {}),
    ("single_ws", "src", ["t"], OK, {}),
    ("rootpkg_ws", ".", ["test"], OK, {}),  # selects the root package only
    ("rootpkg_ws", ".", ["test", "--workspace"], "unscoped-test", {}),
    ("rootpkg_ws", "helper", ["test"], OK, {}),
    ("rootpkg_ws", ".", ["test", "-p", "*"], "unscoped-test", {}),
    ("rootpkg_ws", ".", ["test", "--workspace", "--exclude", "helper"], OK, {}),
    # commands that compile nothing are never refused
    ("virtual_ws", ".", ["metadata", "--no-deps"], OK, {}),
    ("virtual_ws", ".", ["test", "--help"], OK, {}),
    ("virtual_ws", ".", ["help", "test"], OK, {}),
    ("virtual_ws", ".", ["--version"], OK, {}),
    ("virtual_ws", ".", ["fmt", "--all"], OK, {}),
]


@pytest.mark.parametrize(("fixture", "subdir", "args", "rule", "extra"), CASES,
                         ids=[" ".join(c[2]) + (f" [{','.join(c[4])}]" if c[4] else "") + f" @{c[0]}/{c[1]}"
                              for c in CASES])
def test_policy_table(request: pytest.FixtureRequest, agent_env: dict[str, str], fixture: str, subdir: str,
                      args: list[str], rule: str | None, extra: dict[str, str]) -> None:
    root: Path = request.getfixturevalue(fixture)
    cwd = (root / subdir).resolve()
    env = {**agent_env, **extra}
    command = argv.parse(args)
    if command.directory:
        cwd = (cwd / command.directory).resolve()
    decision = build.decide(command, cwd, env).decision
    assert decision.rule == rule, decision.reason
    assert decision.allowed == (rule is None)


def test_refusal_names_rule_fix_and_real_members(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    decision = build.decide(argv.parse(["-v", "test", "--workspace", "--lib"]), virtual_ws, agent_env).decision
    message = decision.error().render()
    assert message.startswith("error: refused by cargo-agent (rule unscoped-test):")
    assert "help: run instead: cargo-agent -v test -p <package> --lib" in message
    assert "alpha, beta, gamma" in message
    assert "CARGO_AGENT_ALLOW_UNSCOPED=1" in message


def test_fix_for_nextest_puts_the_package_after_run(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    decision = build.decide(argv.parse(["nextest", "run"]), virtual_ws, agent_env).decision
    assert decision.fix == "cargo-agent nextest run -p <package>"
    from_member = build.decide(argv.parse(["nextest", "run", "--workspace"]), virtual_ws / "crates/beta", agent_env)
    assert from_member.decision.fix == "cargo-agent nextest run -p beta"


def test_member_list_is_shortened_with_a_count(tmp_path: Path, agent_env: dict[str, str]) -> None:
    from conftest import crate, nest

    files = {"Cargo.toml": '[workspace]\nmembers = ["c/*"]\n'}
    for name in ("m1", "m2", "m3", "m4", "m5", "m6"):
        files.update(nest(f"c/{name}", crate(name)))
    write_tree(tmp_path / "ws", files)
    decision = build.decide(argv.parse(["test"]), tmp_path / "ws", agent_env).decision
    assert "(and 2 more)" in decision.error().render()


def test_default_members_decide_an_unscoped_test(tmp_path: Path, agent_env: dict[str, str]) -> None:
    from conftest import crate, nest

    root = write_tree(tmp_path / "ws", {
        "Cargo.toml": '[workspace]\nmembers = ["a", "b"]\ndefault-members = ["a"]\n',
        **nest("a", crate("a")), **nest("b", crate("b"))})
    assert build.decide(argv.parse(["test"]), root, agent_env).decision.allowed
    assert not build.decide(argv.parse(["test", "--workspace"]), root, agent_env).decision.allowed


def test_user_alias_from_cargo_config_file(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    write_tree(virtual_ws, {".cargo/config.toml": '[alias]\ntw = ["test", "--workspace"]\nloop = "loop"\n'})
    decision = build.decide(argv.parse(["tw", "-p", "alpha"]), virtual_ws / "crates/alpha", agent_env).decision
    assert decision.rule == "unscoped-test"


def test_repo_metadata_can_allow_a_rule(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    manifest = virtual_ws / "Cargo.toml"
    manifest.write_text(manifest.read_text() + "\n[workspace.metadata.cargo-agent]\nallow-unscoped = true\n")
    assert build.decide(argv.parse(["test"]), virtual_ws, agent_env).decision.allowed


def test_refusal_is_an_error_with_exit_2(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    error = build.decide(argv.parse(["test"]), virtual_ws, agent_env).decision.error()
    assert isinstance(error, RefusedError) and error.exit_code == 2


def test_refusal_names_the_count_and_the_packages(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    decision = build.decide(argv.parse(["test", "-p", "a*", "-p", "[bg]*"]), virtual_ws, agent_env).decision
    assert decision.rule == "unscoped-test"
    assert "`test` selects 3 packages (alpha, beta, gamma; -p), more than max_packages (1)" in decision.reason
    assert decision.selected == ["alpha", "beta", "gamma"]
    assert "CARGO_AGENT_MAX_PACKAGES" in decision.error().render()


def test_refusal_explains_a_separator_inside_an_alias(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    env = {**agent_env, "CARGO_ALIAS_TT": "test --no-fail-fast --"}
    reason = build.decide(argv.parse(["tt", "-p", "alpha"]), virtual_ws, env).decision.reason
    assert "alias `tt` holds a `--`: the selection after it goes to the test binaries" in reason


def test_all_targets_refusal_says_how_an_operator_allows_it(single_ws: Path, agent_env: dict[str, str]) -> None:
    message = build.decide(argv.parse(["build", "--all-targets"]), single_ws, agent_env).decision.error().render()
    assert "(rule all-targets)" in message
    assert "note: an operator allows it for the whole host with `allow_all_targets = true` in the host file" in message


def test_all_features_reason_is_about_one_combination(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    reason = build.decide(argv.parse(["check", "-p", "alpha", "--all-features", "--tests"]), virtual_ws,
                          agent_env).decision.reason
    assert "every optional feature" in reason and "combination" not in reason


REFUSED = [case for case in CASES if case[3] is not None]


@pytest.mark.parametrize(("fixture", "subdir", "args", "rule", "extra"), REFUSED,
                         ids=[" ".join(c[2]) + f" @{c[0]}/{c[1]}" for c in REFUSED])
def test_the_suggested_fix_passes_the_gate(request: pytest.FixtureRequest, agent_env: dict[str, str], fixture: str,
                                           subdir: str, args: list[str], rule: str, extra: dict[str, str]) -> None:
    import shlex

    cwd = (request.getfixturevalue(fixture) / subdir).resolve()
    env = {**agent_env, **extra}
    command = argv.parse(args)
    decision = build.decide(command, (cwd / (command.directory or ".")).resolve(), env).decision
    assert decision.fix is not None and decision.fix.startswith("cargo-agent ")
    fixed = argv.parse(shlex.split(decision.fix)[1:])
    again = build.decide(fixed, (cwd / (fixed.directory or ".")).resolve(), env).decision
    assert again.allowed, (decision.fix, again.reason)
    assert _for_the_binaries(fixed) == _for_the_binaries(command)  # what goes to the test binaries is kept


def _for_the_binaries(command: argv.CargoCommand) -> list[str]:
    """Everything after the first `--` of the expanded line: cargo hands it to what it runs."""
    full = [*command.expanded_args, *(["--", *command.trailing] if command.trailing is not None else [])]
    return full[full.index("--") + 1:] if "--" in full else []


@pytest.mark.parametrize(("args", "fix"), [
    (["test", "--workspace", "--exclude", "beta", "--lib"], "cargo-agent test -p <package> --lib"),
    (["tt", "-p", "alpha", "--", "--nocapture"], "cargo-agent test -p <package> --no-run -- -p alpha -- --nocapture"),
    (["nextest", "list", "--workspace"], "cargo-agent nextest list -p <package>"),
    (["miri", "test"], "cargo-agent miri test -p <package>"),
    (["build", "--lib", "--bin", "*", "--tests", "--bench=*", "--examples", "-q"], "cargo-agent build -q"),
    (["test", "-p", "beta", "--all-features", "--all-targets"], "cargo-agent test -p beta --lib"),
    (["lt"], "cargo-agent --offline test -p <package>"),
])
def test_fix_text(virtual_ws: Path, agent_env: dict[str, str], args: list[str], fix: str) -> None:
    env = {**agent_env, "CARGO_ALIAS_TT": "test --no-run --", "CARGO_ALIAS_LT": "--offline test"}
    assert build.decide(argv.parse(args), virtual_ws, env).decision.fix == fix


# ---- the gate's verdict against real cargo ---------------------------------------------------

# (args, env, cargo config files): every command builds tests with --no-run, so the packages
# cargo compiles tests for are read from its `Executable unittests` lines.
CARGO_VERDICTS: list[tuple[list[str], dict[str, str], dict[str, str]]] = [
    (["c"], {"CARGO_ALIAS_C": "test --no-run --workspace"}, {}),
    (["t"], {"CARGO_ALIAS_T": "test --no-run -p alpha"}, {}),
    (["t"], {}, {".cargo/config.toml": '[alias]\nt = "test --no-run -p beta"\n'}),
    (["rm"], {"CARGO_ALIAS_RM": "test --no-run"}, {}),
    (["b", "-p", "gamma"], {"CARGO_ALIAS_B": "test --no-run"}, {}),
    (["xt"], {"CARGO_ALIAS_XT": "t -p beta", "CARGO_ALIAS_T": "test --no-run"}, {}),
    (["test", "--no-run"], {"CARGO_ALIAS_TEST": "test -p alpha"}, {}),
    (["--config", 'alias.t="test --no-run -p alpha"', "t", "--no-run"], {}, {}),
    (["tt", "-p", "alpha"], {"CARGO_ALIAS_TT": "test --no-run --"}, {}),
    (["tt"], {"CARGO_ALIAS_TT": "test --no-run -p alpha --"}, {}),
    (["ot"], {"CARGO_ALIAS_OT": "--offline test --no-run"}, {}),
    (["ot", "-p", "beta"], {"CARGO_ALIAS_OT": "--offline test --no-run"}, {}),
    (["c"], {}, {".cargo/config.toml": 'include = ["more.toml"]\n',
                 ".cargo/more.toml": '[alias]\nc = "test --no-run --workspace"\n'}),
    (["c", "--exclude", "beta"], {}, {".cargo/config.toml": 'include = [{ path = "more.toml" }]\n',
                                      ".cargo/more.toml": '[alias]\nc = "test --no-run --workspace"\n'}),
    (["test", "--no-run", "-p", "*"], {}, {}),
    (["test", "--no-run", "-p", "a*", "-p", "g*"], {}, {}),
    (["test", "--no-run", "--workspace", "-p", "alpha"], {}, {}),
    (["test", "--no-run", "--workspace", "--exclude", "[ab]*"], {}, {}),
]


@pytest.mark.parametrize(("args", "extra", "files"), CARGO_VERDICTS,
                         ids=[" ".join(c[0]) + " " + ",".join(f"{k}={v}" for k, v in c[1].items()) + " ".join(c[2])
                              for c in CARGO_VERDICTS])
def test_verdict_matches_what_real_cargo_builds(virtual_ws: Path, agent_env: dict[str, str], args: list[str],
                                                extra: dict[str, str], files: dict[str, str]) -> None:
    import re
    import subprocess

    write_tree(virtual_ws, files)
    env = {**agent_env, **extra}
    result = subprocess.run(["cargo", *args], cwd=virtual_ws, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    built = sorted(re.findall(r"Executable unittests src/lib.rs \(.*/deps/(\w+)-", result.stderr))
    assert built
    decision = build.decide(argv.parse(args), virtual_ws, env).decision
    assert decision.allowed == (len(built) == 1), (built, decision.reason)
    if not decision.allowed:
        assert decision.selected == built


# ---- the whole refusal, word for word (issue 18: a blanked line or a dropped edit must fail) ----

def _decide(root: Path, env: dict[str, str], args: list[str]) -> policy.Decision:
    return build.decide(argv.parse(args), root, env).decision


def _passes_the_gate(root: Path, env: dict[str, str], fix: str) -> bool:
    import shlex

    words = shlex.split(fix)
    assert words[0] == "cargo-agent"
    return _decide(root, env, words[1:]).allowed


NOTE_OPERATOR = ("note: an operator allows it for the whole host with `{0} = true` in the host file "
                 "(/etc/cargo-agent.toml)")
NOTE_ALLOW = ("note: to allow it anyway set {1}=1, or `{0} = true` in [workspace.metadata.cargo-agent] of the root "
              "Cargo.toml or in your user config file")


def test_an_unscoped_test_refusal_in_full(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    decision = _decide(virtual_ws, agent_env, ["test"])
    reason = ("`test` selects 3 packages (alpha, beta, gamma; all members of the virtual workspace), more than "
              "max_packages (1): it compiles and runs the tests of every package it selects")
    assert decision.error().render().splitlines() == [
        f"error: refused by cargo-agent (rule unscoped-test): {reason}",
        "help: run instead: cargo-agent test -p <package>",
        "note: workspace members: alpha, beta, gamma",
        NOTE_ALLOW.format("allow_unscoped", "CARGO_AGENT_ALLOW_UNSCOPED")
        + "; or raise max_packages (CARGO_AGENT_MAX_PACKAGES)",
        NOTE_OPERATOR.format("allow_unscoped"),
    ]
    assert decision.as_json() == {"allowed": False, "rule": "unscoped-test", "reason": reason,
                                  "fix": "cargo-agent test -p <package>", "selected": ["alpha", "beta", "gamma"]}
    assert decision.members == ["alpha", "beta", "gamma"] and not decision.locked_by and not decision.max_locked


@pytest.mark.parametrize(("args", "rule", "reason", "fix"), [
    (["build", "--all-targets"], "all-targets",
     "`--all-targets`: it compiles every target: lib, bins, tests, benches and examples", "cargo-agent build"),
    (["check", "--lib", "--bins", "--tests", "--benches", "--examples", "-p", "alpha"], "all-targets",
     "naming every target kind: it compiles every target: lib, bins, tests, benches and examples",
     "cargo-agent check -p alpha"),
    (["check", "-p", "alpha", "--all-features", "--tests"], "all-features-tests",
     "`--all-features` with the test targets: it compiles every test target with every optional feature, and the "
     "dependencies those features pull in, turned on", "cargo-agent check -p alpha --tests"),
])
def test_a_target_rule_refusal_in_full(virtual_ws: Path, agent_env: dict[str, str], args: list[str], rule: str,
                                       reason: str, fix: str) -> None:
    decision = _decide(virtual_ws, agent_env, args)
    setting = policy.RULE[rule].setting
    assert decision.error().render().splitlines() == [
        f"error: refused by cargo-agent (rule {rule}): {reason}",
        f"help: run instead: {fix}",
        NOTE_ALLOW.format(setting, policy.RULE[rule].env),
        NOTE_OPERATOR.format(setting),
    ]
    assert decision.members == [] and decision.selected == []
    assert _passes_the_gate(virtual_ws, agent_env, fix)


@pytest.mark.parametrize(("args", "fix"), [
    # every selection option goes, with its value, and nothing else does
    (["test", "--workspace", "--exclude", "beta", "--all-targets", "--all-features"],
     "cargo-agent test -p <package> --lib"),
    (["-v", "test", "--exclude", "gamma", "--workspace", "--all-targets", "--", "--nocapture"],
     "cargo-agent -v test -p <package> --lib -- --nocapture"),
    (["test", "--exclude=gamma", "--all", "--no-fail-fast"], "cargo-agent test -p <package> --no-fail-fast"),
    (["test", "-p", "alpha", "-p", "beta", "--release"], "cargo-agent test -p <package> --release"),
    (["test", "--package=alpha", "-pbeta", "-j", "2"], "cargo-agent test -p <package> -j 2"),
    (["nextest", "run", "--all-targets", "--workspace"], "cargo-agent nextest run -p <package> --lib"),
    (["miri", "test", "--workspace", "--exclude", "alpha"], "cargo-agent miri test -p <package>"),
    # all-targets: every spelling of it goes; a test run keeps its unit tests
    (["test", "-p", "beta", "--all-targets"], "cargo-agent test -p beta --lib"),
    (["bench", "-p", "beta", "--all-targets", "--", "x"], "cargo-agent bench -p beta --lib -- x"),
    (["nextest", "list", "-p", "beta", "--all-targets"], "cargo-agent nextest list -p beta --lib"),
    (["nextest", "archive", "--archive-file", "a.tar.zst", "-p", "beta", "--all-targets"],
     "cargo-agent nextest archive --archive-file a.tar.zst -p beta --lib"),
    (["miri", "test", "-p", "beta", "--all-targets"], "cargo-agent miri test -p beta --lib"),
    (["nextest", "r", "-p", "beta", "--all-targets"], "cargo-agent nextest r -p beta --lib"),
    (["build", "-p", "beta", "--lib", "--bin=*", "--tests", "--bench", "*", "--examples", "-q"],
     "cargo-agent build -p beta -q"),
    (["check", "-p", "beta", "--all-targets", "--all-features"], "cargo-agent check -p beta"),
    # all-features-tests: --all-features and a `--test '*'` go, a named test stays
    (["check", "-p", "beta", "--all-features", "--test", "*", "--test", "it"], "cargo-agent check -p beta --test it"),
    (["check", "-p", "beta", "--features", "x", "--all-features", "--tests"],
     "cargo-agent check -p beta --features x --tests"),
])
def test_the_fix_is_the_command_with_exactly_the_offending_options_removed(
        virtual_ws: Path, agent_env: dict[str, str], args: list[str], fix: str) -> None:
    decision = _decide(virtual_ws, agent_env, args)
    assert decision.fix == fix
    assert _passes_the_gate(virtual_ws, agent_env, fix.replace("<package>", "alpha"))


def test_the_fix_names_the_member_the_caller_is_in(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    decision = _decide(virtual_ws / "crates" / "gamma", agent_env, ["test", "--workspace", "--all-targets"])
    assert decision.fix == "cargo-agent test -p gamma --lib" and decision.also == []
    assert _passes_the_gate(virtual_ws, agent_env, decision.fix)


def test_a_refusal_under_a_host_policy_names_no_override_that_would_not_work(
        virtual_ws: Path, agent_env: dict[str, str]) -> None:
    Path(agent_env["CARGO_AGENT_CONFIG"]).write_text("allow-unscoped = false\nmax-packages = 1\n")
    decision = _decide(virtual_ws, agent_env, ["test"])
    host = agent_env["CARGO_AGENT_CONFIG"]
    assert decision.locked_by == f"{host}:allow-unscoped" and decision.max_locked
    lines = decision.error().render().splitlines()
    assert lines[3:] == [
        f"note: the host policy keeps this rule on ({host}:allow-unscoped = false); CARGO_AGENT_ALLOW_UNSCOPED "
        "and `allow_unscoped` in a repo or user file cannot turn it off",
        NOTE_OPERATOR.format("allow_unscoped"),
    ]


def test_a_host_max_packages_drops_the_raise_max_packages_hint(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    Path(agent_env["CARGO_AGENT_CONFIG"]).write_text("max-packages = 1\n")
    decision = _decide(virtual_ws, agent_env, ["test"])
    assert decision.max_locked and decision.locked_by is None
    assert decision.error().render().splitlines()[3] == NOTE_ALLOW.format("allow_unscoped",
                                                                          "CARGO_AGENT_ALLOW_UNSCOPED")


def test_the_error_lists_four_members_then_a_count_and_other_changed_members() -> None:
    decision = policy.Decision(False, "unscoped-test", "why", "cargo-agent test -p a", members=list("abcdef"),
                               also=["b", "c"])
    lines = decision.error().render().splitlines()
    assert lines[1:4] == ["help: run instead: cargo-agent test -p a",
                          "help: you also changed b, c: test each the same way, with its own -p",
                          "note: workspace members: a, b, c, d (and 2 more)"]
    exactly_four = policy.Decision(False, "unscoped-test", "why", None, members=list("abcd")).error().render()
    assert "note: workspace members: a, b, c, d\n" in exactly_four and "help: run instead" not in exactly_four
    assert "more)" not in exactly_four


def test_a_long_selection_is_shortened_after_eight_names(tmp_path: Path, agent_env: dict[str, str]) -> None:
    from conftest import crate, nest

    names = [f"m{k}" for k in range(10)]
    files = {"Cargo.toml": '[workspace]\nmembers = ["c/*"]\n'}
    for name in names:
        files.update(nest(f"c/{name}", crate(name)))
    root = write_tree(tmp_path / "ws", files)
    assert "(m0, m1, m2, m3, m4, m5, m6, m7 and 2 more; " in _decide(root, agent_env, ["test"]).reason
    nine = _decide(root, agent_env, ["test", "--workspace", "--exclude", "m9"]).reason
    assert "(m0, m1, m2, m3, m4, m5, m6, m7 and 1 more; " in nine
    eight = _decide(root, agent_env, ["test", "--workspace", "--exclude", "m9", "--exclude", "m8"]).reason
    assert "(m0, m1, m2, m3, m4, m5, m6, m7; --workspace minus --exclude)" in eight


def test_max_packages_is_a_limit_not_a_count_of_one(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    env = {**agent_env, "CARGO_AGENT_MAX_PACKAGES": "2"}
    assert _decide(virtual_ws, env, ["test", "-p", "alpha", "-p", "beta"]).allowed
    three = _decide(virtual_ws, env, ["test"])
    assert "selects 3 packages" in three.reason and "more than max_packages (2)" in three.reason
    assert three.fix == "cargo-agent test -p <package>"


# ---- the rule table and the target predicates, without a workspace ---------------------------

def test_the_rule_table() -> None:
    assert [(r.name, r.code, r.setting, r.env, r.host_may_forbid) for r in policy.RULES] == [
        ("unscoped-test", "CA002", "allow_unscoped", "CARGO_AGENT_ALLOW_UNSCOPED", True),
        ("all-targets", "CA003", "allow_all_targets", "CARGO_AGENT_ALLOW_ALL_TARGETS", True),
        ("all-features-tests", "CA004", "allow_all_features_tests", "CARGO_AGENT_ALLOW_ALL_FEATURES_TESTS", True),
    ]
    assert list(policy.RULE) == ["unscoped-test", "all-targets", "all-features-tests"]
    assert repr(policy.RULE["all-targets"]) == "Rule('all-targets')"
    assert all(rule.refuses and rule.fix and rule.reason for rule in policy.RULES)


@pytest.mark.parametrize(("args", "everything"), [
    (["--all-targets"], True), (["--lib", "--bins", "--tests", "--benches", "--examples"], True),
    (["--lib", "--bin", "*", "--test", "**", "--bench=*", "--example", "*"], True),
    (["--bins", "--tests", "--benches", "--examples"], False), (["--lib", "--tests", "--benches", "--examples"], False),
    (["--lib", "--bins", "--benches", "--examples"], False), (["--lib", "--bins", "--tests", "--examples"], False),
    (["--lib", "--bins", "--tests", "--benches"], False), (["--lib", "--bin", "a*", "--tests", "--benches",
                                                            "--examples"], False),
    (["--lib", "--bin", "", "--tests", "--benches", "--examples"], False), ([], False),
])
def test_all_targets_means_every_target_kind(args: list[str], everything: bool) -> None:
    assert policy.all_targets(argv.parse_args(args)) is everything


@pytest.mark.parametrize(("args", "tests"), [(["--tests"], True), (["--test", "*"], True), (["--test=**"], True),
                                             (["--all-targets"], True), (["--test", "it"], False),
                                             (["--lib"], False), (["--test", "*x"], False)])
def test_all_tests_means_every_test_target(args: list[str], tests: bool) -> None:
    assert policy.all_tests(argv.parse_args(args)) is tests


@pytest.mark.parametrize(("args", "how", "names", "open_"), [
    (["--workspace"], "--workspace", [], True), (["--all"], "--workspace", [], True),
    (["-p", "a", "-p", "b", "-p", "a"], "-p", ["a", "b"], False), (["-p", "a*", "-p", "b"], "-p", ["b"], True),
    (["-p"], "-p", ["<0>"], False), ([], "the whole workspace", [], True),
    (["--manifest-path", "./Cargo.toml"], "the whole workspace", [], True),
])
def test_the_lint_guesses_a_selection_it_cannot_read(args: list[str], how: str, names: list[str],
                                                     open_: bool) -> None:
    chosen = policy.guess_selection(argv.parse_args(args), argv.parse(["test", *args]).manifest_path)
    assert chosen is not None
    assert (chosen.how, chosen.packages, chosen.open) == (how, names, open_)


def test_the_lint_cannot_guess_for_another_manifest() -> None:
    assert policy.guess_selection(argv.parse_args([]), "crates/a/Cargo.toml") is None


# ---- check without a workspace: the gate outside one, and the lint's guess ----------------------

def _check(args: list[str], guess: bool = False, **settings: object) -> list[tuple[str, str]]:
    from cargo_agent import config

    merged = config.merge([config.Layer("environment", {k: (v, k) for k, v in settings.items()})])
    return [(v.rule.name, v.detail) for v in policy.check(argv.parse(args), None, merged, guess)]


def test_without_a_workspace_only_the_target_rules_apply() -> None:
    assert _check(["test"]) == []
    assert _check(["build", "--all-targets", "--all-features"]) == [
        ("all-targets", "`--all-targets`"), ("all-features-tests", "`--all-features` with the test targets")]
    assert _check(["build", "--lib", "--bins", "--tests", "--benches", "--examples"]) == [
        ("all-targets", "naming every target kind")]


def test_commands_that_compile_nothing_break_no_rule() -> None:
    assert _check(["--version", "test", "--all-targets"], guess=True) == []
    assert _check(["metadata", "--all-features", "--tests"], guess=True) == []


def test_the_lint_counts_what_it_can_read_of_a_selection() -> None:
    assert _check(["test"], guess=True) == [
        ("unscoped-test", "`test` may select any number of packages (the whole workspace)")]
    assert _check(["test", "-p", "a", "-p", "b"], guess=True) == [
        ("unscoped-test", "`test` selects 2 packages (a, b; -p), more than max_packages (1)")]
    assert _check(["test", "-p", "a", "-p", "b"], guess=True, max_packages=2) == []
    assert _check(["test", "-p", "a"], guess=True) == []
    assert _check(["nextest", "run", "--workspace"], guess=True) == [
        ("unscoped-test", "`nextest run` may select any number of packages (--workspace)")]
    assert _check(["check", "--workspace"], guess=True) == []
    assert _check(["check", "--workspace"], guess=True, scoped_subcommands=("check",)) == [
        ("unscoped-test", "`check` may select any number of packages (--workspace)")]
    assert _check(["test", "--manifest-path", "elsewhere/Cargo.toml"], guess=True) == []


@pytest.mark.parametrize(("args", "rule", "fix"), [
    (["test", "--all-targets", "--all-features"], "unscoped-test", "cargo-agent test -p <package> --lib"),
    (["check", "-p", "beta", "--all-targets", "--all-features"], "all-targets", "cargo-agent check -p beta"),
])
def test_a_command_breaking_several_rules_is_refused_by_the_first_and_fixed_for_all(
        virtual_ws: Path, agent_env: dict[str, str], args: list[str], rule: str, fix: str) -> None:
    decision = _decide(virtual_ws, agent_env, args)
    assert decision.rule == rule and decision.fix == fix
    assert decision.error().render().startswith(f"error: refused by cargo-agent (rule {rule}): ")
