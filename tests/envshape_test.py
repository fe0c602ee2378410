"""Env shaping with real cargo and rustc: jobs and test threads capped, rustc wrappers, CARGO_HOME.
(The link gate and the lld/mold thread cap are tested in linkgate_test.py.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import RunAgent, write_tree

from cargo_agent import argv, cargoconfig, config, envshape


@pytest.fixture
def flagged_bin(tmp_path: Path) -> Path:
    """A binary (so it links) with a build script, that only compiles with `--cfg user_flag`."""
    return write_tree(tmp_path / "flagged", {
        "Cargo.toml": '[package]\nname = "flagged"\nversion = "0.1.0"\nedition = "2021"\n',
        "build.rs": 'fn main() { println!("cargo::rustc-check-cfg=cfg(user_flag)"); }\n',
        "src/main.rs": '#[cfg(not(user_flag))]\ncompile_error!("the user flag was dropped");\nfn main() {}\n',
    })


def _shape(tmp_path: Path, args: list[str], env: dict[str, str], cargo_config: str = "",
           settings: dict[str, str] | None = None) -> envshape.Shaped:
    if cargo_config:
        write_tree(tmp_path, {".cargo/config.toml": cargo_config})
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], **env}
    command = argv.parse(args)
    loaded = config.load({**(settings or {}), "CARGO_AGENT_CONFIG": str(tmp_path / "none.toml")})
    return envshape.shape(command, cargoconfig.load(tmp_path, env, command.configs), loaded, env, cpus=8)


def test_jobs_capped_and_lower_user_value_kept(tmp_path: Path) -> None:
    settings = {"CARGO_AGENT_JOBS": "4"}
    assert _shape(tmp_path, ["build", "-j", "64"], {}, settings=settings).argv == ["build", "--jobs=4"]
    assert _shape(tmp_path, ["build", "-j2"], {}, settings=settings).argv == ["build", "-j2"]
    assert _shape(tmp_path, ["build"], {"CARGO_BUILD_JOBS": "3"}, settings=settings).env["CARGO_BUILD_JOBS"] == "3"
    assert _shape(tmp_path, ["build"], {"CARGO_BUILD_JOBS": "30"}, settings=settings).env["CARGO_BUILD_JOBS"] == "4"
    assert _shape(tmp_path, ["build"], {}, "[build]\njobs = 16\n", settings).env["CARGO_BUILD_JOBS"] == "4"


def test_jobs_inside_an_alias_are_capped_by_expanding_it(tmp_path: Path) -> None:
    write_tree(tmp_path, {".cargo/config.toml": '[alias]\nbb = "build -j 64"\n'})
    command = argv.expand_aliases(argv.parse(["bb", "-q"]), lambda n: ["build", "-j", "64"] if n == "bb" else None)
    loaded = config.load({"CARGO_AGENT_JOBS": "2", "CARGO_AGENT_CONFIG": str(tmp_path / "none.toml")})
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"]}
    shaped = envshape.shape(command, cargoconfig.load(tmp_path, env), loaded, env, cpus=8)
    assert shaped.argv == ["build", "--jobs=2", "-q"]


def test_test_threads_capped_never_raised(tmp_path: Path) -> None:
    settings = {"CARGO_AGENT_TEST_THREADS": "4"}
    assert _shape(tmp_path, ["test"], {"RUST_TEST_THREADS": "64"}, settings=settings).env["RUST_TEST_THREADS"] == "4"
    assert _shape(tmp_path, ["test"], {"RUST_TEST_THREADS": "2"}, settings=settings).env["RUST_TEST_THREADS"] == "2"
    shaped = _shape(tmp_path, ["test"], {"NEXTEST_TEST_THREADS": "num-cpus"}, settings=settings)
    assert shaped.env["NEXTEST_TEST_THREADS"] == "4"


@pytest.mark.parametrize("bad", ["0", "-3", "many"])
def test_non_positive_test_threads_are_exit_2(flagged_bin: Path, run_agent: RunAgent, bad: str) -> None:
    result = run_agent("build", cwd=flagged_bin, extra_env={"RUST_TEST_THREADS": bad})
    assert result.returncode == 2 and f"invalid value '{bad}' for RUST_TEST_THREADS" in result.stderr


def test_sccache_wrapper_cleared_by_default_and_kept_on_request(tmp_path: Path) -> None:
    env = {"RUSTC_WRAPPER": "/usr/bin/sccache"}
    assert _shape(tmp_path, ["build"], env).env["RUSTC_WRAPPER"] == ""
    assert _shape(tmp_path, ["build"], env, settings={"CARGO_AGENT_RUSTC_WRAPPER": "keep"}).env["RUSTC_WRAPPER"] \
        == "/usr/bin/sccache"
    assert _shape(tmp_path, ["build"], {"RUSTC_WRAPPER": "/x/cachepot"}).env["RUSTC_WRAPPER"] == "/x/cachepot"


def test_cleared_wrapper_really_is_not_used(flagged_bin: Path, run_agent: RunAgent, tmp_path: Path) -> None:
    wrapper = tmp_path / "sccache"
    wrapper.write_text("#!/bin/sh\necho wrapper-was-used >&2\nexit 1\n")
    wrapper.chmod(0o755)
    write_tree(flagged_bin, {".cargo/config.toml": f'[build]\nrustc-wrapper = "{wrapper}"\n'})
    result = run_agent("build", cwd=flagged_bin, extra_env={"RUSTFLAGS": "--cfg user_flag"})
    assert result.returncode == 0, result.stderr[-2000:]


def test_isolated_cargo_home_is_seeded_with_user_config(flagged_bin: Path, run_agent: RunAgent, tmp_path: Path,
                                                        fake_cargo_env: dict[str, str]) -> None:
    home = tmp_path / "cargo-home"
    write_tree(home, {"config.toml": "[net]\noffline = true\n", "credentials.toml": "[registry]\ntoken = 'x'\n"})
    env = {**fake_cargo_env, "CARGO_HOME": str(home), "CARGO_AGENT_ISOLATE_CARGO_HOME": "1"}
    assert run_agent("build", cwd=flagged_bin, env=env).returncode == 0
    seen = subprocess.run(["grep", "^env ", env["FAKE_LOG"]], capture_output=True, text=True).stdout
    isolated = Path(__import__("json").loads(seen[4:])["CARGO_HOME"])
    assert isolated != home and (isolated / "config.toml").read_text() == "[net]\noffline = true\n"
    assert (isolated / "credentials.toml").exists()
