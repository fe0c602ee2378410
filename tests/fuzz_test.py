"""Hypothesis over the config loader and the lint scanner: only the project's own errors."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cargo_agent import config, lint
from cargo_agent.errors import CargoAgentError, ConfigError

KEYS = [s.key for s in config.SETTINGS] + [s.key.replace("_", "-") for s in config.SETTINGS] + ["bogus"]
SCALARS = st.one_of(st.text(max_size=12), st.integers(-5, 10**12), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False), st.none())
VALUES = st.one_of(SCALARS, st.lists(st.one_of(st.text(max_size=8), st.integers()), max_size=3),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
@settings(max_examples=300, deadline=None)
def test_config_table_gives_a_config_or_a_config_error(table: dict[str, object]) -> None:
    clean = {k: v for k, v in table.items() if v is not None}
    try:
        layer = config.table_layer("host", clean, "/etc/cargo-agent.toml")
        config.merge([layer])
    except ConfigError as err:
        assert err.exit_code == 2 and "\n" not in err.message


@given(st.dictionaries(st.sampled_from([s.env for s in config.SETTINGS]), st.text(max_size=12), max_size=5))
@settings(max_examples=300, deadline=None)
def test_env_values_give_a_config_or_a_config_error(env: dict[str, str]) -> None:
    clean = {k: v.replace("\x00", "") for k, v in env.items()}
    try:
        config.merge([config.env_layer(clean)])
    except ConfigError as err:
        assert err.exit_code == 2 and "\n" not in err.message


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_toml_files_give_a_layer_or_an_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.toml"
        path.write_text(text.replace("\x00", ""), encoding="utf-8")
        try:
            config.file_layer("user", path)
        except CargoAgentError as err:
            assert err.exit_code == 2


SHELLISH = st.lists(st.one_of(
    st.sampled_from(["cargo", "cargo-agent", "test", "build", "-p", "x", "--all-targets", "&&", "|", ";", "$(",
                     ")", "`", "\\", "\n", "'", '"', "#", "env", "X=1", "sudo", "xargs", "--", "+nightly",
                     "```", "```sh", "```console", "$ ", "run: |", "  - run:", "RUN", "\t"]),
    st.text(max_size=6)), max_size=30).map(" ".join)


@given(SHELLISH, st.sampled_from(["a.md", "s.sh", "Makefile", "justfile", "Dockerfile", "ci.yml"]))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_lint_scanner_never_raises(text: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_text(text, encoding="utf-8")
        for finding in lint.lint_file(path):
            assert finding.code in lint.RULES and finding.line >= 1 and finding.col >= 1
