"""Settings: each kind of value parsed right (not only rejected when bad), and the layering of
environment, repo, user file, host file and defaults."""

from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import write_tree
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cargo_agent import config, locations
from cargo_agent.config import Layer
from cargo_agent.errors import ConfigError

G = 1 << 30


def rejects(parse: object, raw: object) -> bool:
    try:
        parse(raw)  # type: ignore[operator]
    except ValueError:
        return True
    return False


# ---- whole numbers -------------------------------------------------------------------

def test_positive_int_accepts_one_the_smallest_count() -> None:
    assert config.parse_positive_int("1") == 1


@pytest.mark.parametrize("raw", ["0", "-1", "-0", "+3", "1.5", "1e3", "0x10", "", " ", "two", "3 4"])
def test_positive_int_rejects_zero_negatives_and_non_integers(raw: str) -> None:
    assert rejects(config.parse_positive_int, raw)


def test_positive_int_reads_toml_integers_and_trims_env_values() -> None:
    assert config.parse_positive_int(7) == 7
    assert config.parse_positive_int(" 12 ") == 12
    assert config.parse_positive_int("007") == 7


@pytest.mark.parametrize("raw", [True, False, 4.0, [4], {"n": 4}, None])
def test_positive_int_rejects_toml_booleans_floats_and_tables(raw: object) -> None:
    assert rejects(config.parse_positive_int, raw)


@pytest.mark.parametrize("raw", ["auto", "AUTO", " Auto "])
def test_auto_in_any_case_means_derive_it(raw: str) -> None:
    assert config.parse_auto_or_positive_int(raw) is None


def test_auto_or_count_takes_a_count_and_refuses_zero() -> None:
    assert config.parse_auto_or_positive_int("3") == 3
    assert config.parse_auto_or_positive_int(1) == 1
    assert rejects(config.parse_auto_or_positive_int, "0")
    assert rejects(config.parse_auto_or_positive_int, "")


@pytest.mark.parametrize(("raw", "expected"), [("0", 0), (" 0 ", 0), (0, 0), ("1", 1), ("3", 3), (5, 5)])
def test_retries_accept_zero_and_positive_counts(raw: object, expected: int) -> None:
    assert config.SETTINGS_BY_KEY["retries"].parse(raw) == expected


@pytest.mark.parametrize("raw", ["-1", "many", "", "1.5", False])
def test_retries_reject_negatives_and_words(raw: object) -> None:
    assert rejects(config.SETTINGS_BY_KEY["retries"].parse, raw)


# ---- percentages ---------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("85", 85.0), ("85%", 85.0), ("12.5 %", 12.5), (" 90% ", 90.0), ("100", 100.0), ("100%", 100.0),
    ("0.5", 0.5), ("0.01", 0.01), (85, 85.0), (12.5, 12.5),
])
def test_percentage_with_or_without_a_percent_sign(raw: object, expected: float) -> None:
    value = config.parse_percent(raw)
    assert value == expected and isinstance(value, float)


@pytest.mark.parametrize("raw", ["0", "0%", "0.0", "100.01", "101", "-5", "-0.5", "%", "", "abc", "1e2", "50%%",
                                 "nan", "inf", True])
def test_percentage_outside_zero_exclusive_to_hundred_inclusive_is_rejected(raw: object) -> None:
    assert rejects(config.parse_percent, raw)


@pytest.mark.parametrize("raw", ["off", "none", "OFF", " None "])
def test_percentage_or_off_turns_the_guard_off(raw: str) -> None:
    assert config.parse_percent_or_off(raw) is None


def test_percentage_or_off_still_checks_the_range() -> None:
    assert config.parse_percent_or_off("95") == 95.0
    assert rejects(config.parse_percent_or_off, "0")
    assert rejects(config.parse_percent_or_off, "150")
    assert rejects(config.parse_percent_or_off, "")


# ---- sizes ---------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("512k", 512 << 10), ("1k", 1024), ("1K", 1024), ("1kb", 1024), ("1KiB", 1024),
    ("1m", 1 << 20), ("4096M", 4 * G), ("1MiB", 1 << 20),
    ("1g", G), ("4G", 4 * G), ("12GiB", 12 * G), ("4gb", 4 * G), ("4 G", 4 * G), (" 4G ", 4 * G),
    ("1t", 1 << 40), ("2TiB", 2 << 40), ("1p", 1 << 50), ("1E", 1 << 60),
])
def test_size_units_are_powers_of_1024(raw: object, expected: int) -> None:
    value = config.parse_size(raw)
    assert value == expected and isinstance(value, int)


@pytest.mark.parametrize("raw", ["1", "1073741824", 1073741824, "1.5", "8b", "8ib"])
def test_a_size_needs_a_unit(raw: object) -> None:
    """A bare `8` would be 8 bytes, which nobody means: it is refused."""
    assert rejects(config.parse_size, raw)


def test_the_smallest_size_is_one_byte() -> None:
    assert config.parse_size("0.0009765625k") == 1  # 1/1024 k
    assert rejects(config.parse_size, "0.0009k")  # 0.92 bytes


def test_fractional_sizes_are_rounded_down_to_whole_bytes() -> None:
    assert config.parse_size("1.5G") == 3 * G // 2
    assert config.parse_size("0.5k") == 512
    assert config.parse_size("0.1k") == 102


@pytest.mark.parametrize("raw", ["unlimited", "none", "infinity", "Unlimited", " NONE "])
def test_unlimited_size_is_none(raw: str) -> None:
    assert config.parse_size(raw) is None


@pytest.mark.parametrize("raw", ["0", "0G", "0.5", "0.0001k", "-1G", "4Q", "G", "", "4b", "4ib", "4 gib x", "1.G",
                                 ".5G", "4GG", "1e3", "4B", True])
def test_size_rejects_zero_unknown_units_and_a_bare_byte_suffix(raw: object) -> None:
    assert rejects(config.parse_size, raw)


@pytest.mark.parametrize("raw", ["1" * 400, "1" * 400 + "G", "1" * 400 + ".5G", "1" * 5000 + "k",
                                 "99999999999999999999T", "9" * 19 + "G"])
def test_size_too_big_for_a_resource_limit_is_rejected_not_a_crash(raw: str) -> None:
    assert rejects(config.parse_size, raw)


