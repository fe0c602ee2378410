"""Env shaping with real cargo and rustc: the lld thread cap lands in the rustc invocation and
every user flag stays in effect, whichever rustflags source cargo uses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import RunAgent, write_tree

from cargo_agent import argv, cargoconfig, config, envshape

HOST = "x86_64-unknown-linux-gnu"
HOST_ENV = HOST.upper().replace("-", "_")
CAP = "link-arg=-Wl,--threads="


@pytest.fixture
def flagged_bin(tmp_path: Path) -> Path:
    """A binary (so it links) with a build script, that only compiles with `--cfg user_flag`."""
    return write_tree(tmp_path / "flagged", {
        "Cargo.toml": '[package]\nname = "flagged"\nversion = "0.1.0"\nedition = "2021"\n',
        "build.rs": 'fn main() { println!("cargo::rustc-check-cfg=cfg(user_flag)"); }\n',
        "src/main.rs": '#[cfg(not(user_flag))]\ncompile_error!("the user flag was dropped");\nfn main() {}\n',
    })


MATRIX = [
    ("RUSTFLAGS", {"RUSTFLAGS": "--cfg user_flag"}, None, []),
    ("CARGO_ENCODED_RUSTFLAGS", {"CARGO_ENCODED_RUSTFLAGS": "--cfg\x1fuser_flag"}, None, []),
    ("build.rustflags list", {}, '[build]\nrustflags = ["--cfg", "user_flag"]\n', []),
    ("build.rustflags string", {}, '[build]\nrustflags = "--cfg user_flag"\n', []),
    ("target.<host>.rustflags", {}, f'[target.{HOST}]\nrustflags = ["--cfg", "user_flag"]\n', []),
    ("target.cfg rustflags", {}, "[target.'cfg(unix)']\nrustflags = [\"--cfg\", \"user_flag\"]\n", []),
    ("CARGO_TARGET_<HOST>_RUSTFLAGS", {f"CARGO_TARGET_{HOST_ENV}_RUSTFLAGS": "--cfg user_flag"}, None, []),
    ("CARGO_BUILD_RUSTFLAGS", {"CARGO_BUILD_RUSTFLAGS": "--cfg user_flag"}, None, []),
    ("--config on the command line", {}, None, ["--config", 'build.rustflags=["--cfg","user_flag"]']),
    ("--target <host> with RUSTFLAGS", {"RUSTFLAGS": "--cfg user_flag"}, None, ["--target", HOST]),
    ("--target <host> with target rustflags", {}, f'[target.{HOST}]\nrustflags = ["--cfg", "user_flag"]\n',
     ["--target", HOST]),
]


@pytest.mark.parametrize(("case", "env", "cargo_config", "extra"), MATRIX, ids=[m[0] for m in MATRIX])
def test_cap_added_and_user_flag_kept(flagged_bin: Path, run_agent: RunAgent, case: str, env: dict[str, str],
                                      cargo_config: str | None, extra: list[str]) -> None:
    if cargo_config:
        write_tree(flagged_bin, {".cargo/config.toml": cargo_config})
    global_extra = extra if extra[:1] == ["--config"] else []
    sub_extra = [] if global_extra else extra
    result = run_agent(*global_extra, "-v", "build", *sub_extra, cwd=flagged_bin,
                       extra_env={**env, "CARGO_AGENT_LINK_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    main_rustc = [line for line in result.stderr.splitlines() if "--crate-name flagged" in line
                  and "src/main.rs" in line]
    assert main_rustc, result.stderr[-3000:]
    assert f"{CAP}1" in main_rustc[-1]
    assert "user_flag" in main_rustc[-1]


def test_nothing_set_adds_only_the_cap(tmp_path: Path, run_agent: RunAgent) -> None:
    root = write_tree(tmp_path / "plain", {
        "Cargo.toml": '[package]\nname = "plain"\nversion = "0.1.0"\nedition = "2021"\n',
        "src/main.rs": "fn main() {}\n"})
    result = run_agent("-v", "build", cwd=root, extra_env={"CARGO_AGENT_LINK_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert f"{CAP}1" in result.stderr


def test_gnu_ld_build_gets_no_lld_flag_and_links(flagged_bin: Path, run_agent: RunAgent) -> None:
    result = run_agent("-v", "build", cwd=flagged_bin,
                       extra_env={"RUSTFLAGS": "--cfg user_flag -C link-arg=-fuse-ld=bfd"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--threads=" not in result.stderr


def test_added_flags_are_identical_from_run_to_run(flagged_bin: Path, run_agent: RunAgent) -> None:
    env = {"RUSTFLAGS": "--cfg user_flag"}
    assert run_agent("build", cwd=flagged_bin, extra_env=env).returncode == 0
    again = run_agent("-v", "build", cwd=flagged_bin, extra_env=env)
    assert again.returncode == 0 and "Fresh flagged" in again.stderr  # cargo's cache was not forked


def _shape(tmp_path: Path, args: list[str], env: dict[str, str], cargo_config: str = "",
           settings: dict[str, str] | None = None) -> envshape.Shaped:
    if cargo_config:
        write_tree(tmp_path, {".cargo/config.toml": cargo_config})
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], **env}
    command = argv.parse(args)
    loaded = config.load({**(settings or {}), "CARGO_AGENT_CONFIG": str(tmp_path / "none.toml")})
    return envshape.shape(command, cargoconfig.load(tmp_path, env, command.configs), loaded, env, cpus=8)


def test_wasm_target_gets_the_direct_form(tmp_path: Path) -> None:
    shaped = _shape(tmp_path, ["build", "--target", "wasm32-unknown-unknown"], {},
                    settings={"CARGO_AGENT_LINK_THREADS": "3"})
    assert shaped.env["CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS"] == "-Clink-arg=--threads=3"


def test_mixed_targets_with_rustflags_skip_the_non_lld_one(tmp_path: Path) -> None:
    shaped = _shape(tmp_path, ["build", "--target", HOST, "--target", "aarch64-unknown-linux-gnu"],
                    {"RUSTFLAGS": "--cfg x"})
    assert shaped.env["RUSTFLAGS"] == "--cfg x"
    assert any("not all of them link with lld" in note for note in shaped.notes)


def test_mixed_targets_with_build_rustflags_copy_to_the_lld_target(tmp_path: Path) -> None:
    shaped = _shape(tmp_path, ["build", "--target", HOST, "--target", "wasm32-unknown-unknown"], {},
                    '[build]\nrustflags = ["--cfg", "x"]\n')
    assert shaped.env[f"CARGO_TARGET_{HOST_ENV}_RUSTFLAGS"].startswith("--cfg x -Clink-arg=-Wl,--threads=")
    assert shaped.env["CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS"].startswith("--cfg x -Clink-arg=--threads=")


@pytest.mark.parametrize("linker_env", [{f"CARGO_TARGET_{HOST_ENV}_LINKER": "/usr/bin/gcc"},
                                        {"RUSTFLAGS": "-C link-arg=-fuse-ld=mold"},
                                        {"RUSTFLAGS": "-Zlinker-features=-lld"}])
def test_no_cap_for_other_linkers(tmp_path: Path, linker_env: dict[str, str]) -> None:
    shaped = _shape(tmp_path, ["build"], linker_env)
    assert not any("--threads" in v for v in shaped.env.values())


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
