"""The PATH shim with real cargo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import agent_command


@pytest.fixture
def shim_env(tmp_path: Path, agent_env: dict[str, str]) -> dict[str, str]:
    shim_dir = tmp_path / "shim"
    result = subprocess.run(agent_command("--install-shim", str(shim_dir)), capture_output=True, text=True,
                            env=agent_env, check=True)
    assert f'export PATH="{shim_dir.resolve()}:$PATH"' in result.stdout
    assert os.access(shim_dir / "cargo", os.X_OK)
    agent_bin = tmp_path / "bin"
    agent_bin.mkdir()
    launcher = agent_bin / "cargo-agent"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -m cargo_agent \"$@\"\n")
    launcher.chmod(0o755)
    return {**agent_env, "PATH": f"{shim_dir}:{shim_dir}:{agent_bin}:{agent_env['PATH']}",
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def _cargo(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["cargo", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_unscoped_test_through_the_shim_is_refused(virtual_ws: Path, shim_env: dict[str, str]) -> None:
    result = _cargo(["test"], virtual_ws, shim_env)
    assert result.returncode == 2
    assert "help: run instead: cargo test -p alpha" in result.stderr


def test_scoped_test_through_the_shim_runs_real_tests(virtual_ws: Path, shim_env: dict[str, str]) -> None:
    result = _cargo(["test", "-p", "beta"], virtual_ws, shim_env)
    assert result.returncode == 0, result.stderr
    assert "test tests::works ... ok" in result.stdout


def test_version_and_list_are_real_cargos_even_with_the_shim_dir_twice(virtual_ws: Path, shim_env: dict[str, str],
                                                                      agent_env: dict[str, str]) -> None:
    for args in (["--version"], ["--list"], ["help", "build"]):
        through = _cargo(args, virtual_ws, shim_env)
        bare = subprocess.run(["cargo", *args], cwd=virtual_ws, env=agent_env, capture_output=True, text=True)
        assert through.returncode == 0 and through.stdout == bare.stdout


def test_shim_without_cargo_agent_exits_127(tmp_path: Path, shim_env: dict[str, str]) -> None:
    shim_dir = shim_env["PATH"].split(":")[0]
    env = {**shim_env, "PATH": f"{shim_dir}:/usr/bin:/bin"}
    result = subprocess.run([f"{shim_dir}/cargo", "build"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 127 and "cargo-agent is not installed" in result.stderr


def test_repo_shim_is_the_installed_shim() -> None:
    repo = Path(__file__).resolve().parent.parent
    assert (repo / "shims" / "cargo").read_text() == (repo / "cargo_agent" / "shim.sh").read_text()