def test_size_up_to_the_largest_resource_limit_is_accepted() -> None:
    assert config.parse_size("8388607T") == 8388607 << 40
    assert config.parse_size("7E") == 7 << 60
    assert rejects(config.parse_size, "8388608T")  # 2**63 bytes
    assert rejects(config.parse_size, "8E")


def test_required_size_refuses_unlimited() -> None:
    assert config.parse_size_required("2G") == 2 * G
    assert rejects(config.parse_size_required, "unlimited")
    assert rejects(config.parse_size_required, "none")


# ---- durations -----------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("90s", 90.0), ("30m", 1800.0), ("1h", 3600.0), ("2h", 7200.0), ("250ms", 0.25), ("1500ms", 1.5),
    ("1h30m", 5400.0), ("1h 30m", 5400.0), ("1m30s", 90.0), ("1.5h", 5400.0), ("90S", 90.0), (" 10s ", 10.0),
    ("2.5", 2.5), ("10", 10.0), (10, 10.0), (0.5, 0.5), ("1d2h", 93600.0),
])
def test_duration_units_and_plain_seconds(raw: object, expected: float) -> None:
    assert config.parse_duration(raw) == pytest.approx(expected)


def test_duration_day_unit_is_86400_seconds() -> None:
    assert config.parse_duration("1d") == 86400.0


def test_duration_milliseconds_are_not_minutes() -> None:
    assert config.parse_duration("5ms") == pytest.approx(0.005)
    assert config.parse_duration("5m") == 300.0


@pytest.mark.parametrize("raw", ["none", "off", "unlimited", "OFF", " None "])
def test_no_duration_limit_is_none(raw: str) -> None:
    assert config.parse_duration(raw) is None


@pytest.mark.parametrize("raw", ["0", "0s", "0.0", "0h0m", "-5", "-5s", "", " ", "5x", "h", "s5", "90sx", "1h-30m",
                                 "5 seconds", "1e3", "5.s", True])
def test_duration_rejects_zero_negatives_and_unknown_units(raw: object) -> None:
    assert rejects(config.parse_duration, raw)


def test_required_duration_refuses_none() -> None:
    assert config.parse_duration_required("10s") == 10.0
    assert rejects(config.parse_duration_required, "none")
    assert rejects(config.parse_duration_required, "off")


# ---- booleans, lists, choices, paths -------------------------------------------------

@pytest.mark.parametrize("raw", ["1", "true", "yes", "on", "TRUE", " Yes ", "On", True, 1])
def test_bool_true_spellings(raw: object) -> None:
    assert config.parse_bool(raw) is True


@pytest.mark.parametrize("raw", ["0", "false", "no", "off", "", "FALSE", " No ", False, 0])
def test_bool_false_spellings_including_an_empty_value(raw: object) -> None:
    assert config.parse_bool(raw) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "n", "enabled", "-1", 2, [True]])
def test_bool_rejects_other_words_and_numbers(raw: object) -> None:
    assert rejects(config.parse_bool, raw)


def test_list_from_a_toml_array_is_trimmed_and_drops_empty_items() -> None:
    assert config.parse_list(["a", " b ", "", "  "]) == ("a", "b")
    assert config.parse_list([]) == ()


def test_list_from_an_env_value_is_comma_separated() -> None:
    assert config.parse_list("a, b,,c ,") == ("a", "b", "c")
    assert config.parse_list("single") == ("single",)
    assert config.parse_list("") == ()
    assert config.parse_list(" ") == ()


def test_list_of_non_strings_is_rejected_but_a_scalar_is_one_item() -> None:
    assert rejects(config.parse_list, ["a", 1])
    assert rejects(config.parse_list, [["a"]])
    assert config.parse_list(3) == ("3",)
    assert config.parse_list(True) == ("true",)
    assert config.parse_list(False) == ("false",)


def test_subcommand_list_takes_builtin_external_and_two_word_subcommands() -> None:
    assert config.parse_subcommand_list("test, nextest run, fuzz,cargo-x,my_tool") == (
        "test", "nextest run", "fuzz", "cargo-x", "my_tool")
    assert config.parse_subcommand_list(["bench", "nextest run"]) == ("bench", "nextest run")
    assert config.parse_subcommand_list("") == ()


@pytest.mark.parametrize("raw", ["Test", "nextest  run", "a b c", "-x", "test;rm", "te st!", "_x", "x/y", ["Test"],
                                 ["ok", 1]])
def test_subcommand_list_rejects_what_is_not_a_subcommand_name(raw: object) -> None:
    assert rejects(config.parse_subcommand_list, raw)


def test_choice_is_case_insensitive_and_trimmed() -> None:
    parse = config.choice("keep", "clear-sccache", "clear")
    assert parse("KEEP") == "keep"
    assert parse(" clear ") == "clear"
    assert parse("clear-sccache") == "clear-sccache"


@pytest.mark.parametrize("value", ["keep", "clear-sccache", "clear"])
def test_rustc_wrapper_takes_each_of_its_choices(value: str) -> None:
    assert config.SETTINGS_BY_KEY["rustc_wrapper"].parse(value) == value


@pytest.mark.parametrize("raw", ["", "kept", "clear sccache", "clear-", True, 1])
def test_choice_rejects_anything_else(raw: object) -> None:
    assert rejects(config.choice("keep", "clear-sccache", "clear"), raw)


def test_path_expands_the_home_directory_and_trims() -> None:
    assert config.parse_path("~/locks") == os.path.expanduser("~/locks") != "~/locks"
    assert config.parse_path(" /srv/locks ") == "/srv/locks"


@pytest.mark.parametrize("raw", ["", "   ", None, ["/a"]])
def test_path_rejects_empty_and_non_text(raw: object) -> None:
    assert rejects(config.parse_path, raw)


def test_absolute_path_is_normalised_and_expands_home() -> None:
    assert config.parse_absolute_path("/srv//locks/../shared/") == "/srv/shared"
    assert config.parse_absolute_path("~/locks") == os.path.join(os.path.expanduser("~"), "locks")


@pytest.mark.parametrize("raw", ["locks", "./locks", "~user-that-does-not-exist/x", "", 5, ["/a"], True])
def test_absolute_path_rejects_relative_paths_and_non_strings(raw: object) -> None:
    assert rejects(config.parse_absolute_path, raw)


# ---- the table -----------------------------------------------------------------------

def test_every_env_var_is_the_key_in_capitals() -> None:
    assert all(s.env == "CARGO_AGENT_" + s.key.upper() for s in config.SETTINGS)
    assert list(config.SETTINGS_BY_KEY) == [s.key for s in config.SETTINGS]


