"""The cargo command-line model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cargo_agent import argv
from cargo_agent.errors import UsageError


def test_globals_toolchain_subcommand_and_trailing_are_split() -> None:
    command = argv.parse(["+nightly", "-vv", "--config", "a.b=1", "-Zunstable", "-C", "dir", "--color=always",
                          "test", "-p", "foo", "--config=x.y=2", "--", "--all-targets", "-p"])
    assert command.toolchain == "nightly"
    assert command.directory == "dir"
    assert command.configs == ["a.b=1", "x.y=2"]
    assert command.unstable == ["unstable"]
    assert command.verbose == 2
    assert command.subcommand == "test"
    assert command.args == ["-p", "foo", "--config=x.y=2"]
    assert command.trailing == ["--all-targets", "-p"]


@pytest.mark.parametrize("spelling", [["-p", "foo"], ["-pfoo"], ["-p=foo"], ["--package", "foo"],
                                      ["--package=foo"]])
def test_every_package_spelling_is_understood(spelling: list[str]) -> None:
    assert argv.parse(["test", *spelling]).parsed.values("--package") == ["foo"]


def test_combined_short_flags_with_a_value_at_the_end() -> None:
    parsed = argv.parse_args(["-vj8"])
    assert parsed.has("--verbose") and parsed.values("--jobs") == ["8"]


@pytest.mark.parametrize(("alias", "expanded"), [("b", "build"), ("c", "check"), ("d", "doc"), ("t", "test"),
                                                 ("r", "run"), ("rm", "remove")])
def test_builtin_aliases(alias: str, expanded: str) -> None:
    command = argv.expand_aliases(argv.parse([alias, "-p", "x"]), lambda name: None)
    assert command.resolved == expanded and command.expanded_args == ["-p", "x"]


def test_user_alias_chain_and_original_tokens_untouched() -> None:
    aliases = {"outer": ["inner", "--lib"], "inner": ["t", "--workspace"]}
    command = argv.expand_aliases(argv.parse(["outer", "-q"]), aliases.get)
    assert command.expanded == ["test", "--workspace", "--lib", "-q"]
    assert command.tokens == ["outer", "-q"]
    assert command.alias_chain == ["outer", "inner", "t"]


def test_alias_loop_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="recursive"):
        argv.expand_aliases(argv.parse(["x1"]), {"x1": ["y1"], "y1": ["x1"]}.get)


def test_builtin_subcommands_cannot_be_shadowed() -> None:
    command = argv.expand_aliases(argv.parse(["build"]), {"build": ["test", "--workspace"]}.get)
    assert command.resolved == "build"


@pytest.mark.parametrize(("args", "compiles"), [
    (["version"], False), (["--version"], False), (["-V"], False), (["--list"], False), (["metadata"], False),
    (["fmt"], False), (["help", "build"], False), (["build", "--help"], False), (["test", "-h"], False),
    ([], False), (["build"], True), (["test"], True), (["clippy"], True), (["some-external-tool"], True),
    (["test", "--", "--help"], True),
])
def test_what_compiles(args: list[str], compiles: bool) -> None:
    assert argv.parse(args).compiles is compiles


@pytest.mark.parametrize("bad", [["+"], ["-C"], ["--config"], ["+bad/name", "build"]])
def test_malformed_lines_are_usage_errors(bad: list[str]) -> None:
    with pytest.raises(UsageError):
        argv.parse(bad)


TOKENS = st.one_of(
    st.sampled_from(["+", "+stable", "-", "--", "-C", "-Z", "--config", "--config=", "-p", "-vv", "-j", "--jobs",
                     "test", "t", "b", "nextest", "run", "--all-targets", "--workspace", "=", "-pfoo", "--color"]),
    st.text(max_size=12),
)


@given(st.lists(TOKENS, max_size=12), st.dictionaries(st.sampled_from(["a", "b", "t", "x"]),
                                                      st.lists(TOKENS, max_size=4), max_size=3))
@settings(max_examples=400, deadline=None)
def test_parser_returns_a_model_or_a_usage_error(tokens: list[str], aliases: dict[str, list[str]]) -> None:
    try:
        command = argv.parse(tokens)
        command = argv.expand_aliases(command, aliases.get)
        _ = (command.resolved, command.compiles, command.configs, command.parsed, command.verbose)
    except UsageError:
        return
    assert command.tokens == tokens  # nothing reordered or dropped
