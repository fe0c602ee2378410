"""The policy gate over real fixture workspaces on disk, table-driven."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_tree

from cargo_agent import argv, build
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