@pytest.mark.parametrize("setting", config.SETTINGS, ids=[s.key for s in config.SETTINGS])
def test_every_default_is_a_value_its_parser_could_give(setting: config.Setting) -> None:
    default = setting.default
    if default is None:
        return
    text = ",".join(default) if isinstance(default, tuple) else default
    if setting.parse in (config.parse_size, config.parse_size_required, config.parse_limit_as):
        text = f"{default >> 10}k"  # a size needs a unit
    assert setting.parse(text) == default


def test_defaults_that_decide() -> None:
    defaults = {s.key: s.default for s in config.SETTINGS}
    assert defaults["mem_high"] == 85.0 and defaults["mem_kill"] == 95.0
    assert defaults["per_build_memory"] == 4 * G and defaults["host_reserve"] == 2 * G
    assert defaults["limit_as"] == 4 * G and defaults["kill_grace"] == 10.0 and defaults["retries"] == 2
    assert defaults["limit_as_exempt"] == ("fuzz", "miri", "sanitizer")
    assert defaults["scoped_subcommands"] == ("test", "bench", "nextest run", "nextest list", "nextest archive",
                                              "miri test")
    assert defaults["max_packages"] == 1
    assert defaults["rustc_wrapper"] == "clear-sccache"
    assert not any(defaults[k] for k in ("report", "isolate_cargo_home", "allow_unscoped", "allow_all_targets",
                                         "allow_all_features_tests"))
    assert all(defaults[k] is None for k in ("slots", "lock_dir", "wait_timeout", "cpus", "jobs", "test_threads",
                                             "link_threads", "timeout", "soft_timeout", "cargo"))


def test_a_repo_may_not_set_the_lock_dir_or_the_cargo_program() -> None:
    assert [s.key for s in config.SETTINGS if not s.repo] == ["lock_dir", "cargo"]


def test_limit_as_is_a_size_of_at_least_256m_or_unlimited() -> None:
    assert config.parse_limit_as("256M") == 256 << 20
    assert config.parse_limit_as("unlimited") is None
    assert rejects(config.parse_limit_as, "255M")
    assert rejects(config.parse_limit_as, "1k")
    assert rejects(config.parse_limit_as, "4")


def test_a_shown_limit_as_parses_back_to_itself() -> None:
    """--dry-run and --doctor show limit_as with a unit, so the value shown can be set again."""
    for size in (256 << 20, 4 << 30, 12 << 30, None):
        assert config.parse_limit_as(config.shown("limit_as", size)) == size


def test_the_settings_table_is_a_tuple() -> None:
    assert isinstance(config.SETTINGS, tuple)


@pytest.mark.parametrize("thing", [config.SETTINGS[0], config.Layer("user", {}), config.Clamp(1, "a", "b"),
                                   config.Config({})], ids=["Setting", "Layer", "Clamp", "Config"])
def test_a_misspelled_attribute_is_an_error_not_a_new_attribute(thing: object) -> None:
    with pytest.raises(AttributeError):
        thing.vaule = 1  # type: ignore[attr-defined]


def test_how_each_kind_of_limit_tightens() -> None:
    by_key = config.SETTINGS_BY_KEY
    assert by_key["slots"].tighter is config.at_most and by_key["timeout"].tighter is config.at_most
    assert by_key["per_build_memory"].tighter is config.at_least
    assert by_key["host_reserve"].tighter is config.at_least
    assert by_key["lock_dir"].tighter is config.host_decides
    assert by_key["limit_as_exempt"].tighter is config.fewer
    assert by_key["scoped_subcommands"].tighter is config.more
    assert {k for k, s in by_key.items() if s.tighter is config.both_allow} == {
        "allow_unscoped", "allow_all_targets", "allow_all_features_tests"}
    assert {k for k, s in by_key.items() if s.tighter is None} == {
        "soft_timeout", "report", "rustc_wrapper", "isolate_cargo_home", "cargo"}


# ---- tightening rules ----------------------------------------------------------------

def test_at_most_keeps_the_smaller_and_none_sets_no_bound() -> None:
    assert config.at_most(4, 8) == 4 and config.at_most(8, 4) == 4
    assert config.at_most(None, 8) == 8  # the host sets no bound
    assert config.at_most(4, None) == 4  # `unlimited` below a bound is the bound


def test_at_least_keeps_the_larger() -> None:
    assert config.at_least(8 * G, 4 * G) == 8 * G and config.at_least(4 * G, 8 * G) == 8 * G


def test_both_allow_needs_the_host_and_the_lower_layer() -> None:
    assert config.both_allow(True, True) is True
    assert config.both_allow(False, True) is False
    assert config.both_allow(True, False) is False
    assert config.both_allow(False, False) is False


def test_host_decides_ignores_the_lower_layer() -> None:
    assert config.host_decides("/srv/locks", "/tmp/mine") == "/srv/locks"


def test_fewer_keeps_only_exemptions_the_host_also_grants() -> None:
    assert config.fewer(("fuzz", "miri"), ("miri", "build", "fuzz")) == ("miri", "fuzz")
    assert config.fewer((), ("fuzz",)) == ()


def test_more_adds_what_a_lower_layer_covers_to_the_hosts_list() -> None:
    assert config.more(("test", "bench"), ("build", "test")) == ("test", "bench", "build")
    assert config.more(("test",), ()) == ("test",)


# ---- showing values ------------------------------------------------------------------

@pytest.mark.parametrize(("key", "value", "text"), [
    ("slots", None, "auto"), ("limit_as", None, "unlimited"), ("timeout", None, "none"), ("mem_kill", None, "off"),
    ("cargo", None, "(not set)"), ("no_such_key", None, "(not set)"), ("no_such_key", 3, "3"),
    ("report", True, "true"), ("report", False, "false"),
    ("scoped_subcommands", ("test", "nextest run"), "test, nextest run"), ("limit_as_exempt", (), "(none)"),
    ("limit_as", 4 * G, "4G"), ("limit_as", 512 << 20, "512M"), ("per_build_memory", 3 << 10, "3K"),
    ("limit_as", (1 << 30) + (1 << 20), "1025M"),
    ("timeout", 5400.0, "1h30m"), ("timeout", 90.0, "1m30s"), ("timeout", 86400.0, "1d"), ("timeout", 60, "1m"),
    ("timeout", 0.5, "0.5s"), ("timeout", 90061.0, "1d1h1m1s"), ("kill_grace", 10.0, "10s"), ("timeout", 3600.0, "1h"),
    ("timeout", 0.0, "0s"),
    ("mem_high", 85.0, "85"), ("mem_high", 12.5, "12.5"), ("jobs", 4, "4"), ("rustc_wrapper", "keep", "keep"),
])
def test_values_are_shown_as_a_config_file_spells_them(key: str, value: object, text: str) -> None:
    assert config.shown(key, value) == text


