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


# ---- the tables, entry by entry (issue 18: a blanked entry must fail a test) -----------------

# cargo's own subcommands (`cargo --list`, cargo 1.9x): an alias of the same name is ignored by cargo.
CARGO_SUBCOMMANDS = [
    "add", "bench", "build", "check", "clean", "config", "doc", "fetch", "fix", "generate-lockfile",
    "git-checkout", "help", "info", "init", "install", "locate-project", "login", "logout", "metadata",
    "new", "owner", "package", "pkgid", "publish", "read-manifest", "remove", "report", "run", "rustc",
    "rustdoc", "search", "test", "tree", "uninstall", "update", "vendor", "verify-project", "version",
    "yank",
]


@pytest.mark.parametrize("name", CARGO_SUBCOMMANDS)
def test_an_alias_named_like_a_cargo_subcommand_is_ignored(name: str) -> None:
    command = argv.expand_aliases(argv.parse([name]), {name: ["nextest", "run"]}.get)
    assert command.resolved == name and command.alias_chain == []


@pytest.mark.parametrize("name", [
    "add", "clean", "config", "fetch", "fmt", "generate-lockfile", "git-checkout", "help", "info", "init",
    "locate-project", "login", "logout", "metadata", "new", "owner", "pkgid", "read-manifest", "remove",
    "report", "search", "tree", "uninstall", "update", "vendor", "verify-project", "version", "yank",
])
def test_subcommands_that_compile_nothing_take_no_slot(name: str) -> None:
    assert argv.parse([name]).compiles is False


@pytest.mark.parametrize("name", ["bench", "build", "check", "doc", "fix", "install", "package", "publish", "run",
                                  "rustc", "rustdoc", "test", "clippy", "nextest", "miri"])
def test_subcommands_that_compile(name: str) -> None:
    assert argv.parse([name]).compiles is True


@pytest.mark.parametrize("name", [
    "package", "exclude", "features", "target", "target-dir", "manifest-path", "lockfile-path", "jobs",
    "profile", "bin", "example", "test", "bench", "message-format", "color", "config", "artifact-dir",
    "registry", "index", "root", "edition", "name", "vcs", "depth", "format", "prefix", "invert",
    "edges", "charset", "filter-platform", "format-version", "filter-expr", "partition", "test-threads",
    "build-jobs", "retries", "cargo-profile", "archive-file", "run-ignored", "explain",
])
def test_long_options_that_take_the_next_token_as_their_value(name: str) -> None:
    parsed = argv.parse_args([f"--{name}", "value", "positional"])
    assert [(o.name, o.value, o.index, o.span) for o in parsed.options] == [(f"--{name}", "value", 0, 2)]
    assert parsed.positionals == ("positional",)


@pytest.mark.parametrize(("letter", "name"), [("p", "--package"), ("F", "--features"), ("j", "--jobs"),
                                              ("C", "-C"), ("Z", "-Z"), ("E", "--filter-expr"),
                                              ("P", "--profile")])
def test_short_options_that_take_a_value(letter: str, name: str) -> None:
    parsed = argv.parse_args([f"-{letter}", "value", "positional"])
    assert [(o.name, o.value, o.index, o.span) for o in parsed.options] == [(name, "value", 0, 2)]
    assert parsed.positionals == ("positional",)


@pytest.mark.parametrize(("letter", "name"), [("v", "--verbose"), ("q", "--quiet"), ("h", "--help"),
                                              ("r", "--release"), ("V", "--version"), ("x", "-x")])
def test_short_flags_have_their_long_name_and_take_no_value(letter: str, name: str) -> None:
    parsed = argv.parse_args([f"-{letter}", "positional"])
    assert [(o.name, o.value) for o in parsed.options] == [(name, None)]
    assert parsed.positionals == ("positional",)


@pytest.mark.parametrize(("flag", "top_level"), [("--version", "--version"), ("-V", "--version"),
                                                 ("-vV", "--version"), ("--list", "--list"), ("--help", "--help"),
                                                 ("-h", "--help")])
def test_top_level_flags_before_the_subcommand(flag: str, top_level: str) -> None:
    command = argv.parse([flag, "build"])
    assert command.top_level == top_level and command.subcommand == "build"
    assert command.wants_help and not command.compiles


@pytest.mark.parametrize(("flags", "top_level"), [(["--list", "--version"], "--list"), (["-V", "--list"], "--version"),
                                                  (["--version", "-h"], "--version"), (["-h", "-V"], "--help"),
                                                  (["--help", "--list"], "--help")])
def test_the_first_top_level_flag_wins(flags: list[str], top_level: str) -> None:
    assert argv.parse(flags).top_level == top_level


@pytest.mark.parametrize("flags", [["--explain", "E0382"], ["--explain=E0382"]])
def test_explain_takes_its_code_and_compiles_nothing(flags: list[str]) -> None:
    command = argv.parse(flags)
    assert command.top_level == "--explain" and command.subcommand is None and not command.compiles


