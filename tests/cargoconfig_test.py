"""cargo's config as cargo-agent reads it: `include`, precedence, aliases. Every case of the
include table is also run through real cargo, which must agree."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import RunAgent, crate, write_tree

from cargo_agent import cargoconfig
from cargo_agent.errors import UsageError

ERROR = "error"

# (files under the crate root, --config values, the build.rustflags cargo ends up with, or
#  (ERROR, a fragment of cargo-agent's message))
INCLUDE_CASES: list[tuple[str, dict[str, str], list[str], object]] = [
    ("table item, relative to the including file", {
        ".cargo/config.toml": 'include = [{ path = "extra.toml" }]\n',
        ".cargo/extra.toml": '[build]\nrustflags = ["--cfg", "inc"]\n'}, [], ["--cfg", "inc"]),
    ("string item", {
        ".cargo/config.toml": 'include = ["extra.toml"]\n',
        ".cargo/extra.toml": '[build]\nrustflags = ["--cfg", "inc"]\n'}, [], ["--cfg", "inc"]),
    ("parent-relative and nested, each relative to its own file", {
        ".cargo/config.toml": 'include = ["../conf/mid.toml"]\n',
        "conf/mid.toml": 'include = ["deep/leaf.toml"]\n',
        "conf/deep/leaf.toml": '[build]\nrustflags = ["--cfg", "leaf"]\n'}, [], ["--cfg", "leaf"]),
    ("the including file wins over what it includes", {
        ".cargo/config.toml": 'include = ["extra.toml"]\n[build]\ntarget-dir = "own"\nrustflags = ["--cfg", "own"]\n',
        ".cargo/extra.toml": '[build]\nrustflags = ["--cfg", "inc"]\n'}, [], ["--cfg", "inc", "--cfg", "own"]),
    ("later includes come after earlier ones", {
        ".cargo/config.toml": 'include = ["one.toml", "two.toml"]\n',
        ".cargo/one.toml": '[build]\nrustflags = ["--cfg", "one"]\n',
        ".cargo/two.toml": '[build]\nrustflags = ["--cfg", "two"]\n'}, [], ["--cfg", "one", "--cfg", "two"]),
    ("a string value: the including file replaces the included one", {
        ".cargo/config.toml": 'include = ["extra.toml"]\n[build]\nrustflags = "--cfg own"\n',
        ".cargo/extra.toml": '[build]\nrustflags = "--cfg inc"\n'}, [], ["--cfg", "own"]),
    ("a missing optional include is skipped", {
        ".cargo/config.toml": 'include = [{ path = "nope.toml", optional = true }, "extra.toml"]\n',
        ".cargo/extra.toml": '[build]\nrustflags = ["--cfg", "inc"]\n'}, [], ["--cfg", "inc"]),
    ("a parent dir's config, included and also read as itself", {
        "../.cargo/config.toml": '[build]\nrustflags = ["--cfg", "up"]\n',
        ".cargo/config.toml": 'include = ["../../.cargo/config.toml"]\n'}, [], ["--cfg", "up", "--cfg", "up"]),
    ("--config KEY=VALUE include is relative to the working dir", {
        "flags/cli.toml": '[build]\nrustflags = ["--cfg", "cli"]\n'}, ['include=["flags/cli.toml"]'], ["--cfg", "cli"]),
    ("--config FILE: its include is relative to that file", {
        "flags/cli.toml": 'include = ["more.toml"]\n',
        "flags/more.toml": '[build]\nrustflags = ["--cfg", "more"]\n'}, ["flags/cli.toml"], ["--cfg", "more"]),
    ("a missing required include", {
        ".cargo/config.toml": 'include = [{ path = "nope.toml" }]\n'}, [],
     (ERROR, "failed to load config include `nope.toml` from")),
    ("a missing optional include that is not .toml", {
        ".cargo/config.toml": 'include = [{ path = "nope.cfg", optional = true }]\n'}, [],
     (ERROR, "ending with `.toml`, but found `nope.cfg`")),
    ("an optional include that is a directory", {
        ".cargo/config.toml": 'include = [{ path = "dir.toml", optional = true }]\n',
        ".cargo/dir.toml/x": ""}, [], (ERROR, "is a directory")),
    ("a plain string is not a list", {
        ".cargo/config.toml": 'include = "extra.toml"\n', ".cargo/extra.toml": ""}, [],
     (ERROR, "but found string at `include`")),
    ("an item of the wrong type", {".cargo/config.toml": "include = [1]\n"}, [],
     (ERROR, "expected a string or table, but found integer at `include[0]`")),
    ("a table without path", {".cargo/config.toml": "include = [{ optional = true }]\n"}, [],
     (ERROR, "missing field `path` at `include[0]`")),
    ("optional is not a boolean", {".cargo/config.toml": 'include = [{ path = "x.toml", optional = "yes" }]\n'},
     [], (ERROR, "expected a boolean, but found string at `include[0].optional`")),
    ("including itself", {".cargo/config.toml": 'include = ["config.toml"]\n'}, [],
     (ERROR, "cycle detected with path")),
    ("a loop through another file", {
        ".cargo/config.toml": 'include = ["loop.toml"]\n', ".cargo/loop.toml": 'include = ["config.toml"]\n'}, [],
     (ERROR, "cycle detected with path")),
    ("the same file reached twice from one config file", {
        ".cargo/config.toml": 'include = ["a.toml", "b.toml"]\n', ".cargo/a.toml": 'include = ["shared.toml"]\n',
        ".cargo/b.toml": 'include = ["shared.toml"]\n', ".cargo/shared.toml": ""}, [],
     (ERROR, "cycle detected with path")),
    ("malformed TOML in an included file", {
        ".cargo/config.toml": 'include = ["bad.toml"]\n', ".cargo/bad.toml": "[build\n"}, [],
     (ERROR, "failed to load config include `bad.toml`")),
]
IDS = [case[0] for case in INCLUDE_CASES]


def _fixture(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "ws" / "pkg"
    write_tree(root, crate("pkg", lib="pub fn f() {}\n"))
    for name, text in files.items():
        path = (root / name).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _isolated_env(agent_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = dict(agent_env)
    home = tmp_path / "cargo-home"
    home.mkdir(exist_ok=True)
    env["CARGO_HOME"] = str(home)
    env["RUSTUP_HOME"] = os.environ.get("RUSTUP_HOME") or os.path.expanduser("~/.rustup")
    env["CARGO_TARGET_DIR"] = str(tmp_path / "target")
    return env


@pytest.mark.timeout(60)  # an include cycle that is not detected would loop
@pytest.mark.parametrize(("name", "files", "cli", "expected"), INCLUDE_CASES, ids=IDS)
def test_include_as_cargo_agent_reads_it(tmp_path: Path, agent_env: dict[str, str], name: str,
                                         files: dict[str, str], cli: list[str], expected: object) -> None:
    root = _fixture(tmp_path, files)
    env = _isolated_env(agent_env, tmp_path)
    if isinstance(expected, tuple):
        with pytest.raises(UsageError, match=re.escape(str(expected[1]))) as caught:
            cargoconfig.load(root, env, cli)
        assert "\n" not in caught.value.message
    else:
        assert cargoconfig.load(root, env, cli).get("build.rustflags") in (expected, " ".join(expected))


def _cargo_rustflags(root: Path, env: dict[str, str], cli: list[str]) -> list[str] | str:
    """The --cfg flags real cargo passes to rustc, or "error" when cargo cannot load its config."""
    args = [arg for value in cli for arg in ("--config", value)]
    result = subprocess.run(["cargo", *args, "check", "-v"], cwd=root, env=env, capture_output=True, text=True,
                            timeout=300)
    if result.returncode != 0:
        assert "could not load Cargo configuration" in result.stderr, result.stderr
        return ERROR
    [rustc] = [line for line in result.stderr.splitlines() if "Running `" in line and "--crate-name pkg" in line]
    return [part for flag in re.findall(r"--cfg (\w+)", rustc) for part in ("--cfg", flag)]


@pytest.mark.parametrize(("name", "files", "cli", "expected"), INCLUDE_CASES, ids=IDS)
def test_include_as_real_cargo_reads_it(tmp_path: Path, agent_env: dict[str, str], name: str,
                                        files: dict[str, str], cli: list[str], expected: object) -> None:
    """The table above is what cargo 1.95 does: a case that stops being true fails here."""
    root = _fixture(tmp_path, files)
    got = _cargo_rustflags(root, _isolated_env(agent_env, tmp_path), cli)
    assert got == (ERROR if isinstance(expected, tuple) else expected)


def test_include_in_cargo_home_config(tmp_path: Path, agent_env: dict[str, str]) -> None:
    root = _fixture(tmp_path, {})
    env = _isolated_env(agent_env, tmp_path)
    write_tree(Path(env["CARGO_HOME"]), {"config.toml": 'include = ["more.toml"]\n',
                                         "more.toml": '[build]\nrustflags = ["--cfg", "home"]\n'})
    assert cargoconfig.load(root, env).get("build.rustflags") == ["--cfg", "home"]
    assert _cargo_rustflags(root, env, []) == ["--cfg", "home"]


@pytest.mark.timeout(60)  # opening a FIFO blocks until a writer comes: a regression hangs
def test_a_fifo_where_an_include_points_is_an_error_not_a_hang(tmp_path: Path, agent_env: dict[str, str]) -> None:
    root = _fixture(tmp_path, {".cargo/config.toml": 'include = [{ path = "fifo.toml", optional = true }]\n'})
    os.mkfifo(root / ".cargo" / "fifo.toml")
    with pytest.raises(UsageError, match=r"fifo\.toml is not a regular file"):
        cargoconfig.load(root, _isolated_env(agent_env, tmp_path))


# ---- aliases ---------------------------------------------------------------------------

# (files, env, --config values, the alias `xt` as cargo-agent reads it, the package real cargo tests)
ALIAS_CASES: list[tuple[dict[str, str], dict[str, str], list[str], list[str] | None, str | None]] = [
    ({".cargo/config.toml": 'include = ["aliases.toml"]\n',
      ".cargo/aliases.toml": '[alias]\nxt = "test --no-run -p beta"\n'}, {}, [],
     ["test", "--no-run", "-p", "beta"], "beta"),
    ({".cargo/config.toml": '[alias]\nxt = "test --no-run -p alpha"\n'}, {"CARGO_ALIAS_XT": "test --no-run -p beta"},
     [], ["test", "--no-run", "-p", "beta"], "beta"),
    ({".cargo/config.toml": '[alias]\nxt = ["test", "--no-run"]\n'}, {"CARGO_ALIAS_XT": "-p gamma"}, [],
     ["test", "--no-run", "-p", "gamma"], "gamma"),
    ({".cargo/config.toml": '[alias]\nxt = "test --no-run -p alpha"\n'}, {},
     ['alias.xt="test --no-run -p beta"'], ["test", "--no-run", "-p", "alpha"], "alpha"),
    ({}, {}, ['alias.xt="test --no-run -p beta"'], None, None),
    ({"../.cargo/config.toml": '[alias]\nxt = ["test", "--no-run"]\n',
      ".cargo/config.toml": '[alias]\nxt = ["-p", "alpha"]\n'}, {}, [], ["test", "--no-run", "-p", "alpha"], "alpha"),
]


@pytest.mark.parametrize(("files", "extra", "cli", "alias", "tested"), ALIAS_CASES)
def test_aliases_are_read_as_cargo_reads_them(tmp_path: Path, agent_env: dict[str, str], files: dict[str, str],
                                              extra: dict[str, str], cli: list[str], alias: list[str] | None,
                                              tested: str | None) -> None:
    """From files (includes too) and CARGO_ALIAS_*, never from --config; checked with real cargo."""
    from conftest import nest

    root = write_tree(tmp_path / "ws" / "virtual", {
        "Cargo.toml": '[workspace]\nresolver = "2"\nmembers = ["crates/*"]\n',
        **nest("crates/alpha", crate("alpha")), **nest("crates/beta", crate("beta")),
        **nest("crates/gamma", crate("gamma"))})
    for name, text in files.items():
        write_tree(root, {name: text}) if not name.startswith("../") else write_tree(root.parent, {name[3:]: text})
    env = {**_isolated_env(agent_env, tmp_path), **extra}
    assert cargoconfig.load(root, env, cli).alias("xt", env) == alias
    args = [arg for value in cli for arg in ("--config", value)]
    result = subprocess.run(["cargo", *args, "xt"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    ran = re.findall(r"Executable unittests src/lib.rs \(.*/deps/(\w+)-", result.stderr)
    assert ran == ([tested] if tested else []), result.stderr


# ---- the canary: a user flag from an included file reaches the build ------------------------

@pytest.mark.parametrize("flags", ['["--cfg", "canary"]', '"--cfg canary"'])
def test_rustflags_from_an_included_file_reach_the_build(tmp_path: Path, run_agent: RunAgent,
                                                         agent_env: dict[str, str], flags: str) -> None:
    """`cargo check` passes only with the flag; so must `cargo-agent check`, whose link-thread
    shaping sets rustflags and must start from the user's own, included ones (before include
    was followed, it set target rustflags that replaced them, and the canary fired)."""
    root = write_tree(tmp_path / "canary", {
        **crate("canary", lib='#[cfg(not(canary))]\ncompile_error!("the canary flag was dropped");\n'),
        ".cargo/config.toml": 'include = ["flags.toml"]\n',
        ".cargo/flags.toml": f"[build]\nrustflags = {flags}\n"})
    env = _isolated_env(agent_env, tmp_path)
    bare = subprocess.run(["cargo", "check"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert bare.returncode == 0, bare.stderr
    agent = run_agent("check", cwd=root, env=env)
    assert agent.returncode == 0, agent.stderr
    assert "the canary flag was dropped" not in agent.stderr