# ---- one layer at a time -------------------------------------------------------------

def test_env_layer_reads_only_cargo_agent_variables_and_names_them_as_origin() -> None:
    layer = config.env_layer({"CARGO_AGENT_TIMEOUT": "1h", "CARGO_AGENT_REPORT": "yes", "CARGO_AGENT_NOPE": "x",
                              "TIMEOUT": "5s"})
    assert layer.name == "environment"
    assert layer.values == {"timeout": (3600.0, "CARGO_AGENT_TIMEOUT"), "report": (True, "CARGO_AGENT_REPORT")}


def test_bad_env_value_names_the_variable_and_what_is_accepted() -> None:
    with pytest.raises(ConfigError) as caught:
        config.env_layer({"CARGO_AGENT_MEM_HIGH": "150"})
    assert caught.value.message == "invalid value '150' for CARGO_AGENT_MEM_HIGH: expected a percentage in (0, 100]"
    assert caught.value.exit_code == 2


def test_table_layer_accepts_kebab_case_keys_and_names_file_and_key() -> None:
    layer = config.table_layer("user", {"wait-timeout": "90s", "slots": 3}, "/home/u/config.toml")
    assert layer.name == "user"
    assert layer.values == {"wait_timeout": (90.0, "/home/u/config.toml:wait-timeout"),
                            "slots": (3, "/home/u/config.toml:slots")}


def test_unknown_key_is_an_error_with_the_close_match_and_every_known_key() -> None:
    with pytest.raises(ConfigError) as caught:
        config.table_layer("host", {"slotz": 2}, "/etc/cargo-agent.toml")
    assert caught.value.message == "unknown key 'slotz' in /etc/cargo-agent.toml; did you mean 'slots'?"
    assert caught.value.help == ("known keys: " + ", ".join(s.key for s in config.SETTINGS),)


def test_close_match_is_spelled_the_way_the_user_spells_keys() -> None:
    with pytest.raises(ConfigError, match="did you mean 'wait-timeout'"):
        config.table_layer("user", {"wait-timout": "1m"}, "u.toml")
    with pytest.raises(ConfigError, match="did you mean 'wait_timeout'"):
        config.table_layer("user", {"wait_timout": "1m"}, "u.toml")
    with pytest.raises(ConfigError, match="did you mean 'wait-timeout'"):  # `-` compared as `_`, not dropped
        config.table_layer("user", {"wait-t": "1m"}, "u.toml")


def test_unknown_key_far_from_every_known_one_gets_no_guess() -> None:
    with pytest.raises(ConfigError) as caught:
        config.table_layer("user", {"zzzz": 1}, "u.toml")
    assert caught.value.message == "unknown key 'zzzz' in u.toml"


