"""Trust: the operator's host file is policy that the environment, a repo (often a stranger's)
and the user file may tighten but never loosen; the host file cannot be dropped; N lives in the
host file; one lock-dir pool per user; a shared lock dir that no group member can turn against
another user; and no wrapper loop. The cross-user parts run as real unprivileged users."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import users
from conftest import FAKE_CARGO, agent_command, crate, nest, wait_for, write_tree

from cargo_agent import argv, config, locations, policy, slots, workspace
from cargo_agent.errors import ConfigError

LIMITS = [s for s in config.SETTINGS if s.tighter is not None]
# Every limit the issue names, and those other branches add: each must say how it tightens.
NAMED_LIMITS = {"limit_as", "limit_as_exempt", "timeout", "mem_high", "mem_kill", "jobs", "test_threads",
                "retries", "wait_timeout", "slots", "lock_dir", "allow_unscoped", "allow_all_targets",
                "allow_all_features_tests", "kill_grace", "link_threads", "scoped_subcommands",
                "per_build_memory", "host_reserve", "cpus", "link_slots", "max_packages", "pressure_high",
                "pressure_kill"}


def strict_raw(setting: config.Setting) -> str:
    """The strictest sensible host value of a limit, as text."""
    if setting.tighter is config.at_most and setting.key == "limit_as":
        return "256M"  # the smallest RLIMIT_AS accepted
    return {config.at_most: "1", config.at_least: "1T", config.both_allow: "false", config.fewer: "",
            config.more: "test, bench, nextest run, build, check", config.host_decides: "/tmp/host-locks"
            }[setting.tighter]  # type: ignore[index]


def loose_raw(setting: config.Setting) -> str:
    """The loosest value a lower layer could ask for, as text."""
    if setting.tighter is config.at_most:
        for candidate in ("unlimited", "none", "off", "auto", "1000000", "100"):
            try:
                setting.parse(candidate)
                return candidate
            except ValueError:
                continue
        raise AssertionError(f"no loose value for {setting.key}")
    return {config.at_least: "1k", config.both_allow: "true", config.fewer: "fuzz,miri,sanitizer,build,test",
            config.more: "", config.host_decides: "/tmp/elsewhere"}[setting.tighter]  # type: ignore[index]


def toml(values: dict[str, str]) -> str:
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


# ---- the table ---------------------------------------------------------------------------


def test_every_limit_declares_how_it_tightens() -> None:
    keys = {s.key: s for s in config.SETTINGS}
    missing = [key for key in NAMED_LIMITS if key in keys and keys[key].tighter is None]
    assert not missing, f"limits without a `tighter` in config.SETTINGS: {missing}"
    assert {s.key for s in config.SETTINGS if not s.repo} >= {"cargo", "lock_dir"}


@pytest.mark.parametrize("setting", LIMITS, ids=[s.key for s in LIMITS])
def test_tighter_never_returns_something_looser_than_the_host(setting: config.Setting) -> None:
    host = setting.parse(strict_raw(setting))
    assert setting.tighter is not None
    assert setting.tighter(host, setting.parse(loose_raw(setting))) == host
    assert setting.tighter(host, host) == host


# ---- layering, in process ------------------------------------------------------------------


@pytest.fixture
def etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An /etc/cargo-agent.toml for this process only: the module constant, which no
    environment variable can move."""
    path = tmp_path / "etc-cargo-agent.toml"
    monkeypatch.setattr(locations, "DEFAULT_HOST_CONFIG", str(path))
    return path


def _load_with(layer: str, values: dict[str, str], tmp_path: Path, extra_env: dict[str, str] | None = None
               ) -> config.Config:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg"), **(extra_env or {})}
    manifest = manifest_path = None
    if layer == "environment":
        env.update({config.SETTINGS_BY_KEY[key].env: value for key, value in values.items()})
    elif layer == "named":
        (tmp_path / "named.toml").write_text(toml(values))
        env["CARGO_AGENT_CONFIG"] = str(tmp_path / "named.toml")
    elif layer == "user":
        write_tree(tmp_path / "xdg", {"cargo-agent/config.toml": toml(values)})
    else:
        manifest = {"workspace": {"metadata": {"cargo-agent": dict(values)}}}
        manifest_path = tmp_path / "repo" / "Cargo.toml"
    return config.load(env, manifest, manifest_path)


