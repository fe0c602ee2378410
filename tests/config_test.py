"""Settings: each kind of value parsed right (not only rejected when bad), and the layering of
environment, repo, user file, host file and defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_tree

from cargo_agent import config
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


@pytest.mark.parametrize("raw", ["1" * 400, "99999999999999999999T", "9" * 19 + "G"])
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


@pytest.mark.parametrize("raw", ["", "kept", "clear sccache", "clear-", True, 1])
def test_choice_rejects_anything_else(raw: object) -> None:
    assert rejects(config.choice("keep", "clear-sccache", "clear"), raw)


def test_path_expands_the_home_directory_and_trims() -> None:
    assert config.parse_path("~/locks") == os.path.expanduser("~/locks") != "~/locks"
    assert config.parse_path(" /srv/locks ") == "/srv/locks"


@pytest.mark.parametrize("raw", ["", "   ", None, ["/a"]])
def test_path_rejects_empty_and_non_text(raw: object) -> None:
    assert rejects(config.parse_path, raw)


# ---- the table -----------------------------------------------------------------------

def test_settings_table_has_fixed_fields_and_a_fixed_length() -> None:
    """Plain classes with __slots__ (config.py is on the compiling path, so no dataclasses): a
    misspelt field is an error, not a new attribute, and the table itself is a tuple."""
    setting = config.SETTINGS[0]
    with pytest.raises(AttributeError):
        setting.defualt = 1  # type: ignore[attr-defined]
    assert isinstance(config.SETTINGS, tuple)
    assert not hasattr(setting, "__dict__")


def test_every_env_var_is_the_key_in_capitals() -> None:
    assert all(s.env == "CARGO_AGENT_" + s.key.upper() for s in config.SETTINGS)
    assert list(config.SETTINGS_BY_KEY) == [s.key for s in config.SETTINGS]


@pytest.mark.parametrize("setting", config.SETTINGS, ids=[s.key for s in config.SETTINGS])
def test_every_default_is_a_value_its_parser_could_give(setting: config.Setting) -> None:
    default = setting.default
    if default is None:
        return
    shown = ",".join(default) if isinstance(default, tuple) else default
    if setting.parse in (config.parse_size, config.parse_size_required, config.parse_limit_as):
        shown = f"{default >> 10}k"  # a size needs a unit
    assert setting.parse(shown) == default


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
    assert all(defaults[k] is None for k in ("slots", "lock_dir", "wait_timeout", "jobs", "test_threads",
                                             "link_threads", "timeout", "soft_timeout", "cargo"))


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


def test_unknown_key_is_an_error_listing_every_known_key() -> None:
    with pytest.raises(ConfigError) as caught:
        config.table_layer("host", {"slotz": 2}, "/etc/cargo-agent.toml")
    assert caught.value.message == "unknown key 'slotz' in /etc/cargo-agent.toml; did you mean 'slots'?"
    assert caught.value.help == ("known keys: " + ", ".join(s.key for s in config.SETTINGS),)


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


def test_missing_config_file_is_an_empty_layer(tmp_path: Path) -> None:
    layer = config.file_layer("user", tmp_path / "absent.toml")
    assert (layer.name, layer.values) == ("user", {})


def test_missing_config_file_costs_no_toml_import(agent_env: dict[str, str], tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from cargo_agent import config; "
            f"config.file_layer('user', Path({str(tmp_path / 'absent.toml')!r})); "
            "print(sorted(m for m in sys.modules if m in ('tomllib', 'tomli', 'cargo_agent.tomlfile')))")
    result = subprocess.run([sys.executable, "-c", code], env=agent_env, capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"


def test_dangling_symlink_as_config_file_is_an_empty_layer(tmp_path: Path) -> None:
    link = tmp_path / "config.toml"
    link.symlink_to(tmp_path / "gone.toml")
    assert config.file_layer("user", link).values == {}


def test_config_file_values_carry_the_path_and_key(tmp_path: Path) -> None:
    path = write_tree(tmp_path, {"host.toml": 'slots = 4\nmem-high = "70%"\n'}) / "host.toml"
    layer = config.file_layer("host", path)
    assert layer.values == {"slots": (4, f"{path}:slots"), "mem_high": (70.0, f"{path}:mem-high")}


def test_empty_config_file_is_an_empty_layer(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    assert config.file_layer("host", path).values == {}


def test_repo_layer_reads_workspace_metadata() -> None:
    manifest = {"workspace": {"metadata": {"cargo-agent": {"allow-unscoped": True}}}}
    layer = config.repo_layer(manifest, Path("/r/Cargo.toml"))
    assert layer.name == "repo"
    assert layer.values == {"allow_unscoped": (True, "/r/Cargo.toml:[workspace.metadata.cargo-agent]:allow-unscoped")}


def test_repo_layer_reads_package_metadata_of_a_single_package_root() -> None:
    manifest = {"package": {"name": "p", "metadata": {"cargo-agent": {"timeout": "5m"}}}}
    layer = config.repo_layer(manifest, Path("/r/Cargo.toml"))
    assert layer.values == {"timeout": (300.0, "/r/Cargo.toml:[package.metadata.cargo-agent]:timeout")}


def test_repo_layer_prefers_workspace_metadata_over_package_metadata() -> None:
    manifest = {"package": {"metadata": {"cargo-agent": {"timeout": "5m"}}},
                "workspace": {"metadata": {"cargo-agent": {"timeout": "1m"}}}}
    assert config.repo_layer(manifest, Path("/r/Cargo.toml")).values["timeout"][0] == 60.0


def test_repo_layer_is_empty_without_metadata_or_manifest() -> None:
    assert config.repo_layer({"package": {"name": "p"}}, Path("/r/Cargo.toml")).values == {}
    assert config.repo_layer({"workspace": {"metadata": {"other-tool": {}}}}, Path("/r/Cargo.toml")).values == {}
    assert config.repo_layer(None, Path("/r/Cargo.toml")).values == {}
    assert config.repo_layer({"workspace": {"metadata": {"cargo-agent": {"timeout": "1m"}}}}, None).values == {}
    assert config.repo_layer({}, Path("/r/Cargo.toml")).name == "repo"


def test_repo_metadata_that_is_not_a_table_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        config.repo_layer({"workspace": {"metadata": {"cargo-agent": "yes"}}}, Path("/r/Cargo.toml"))
    assert caught.value.message == "[workspace.metadata.cargo-agent] in /r/Cargo.toml is not a table"


def test_empty_repo_metadata_table_still_wins_over_package_metadata() -> None:
    manifest = {"package": {"metadata": {"cargo-agent": {"timeout": "5m"}}},
                "workspace": {"metadata": {"cargo-agent": {}}}}
    assert config.repo_layer(manifest, Path("/r/Cargo.toml")).values == {}


# ---- layering ------------------------------------------------------------------------

def layer_of(name: str, **values: object) -> Layer:
    return Layer(name, {key: (value, f"{name}:{key}") for key, value in values.items()})


def test_no_layer_gives_every_default_with_origin_default() -> None:
    merged = config.merge([])
    assert merged.values == {s.key: s.default for s in config.SETTINGS}
    assert set(merged.origins.values()) == {"default"}
    assert merged.host_slots is None and merged.host_lock_dir is None


@pytest.mark.parametrize(("present", "winner"), [
    (["environment", "repo", "user", "host"], "environment"),
    (["repo", "user", "host"], "repo"),
    (["user", "host"], "user"),
    (["host"], "host"),
    (["environment", "host"], "environment"),
    (["repo", "host"], "repo"),
])
def test_precedence_is_environment_repo_user_host(present: list[str], winner: str) -> None:
    seconds = {"environment": 1.0, "repo": 2.0, "user": 3.0, "host": 4.0}
    merged = config.merge([layer_of(name, timeout=seconds[name]) for name in present])
    assert merged["timeout"] == seconds[winner]
    assert merged.origins["timeout"] == f"{winner}:timeout"


def test_a_layer_overrides_only_the_keys_it_sets() -> None:
    merged = config.merge([layer_of("environment", report=True), layer_of("host", timeout=60.0, report=False)])
    assert merged["report"] is True and merged["timeout"] == 60.0
    assert merged["kill_grace"] == 10.0 and merged.origins["kill_grace"] == "default"


def test_host_slot_count_is_the_value_when_no_lower_layer_asks() -> None:
    merged = config.merge([layer_of("host", slots=8)])
    assert merged.host_slots == 8
    assert merged["slots"] == 8 and merged.origins["slots"] == "host:slots"
    assert merged.clamped == {}


def test_host_slot_count_is_the_ceiling_for_a_lower_request() -> None:
    merged = config.merge([layer_of("environment", slots=12), layer_of("host", slots=8)])
    assert merged["slots"] == 8 and merged.origins["slots"] == "host:slots"
    assert merged.clamped == {"slots": config.Clamp(12, "environment:slots", "host:slots")}


def test_lowest_slot_request_of_the_other_layers_is_kept_with_its_origin() -> None:
    merged = config.merge([layer_of("environment", slots=3), layer_of("repo", slots=2), layer_of("user", slots=6),
                           layer_of("host", slots=8)])
    assert merged["slots"] == 2 and merged.origins["slots"] == "repo:slots"
    assert merged.host_slots == 8


def test_a_higher_slot_request_does_not_replace_a_lower_one_below_it() -> None:
    merged = config.merge([layer_of("environment", slots=6), layer_of("user", slots=2)])
    assert merged["slots"] == 2 and merged.origins["slots"] == "user:slots"
    assert merged.host_slots is None


def test_auto_slot_request_does_not_count_as_a_request() -> None:
    merged = config.merge([layer_of("environment", slots=None), layer_of("user", slots=4)])
    assert merged["slots"] == 4 and merged.origins["slots"] == "user:slots"
    merged = config.merge([layer_of("environment", slots=None)])
    assert merged["slots"] is None and merged.origins["slots"] == "environment:slots"


def test_host_lock_dir_cannot_be_moved_by_lower_trust_layers() -> None:
    merged = config.merge([layer_of("environment", lock_dir="/tmp/mine"), layer_of("repo", lock_dir="/repo/locks"),
                           layer_of("host", lock_dir="/srv/locks")])
    assert merged["lock_dir"] == "/srv/locks" and merged.origins["lock_dir"] == "host:lock_dir"
    assert merged.host_lock_dir == "/srv/locks"


def test_lock_dir_follows_precedence_when_the_host_sets_none() -> None:
    merged = config.merge([layer_of("environment", lock_dir="/tmp/mine"), layer_of("user", lock_dir="/home/u/locks")])
    assert merged["lock_dir"] == "/tmp/mine" and merged.origins["lock_dir"] == "environment:lock_dir"
    assert merged.host_lock_dir is None


def test_config_is_indexed_by_key() -> None:
    merged = config.merge([layer_of("user", jobs=3)])
    assert merged["jobs"] == 3 == merged.values["jobs"]
    with pytest.raises(KeyError):
        merged["nope"]


def test_load_reads_environment_user_and_host_files(tmp_path: Path) -> None:
    host = write_tree(tmp_path, {"host.toml": 'timeout = "4s"\nkill-grace = "4s"\nsoft-timeout = "4s"\nslots = 8\n'
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


def test_load_without_files_or_variables_is_the_defaults(tmp_path: Path) -> None:
    env = {"CARGO_AGENT_CONFIG": str(tmp_path / "none.toml"), "XDG_CONFIG_HOME": str(tmp_path / "none")}
    assert config.load(env).values == {s.key: s.default for s in config.SETTINGS}


def test_config_file_paths_come_from_the_environment(tmp_path: Path) -> None:
    assert config.host_config_path({}) == "/etc/cargo-agent.toml"
    assert config.host_config_path({"CARGO_AGENT_CONFIG": "/srv/ca.toml"}) == "/srv/ca.toml"
    assert config.user_config_path({"XDG_CONFIG_HOME": "/x"}) == "/x/cargo-agent/config.toml"
    assert config.user_config_path({"HOME": "/home/u"}) == "/home/u/.config/cargo-agent/config.toml"


def test_a_shown_limit_as_parses_back_to_itself() -> None:
    """--dry-run and --doctor show limit_as with a unit, so the value shown can be set again."""
    for size in (256 << 20, 4 << 30, 12 << 30):
        assert config.parse_limit_as(config.shown("limit_as", size)) == size


@pytest.mark.parametrize("manifest", [{"package": {"metadata": 3}}, {"workspace": {"metadata": "x"}},
                                      {"package": 1}])
def test_metadata_that_is_not_a_table_holds_no_cargo_agent_settings(manifest: dict[str, object]) -> None:
    """cargo accepts any TOML value for `metadata`: it is no cargo-agent table, never a traceback."""
    assert config.repo_layer(manifest, "/repo/Cargo.toml").values == {}