@pytest.mark.parametrize(("key", "value"), [("cargo", "/tmp/evil-cargo"), ("lock-dir", "/tmp/locks")])
def test_a_repo_may_not_name_a_program_or_a_path_outside_it(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.table_layer("repo", {key: value}, "/r/Cargo.toml:[workspace.metadata.cargo-agent]")
    assert caught.value.message == (f"'{key}' in /r/Cargo.toml:[workspace.metadata.cargo-agent] is not accepted "
                                    "from a repo: it names a program or a path outside the repo")
    setting = config.SETTINGS_BY_KEY[key.replace("-", "_")]
    assert caught.value.help == (f"remove it; to choose it yourself, set {setting.env} or `{setting.key}` in "
                                 "~/.config/cargo-agent/config.toml",)
    assert config.table_layer("user", {key: value}, "u.toml").values[key.replace("-", "_")][0] == value


def test_non_text_value_is_shown_as_written_in_the_error() -> None:
    with pytest.raises(ConfigError) as caught:
        config.table_layer("host", {"slots": [2]}, "/etc/cargo-agent.toml")
    assert caught.value.message == ("invalid value '[2]' for /etc/cargo-agent.toml:slots: "
                                    "expected a whole number >= 1 or 'auto'")


def test_unprintable_value_is_escaped_so_the_error_stays_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        config.env_layer({"CARGO_AGENT_JOBS": "2\nrm -rf /\x1b[0m"})
    assert caught.value.message.startswith("invalid value '2\\nrm -rf /\\x1b[0m' for CARGO_AGENT_JOBS:")


def test_printable_non_ascii_value_is_shown_unescaped() -> None:
    with pytest.raises(ConfigError) as caught:
        config.env_layer({"CARGO_AGENT_JOBS": "zwölf"})
    assert caught.value.message.startswith("invalid value 'zwölf' for CARGO_AGENT_JOBS:")


def test_missing_config_file_is_an_empty_layer_that_does_not_exist(tmp_path: Path) -> None:
    layer = config.file_layer("user", str(tmp_path / "absent.toml"))
    assert (layer.name, layer.values, layer.path, layer.exists) == ("user", {}, str(tmp_path / "absent.toml"), False)


def test_loading_the_settings_imports_nothing_heavy(agent_env: dict[str, str], tmp_path: Path) -> None:
    """config is on the compiling path: no typing, dataclasses, pathlib or re at run time."""
    code = ("import sys; before = set(sys.modules); from cargo_agent import config; "
            f"config.load({{'CARGO_AGENT_CONFIG': {str(tmp_path / 'none.toml')!r}, "
            f"'XDG_CONFIG_HOME': {str(tmp_path)!r}}}); print(sorted(set(sys.modules) - before))")
    # -S: without site, whose .pth files may import typing on their own in a given venv
    result = subprocess.run([sys.executable, "-S", "-c", code], env=agent_env, capture_output=True, text=True,
                            check=True)
    loaded = set(ast.literal_eval(result.stdout))
    assert {"cargo_agent.config", "cargo_agent.locations"} <= loaded
    heavy = {"typing", "dataclasses", "pathlib", "re", "difflib", "subprocess", "threading", "tomllib", "tomli",
             "cargo_agent.tomlfile"}
    assert loaded & heavy == set()


def test_missing_config_file_costs_no_toml_import(agent_env: dict[str, str], tmp_path: Path) -> None:
    code = ("import sys; from cargo_agent import config; "
            f"config.file_layer('user', {str(tmp_path / 'absent.toml')!r}); "
            "print(sorted(m for m in sys.modules if m in ('tomllib', 'tomli', 'cargo_agent.tomlfile')))")
    result = subprocess.run([sys.executable, "-c", code], env=agent_env, capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"


def test_dangling_symlink_as_config_file_is_an_empty_layer(tmp_path: Path) -> None:
    link = tmp_path / "config.toml"
    link.symlink_to(tmp_path / "gone.toml")
    layer = config.file_layer("user", str(link))
    assert (layer.values, layer.exists) == ({}, False)


def test_the_host_file_is_parsed_every_time_other_files_may_come_from_the_parse_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parse cache lives where the user (and so an agent) can write: policy never comes from it."""
    import marshal

    from cargo_agent import tomlfile

    path = tmp_path / "config.toml"
    path.write_text('timeout = "1h"\n')
    info = path.stat()
    forged = tomlfile._Cache()
    forged.entries = {str(path): ((info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns),
                                  marshal.dumps({"timeout": "none"}))}
    monkeypatch.setattr(tomlfile, "_CACHE", forged)
    assert config.file_layer("host", str(path)).values["timeout"][0] == 3600.0
    assert config.file_layer("user", str(path)).values["timeout"][0] is None  # what the cache says


def test_dev_null_as_config_file_is_an_empty_file_that_exists() -> None:
    layer = config.file_layer("host", os.devnull)
    assert (layer.name, layer.values, layer.path, layer.exists) == ("host", {}, os.devnull, True)


def test_config_file_values_carry_the_path_and_key(tmp_path: Path) -> None:
    path = write_tree(tmp_path, {"host.toml": 'slots = 4\nmem-high = "70%"\n'}) / "host.toml"
    layer = config.file_layer("host", str(path))
    assert layer.values == {"slots": (4, f"{path}:slots"), "mem_high": (70.0, f"{path}:mem-high")}
    assert (layer.name, layer.path, layer.exists) == ("host", str(path), True)


def test_empty_config_file_is_an_empty_layer_that_exists(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    layer = config.file_layer("host", str(path))
    assert (layer.values, layer.exists) == ({}, True)


def test_repo_layer_reads_workspace_metadata() -> None:
    manifest = {"workspace": {"metadata": {"cargo-agent": {"allow-unscoped": True}}}}
    layer = config.repo_layer(manifest, "/r/Cargo.toml")
    assert (layer.name, layer.path, layer.exists) == ("repo", "/r/Cargo.toml", True)
    assert layer.values == {"allow_unscoped": (True, "/r/Cargo.toml:[workspace.metadata.cargo-agent]:allow-unscoped")}


def test_repo_layer_reads_package_metadata_of_a_single_package_root() -> None:
    manifest = {"package": {"name": "p", "metadata": {"cargo-agent": {"timeout": "5m"}}}}
    layer = config.repo_layer(manifest, Path("/r/Cargo.toml"))
    assert layer.values == {"timeout": (300.0, "/r/Cargo.toml:[package.metadata.cargo-agent]:timeout")}
    assert (layer.path, layer.exists) == ("/r/Cargo.toml", True)


def test_repo_layer_prefers_workspace_metadata_over_package_metadata() -> None:
    manifest = {"package": {"metadata": {"cargo-agent": {"timeout": "5m"}}},
                "workspace": {"metadata": {"cargo-agent": {"timeout": "1m"}}}}
    assert config.repo_layer(manifest, "/r/Cargo.toml").values["timeout"][0] == 60.0


def test_repo_layer_is_empty_without_metadata_or_manifest() -> None:
    without = config.repo_layer({"package": {"name": "p"}}, "/r/Cargo.toml")
    assert (without.name, without.values, without.exists) == ("repo", {}, False)
    assert config.repo_layer({"workspace": {"metadata": {"other-tool": {}}}}, "/r/Cargo.toml").values == {}
    assert config.repo_layer(None, "/r/Cargo.toml").values == {}
    assert config.repo_layer({"workspace": {"metadata": {"cargo-agent": {"timeout": "1m"}}}}, None).values == {}
    assert config.repo_layer({}, "/r/Cargo.toml").name == "repo"


@pytest.mark.parametrize("manifest", [{"package": {"metadata": 3}}, {"package": {"metadata": ["x"]}},
                                      {"workspace": {"metadata": "x"}},
                                      {"workspace": "members", "package": {"name": "p"}}, {"package": 1}])
def test_metadata_that_is_not_a_table_holds_no_cargo_agent_settings(manifest: dict[str, object]) -> None:
    """cargo accepts any TOML value for `metadata`: it is no cargo-agent table, never a traceback."""
    assert config.repo_layer(manifest, "/r/Cargo.toml").values == {}


def test_package_metadata_is_read_when_the_workspace_table_has_none() -> None:
    manifest = {"workspace": {"metadata": 3}, "package": {"metadata": {"cargo-agent": {"jobs": 2}}}}
    assert config.repo_layer(manifest, "/r/Cargo.toml").values["jobs"][0] == 2


def test_repo_metadata_that_is_not_a_table_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        config.repo_layer({"workspace": {"metadata": {"cargo-agent": "yes"}}}, "/r/Cargo.toml")
    assert caught.value.message == "[workspace.metadata.cargo-agent] in /r/Cargo.toml is not a table"


def test_empty_repo_metadata_table_still_wins_over_package_metadata() -> None:
    manifest = {"package": {"metadata": {"cargo-agent": {"timeout": "5m"}}},
                "workspace": {"metadata": {"cargo-agent": {}}}}
    assert config.repo_layer(manifest, "/r/Cargo.toml").values == {}


# ---- layering ------------------------------------------------------------------------

def layer_of(name: str, **values: object) -> Layer:
    return Layer(name, {key: (value, f"{name}:{key}") for key, value in values.items()})


def test_no_layer_gives_every_default_with_origin_default() -> None:
    merged = config.merge([])
    assert merged.values == {s.key: s.default for s in config.SETTINGS}
    assert set(merged.origins.values()) == {"default"}
    assert merged.host_slots is None and merged.host_lock_dir is None
    assert merged.clamped == {} and merged.host == {} and merged.layers == []


@pytest.mark.parametrize(("present", "winner"), [
    (["environment", "repo", "user", "host"], "environment"),
    (["repo", "user", "host"], "repo"),
    (["user", "host"], "user"),
    (["host"], "host"),
    (["environment", "host"], "environment"),
    (["repo", "host"], "repo"),
])
@pytest.mark.parametrize("key", ["soft_timeout", "timeout"])  # not a limit, and a limit the host allows
def test_precedence_is_environment_repo_user_host(present: list[str], winner: str, key: str) -> None:
    seconds = {"environment": 1.0, "repo": 2.0, "user": 3.0, "host": 4.0}
    merged = config.merge([layer_of(name, **{key: seconds[name]}) for name in present])
    assert merged[key] == seconds[winner]
    assert merged.origins[key] == f"{winner}:{key}"
    assert merged.clamped == {}


def test_a_layer_overrides_only_the_keys_it_sets() -> None:
    merged = config.merge([layer_of("environment", report=True), layer_of("host", timeout=60.0, report=False)])
    assert merged["report"] is True and merged["timeout"] == 60.0
    assert merged["kill_grace"] == 10.0 and merged.origins["kill_grace"] == "default"
    assert merged.host == {"timeout": (60.0, "host:timeout"), "report": (False, "host:report")}


def test_host_slot_count_is_the_ceiling_and_the_value_when_nobody_asks_less() -> None:
    merged = config.merge([layer_of("host", slots=8)])
    assert merged.host_slots == 8 and merged["slots"] == 8 and merged.origins["slots"] == "host:slots"


def test_lowest_slot_request_of_the_other_layers_is_kept_with_its_origin() -> None:
    merged = config.merge([layer_of("environment", slots=3), layer_of("repo", slots=2), layer_of("user", slots=6),
                           layer_of("host", slots=8)])
    assert merged["slots"] == 2 and merged.origins["slots"] == "repo:slots"
    assert merged.host_slots == 8 and merged.clamped == {}


def test_a_higher_slot_request_does_not_replace_a_lower_one_below_it() -> None:
    merged = config.merge([layer_of("environment", slots=6), layer_of("user", slots=2)])
    assert merged["slots"] == 2 and merged.origins["slots"] == "user:slots"
    assert merged.host_slots is None


def test_auto_slot_request_does_not_count_as_a_request() -> None:
    merged = config.merge([layer_of("environment", slots=None), layer_of("user", slots=4)])
    assert merged["slots"] == 4 and merged.origins["slots"] == "user:slots"
    merged = config.merge([layer_of("environment", slots=None)])
    assert merged["slots"] is None and merged.origins["slots"] == "environment:slots"


def test_more_slots_than_the_host_has_are_clamped_to_its_count() -> None:
    merged = config.merge([layer_of("environment", slots=16), layer_of("host", slots=4)])
    assert merged["slots"] == 4 and merged.origins["slots"] == "host:slots"
    assert merged.clamped == {"slots": config.Clamp(16, "environment:slots", "host:slots")}
    assert merged.clamp_warnings() == [
        "warning: cargo-agent: environment:slots asks for 16 slots but the host has 4; using 4"]


def test_auto_host_slots_is_no_ceiling() -> None:
    merged = config.merge([layer_of("user", slots=16), layer_of("host", slots=None)])
    assert merged["slots"] == 16 and merged.host_slots is None and merged.clamped == {}


def test_a_looser_limit_below_the_host_file_is_clamped_to_it() -> None:
    merged = config.merge([layer_of("environment", timeout=3600.0), layer_of("host", timeout=60.0)])
    assert merged["timeout"] == 60.0 and merged.origins["timeout"] == "host:timeout"
    assert merged.clamped == {"timeout": config.Clamp(3600.0, "environment:timeout", "host:timeout")}
    assert merged.clamp_warnings() == [
        "warning: cargo-agent: environment:timeout asks for timeout = 1h but the host policy (host:timeout) "
        "allows 1m; using that"]
    assert merged.explain("timeout") == ("timeout = 1m (from host:timeout); clamped by host policy: "
                                         "environment:timeout asked for 1h")


def test_no_limit_below_a_host_limit_is_clamped_to_it() -> None:
    merged = config.merge([layer_of("repo", timeout=None), layer_of("host", timeout=60.0)])
    assert merged["timeout"] == 60.0 and "timeout" in merged.clamped


def test_a_stricter_limit_below_the_host_file_is_kept_without_a_clamp() -> None:
    merged = config.merge([layer_of("user", timeout=30.0, per_build_memory=16 * G),
                           layer_of("host", timeout=60.0, per_build_memory=8 * G)])
    assert merged["timeout"] == 30.0 and merged.origins["timeout"] == "user:timeout"
    assert merged["per_build_memory"] == 16 * G
    assert merged.clamped == {} and merged.clamp_warnings() == []
    assert merged.explain("timeout") == "timeout = 30s (from user:timeout)"


def test_less_memory_per_build_than_the_host_assumes_is_raised_to_it() -> None:
    merged = config.merge([layer_of("environment", per_build_memory=1 * G), layer_of("host", per_build_memory=8 * G)])
    assert merged["per_build_memory"] == 8 * G and "per_build_memory" in merged.clamped


def test_a_rule_the_host_keeps_on_stays_on() -> None:
    merged = config.merge([layer_of("repo", allow_unscoped=True), layer_of("host", allow_unscoped=False)])
    assert merged["allow_unscoped"] is False and merged.origins["allow_unscoped"] == "host:allow_unscoped"
    assert merged.host_forbids("allow_unscoped") == "host:allow_unscoped"


def test_a_rule_the_host_allows_may_be_turned_off_or_kept_on_below() -> None:
    merged = config.merge([layer_of("repo", allow_unscoped=True, allow_all_targets=False),
                           layer_of("host", allow_unscoped=True, allow_all_targets=True)])
    assert merged["allow_unscoped"] is True and merged["allow_all_targets"] is False
    assert merged.clamped == {}
    assert merged.host_forbids("allow_unscoped") is None and merged.host_forbids("allow_all_features_tests") is None


def test_only_exemptions_the_host_grants_survive() -> None:
    merged = config.merge([layer_of("user", limit_as_exempt=("fuzz", "build")),
                           layer_of("host", limit_as_exempt=("fuzz", "miri"))])
    assert merged["limit_as_exempt"] == ("fuzz",)
    assert merged.origins["limit_as_exempt"] == "user:limit_as_exempt within host:limit_as_exempt"
    assert merged.clamped["limit_as_exempt"] == config.Clamp(("fuzz", "build"), "user:limit_as_exempt",
                                                              "host:limit_as_exempt")


def test_scoped_subcommands_below_the_host_add_to_its_list() -> None:
    merged = config.merge([layer_of("environment", scoped_subcommands=("build",)),
                           layer_of("host", scoped_subcommands=("test", "bench"))])
    assert merged["scoped_subcommands"] == ("test", "bench", "build")
    assert merged.origins["scoped_subcommands"] == "environment:scoped_subcommands within host:scoped_subcommands"


def test_host_lock_dir_cannot_be_moved_by_lower_trust_layers() -> None:
    merged = config.merge([layer_of("environment", lock_dir="/tmp/mine"), layer_of("user", lock_dir="/home/u/l"),
                           layer_of("host", lock_dir="/srv/locks")])
    assert merged["lock_dir"] == "/srv/locks" and merged.origins["lock_dir"] == "host:lock_dir"
    assert merged.host_lock_dir == "/srv/locks"
    assert merged.clamped["lock_dir"] == config.Clamp("/tmp/mine", "environment:lock_dir", "host:lock_dir")


def test_lock_dir_follows_precedence_when_the_host_sets_none() -> None:
    merged = config.merge([layer_of("environment", lock_dir="/tmp/mine"), layer_of("user", lock_dir="/home/u/l")])
    assert merged["lock_dir"] == "/tmp/mine" and merged.origins["lock_dir"] == "environment:lock_dir"
    assert merged.host_lock_dir is None


def test_a_setting_that_is_not_a_limit_is_not_clamped() -> None:
    merged = config.merge([layer_of("environment", soft_timeout=3600.0, report=True),
                           layer_of("host", soft_timeout=60.0, report=False)])
    assert merged["soft_timeout"] == 3600.0 and merged["report"] is True and merged.clamped == {}


def test_baseline_is_the_host_value_or_the_default() -> None:
    merged = config.merge([layer_of("environment", slots=2, mem_high=50.0), layer_of("host", slots=6)])
    assert merged.baseline("slots") == 6
    assert merged.baseline("mem_high") == 85.0


def test_explain_names_a_default() -> None:
    assert config.merge([]).explain("report") == "report = false (default)"


def test_merge_keeps_the_layers_it_was_given() -> None:
    layers = [layer_of("environment", jobs=2), layer_of("host")]
    assert config.merge(layers).layers == layers


def test_config_is_indexed_by_key() -> None:
    merged = config.merge([layer_of("user", jobs=3)])
    assert merged["jobs"] == 3 == merged.values["jobs"]
    with pytest.raises(KeyError):
        merged["nope"]


def test_clamps_compare_by_value_and_show_what_was_asked() -> None:
    clamp = config.Clamp(16, "CARGO_AGENT_SLOTS", "/etc/cargo-agent.toml:slots")
    assert clamp == config.Clamp(16, "CARGO_AGENT_SLOTS", "/etc/cargo-agent.toml:slots")
    assert clamp != config.Clamp(15, "CARGO_AGENT_SLOTS", "/etc/cargo-agent.toml:slots")
    assert clamp != config.Clamp(16, "CARGO_AGENT_JOBS", "/etc/cargo-agent.toml:slots")
    assert clamp != config.Clamp(16, "CARGO_AGENT_SLOTS", "/etc/other.toml:slots")
    assert clamp != (16, "CARGO_AGENT_SLOTS", "/etc/cargo-agent.toml:slots")
    assert repr(clamp) == "Clamp(16, 'CARGO_AGENT_SLOTS', '/etc/cargo-agent.toml:slots')"


def test_a_memory_kill_level_below_the_admission_level_is_an_error_naming_both() -> None:
    merged = config.merge([layer_of("environment", mem_kill=70.0), layer_of("user", mem_high=80.5)])
    with pytest.raises(ConfigError) as caught:
        config.check(merged)
    assert caught.value.message == ("mem_kill 70% (environment:mem_kill) is below mem_high 80.5% (user:mem_high): "
                                    "expected mem_kill >= mem_high, or mem_kill 'off'")


def test_memory_kill_level_equal_to_admission_or_off_is_fine() -> None:
    config.check(config.merge([layer_of("environment", mem_kill=80.0, mem_high=80.0)]))
    config.check(config.merge([layer_of("environment", mem_kill=None, mem_high=99.0)]))


@pytest.fixture
def no_etc_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where /etc/cargo-agent.toml would be, for this process: absent unless a test writes it."""
    path = tmp_path / "etc-cargo-agent.toml"
    monkeypatch.setattr(locations, "DEFAULT_HOST_CONFIG", str(path))
    return path


def test_load_reads_environment_repo_user_and_host_files(tmp_path: Path, no_etc_file: Path) -> None:
    host = write_tree(tmp_path, {"host.toml": 'kill-grace = "4s"\nsoft-timeout = "4s"\nslots = 8\n'
                                              'lock-dir = "/srv/locks"\nretries = 4\nmem-high = 70\n'}) / "host.toml"
    write_tree(tmp_path / "xdg", {"cargo-agent/config.toml": 'timeout = "3s"\nkill-grace = "3s"\nslots = 5\n'
                                                             'jobs = 3\nmem-high = 60\n'})
    env = {"CARGO_AGENT_CONFIG": str(host), "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "CARGO_AGENT_TIMEOUT": "1s",
           "CARGO_AGENT_LOCK_DIR": "/tmp/elsewhere"}
    manifest = {"workspace": {"metadata": {"cargo-agent": {"timeout": "2s", "kill-grace": "2s", "jobs": 2}}}}
    merged = config.load(env, manifest, tmp_path / "Cargo.toml")
    assert merged["timeout"] == 1.0 and merged.origins["timeout"] == "CARGO_AGENT_TIMEOUT"
    assert merged["kill_grace"] == 2.0 and merged["jobs"] == 2
    assert merged["soft_timeout"] == 4.0 and merged.origins["soft_timeout"] == f"{host}:soft-timeout"
    assert merged["retries"] == 4
    user_file = tmp_path / "xdg" / "cargo-agent" / "config.toml"
    assert merged["mem_high"] == 60.0 and merged.origins["mem_high"] == f"{user_file}:mem-high"
    assert merged["slots"] == 5 and merged.host_slots == 8
    assert merged["lock_dir"] == "/srv/locks"
    assert merged.origins["jobs"] == f"{tmp_path / 'Cargo.toml'}:[workspace.metadata.cargo-agent]:jobs"
    assert [layer.name for layer in merged.layers] == ["environment", "repo", "user", "host"]


def test_with_an_etc_file_the_named_file_is_one_more_lower_layer(tmp_path: Path, no_etc_file: Path) -> None:
    no_etc_file.write_text('timeout = "1m"\n')
    named = write_tree(tmp_path, {"named.toml": 'timeout = "1h"\nreport = true\n'}) / "named.toml"
    merged = config.load({"CARGO_AGENT_CONFIG": str(named), "XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert [layer.name for layer in merged.layers] == ["environment", "named", "repo", "user", "host"]
    assert merged["report"] is True and merged.origins["report"] == f"{named}:report"
    assert merged["timeout"] == 60.0 and merged.origins["timeout"] == f"{no_etc_file}:timeout"


def test_load_checks_the_merged_settings(tmp_path: Path, no_etc_file: Path) -> None:
    env = {"CARGO_AGENT_CONFIG": str(tmp_path / "none.toml"), "XDG_CONFIG_HOME": str(tmp_path / "none"),
           "CARGO_AGENT_MEM_KILL": "50"}
    with pytest.raises(ConfigError, match=r"mem_kill 50% .* is below mem_high 85%"):
        config.load(env)


def test_load_without_files_or_variables_is_the_defaults(tmp_path: Path, no_etc_file: Path) -> None:
    env = {"CARGO_AGENT_CONFIG": str(tmp_path / "none.toml"), "XDG_CONFIG_HOME": str(tmp_path / "none")}
    assert config.load(env).values == {s.key: s.default for s in config.SETTINGS}


def test_config_file_paths_come_from_the_environment(no_etc_file: Path) -> None:
    assert config.host_config_path({}) == str(no_etc_file)
    assert config.host_config_path({"CARGO_AGENT_CONFIG": "/srv/ca.toml"}) == "/srv/ca.toml"
    assert config.user_config_path({"XDG_CONFIG_HOME": "/x"}) == "/x/cargo-agent/config.toml"
    assert config.user_config_path({"HOME": "/home/u"}) == "/home/u/.config/cargo-agent/config.toml"
    no_etc_file.write_text("")
    assert config.host_config_path({"CARGO_AGENT_CONFIG": "/srv/ca.toml"}) == str(no_etc_file)


# ---- the parsers against the regular expressions they were written from -----------------
# config.py parses with str methods (importing `re` costs a compiling command milliseconds);
# these references are the grammar as it was written with `re`, and the parsers must agree.

def _reference_size(text: str) -> tuple[str, str] | None:
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgtpe])(?:i?b)?", text.lower())
    return (match.group(1), match.group(2)) if match else None


_REFERENCE_PART = r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)"


def _reference_duration(text: str) -> float | None:
    text = text.lower().replace(" ", "")
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return float(text)
    if text and re.fullmatch(f"(?:{_REFERENCE_PART})+", text):
        return sum(float(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[u]
                   for n, u in re.findall(_REFERENCE_PART, text))
    return None


def _examples(*texts: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Hypothesis examples always tried: the forms the grammar turns on."""
    def apply(test: Callable[..., None]) -> Callable[..., None]:
        for text in texts:
            test = example(text)(test)
        return test
    return apply


# Strings made of the grammar's own pieces (and a few strangers), so that near misses are common.
_GRAMMAR = st.lists(st.sampled_from(["1", "0", "7", "25", ".", "5", "ms", "s", "m", "h", "d", "k", "K", "g", "e",
                                     "t", "p", "ib", "iB", "b", " ", "\t", "%", "-", "²", "x"]),
                    max_size=6).map("".join)


def _outcome(parse: Callable[[object], object], text: str) -> object:
    try:
        return parse(text)
    except ValueError:
        return "refused"


@settings(max_examples=600, deadline=None)
@given(_GRAMMAR)
@_examples("5k", "5 k", "5kib", "5kb", "5ib", "5b", ".5k", "1.5.2k", "5k b", "kib", "5eb", "2.5g", "5\tk")
def test_parse_size_reads_exactly_the_size_grammar(text: str) -> None:
    if text.lower().strip() in ("unlimited", "none", "infinity"):
        return
    reference = _reference_size(text.strip())
    if reference is None:
        assert _outcome(config.parse_size, text) == "refused"
    else:
        number, unit = reference
        scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}[unit]
        size = int(float(number) * scale) if "." in number else int(number) * scale
        assert _outcome(config.parse_size, text) == (size if 1 <= size <= config.SIZE_MAX else "refused")


@settings(max_examples=600, deadline=None)
@given(_GRAMMAR)
@_examples("1ms", "1h30m", "1ms5s", ".5s", "1.5.2s", "2.5", "1m s", "5", "0", "0s", "1hh", "s", "1 h 30 m", "1.s")
def test_parse_duration_reads_exactly_the_duration_grammar(text: str) -> None:
    if text.lower().replace(" ", "").strip() in ("none", "off", "unlimited"):
        return
    seconds = _reference_duration(text.strip())
    expected = seconds if seconds is not None and seconds > 0 else "refused"
    got = _outcome(config.parse_duration, text)
    assert got == expected or (isinstance(got, float) and isinstance(expected, float)
                               and math.isclose(got, expected)), (text, got, expected)


@settings(max_examples=400, deadline=None)
@given(_GRAMMAR)
def test_counts_and_percents_read_exactly_their_grammar(text: str) -> None:
    stripped = text.strip()
    whole = re.fullmatch(r"[0-9]+", stripped)
    assert _outcome(config.parse_positive_int, text) == (int(stripped) if whole and int(stripped) >= 1
                                                         else "refused")
    percent_text = stripped.removesuffix("%").strip()
    value = float(percent_text) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", percent_text) else -1.0
    assert _outcome(config.parse_percent, text) == (value if 0 < value <= 100 else "refused")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="abz09_- ", max_size=12))
def test_subcommand_lists_take_exactly_one_or_two_words(text: str) -> None:
    valid = re.fullmatch(r"[a-z0-9][a-z0-9_-]*( [a-z0-9][a-z0-9_-]*)?", text)
    assert config._subcommand(text) == bool(valid)