@pytest.mark.parametrize("layer", ["environment", "named", "repo", "user"])
def test_no_lower_layer_loosens_any_limit_the_host_file_sets(etc: Path, tmp_path: Path, layer: str) -> None:
    etc.write_text(toml({s.key: strict_raw(s) for s in LIMITS}))
    asked = {s.key: loose_raw(s) for s in LIMITS if s.repo or layer != "repo"}
    loaded = _load_with(layer, asked, tmp_path)
    for setting in LIMITS:
        assert loaded[setting.key] == setting.parse(strict_raw(setting)), setting.key
        assert loaded.origins[setting.key] == f"{etc}:{setting.key}", setting.key
        if setting.key in asked and setting.parse(asked[setting.key]) != setting.parse(strict_raw(setting)):
            clamp = loaded.clamped[setting.key]
            assert clamp.host_origin == f"{etc}:{setting.key}" and clamp.asked == setting.parse(asked[setting.key])
            assert "clamped by host policy" in loaded.explain(setting.key)


def test_a_lower_layer_may_tighten_what_the_host_file_sets(etc: Path, tmp_path: Path) -> None:
    etc.write_text(toml({"timeout": "1h", "jobs": "8", "limit_as_exempt": "fuzz, miri", "per_build_memory": "4G",
                         "scoped_subcommands": "test", "allow_unscoped": "true", "mem_kill": "off"}))
    loaded = _load_with("environment", {"timeout": "30m", "jobs": "2", "limit_as_exempt": "fuzz",
                                        "per_build_memory": "8G", "scoped_subcommands": "build",
                                        "allow_unscoped": "false", "mem_kill": "90"}, tmp_path)
    assert (loaded["timeout"], loaded["jobs"], loaded["limit_as_exempt"]) == (1800.0, 2, ("fuzz",))
    assert (loaded["per_build_memory"], loaded["allow_unscoped"], loaded["mem_kill"]) == (8 << 30, False, 90.0)
    assert loaded["scoped_subcommands"] == ("test", "build")  # the host's, plus what the env adds
    assert set(loaded.clamped) == {"scoped_subcommands"}  # nothing else needed clamping
    assert loaded.origins["timeout"] == "CARGO_AGENT_TIMEOUT"


@pytest.mark.parametrize("layer", ["environment", "repo", "user"])
def test_without_a_host_policy_every_layer_sets_what_it_likes(etc: Path, tmp_path: Path, layer: str) -> None:
    asked = {s.key: loose_raw(s) for s in LIMITS if s.repo}
    loaded = _load_with(layer, asked, tmp_path)
    assert not loaded.clamped and not loaded.host
    for key, value in asked.items():
        assert loaded[key] == config.SETTINGS_BY_KEY[key].parse(value), key


@pytest.mark.parametrize("key,value", [("cargo", "/tmp/evil/cargo"), ("lock_dir", "/tmp/private-pool"),
                                        ("lock-dir", "/tmp/private-pool")])
