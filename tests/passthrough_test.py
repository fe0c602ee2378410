"""The pass-through room: toolchain pin, the real-cargo finder and the exec, shared by both paths."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import FAKE_CARGO, RunAgent

from cargo_agent import argv, passthrough
from cargo_agent.errors import CargoNotFoundError


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_start_dir_is_the_manifest_dir_when_one_is_given(tmp_path: Path) -> None:
    command = argv.parse(["check", "--manifest-path", "crates/alpha/Cargo.toml"])
    assert passthrough.start_dir(command, str(tmp_path)) == str(tmp_path / "crates" / "alpha")
    assert passthrough.start_dir(argv.parse(["check"]), str(tmp_path)) == str(tmp_path)


def test_the_finder_skips_the_shim_on_path(tmp_path: Path) -> None:
    shim_dir, real_dir = tmp_path / "shim", tmp_path / "real"
    _executable(shim_dir / "cargo", (Path(passthrough.__file__).parent / "shim.sh").read_text())
    real = _executable(real_dir / "cargo", "#!/bin/sh\nexit 0\n")
    assert passthrough.find_cargo({"PATH": f"{shim_dir}:{real_dir}"}, None) == str(real)


def test_the_finder_reports_only_a_shim_as_not_found(tmp_path: Path) -> None:
    _executable(tmp_path / "cargo", (Path(passthrough.__file__).parent / "shim.sh").read_text())
    with pytest.raises(CargoNotFoundError) as caught:
        passthrough.find_cargo({"PATH": str(tmp_path)}, None)
    assert caught.value.exit_code == 127


def test_a_configured_cargo_must_be_executable(tmp_path: Path) -> None:
    with pytest.raises(CargoNotFoundError, match="not an executable file"):
        passthrough.find_cargo({"PATH": ""}, str(tmp_path / "nope"))


def test_real_cargo_reads_the_cargo_key_of_the_host_file(tmp_path: Path) -> None:
    host = tmp_path / "host.toml"
    host.write_text(f'cargo = "{FAKE_CARGO}"\n')
    env = {"PATH": "", "CARGO_AGENT_CONFIG": str(host), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert passthrough.real_cargo(env) == str(FAKE_CARGO)


def test_doctor_names_the_cargo_the_host_file_chose(virtual_ws: Path, run_agent: RunAgent,
                                                    agent_env: dict[str, str]) -> None:
    Path(agent_env["CARGO_AGENT_CONFIG"]).write_text(f'cargo = "{FAKE_CARGO}"\n')
    result = run_agent("--doctor", cwd=virtual_ws)
    assert f"real cargo: {FAKE_CARGO}" in result.stdout


def test_the_pin_is_applied_for_a_plus_toolchain(tmp_path: Path) -> None:
    env = dict(os.environ)
    chosen = passthrough.pin(argv.parse(["+stable", "check"]), str(tmp_path), env)
    assert chosen.name == "stable" and env["RUSTUP_TOOLCHAIN"] == "stable"
    assert passthrough.cargo_argv(argv.parse(["+stable", "check", "-q"])) == ["check", "-q"]