@pytest.mark.parametrize("flags", [["--verbose"], ["--quiet"], ["--locked"], ["--offline"], ["--frozen"],
                                   ["-v"], ["-q"], ["-vq"], ["--color", "never"], ["--color=never"],
                                   ["--frobnicate"]])
def test_global_flags_before_the_subcommand_are_skipped(flags: list[str]) -> None:
    command = argv.parse([*flags, "test", "-p", "x"])
    assert command.subcommand == "test" and command.subcommand_index == len(flags)
    assert command.top_level is None and command.expanded == ["test", "-p", "x"]


# ---- edges of the line ---------------------------------------------------------------------

@pytest.mark.parametrize(("tokens", "directory", "unstable"), [
    (["-Cdir", "build"], "dir", []), (["-C=dir", "build"], "dir", []), (["-C", "dir", "build"], "dir", []),
    (["-vCdir", "build"], "dir", []), (["-vC", "dir", "build"], "dir", []),
    (["-Zflag", "build"], None, ["flag"]), (["-Z=flag", "build"], None, ["flag"]),
    (["-qZ", "flag", "build"], None, ["flag"]), (["-Za", "-Z", "b", "-Cx", "build"], "x", ["a", "b"]),
    (["-Ca=b", "-Zc=d", "build"], "a=b", ["c=d"]),
])
def test_values_of_c_and_z_attached_or_apart(tokens: list[str], directory: str | None, unstable: list[str]) -> None:
    command = argv.parse(tokens)
    assert command.directory == directory and command.unstable == unstable
    assert command.subcommand == "build" and command.args == []


@pytest.mark.parametrize(("tokens", "name"), [(["-C"], "-C"), (["-Z"], "-Z"), (["-vC"], "-C"), (["--color"], "--color"),
                                              (["--config"], "--config"), (["--explain"], "--explain")])
def test_a_global_option_missing_its_value_names_it(tokens: list[str], name: str) -> None:
    with pytest.raises(UsageError) as caught:
        argv.parse(tokens)
    assert caught.value.message == f"a value is required for '{name}' but none was supplied"


@pytest.mark.parametrize("tokens", [["--", "test"], ["-v", "--", "test", "-p", "a"], ["--"]])
def test_a_separator_before_the_subcommand_leaves_no_subcommand(tokens: list[str]) -> None:
    command = argv.parse(tokens)
    assert command.subcommand is None and command.subcommand_index is None and command.args == []
    assert command.trailing == tokens[tokens.index("--") + 1:]
    assert command.expanded == [] and command.resolved is None and not command.compiles


def test_a_line_without_anything_is_an_empty_model() -> None:
    command = argv.parse([])
    assert command.toolchain is None and command.directory is None and command.top_level is None
    assert command.subcommand is None and command.trailing is None and command.args == []
    assert command.configs == [] and command.unstable == [] and command.manifest_path is None


@pytest.mark.parametrize(("tokens", "index"), [(["test"], 0), (["+stable", "test"], 1), (["-v", "-C", "d", "test"], 3),
                                               (["+nightly", "--config=a=1", "test", "-p", "b"], 2)])
def test_the_subcommand_index_counts_every_token_before_it(tokens: list[str], index: int) -> None:
    command = argv.parse(tokens)
    assert command.subcommand_index == index and command.subcommand == "test"


@pytest.mark.parametrize("bad", ["+", "+a b", "+a/b", "+a\\b", "+a\tb"])
def test_a_toolchain_name_with_a_separator_or_space_is_refused(bad: str) -> None:
    with pytest.raises(UsageError) as caught:
        argv.parse([bad, "build"])
    assert caught.value.message == f"invalid toolchain name '{bad}'"


@pytest.mark.parametrize("tokens", [["-p"], ["--package"], ["-vp"], ["-j"], ["--exclude"]])
def test_a_value_option_at_the_end_has_no_value(tokens: list[str]) -> None:
    parsed = argv.parse_args(tokens)
    assert parsed.options[-1].value is None and parsed.options[-1].span == 1 and parsed.positionals == ()
    assert parsed.end == len(tokens)


def test_test_p_with_no_value_at_the_end_is_a_model_not_a_crash() -> None:
    command = argv.parse(["test", "-p"])
    assert command.parsed.has("--package") and command.parsed.values("--package") == []


@pytest.mark.parametrize("tokens", [["-p", "--lib"], ["--package", "--lib"], ["-p", "-q"]])
def test_a_value_option_does_not_take_a_following_flag(tokens: list[str]) -> None:
    parsed = argv.parse_args(tokens)
    assert parsed.options[0].value is None and parsed.options[0].span == 1
    assert parsed.options[1].index == 1


