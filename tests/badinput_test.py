"""Every setting, env var and config key with a malformed value, and malformed files: each gives
exit 2 and one clear line, and nothing is left half-done (no build started, no lock dir made)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import users
from conftest import RunAgent, agent_command, write_tree

from cargo_agent import config

CANDIDATES = ["-1", "0", "abc", "4Q", "", "1.5x", "150", "sometimes"]


def bad_value(setting: config.Setting) -> str:
    for candidate in CANDIDATES:
        try:
            setting.parse(candidate)
        except ValueError:
            return candidate
    raise AssertionError(f"{setting.key} accepts every candidate")


CHECKED = [s for s in config.SETTINGS if s.key != "cargo"]  # any path may name a cargo


def _nothing_done(env: dict[str, str]) -> None:
    assert not Path(env["FAKE_LOG"]).exists(), "cargo was started"
    assert not Path(env["CARGO_AGENT_LOCK_DIR"]).exists(), "the lock dir was created"


@pytest.mark.parametrize("setting", CHECKED, ids=[s.env for s in CHECKED])
def test_bad_env_value(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str],
                       setting: config.Setting) -> None:
    value = bad_value(setting)
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env, extra_env={setting.env: value})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: invalid value '{value}' for {setting.env}: "
                                          f"expected {setting.accepts}"]
    _nothing_done(fake_cargo_env)


@pytest.mark.parametrize("setting", CHECKED, ids=[s.key for s in CHECKED])
def test_bad_config_key_value(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str],
                              setting: config.Setting) -> None:
    value = bad_value(setting)
    host = Path(fake_cargo_env["CARGO_AGENT_CONFIG"])
    host.write_text(f'{setting.key} = "{value}"\n')
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: invalid value '{value}' for {host}:{setting.key}: "
                                          f"expected {setting.accepts}"]
    _nothing_done(fake_cargo_env)


@pytest.mark.parametrize("where", ["host", "user", "cargo-config", "repo-metadata", "member-manifest"])
def test_malformed_files(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str], where: str) -> None:
    if where == "host":
        path = Path(fake_cargo_env["CARGO_AGENT_CONFIG"])
    elif where == "user":
        path = Path(fake_cargo_env["XDG_CONFIG_HOME"]) / "cargo-agent" / "config.toml"
    elif where == "cargo-config":
        path = virtual_ws / ".cargo" / "config.toml"
    elif where == "member-manifest":
        path = virtual_ws / "crates" / "beta" / "Cargo.toml"
    else:
        path = virtual_ws / "Cargo.toml"
        path.write_text(path.read_text() + '\n[workspace.metadata]\ncargo-agent = "yes"\n')
    if where != "repo-metadata":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("this is = = not toml\n")
    result = run_agent("test", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]
    _nothing_done(fake_cargo_env)


def test_unknown_key_lists_the_known_ones(virtual_ws: Path, run_agent: RunAgent,
                                          fake_cargo_env: dict[str, str]) -> None:
    write_tree(Path(fake_cargo_env["XDG_CONFIG_HOME"]), {"cargo-agent/config.toml": "slotz = 2\n"})
    result = run_agent("build", cwd=virtual_ws, env=fake_cargo_env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith("error: unknown key 'slotz' in ")
    assert result.stderr.splitlines()[1].startswith("help: known keys: slots, lock_dir")
    _nothing_done(fake_cargo_env)


@pytest.mark.parametrize("value", ["5", '"5"', '"relative/locks"', '"./locks"', '""', "true", '["/tmp/x"]'])
def test_a_lock_dir_that_is_not_an_absolute_path_is_exit_2(virtual_ws: Path, run_agent: RunAgent,
                                                           fake_cargo_env: dict[str, str], value: str) -> None:
    host = Path(fake_cargo_env["CARGO_AGENT_CONFIG"])
    host.write_text(f"lock_dir = {value}\n")
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid value ")
    assert lines[0].endswith(f" for {host}:lock_dir: expected an absolute directory path")
    assert not Path(fake_cargo_env["FAKE_LOG"]).exists()
    relative = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env,
                         extra_env={"CARGO_AGENT_CONFIG": "/dev/null", "CARGO_AGENT_LOCK_DIR": "locks"})
    assert relative.returncode == 2
    assert relative.stderr.splitlines() == ["error: invalid value 'locks' for CARGO_AGENT_LOCK_DIR: "
                                            "expected an absolute directory path"]
    assert not (virtual_ws / "locks").exists()


def test_alias_of_the_wrong_type(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str]) -> None:
    write_tree(virtual_ws, {".cargo/config.toml": "[alias]\nxt = 3\n"})
    result = run_agent("xt", cwd=virtual_ws, env=fake_cargo_env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: alias.xt in cargo config is neither a string nor a list of strings"]


accounts = users.accounts_fixture("b")


@pytest.fixture(scope="module")
def unprivileged(accounts: users.Accounts) -> users.Account:
    return accounts.user("perm")


@pytest.mark.parametrize("what", ["lock dir not writable", "Cargo.toml unreadable"])
def test_permission_problems_as_an_unprivileged_user(unprivileged: users.Account, fake_cargo_env: dict[str, str],
                                                     what: str) -> None:
    """As a real unprivileged user: root can write and read anything."""
    place = users.open_dir("cargo-agent-perm-")
    try:
        workspace = write_tree(place / "ws", {
            "Cargo.toml": '[workspace]\nresolver = "2"\nmembers = ["crates/*"]\n',
            **{f"crates/{name}/Cargo.toml": f'[package]\nname = "{name}"\nversion = "0.1.0"\n'
               for name in ("alpha", "beta")},
            **{f"crates/{name}/src/lib.rs": "" for name in ("alpha", "beta")},
        })
        env = {k: v for k, v in fake_cargo_env.items() if not k.startswith("XDG_")}
        env.update(CARGO_AGENT_CONFIG="/dev/null", FAKE_LOG=str(place / "fake.log"),
                   CARGO_AGENT_LOCK_DIR=str(place / "locks"))
        place.chmod(0o777)  # the user may create its lock dir and the fake cargo's log here
        if what == "lock dir not writable":
            lock_dir = place / "readonly-locks"
            lock_dir.mkdir(mode=0o500)
            os.chown(lock_dir, unprivileged.uid, unprivileged.gid)
            env["CARGO_AGENT_LOCK_DIR"] = str(lock_dir)
            expected = f"error: lock dir {lock_dir} is not writable by you"
        else:
            manifest = workspace / "crates" / "beta" / "Cargo.toml"
            manifest.chmod(0)
            expected = f"error: cannot read {manifest}: permission denied"
        result = users.run_as(unprivileged, agent_command("test", "-p", "alpha"), cwd=workspace, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines()[0] == expected
        assert not Path(env["FAKE_LOG"]).exists()
        control = users.run_as(unprivileged, agent_command("build", "-p", "alpha"), cwd=workspace,
                               env={**env, "CARGO_AGENT_LOCK_DIR": str(place / "locks")})
        if what == "lock dir not writable":  # the same user with a usable lock dir builds: the test can fail
            assert control.returncode == 0, control.stderr
            assert Path(env["FAKE_LOG"]).exists()
    finally:
        shutil.rmtree(place)