def test_a_repo_may_not_name_a_program_or_a_path(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.repo_layer({"package": {"metadata": {"cargo-agent": {key: value}}}}, tmp_path / "Cargo.toml")
    assert caught.value.message == (f"'{key}' in {tmp_path / 'Cargo.toml'}:[package.metadata.cargo-agent] is not "
                                    "accepted from a repo: it names a program or a path outside the repo")
    assert config.table_layer("user", {key: value}, "user file").values  # the user may


def test_the_host_file_cannot_be_dropped_or_replaced_by_the_environment(etc: Path, tmp_path: Path) -> None:
    etc.write_text('timeout = "1h"\nslots = 2\n')
    for named in ("/dev/null", str(tmp_path / "missing.toml")):
        loaded = config.load({"CARGO_AGENT_CONFIG": named, "XDG_CONFIG_HOME": str(tmp_path)})
        assert (loaded["timeout"], loaded.host_slots) == (3600.0, 2)
    (tmp_path / "mine.toml").write_text('timeout = "none"\nslots = 9\nreport = true\n')
    loaded = config.load({"CARGO_AGENT_CONFIG": str(tmp_path / "mine.toml"), "XDG_CONFIG_HOME": str(tmp_path)})
    assert (loaded["timeout"], loaded["slots"], loaded["report"]) == (3600.0, 2, True)  # read, and clamped
    assert loaded.clamped["timeout"].asked_by == f"{tmp_path / 'mine.toml'}:timeout"
    etc.unlink()  # no /etc file (tests, rootless installs): CARGO_AGENT_CONFIG names the host file
    loaded = config.load({"CARGO_AGENT_CONFIG": str(tmp_path / "mine.toml"), "XDG_CONFIG_HOME": str(tmp_path)})
    assert loaded.host_slots == 9 and loaded["timeout"] is None


def test_a_refusal_names_only_an_override_that_would_work(etc: Path, tmp_path: Path, virtual_ws: Path) -> None:
    location = workspace.locate(virtual_ws, None)
    command = argv.parse(["test", "--workspace"])
    env = {"CARGO_AGENT_ALLOW_UNSCOPED": "1", "XDG_CONFIG_HOME": str(tmp_path)}
    etc.write_text("allow_unscoped = false\n")
    decision = policy.evaluate(command, location, config.load(env))
    assert not decision.allowed
    help_text = "\n".join(decision.error().help)
    assert "CARGO_AGENT_ALLOW_UNSCOPED=1" not in help_text and "[workspace.metadata" not in help_text
    assert f"the host policy keeps this rule on ({etc}:allow_unscoped = false)" in help_text
    etc.unlink()
    assert policy.evaluate(command, location, config.load(env)).allowed
    free = "\n".join(policy.evaluate(command, location, config.load({"XDG_CONFIG_HOME": str(tmp_path)})).error().help)
    assert "set CARGO_AGENT_ALLOW_UNSCOPED=1" in free


def test_the_default_lock_dir_is_one_per_user_whatever_xdg_says(tmp_path: Path) -> None:
    runtime = tmp_path / "run-user"
    runtime.mkdir()
    assert locations.default_lock_dir({"XDG_RUNTIME_DIR": str(runtime)}) == locations.default_lock_dir({}) \
        == f"/tmp/cargo-agent-{os.getuid()}"


def test_n_lives_in_the_host_file_and_nothing_else_raises_it(etc: Path, tmp_path: Path) -> None:
    lock_dir = tmp_path / "locks"
    etc.write_text(f'slots = 1\nlock_dir = "{lock_dir}"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path), "CARGO_AGENT_SLOTS": "8"}
    lockdir_slots = lock_dir / "slots"
    first = slots.resolve(config.load(env), env)
    lockdir_slots.write_text("9\n")  # what an older version stored, or anyone in the group wrote
    assert (first.ceiling, first.count) == (1, 1)
    assert slots.resolve(config.load(env), env).ceiling == 1
    etc.write_text(f'slots = 3\nlock_dir = "{lock_dir}"\n')
    assert slots.resolve(config.load(env), env).ceiling == 3  # the next run sees the edit
    assert slots.resolve(config.load({**env, "CARGO_AGENT_SLOTS": "2"}), env).count == 2
    etc.write_text(f'lock_dir = "{lock_dir}"\n')  # auto: sized with the host's numbers, not the env's
    auto = slots.resolve(config.load({}), {}).ceiling
    cheap = {**env, "CARGO_AGENT_SLOTS": "auto", "CARGO_AGENT_PER_BUILD_MEMORY": "1M", "CARGO_AGENT_HOST_RESERVE": "1M"}
    assert slots.resolve(config.load(cheap), cheap).count <= auto


# ---- real users: a shared lock dir, a host file, repos and environments -------------------------

accounts = users.accounts_fixture("t")


class Team:
    def __init__(self, made: users.Accounts) -> None:
        self.group = made.group("agents")
        self.alice = made.user("alice", [self.group])
        self.bob = made.user("bob", [self.group])
        self.mallory = made.user("mallory", [self.group])  # a member of the group, and the attacker
        import grp

        self.gid = grp.getgrnam(self.group).gr_gid


@pytest.fixture(scope="module")
def team(accounts: users.Accounts) -> Team:
    return Team(accounts)


@pytest.fixture
def place(team: Team) -> Iterator[Path]:
    """A dir every user can enter: the shared lock dir (`install -d -m 2770 -g agents`), a
    world-writable log dir for the fake cargo, and the host file (root's, 0644)."""
    path = users.open_dir("cargo-agent-trust-")
    shared = path / "shared"
    shared.mkdir()
    os.chown(shared, 0, team.gid)
    shared.chmod(0o2770)
    (path / "logs").mkdir()
    (path / "logs" / "fake.log").touch()
    (path / "logs" / "fake.log").chmod(0o666)  # every user's fake cargo appends to it
    try:
        yield path
    finally:
        shutil.rmtree(path)
        for user in (team.alice, team.bob, team.mallory):
            shutil.rmtree(f"/tmp/cargo-agent-{user.uid}", ignore_errors=True)


def _workspace(owner: users.Account, root: Path, metadata: str = "") -> Path:
    files = {"Cargo.toml": f'[workspace]\nresolver = "2"\nmembers = ["crates/*"]\n{metadata}',
             **nest("crates/alpha", crate("alpha")), **nest("crates/beta", crate("beta"))}
    write_tree(root, files)
    for path in [root, *root.rglob("*")]:
        os.chown(path, owner.uid, owner.gid)
    return root


def _env(fake_cargo_env: dict[str, str], place: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in fake_cargo_env.items() if not k.startswith(("XDG_", "CARGO_AGENT_"))}
    env.update(CARGO_AGENT_CARGO=str(FAKE_CARGO), CARGO_AGENT_CONFIG=str(place / "host.toml"),
               FAKE_LOG=str(place / "logs" / "fake.log"))
    env.update(extra)
    return env


HOST_POLICY = {  # strict, yet loose enough for a build to run on this host
    "slots": "1", "mem_high": "99", "mem_kill": "99", "per_build_memory": "4G", "host_reserve": "2G",
    "cpus": "2", "jobs": "1", "test_threads": "1", "link_threads": "1", "limit_as": "4G", "limit_as_exempt": "fuzz",
    "timeout": "4s", "kill_grace": "1s", "retries": "0", "wait_timeout": "30s",
    "link_slots": "1", "pressure_high": "99", "pressure_kill": "99",
    "scoped_subcommands": "test, bench, nextest run", "max_packages": "1",
    "allow_unscoped": "false", "allow_all_targets": "false", "allow_all_features_tests": "false",
}


def _host_file(place: Path, **overrides: str) -> dict[str, str]:
    assert {s.key for s in LIMITS} <= {*HOST_POLICY, "lock_dir"}, "HOST_POLICY must set every limit"
    values = {**HOST_POLICY, "lock_dir": str(place / "shared"), **overrides}
    (place / "host.toml").write_text(toml(values))
    (place / "host.toml").chmod(0o644)
    return values


def _loose() -> dict[str, str]:
    return {s.key: loose_raw(s) for s in LIMITS if s.key != "lock_dir"}


def _dry_run_settings(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    settings: dict[str, Any] = plan["settings"]
    assert plan["slots"]["ceiling"] == plan["slots"]["count"] == 1
    return settings


def _assert_host_values_hold(settings: dict[str, Any], host: dict[str, str], asked_by: str) -> None:
    for key, raw in host.items():
        setting = config.SETTINGS_BY_KEY[key]
        expected = setting.parse(raw)
        value = tuple(settings[key]["value"]) if isinstance(expected, tuple) else settings[key]["value"]
        assert value == expected, key
        if key != "lock_dir":
            assert settings[key]["clamped"] is not None and asked_by in settings[key]["clamped"]["asked_by"], key


def _fake_log(place: Path) -> str:
    return (place / "logs" / "fake.log").read_text()


def _enforced(team: Team, ws: Path, env: dict[str, str], place: Path) -> None:
    """What the clamps do in a real run: the timeout stops the build, the address-space limit
    and the jobs cap reach cargo, and the rule stays on with no override offered."""
    nested = f"sh -c 'echo ulimit-v $(ulimit -v) >> {place / 'logs' / 'fake.log'}'"
    ran = users.run_as(team.alice, agent_command("build", "-p", "alpha"), cwd=ws, env={**env, "FAKE_NESTED": nested})
    assert ran.returncode == 0, ran.stderr
    assert f"ulimit-v {4 << 20}" in _fake_log(place) and '"CARGO_BUILD_JOBS": "1"' in _fake_log(place)
    stopped = users.run_as(team.alice, agent_command("build", "-p", "alpha"), cwd=ws, env={**env, "FAKE_SLEEP": "60"})
    assert stopped.returncode == 124 and "error: timed out after 4s" in stopped.stderr, stopped.stderr
    refused = users.run_as(team.alice, agent_command("test", "--workspace"), cwd=ws, env=env)
    assert refused.returncode == 2 and "rule unscoped-test" in refused.stderr
    assert "the host policy keeps this rule on" in refused.stderr and "=1, or" not in refused.stderr


def test_a_repo_that_tries_every_loosening_key_gets_the_host_policy(team: Team, place: Path,
                                                                    fake_cargo_env: dict[str, str]) -> None:
    host = _host_file(place)
    metadata = "\n[workspace.metadata.cargo-agent]\n" + toml(_loose())
    ws = _workspace(team.alice, place / "repo", metadata)
    env = _env(fake_cargo_env, place)
    plan = users.run_as(team.alice, agent_command("--dry-run", "--json", "build", "-p", "alpha"), cwd=ws, env=env)
    _assert_host_values_hold(_dry_run_settings(plan), host, "[workspace.metadata.cargo-agent]")
    _enforced(team, ws, env, place)
    for key, value in (("cargo", "/bin/true"), ("lock_dir", str(place / "private"))):
        evil = _workspace(team.alice, place / f"repo-{key}", f"\n[workspace.metadata.cargo-agent]\n{key} = "
                                                              f"{json.dumps(value)}\n")
        result = users.run_as(team.alice, agent_command("build", "-p", "alpha"), cwd=evil, env=env)
        assert result.returncode == 2 and "is not accepted from a repo" in result.stderr.splitlines()[0]
    assert not (place / "private").exists()


def test_an_environment_that_tries_every_loosening_variable_gets_the_host_policy(
        team: Team, place: Path, fake_cargo_env: dict[str, str]) -> None:
    host = _host_file(place)
    ws = _workspace(team.alice, place / "repo")
    loose = {config.SETTINGS_BY_KEY[key].env: value for key, value in _loose().items()}
    env = _env(fake_cargo_env, place, CARGO_AGENT_LOCK_DIR=str(place / "private"), **loose)
    plan = users.run_as(team.alice, agent_command("--dry-run", "--json", "build", "-p", "alpha"), cwd=ws, env=env)
    settings = _dry_run_settings(plan)
    _assert_host_values_hold(settings, host, "CARGO_AGENT_")
    assert json.loads(plan.stdout)["slots"]["lock_dir"] == str(place / "shared")
    _enforced(team, ws, env, place)
    assert not (place / "private").exists()


def test_real_cargo_under_the_host_policy_for_a_real_user(team: Team, place: Path,
                                                          fake_cargo_env: dict[str, str]) -> None:
    """The same clamps reach a real cargo test run: its test binary sees one test thread and the
    host's address-space limit, whatever the agent's environment asked for."""
    _host_file(place, timeout="10m")
    lib = ('#[test] fn limits() { println!("threads={}", std::env::var("RUST_TEST_THREADS").unwrap()); '
           'for l in std::fs::read_to_string("/proc/self/limits").unwrap().lines() '
           '{ if l.starts_with("Max address space") { println!("{}", l); } } }\n')
    ws = place / "real"
    write_tree(ws, crate("limits", lib=lib))
    for path in [ws, *ws.rglob("*")]:
        os.chown(path, team.alice.uid, team.alice.gid)
    env = _env(fake_cargo_env, place, CARGO_AGENT_TEST_THREADS="512", CARGO_AGENT_LIMIT_AS="unlimited",
               CARGO_AGENT_JOBS="64", RUST_TEST_THREADS="512", CARGO_TARGET_DIR=str(team.alice.home / "target"))
    del env["CARGO_AGENT_CARGO"]
    result = users.run_as(team.alice, agent_command("test", "--", "--nocapture"), cwd=ws, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "threads=1" in result.stdout
    limits = [line.split() for line in result.stdout.splitlines() if line.startswith("Max address space")]
    assert limits and limits[0][3] == str(4 << 30), result.stdout


def _etc_setup(place: Path, text: str) -> str:
    """sh for a private mount namespace: /etc overlaid with a tmpfs upper layer, and the host
    file written into it. The process sees a real /etc/cargo-agent.toml; the host's /etc never
    changes, so there is nothing to restore and no window in which other processes see it."""
    upper = place / "etc-overlay"
    upper.mkdir(exist_ok=True)
    return "\n".join([f"mount -t tmpfs -o size=1m tmpfs {upper}", f"mkdir {upper}/u {upper}/w",
                      f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper}/u,workdir={upper}/w /etc",
                      f"printf %s {shlex.quote(text)} > /etc/cargo-agent.toml",
                      "chmod 644 /etc/cargo-agent.toml"])


def _can_overlay_etc(place: Path) -> bool:
    probe = users.run_as(None, ["true"], cwd=place, env=dict(os.environ), setup=_etc_setup(place, "x = 1\n"))
    return probe.returncode == 0


def test_cargo_agent_config_dev_null_does_not_drop_a_real_etc_file(team: Team, place: Path,
                                                                   fake_cargo_env: dict[str, str]) -> None:
    before = os.path.lexists("/etc/cargo-agent.toml"), sorted(os.listdir("/etc"))
    text = 'slots = 1\ntimeout = "5s"\njobs = 1\n'
    ws = _workspace(team.alice, place / "repo")
    env = _env(fake_cargo_env, place, CARGO_AGENT_CONFIG="/dev/null", CARGO_AGENT_JOBS="64",
               CARGO_AGENT_TIMEOUT="none", CARGO_AGENT_LOCK_DIR=str(place / "alice-locks"))
    if _can_overlay_etc(place):
        setup = _etc_setup(place, text)
        plan = users.run_as(team.alice, agent_command("--dry-run", "--json", "build", "-p", "alpha"), cwd=ws,
                            env=env, setup=setup)
        doctor = users.run_as(team.alice, agent_command("--doctor"), cwd=ws, env=env, setup=setup)
    else:  # no overlayfs here: write the real file, and restore /etc exactly
        assert not before[0], "an /etc/cargo-agent.toml exists: this test will not touch it"
        try:
            Path("/etc/cargo-agent.toml").write_text(text)
            plan = users.run_as(team.alice, agent_command("--dry-run", "--json", "build", "-p", "alpha"),
                                cwd=ws, env=env)
            doctor = users.run_as(team.alice, agent_command("--doctor"), cwd=ws, env=env)
        finally:
            Path("/etc/cargo-agent.toml").unlink()
    assert (os.path.lexists("/etc/cargo-agent.toml"), sorted(os.listdir("/etc"))) == before
    assert plan.returncode == 0, plan.stderr
    settings = json.loads(plan.stdout)["settings"]
    assert settings["jobs"]["value"] == 1 and settings["jobs"]["source"] == "/etc/cargo-agent.toml:jobs"
    assert settings["timeout"]["value"] == 5.0 and settings["timeout"]["clamped"]["asked_by"] == "CARGO_AGENT_TIMEOUT"
    assert json.loads(plan.stdout)["slots"]["ceiling"] == 1
    assert "host file (policy): /etc/cargo-agent.toml: read" in doctor.stdout, doctor.stdout
    assert "CARGO_AGENT_CONFIG=/dev/null: read; read below the host file /etc/cargo-agent.toml" in doctor.stdout


def test_a_host_slot_change_is_picked_up_on_the_next_run_across_users(
        team: Team, place: Path, fake_cargo_env: dict[str, str]) -> None:
    _host_file(place, timeout="10m", wait_timeout="10m")
    ws_alice = _workspace(team.alice, place / "alice-repo")
    ws_bob = _workspace(team.bob, place / "bob-repo")
    env = _env(fake_cargo_env, place)
    holder = users.popen_as(team.alice, agent_command("build", "-p", "alpha"), cwd=ws_alice,
                            env={**env, "FAKE_SLEEP": "120", "FAKE_TAG": "alice"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "start alice" in _fake_log(place))
        planted = users.run_as(team.mallory, ["sh", "-c", f"echo 9 > {place / 'shared' / 'slots'}"], cwd=place,
                               env=env)
        assert planted.returncode == 0, planted.stderr  # a group member writes the old slot-count file
        asks_more = {**env, "CARGO_AGENT_SLOTS": "5", "CARGO_AGENT_WAIT_TIMEOUT": "2s", "FAKE_TAG": "bob"}
        waited = users.run_as(team.bob, agent_command("build", "-p", "beta"), cwd=ws_bob, env=asks_more)
        assert waited.returncode == 75, waited.stderr  # N = 1: alice holds the only slot
        assert "1/1 slots busy" in waited.stderr and "start bob" not in _fake_log(place)
        status = users.run_as(team.bob, agent_command("--status", "--json"), cwd=ws_bob, env=env)
        assert json.loads(status.stdout)["slots"] == 1
        _host_file(place, slots="2", timeout="10m", wait_timeout="10m")  # the operator raises N
        admitted = users.run_as(team.bob, agent_command("build", "-p", "beta"), cwd=ws_bob, env=asks_more)
        assert admitted.returncode == 0, admitted.stderr
        assert "start bob" in _fake_log(place) and holder.poll() is None
    finally:
        holder.send_signal(signal.SIGINT)
        holder.wait(30)


# ---- the symlink plant ------------------------------------------------------------------------

PLANTS = ["slots", ".slots.12345", "slot-0.lock", "slot-0.json", "slot-1.json", "queue.lock", "queue.seq",
          "queue", "queue/000000000000-1.ticket", "runs.lock", "runs.jsonl", "runs.jsonl.1"]


def _fingerprint(path: Path) -> tuple[object, ...]:
    """Content (checksum, or entries), mode, owner, and the change times: a file created and
    removed again inside a directory still moves its mtime."""
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode):
        content: object = sorted((name, _fingerprint(path / name)) for name in os.listdir(path))
    else:
        content = hashlib.sha256(path.read_bytes()).hexdigest()
    return content, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_mtime_ns, info.st_ctime_ns


@pytest.mark.parametrize("victim", ["root", "alice"])
@pytest.mark.parametrize("name", PLANTS)
def test_links_planted_by_a_group_member_change_nothing_outside_the_lock_dir(
        team: Team, place: Path, fake_cargo_env: dict[str, str], name: str, victim: str) -> None:
    _host_file(place, slots="2", timeout="10m")
    ws = _workspace(team.alice, place / "repo")
    env = _env(fake_cargo_env, place)
    shared = place / "shared"
    first = users.run_as(team.alice, agent_command("build", "-p", "alpha"), cwd=ws, env=env)
    assert first.returncode == 0, first.stderr  # every file of the lock dir exists now
    who = None if victim == "root" else team.alice
    owner = (0, 0) if who is None else (who.uid, who.gid)
    secrets = place / f"{victim}-secrets"  # root-only (or alice-only) 0600 files and a 0700 dir
    secret_dir = secrets / "dir"
    secret_dir.mkdir(parents=True)
    (secrets / "file").write_text(f"{victim} only\n")
    (secret_dir / "keep").write_text("keep\n")
    for path in (secrets, secret_dir, secrets / "file", secret_dir / "keep"):
        os.chown(path, *owner)
        path.chmod(0o700 if path.is_dir() else 0o600)
    target = secret_dir if name == "queue" else secrets / "file"
    before = _fingerprint(secrets)
    if name == "runs.jsonl.1":  # make the victim rotate the log, renaming onto the planted link
        line = json.dumps({"exit_code": 0, "command": ["build"]}) + "\n"
        (shared / "runs.jsonl").write_text(line * ((1 << 20) // len(line) + 1))
    plant = users.run_as(team.mallory, ["sh", "-c", 'rm -rf "$1" && ln -s "$2" "$1"', "sh", str(shared / name),
                                        str(target)], cwd=place, env=env)
    assert plant.returncode == 0, plant.stderr
    assert (shared / name).is_symlink()
    if who is None:  # root's own rustc-facts cache stays the test session's
        env["XDG_CACHE_HOME"] = fake_cargo_env["XDG_CACHE_HOME"]
    result = users.run_as(who, agent_command("build", "-p", "beta"), cwd=ws, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode != 0:
        lines = result.stderr.splitlines()
        assert result.returncode == 2 and lines[0].startswith("error: ") and "symlink" in lines[0], result.stderr
        assert all(line.startswith(("help: ", "note: ")) for line in lines[1:])
    status = users.run_as(who, agent_command("--status"), cwd=ws, env=env)
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    doctor = users.run_as(who, agent_command("--doctor"), cwd=ws, env=env)
    assert "Traceback" not in doctor.stdout + doctor.stderr
    assert _fingerprint(secrets) == before, f"{name}: something outside the lock dir changed"
    if name in ("slot-0.lock", "queue.lock", "queue.seq", "queue"):
        assert result.returncode == 2  # these cannot be replaced, so the build stops with one line


# ---- squatters, doctor, loops --------------------------------------------------------------------


def test_another_user_squatting_your_default_lock_dir_is_named_with_a_fix(team: Team, place: Path,
                                                                         fake_cargo_env: dict[str, str]) -> None:
    ws = _workspace(team.alice, place / "repo")
    env = _env(fake_cargo_env, place, CARGO_AGENT_CONFIG="/dev/null")
    squatted = Path(f"/tmp/cargo-agent-{team.alice.uid}")
    shutil.rmtree(squatted, ignore_errors=True)
    made = users.run_as(team.bob, ["mkdir", "-m", "700", str(squatted)], cwd=place, env=env)
    assert made.returncode == 0, made.stderr
    result = users.run_as(team.alice, agent_command("build", "-p", "alpha"), cwd=ws,
                          env={**env, "XDG_RUNTIME_DIR": str(place)})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == (f"error: lock dir {squatted} belongs to {team.bob.name} (uid {team.bob.uid}), "
                        f"not to you ({team.alice.name}, uid {team.alice.uid})")
    assert lines[1].startswith("help: set CARGO_AGENT_LOCK_DIR to a directory of your own")
    assert lines[2] == f"note: only {team.bob.name} or root can remove {squatted}"
    own = str(team.alice.home / "locks")
    fixed = users.run_as(team.alice, agent_command("build", "-p", "alpha"), cwd=ws,
                         env={**env, "CARGO_AGENT_LOCK_DIR": own})
    assert fixed.returncode == 0, fixed.stderr  # the fix the message gives works


def test_doctor_reports_files_shim_pool_clamps_and_malformed_records(team: Team, place: Path,
                                                                      fake_cargo_env: dict[str, str]) -> None:
    _host_file(place, timeout="10m")
    ws = _workspace(team.alice, place / "repo", "\n[workspace.metadata.cargo-agent]\njobs = 64\n")
    shim_dir = place / "shim"
    installed = subprocess.run(agent_command("--install-shim", str(shim_dir)), capture_output=True, text=True,
                               env=fake_cargo_env)
    assert installed.returncode == 0, installed.stderr
    env = _env(fake_cargo_env, place)
    env["PATH"] = f"{shim_dir}:{env['PATH']}"
    assert users.run_as(team.alice, agent_command("build", "-p", "alpha"), cwd=ws, env=env).returncode == 0
    (place / "shared" / "runs.jsonl").write_text('[1, 2]\n42\n{"exit_code": 0}\n')
    doctor = users.run_as(team.alice, agent_command("--doctor"), cwd=ws, env=env)
    out = doctor.stdout
    assert doctor.returncode == 0, out
    assert f"host file (policy): {place / 'host.toml'}: read (named by CARGO_AGENT_CONFIG)" in out
    assert f"cargo on PATH: {shim_dir / 'cargo'} is the cargo-agent shim" in out
    assert f"lock dir: {place / 'shared'} (shared: set by the host file ({place / 'host.toml'}:lock_dir)" in out
    assert "group " + team.group in out
    assert "clamped by the host policy: jobs" in out
    assert "jobs = 1 (from " + str(place / "host.toml") + ":jobs); clamped by host policy: " in out
    assert "malformed record ignored: runs.jsonl: 2 lines not a JSON object" in out
    assert f"N lives in the host file: `slots` in {place / 'host.toml'}" in out
    missing = users.run_as(team.alice, agent_command("--doctor"), cwd=ws,
                           env={**env, "CARGO_AGENT_CONFIG": str(place / "nope.toml")})
    assert f"warning: CARGO_AGENT_CONFIG names {place / 'nope.toml'}, which does not exist" in missing.stdout
    assert f"lock dir: /tmp/cargo-agent-{team.alice.uid} (per user: yours alone" in missing.stdout
    assert "cargo on PATH" in missing.stdout and "no host policy" in missing.stdout


def _loop_bin(place: Path) -> Path:
    """A hand-written `cargo` that calls cargo-agent, and a `cargo-agent` launcher."""
    bin_dir = place / "bin"
    write_tree(bin_dir, {"cargo": '#!/bin/sh\nexec cargo-agent "$@"\n',
                         "cargo-agent": f'#!/bin/sh\nexec {sys.executable} -m cargo_agent "$@"\n'})
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("how", ["cargo wrapper on PATH", "CARGO_AGENT_CARGO names the wrapper"])
@pytest.mark.parametrize("args", [["build", "-p", "alpha"], ["metadata", "--no-deps"]])
def test_a_wrapper_that_calls_cargo_agent_is_a_loop_stopped_with_127(team: Team, place: Path,
                                                                     fake_cargo_env: dict[str, str], how: str,
                                                                     args: list[str]) -> None:
    ws = _workspace(team.alice, place / "repo")
    bin_dir = _loop_bin(place)
    env = _env(fake_cargo_env, place, CARGO_AGENT_CONFIG="/dev/null",
               CARGO_AGENT_LOCK_DIR=str(team.alice.home / "locks"))
    del env["CARGO_AGENT_CARGO"]
    if how == "cargo wrapper on PATH":
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
    else:
        env["CARGO_AGENT_CARGO"] = str(bin_dir / "cargo")
    result = users.run_as(team.alice, [str(bin_dir / "cargo-agent"), *args], cwd=ws, env=env, timeout=300)
    assert result.returncode == 127, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cargo-agent started itself 8 times over: {bin_dir / 'cargo'} runs cargo-agent "
                      "again instead of cargo"], result.stderr


def test_cargo_agent_bin_naming_the_shim_is_stopped_with_127(team: Team, place: Path,
                                                             fake_cargo_env: dict[str, str]) -> None:
    ws = _workspace(team.alice, place / "repo")
    shim_dir = place / "shim"
    subprocess.run(agent_command("--install-shim", str(shim_dir)), capture_output=True, env=fake_cargo_env,
                   check=True)
    env = _env(fake_cargo_env, place, CARGO_AGENT_BIN=str(shim_dir / "cargo"))
    result = users.run_as(team.alice, [str(shim_dir / "cargo"), "build", "-p", "alpha"], cwd=ws, env=env, timeout=60)
    assert result.returncode == 127
    assert result.stderr.splitlines()[0] == (f"error: the cargo shim at {shim_dir / 'cargo'} was started by a cargo "
                                             f"shim: {shim_dir / 'cargo'} is not cargo-agent")


def test_the_memory_test_hook_can_only_make_a_reading_worse(tmp_path: Path) -> None:
    from cargo_agent import host

    real = host.read({})
    source = tmp_path / "memory"
    source.write_text("0")
    assert host.read({"CARGO_AGENT_MEMORY_SOURCE": str(source)}).used_percent == pytest.approx(
        real.used_percent, abs=5)  # the real reading, not 0 (memory moves a little between readings)
    source.write_text("100")
    assert host.read({"CARGO_AGENT_MEMORY_SOURCE": str(source)}).used_percent == 100.0


def test_a_forged_parse_cache_entry_cannot_stand_for_the_host_file(etc: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The TOML parse cache lives in a dir the user can write (XDG_CACHE_HOME), so an agent could
    write an entry for the host file with its exact signature: the host file never uses it."""
    import marshal

    from cargo_agent import tomlfile

    etc.write_text('timeout = "1h"\n')
    cache = tmp_path / "cache"
    (cache / "cargo-agent").mkdir(parents=True)
    info = etc.stat()
    forged = {str(etc): ((info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns),
                         marshal.dumps({"timeout": "none"}))}
    (cache / "cargo-agent" / tomlfile.CACHE_NAME).write_bytes(marshal.dumps(forged))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(tomlfile, "_CACHE", tomlfile._Cache())
    assert tomlfile.read_toml(etc) == {"timeout": "none"}  # what the cache would have said
    assert config.load({"XDG_CONFIG_HOME": str(tmp_path)})["timeout"] == 3600.0


def test_cargo_agent_config_dev_null_reads_nothing(etc: Path, tmp_path: Path) -> None:
    loaded = config.load({"CARGO_AGENT_CONFIG": "/dev/null", "XDG_CONFIG_HOME": str(tmp_path)})
    assert not loaded.host and not loaded.clamped  # no /etc file here: /dev/null is the (empty) host file