def test_option_indexes_and_spans_cover_every_token() -> None:
    parsed = argv.parse_args(["-p", "a", "-pb", "--package=c", "--package", "d", "-vj2", "x", "--lib", "--", "-p", "e"])
    assert [(o.name, o.value, o.index, o.span) for o in parsed.options] == [
        ("--package", "a", 0, 2), ("--package", "b", 2, 1), ("--package", "c", 3, 1), ("--package", "d", 4, 2),
        ("--verbose", None, 6, 1), ("--jobs", "2", 6, 1), ("--lib", None, 8, 1)]
    assert parsed.positionals == ("x",) and parsed.end == 9
    assert repr(parsed.options[0]) == "Option('--package', 'a', 0, 2)"


def test_a_lone_dash_is_a_positional() -> None:
    assert argv.parse_args(["-"]).positionals == ("-",) and argv.parse_args(["-"]).options == ()


def test_parsing_without_a_separator_ends_at_the_end() -> None:
    assert argv.parse_args(["-p", "a", "b"]).end == 3 and argv.parse_args([]).end == 0


@pytest.mark.parametrize(("args", "resolved"), [(["miri", "run"], "miri run"), (["miri", "r"], "miri run"),
                                                (["miri", "nextest"], "miri nextest"), (["nextest", "-p", "a", "run"],
                                                                                        "nextest run")])
def test_more_two_word_subcommands(args: list[str], resolved: str) -> None:
    assert argv.parse(args).resolved == resolved


def test_configs_and_unstable_options_after_the_subcommand_count() -> None:
    command = argv.parse(["--config", "a=1", "-Zg", "build", "--config", "b=2", "-Zh", "-Z", "i"])
    assert command.configs == ["a=1", "b=2"] and command.unstable == ["g", "h", "i"]


# ---- aliases ---------------------------------------------------------------------------------

def test_alias_loop_names_the_whole_chain() -> None:
    with pytest.raises(UsageError) as caught:
        argv.expand_aliases(argv.parse(["x1"]), {"x1": ["y1"], "y1": ["x1"]}.get)
    assert caught.value.message == "alias x1 has unresolvable recursive definition: x1 -> y1 -> x1"


def _chain(length: int) -> dict[str, list[str]]:
    """a0 -> a1 -> ... -> a<length-1> -> test: `length` distinct aliases."""
    return {f"a{k}": [f"a{k + 1}" if k + 1 < length else "test"] for k in range(length)}


def test_a_chain_of_32_aliases_expands() -> None:
    command = argv.expand_aliases(argv.parse(["a0"]), _chain(32).get)
    assert command.resolved == "test" and len(command.alias_chain) == 32


def test_a_chain_deeper_than_32_aliases_is_refused_as_recursive() -> None:
    with pytest.raises(UsageError) as caught:
        argv.expand_aliases(argv.parse(["a0"]), _chain(33).get)
    chain = " -> ".join(f"a{k}" for k in range(33))
    assert caught.value.message == f"alias a0 has unresolvable recursive definition: {chain}"


def test_an_alias_that_expands_to_nothing_is_an_error() -> None:
    with pytest.raises(UsageError) as caught:
        argv.expand_aliases(argv.parse(["nil"]), {"nil": []}.get)
    assert caught.value.message == "alias nil expands to nothing"


def test_an_alias_of_globals_and_a_separator_has_no_subcommand() -> None:
    command = argv.expand_aliases(argv.parse(["xt", "-p", "a"]), {"xt": ["--locked", "--", "test"]}.get)
    assert command.expanded == [] and command.resolved is None and command.alias_globals == ["--locked"]


def test_no_subcommand_no_expansion() -> None:
    command = argv.expand_aliases(argv.parse(["-v"]), {"-v": ["test"]}.get)
    assert command.expanded == [] and command.alias_chain == []


def test_an_unknown_external_subcommand_is_not_an_alias() -> None:
    command = argv.expand_aliases(argv.parse(["clippy", "--fix"]), {}.get)
    assert command.expanded == ["clippy", "--fix"] and command.alias_chain == [] and command.alias_globals == []


@pytest.mark.parametrize("tokens", [["", "build"], ["-v", "", "build"], ["-", "build"]])
def test_an_empty_token_or_a_lone_dash_before_the_subcommand_is_the_subcommand(tokens: list[str]) -> None:
    """cargo reads `cargo "" build` as the (unknown) subcommand ``, not as a flag to skip; `-` too."""
    command = argv.parse(tokens)
    assert command.subcommand == tokens[-2] and command.args == ["build"]


def test_a_long_option_of_one_letter_is_one_option() -> None:
    parsed = argv.parse_args(["--x", "--ab", "pos"])
    assert [(o.name, o.value) for o in parsed.options] == [("--x", None), ("--ab", None)]
    assert parsed.positionals == ("pos",)
