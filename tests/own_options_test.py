"""cargo-agent's own options: what each combination asks for, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from cargo_agent import own_options
from cargo_agent.errors import UsageError


@pytest.mark.parametrize(("own", "rest", "command", "as_json", "dry_run"), [
    (["--status"], [], "status", False, False),
    (["--status", "--json"], [], "status", True, False),
    (["--json", "--status"], [], "status", True, False),
    (["--doctor"], [], "doctor", False, False),
    (["--agent-version"], [], "version", False, False),
    (["--dry-run"], ["build"], None, False, True),
    (["--dry-run", "--json"], ["test", "-p", "a"], None, True, True),
    (["--agent-help"], [], "help", False, False),
])
def test_accepted_combinations(own: list[str], rest: list[str], command: str | None, as_json: bool,
                               dry_run: bool) -> None:
    options = own_options.parse(own, rest)
    assert (options.command, options.as_json, options.dry_run) == (command, as_json, dry_run)


def test_install_shim_takes_its_directory() -> None:
    options = own_options.parse(["--install-shim", "/tmp/shim-dir"], [])
    assert options.command == "install-shim" and options.shim_dir == Path("/tmp/shim-dir")


@pytest.mark.parametrize(("own", "rest", "message"), [
    (["--json"], [], "unexpected argument '--json': it applies only to --status and --dry-run"),
    (["--json"], ["build"], "unexpected argument '--json': it applies only to --status and --dry-run"),
    (["--doctor", "--json"], [], "unexpected argument '--json': it applies only to --status and --dry-run"),
    (["--doctor"], ["build"], "unexpected argument 'build' after --doctor: it takes no cargo command"),
    (["--status"], ["build", "-p", "x"], "unexpected argument 'build' after --status: it takes no cargo command"),
    (["--agent-version"], ["--"], "unexpected argument '--' after --agent-version: it takes no cargo command"),
    (["--install-shim", "/tmp/d"], ["x"], "unexpected argument 'x' after --install-shim: it takes no cargo command"),
    (["--status"], ["a\nb"], "unexpected argument 'a\\nb' after --status: it takes no cargo command"),
    (["--status", "--doctor"], [], "--status and --doctor cannot be used together"),
    (["--dry-run", "--status"], [],
     "unexpected argument '--dry-run' with --status: it applies to a cargo command only"),
])
def test_refused_combinations_name_the_unexpected_argument(own: list[str], rest: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        own_options.parse(own, rest)
    assert caught.value.message == message and caught.value.exit_code == 2


def test_a_missing_value_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--install-shim"):
        own_options.parse(["--install-shim"], [])


def test_help_shows_usage_settings_table_and_docs() -> None:
    text = own_options.help_text()
    assert text.startswith("Usage: cargo-agent [OPTIONS] [CARGO ARGS]...\n")
    for option in ("--dry-run", "--json", "--status", "--doctor", "--install-shim", "--agent-version",
                   "--agent-help"):
        assert option in text
    assert "\n  --help " not in text  # not an own option: cargo's --help is cargo's
    assert "CARGO_AGENT_*" in text and "docs/configuration.md" in text
    assert f"Docs: {own_options.docs_location()}" in text


def test_docs_location_is_the_checkouts_docs_dir() -> None:
    docs = Path(own_options.docs_location())
    assert (docs / "configuration.md").is_file() and (docs / "errors.md").is_file()
