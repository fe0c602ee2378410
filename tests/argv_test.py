"""The cargo command-line model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cargo_agent import argv
from cargo_agent.errors import UsageError

# A parser or alias expansion that loops (a dropped `i += 1` or recursion guard) fails in a minute, not 300 s.
pytestmark = pytest.mark.timeout(60)


def test_globals_toolchain_subcommand_and_trailing_are_split() -> None:
    command = argv.parse(["+nightly", "-vv", "--config", "a.b=1", "-Zunstable", "-C", "dir", "--color=always",
                          "test", "-p", "foo", "--config=x.y=2", "--", "--all-targets", "-p"])
    assert command.toolchain == "nightly"
    assert command.directory == "dir"
    assert command.configs == ["a.b=1", "x.y=2"]
    assert command.unstable == ["unstable"]
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


@pytest.mark.parametrize("alias", ["b", "c", "d", "t", "r", "rm"])
def test_user_alias_shadows_the_builtin_alias(alias: str) -> None:
    command = argv.expand_aliases(argv.parse([alias, "-q"]), {alias: ["test", "-p", "alpha"]}.get)
    assert command.expanded == ["test", "-p", "alpha", "-q"]
    assert command.alias_chain == [alias]


def test_user_alias_may_call_a_shadowing_alias() -> None:
    aliases = {"t": ["test", "-p", "alpha"], "xt": ["t", "-p", "beta"]}
    command = argv.expand_aliases(argv.parse(["xt"]), aliases.get)
    assert command.expanded == ["test", "-p", "alpha", "-p", "beta"]


def test_alias_of_itself_through_a_builtin_name_is_recursive() -> None:
    """cargo: `[alias] t = "t -p alpha"` is `alias t has unresolvable recursive definition: t -> t`."""
    with pytest.raises(UsageError, match="recursive definition: t -> t"):
        argv.expand_aliases(argv.parse(["t"]), {"t": ["t", "-p", "alpha"]}.get)


def test_option_parsing_stops_at_a_separator_inside_an_alias() -> None:
    command = argv.expand_aliases(argv.parse(["tt", "-p", "alpha", "--", "--nocapture"]),
                                  {"tt": ["test", "--no-fail-fast", "--"]}.get)
    assert command.expanded == ["test", "--no-fail-fast", "--", "-p", "alpha"]
    assert command.trailing == ["--nocapture"]
    assert not command.parsed.has("--package")
    assert command.parsed.has("--no-fail-fast")


def test_global_options_at_the_head_of_an_alias_are_set_aside() -> None:
    command = argv.expand_aliases(argv.parse(["xt", "-p", "a"]),
                                  {"xt": ["--locked", "--config", "build.jobs=1", "-Zx", "test"]}.get)
    assert command.resolved == "test" and command.expanded_args == ["-p", "a"]
    assert command.alias_globals == ["--locked", "--config", "build.jobs=1", "-Zx"]
    assert command.configs == ["build.jobs=1"] and command.unstable == ["x"]


def test_alias_of_global_options_only_has_no_subcommand() -> None:
    command = argv.expand_aliases(argv.parse(["xt"]), {"xt": ["--locked"]}.get)
    assert command.resolved is None and not command.compiles


@pytest.mark.parametrize(("args", "resolved"), [
    (["nextest", "run"], "nextest run"), (["nextest", "r", "-p", "a"], "nextest run"),
    (["nextest", "list"], "nextest list"), (["nextest", "archive", "--archive-file", "x"], "nextest archive"),
    (["nextest", "--color", "never", "run"], "nextest run"), (["nextest", "show-config"], "nextest"),
    (["miri", "test"], "miri test"), (["miri", "t"], "miri test"), (["miri", "setup"], "miri"),
    (["test", "run"], "test"),
])
def test_two_word_subcommands(args: list[str], resolved: str) -> None:
    assert argv.parse(args).resolved == resolved


@pytest.mark.parametrize(("args", "manifest"), [
    (["test", "--manifest-path", "a/Cargo.toml"], "a/Cargo.toml"), (["test", "--manifest-path=b"], "b"),
    (["test"], None), (["test", "--", "--manifest-path", "x"], None),
    (["-v", "build", "-q", "--manifest-path", "c", "--manifest-path", "d"], "c"),
])
def test_command_knows_its_manifest_path(args: list[str], manifest: str | None) -> None:
    assert argv.parse(args).manifest_path == manifest


@pytest.mark.parametrize("flags", [["-v"], ["-vv"], ["--verbose", "-v"], ["-qv"], ["-vq", "--verbose"]])
def test_verbose_before_the_subcommand_is_a_flag(flags: list[str]) -> None:
    command = argv.parse([*flags, "test", "-p", "x"])
    assert command.subcommand == "test" and command.parsed.values("--package") == ["x"]
    assert command.top_level is None


def test_verbose_after_the_subcommand_takes_no_value() -> None:
    parsed = argv.parse(["build", "-v", "alpha", "--verbose", "-vv"]).parsed
    assert [o.name for o in parsed.options] == ["--verbose", "--verbose", "--verbose", "--verbose"]
    assert parsed.positionals == ("alpha",)


def test_a_separator_ends_option_parsing() -> None:
    parsed = argv.parse_args(["-p", "a", "--", "-p", "b", "--all-targets"])
    assert parsed.values("--package") == ["a"] and not parsed.has("--all-targets") and parsed.end == 2


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
        _ = (command.resolved, command.compiles, command.configs, command.parsed,
             command.manifest_path)
    except UsageError:
        return
    assert command.tokens == tokens  # nothing reordered or dropped
