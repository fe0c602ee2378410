"""Toolchain pinning with real rustup: a linked test toolchain instead of any download."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import RunAgent, write_tree

from cargo_agent import toolchain
from cargo_agent.errors import UsageError

LINKED = "cargo-agent-test-tc"


@pytest.fixture(scope="session")
def linked_toolchain() -> str:
    """`rustup toolchain link` a named toolchain from the installed stable one."""
    stable = subprocess.run(["rustup", "run", "stable", "rustc", "--print", "sysroot"], capture_output=True,
                            text=True, check=True).stdout.strip()
    subprocess.run(["rustup", "toolchain", "link", LINKED, stable], check=True, capture_output=True)
    return LINKED


def _version(toolchain_name: str, env: dict[str, str]) -> str:
    env = {**env, "RUSTUP_TOOLCHAIN": toolchain_name}
    return subprocess.run(["cargo", "--version"], capture_output=True, text=True, env=env, check=True).stdout


def test_file_pin_beats_inherited_rustup_toolchain(tmp_path: Path, run_agent: RunAgent, agent_env: dict[str, str],
                                                   linked_toolchain: str) -> None:
    root = write_tree(tmp_path / "pinned", {"rust-toolchain.toml": f'[toolchain]\nchannel = "{linked_toolchain}"\n'})
    result = run_agent("--version", cwd=root, extra_env={"RUSTUP_TOOLCHAIN": "nightly"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == _version("stable", agent_env)
    assert result.stdout != _version("nightly", agent_env)


def test_plus_toolchain_beats_the_file(tmp_path: Path, run_agent: RunAgent, agent_env: dict[str, str],
                                       linked_toolchain: str) -> None:
    root = write_tree(tmp_path / "pinned", {"rust-toolchain.toml": f'[toolchain]\nchannel = "{linked_toolchain}"\n'})
    result = run_agent("+nightly", "--version", cwd=root)
    assert result.stdout == _version("nightly", agent_env)


def test_pin_applies_to_a_real_build(tmp_path: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str],
                                     linked_toolchain: str) -> None:
    from conftest import crate

    root = write_tree(tmp_path / "pinned", {**crate("pinned"), "rust-toolchain": f"{linked_toolchain}\n"})
    result = run_agent("build", cwd=root / "src", env=fake_cargo_env, extra_env={"RUSTUP_TOOLCHAIN": "nightly"})
    assert result.returncode == 0, result.stderr
    env_line = next(line for line in Path(fake_cargo_env["FAKE_LOG"]).read_text().splitlines()
                    if line.startswith("env "))
    seen = json.loads(env_line[4:])
    assert seen["RUSTUP_TOOLCHAIN"] == linked_toolchain and seen["RUSTUP_AUTO_INSTALL"] == "0"


def test_manifest_path_decides_where_the_pin_is_looked_for(tmp_path: Path, linked_toolchain: str) -> None:
    write_tree(tmp_path / "elsewhere", {"rust-toolchain.toml": '[toolchain]\nchannel = "nightly"\n'})
    assert toolchain.choose(None, tmp_path / "elsewhere").name == "nightly"
    assert toolchain.choose(None, tmp_path).name != "nightly"


def test_legacy_file_wins_over_toml_in_one_dir(tmp_path: Path) -> None:
    write_tree(tmp_path, {"rust-toolchain": "nightly\n", "rust-toolchain.toml": '[toolchain]\nchannel = "stable"\n'})
    assert toolchain.choose(None, tmp_path).name == "nightly"


def test_path_toolchain(tmp_path: Path) -> None:
    write_tree(tmp_path, {"rust-toolchain.toml": '[toolchain]\npath = "tc"\n'})
    assert toolchain.choose(None, tmp_path).name == str(tmp_path / "tc")


def test_missing_toolchain_is_exit_2_before_building(tmp_path: Path, run_agent: RunAgent,
                                                     fake_cargo_env: dict[str, str]) -> None:
    from conftest import crate

    root = write_tree(tmp_path / "pinned", {**crate("p"), "rust-toolchain.toml": '[toolchain]\nchannel = "1.2.3"\n'})
    result = run_agent("build", cwd=root, env=fake_cargo_env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (f"error: toolchain '1.2.3' (from {root}/rust-toolchain.toml) "
                                             "is not installed")
    assert "help: rustup toolchain install 1.2.3" in result.stderr
    assert not Path(fake_cargo_env["FAKE_LOG"]).exists()


def test_missing_plus_toolchain_is_exit_2(tmp_path: Path, run_agent: RunAgent) -> None:
    result = run_agent("+1.2.3", "--version", cwd=tmp_path)
    assert result.returncode == 2 and "toolchain '1.2.3' (from the command line) is not installed" in result.stderr


@pytest.mark.parametrize(("name", "text", "problem"), [
    ("rust-toolchain.toml", "[toolchain\n", "malformed toolchain file"),
    ("rust-toolchain.toml", "[other]\nx = 1\n", "no [toolchain] table"),
    ("rust-toolchain.toml", '[toolchain]\nchannel = "stable"\npath = "/x"\n', "cannot both be set"),
    ("rust-toolchain.toml", "[toolchain]\nchannel = 3\n", "needs a `channel` or `path` string"),
    ("rust-toolchain", "two words\nand lines\n", "malformed toolchain file"),
])
def test_malformed_toolchain_file_is_exit_2(tmp_path: Path, run_agent: RunAgent, name: str, text: str,
                                            problem: str) -> None:
    write_tree(tmp_path, {name: text})
    result = run_agent("--version", cwd=tmp_path)
    assert result.returncode == 2 and problem in result.stderr and str(tmp_path / name) in result.stderr


def test_no_rustup_makes_plus_toolchain_an_error(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "RUSTUP_HOME": str(tmp_path / "none")}
    with pytest.raises(UsageError, match="rustup is not installed"):
        toolchain.check(toolchain.Toolchain("nightly", "+nightly"), env)


@pytest.mark.parametrize("text", [
    '[toolchain]\nchannel = "1.92.0"\n',
    '# pinned\n[toolchain]\nchannel = "nightly-2026-01-01"\ncomponents = ["rustfmt", "clippy"]\nprofile = "minimal"\n',
    '[toolchain]\nchannel = "stable"\ntargets = []\n',
    '[toolchain]\npath = "/opt/rust"\n',
    '[toolchain]\nchannel = "stable" # trailing comment\n',
    "[toolchain]\nchannel = 'stable'\n",
    '[toolchain]\nchannel = "stable"\n[other]\nx = 1\n',
    '[toolchain]\nchannel = "a"\nchannel = "b"\n',
    '[toolchain]\ncomponents = [\n  "rustfmt",\n]\nchannel = "beta"\n',
])
def test_fast_toml_reader_agrees_with_tomllib(tmp_path: Path, text: str) -> None:
    """The fast path reads the usual file without tomllib; anything else goes to tomllib."""
    import tomllib

    from cargo_agent.tomlfile import simple_table

    simple = simple_table(text)
    if simple is not None:
        assert simple == tomllib.loads(text)
    path = tmp_path / "rust-toolchain.toml"
    path.write_text(text)
    try:
        expected: object = toolchain._from_table(tomllib.loads(text)["toolchain"], str(path))
    except (UsageError, tomllib.TOMLDecodeError, KeyError) as err:
        expected = type(err)
    try:
        got: object = toolchain.parse_file(str(path))
    except UsageError as err:
        got = type(err) if expected is not UsageError else UsageError
        expected = UsageError if expected in (tomllib.TOMLDecodeError, KeyError) else expected
    assert got == expected


@pytest.mark.parametrize(("channel", "release", "matches"), [
    ("stable", "1.95.0", True), ("stable", "1.97.0-nightly", False), ("nightly", "1.97.0-nightly", True),
    ("nightly-2026-05-19", "1.97.0-nightly", True), ("beta", "1.96.0-beta.2", True), ("1.95.0", "1.95.0", True),
    ("1.95", "1.95.0", True), ("1.92.0", "1.95.0", False), ("1.9", "1.95.0", False),
])
def test_pin_matches(channel: str, release: str, matches: bool) -> None:
    assert toolchain.pin_matches(channel, release) is matches


def test_without_rustup_a_mismatched_pin_is_a_warning(tmp_path: Path, run_agent: RunAgent,
                                                      agent_env: dict[str, str]) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rustc").write_text("#!/bin/sh\necho 'rustc 1.95.0 (59807616e 2026-04-14)'\n")
    (bin_dir / "cargo").write_text("#!/bin/sh\necho 'cargo 1.95.0'\n")
    for tool in ("rustc", "cargo"):
        (bin_dir / tool).chmod(0o755)
    root = write_tree(tmp_path / "pinned", {"rust-toolchain.toml": '[toolchain]\nchannel = "1.92.0"\n'})
    env = {**agent_env, "PATH": f"{bin_dir}:/usr/bin:/bin", "RUSTUP_HOME": str(tmp_path / "no-rustup")}
    result = run_agent("--version", cwd=root, env=env)
    assert result.returncode == 0 and result.stdout == "cargo 1.95.0\n"
    assert result.stderr == (f"warning: {root}/rust-toolchain.toml pins '1.92.0' but rustc is 1.95.0, and there "
                             "is no rustup on this host to switch toolchains\n")
    (root / "rust-toolchain.toml").write_text('[toolchain]\nchannel = "1.95"\n')
    assert run_agent("--version", cwd=root, env=env).stderr == ""
