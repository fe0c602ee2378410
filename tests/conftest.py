"""Shared fixtures: tiny path-only workspaces on disk, an isolated cargo-agent environment,
and helpers to run cargo-agent as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FAKE_CARGO = REPO / "tests" / "fakes" / "cargo"

# Variables of the developer's or CI's environment that would change cargo-agent's decisions.
_SCRUBBED_PREFIXES = ("CARGO_AGENT_", "CARGO_BUILD_", "CARGO_TARGET_", "CARGO_ALIAS_", "CARGO_TERM_")
_SCRUBBED = ("RUSTUP_TOOLCHAIN", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUST_TEST_THREADS",
             "NEXTEST_TEST_THREADS", "RUSTC_WRAPPER", "RUSTC", "CARGO")


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def crate(name: str, deps: str = "", lib: str | None = None) -> dict[str, str]:
    body = lib if lib is not None else (
        f"pub fn name() -> &'static str {{ \"{name}\" }}\n"
        f"#[cfg(test)]\nmod tests {{ #[test] fn works() {{ assert_eq!(super::name(), \"{name}\"); }} }}\n")
    return {
        "Cargo.toml": f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n{deps}\n',
        "src/lib.rs": body,
    }


def nest(prefix: str, files: dict[str, str]) -> dict[str, str]:
    return {f"{prefix}/{k}": v for k, v in files.items()}


@pytest.fixture
def virtual_ws(tmp_path: Path) -> Path:
    """A virtual workspace of three members: alpha, beta, gamma (gamma depends on alpha)."""
    root = tmp_path / "virtual"
    write_tree(root, {
        "Cargo.toml": '[workspace]\nresolver = "2"\nmembers = ["crates/*"]\n',
        **nest("crates/alpha", crate("alpha")),
        **nest("crates/beta", crate("beta")),
        **nest("crates/gamma", crate("gamma", 'alpha = { path = "../alpha" }')),
    })
    return root


@pytest.fixture
def single_ws(tmp_path: Path) -> Path:
    """A single-package root (no [workspace])."""
    return write_tree(tmp_path / "single", crate("solo"))


@pytest.fixture
def rootpkg_ws(tmp_path: Path) -> Path:
    """A root package with a member of its own."""
    root = tmp_path / "rootpkg"
    files = crate("top", 'helper = { path = "helper" }')
    files["Cargo.toml"] += '\n[workspace]\nmembers = ["helper"]\n'
    write_tree(root, {**files, **nest("helper", crate("helper"))})
    return root


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture
def agent_env(tmp_path: Path, session_dir: Path) -> dict[str, str]:
    """An environment where cargo-agent uses a private lock dir and no host or user config."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED}
    env["CARGO_AGENT_LOCK_DIR"] = str(tmp_path / "locks")
    env["CARGO_AGENT_CONFIG"] = str(tmp_path / "host-config.toml")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    env["XDG_CACHE_HOME"] = str(session_dir / "cache")
    env["CARGO_TARGET_DIR"] = str(session_dir / "target")
    env["CARGO_AGENT_MEM_KILL"] = "off"
    env["CARGO_AGENT_KILL_GRACE"] = "2s"
    # Subprocesses import the package of this checkout, whatever an editable install points at.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cargo_agent", *args]


RunAgent = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_agent(agent_env: dict[str, str]) -> RunAgent:
    def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = dict(env or agent_env)
        full_env.update(extra_env or {})
        return subprocess.run(agent_command(*args), cwd=cwd, env=full_env, capture_output=True, text=True,
                              timeout=timeout)

    return run


@pytest.fixture
def fake_cargo_env(agent_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """agent_env whose real cargo is tests/fakes/cargo (scripted by FAKE_* variables)."""
    env = dict(agent_env)
    env["CARGO_AGENT_CARGO"] = str(FAKE_CARGO)
    env["FAKE_LOG"] = str(tmp_path / "fake.log")
    return env


def wait_for(predicate: Callable[[], object], limit: float = 60.0) -> None:
    """Poll until `predicate()` is true; fail after `limit` seconds (a bound, not a timing assertion)."""
    end = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < end, "condition never became true"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def reap() -> Iterator[list[int]]:
    """Pids a test started; any still alive at the end are killed and the test fails."""
    pids: list[int] = []
    yield pids
    survivors = [pid for pid in pids if alive(pid)]
    for pid in survivors:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert not survivors, f"processes left behind: {survivors}"
