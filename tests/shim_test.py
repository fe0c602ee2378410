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
    assert "help: run instead: cargo test -p <package>" in result.stderr


def test_scoped_test_through_the_shim_runs_real_tests(virtual_ws: Path, shim_env: dict[str, str]) -> None:
    result = _cargo(["test", "-p", "beta"], virtual_ws, shim_env)
    assert result.returncode == 0, result.stderr
    assert "test tests::works ... ok" in result.stdout


def test_version_and_list_are_real_cargos_even_with_the_shim_dir_twice(virtual_ws: Path, shim_env: dict[str, str],
                                                                      agent_env: dict[str, str]) -> None:
    for args in (["--version"], ["--list"], ["--help"], ["help", "build"]):
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


def test_the_shim_runs_the_cargo_agent_that_wrote_it_whatever_the_path(tmp_path: Path, virtual_ws: Path,
                                                                       shim_env: dict[str, str]) -> None:
    """An installed launcher writes its own absolute path into the shim: an agent whose PATH has
    the shim but not cargo-agent's venv still gets cargo-agent."""
    venv_bin = tmp_path / "venv-bin"
    venv_bin.mkdir()
    launcher = venv_bin / "cargo-agent"  # like the installed launcher (scripts/cargo-agent)
    launcher.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent.parent)!r})\n"
                        "from cargo_agent.cli import main\nsys.exit(main())\n")
    launcher.chmod(0o755)
    shim_dir = tmp_path / "own-shim"
    subprocess.run([str(launcher), "--install-shim", str(shim_dir)], env=shim_env, check=True, capture_output=True)
    assert f'agent="${{CARGO_AGENT_BIN:-{launcher}}}"' in (shim_dir / "cargo").read_text()
    env = {**shim_env, "PATH": f"{shim_dir}:/usr/bin:/bin:{Path(shim_env['HOME']) / '.cargo' / 'bin'}"}
    result = subprocess.run([str(shim_dir / "cargo"), "test"], cwd=virtual_ws, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 2 and "help: run instead: cargo test -p <package>" in result.stderr


@pytest.mark.timeout(120)  # a nested call that waits for its parent's slot would hang
def test_nested_cargo_from_a_build_script_runs_inside_the_parents_slot(tmp_path: Path,
                                                                       shim_env: dict[str, str]) -> None:
    """slots=1: the outer build holds the only slot while its build script runs `cargo check`
    through the shim. The nested call must run inside the outer slot, not wait for it."""
    from conftest import crate, write_tree

    inner = write_tree(tmp_path / "inner", crate("inner"))
    outer_files = crate("outer")
    outer_files["build.rs"] = (
        "use std::process::Command;\n"
        "fn main() {\n"
        "    let status = Command::new(\"cargo\")\n"
        "        .args([\"check\", \"-q\", \"--manifest-path\", env!(\"INNER_MANIFEST\")])\n"
        "        .env(\"CARGO_TARGET_DIR\", env!(\"INNER_TARGET\"))\n"
        "        .status().unwrap();\n"
        "    assert!(status.success(), \"nested cargo failed\");\n"
        "    println!(\"cargo::warning=NESTED-OK\");\n"
        "}\n")
    outer = write_tree(tmp_path / "outer", outer_files)
    env = {**shim_env, "CARGO_AGENT_SLOTS": "1", "CARGO_AGENT_WAIT_TIMEOUT": "60s",
           "INNER_MANIFEST": str(inner / "Cargo.toml"), "INNER_TARGET": str(tmp_path / "inner-target")}
    result = _cargo(["build"], outer, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NESTED-OK" in result.stderr
