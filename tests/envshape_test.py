"""Env shaping with real cargo and rustc: jobs and test threads capped, rustc wrappers, CARGO_HOME.
(The link gate and the lld/mold thread cap are tested in linkgate_test.py.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import RunAgent, write_tree

from cargo_agent import argv, cargoconfig, config, envshape
from cargo_agent.errors import UsageError
from cargo_agent.host import cores


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


# ---- the caps, decided in-process (each a quick killer for the mutation check) ---------------

def _shaped(tmp_path: Path, args: list[str], env: dict[str, str] | None = None, cpus: int = 8,
            cargo_config: str = "", **settings: str) -> envshape.Shaped:
    if cargo_config:
        write_tree(tmp_path, {".cargo/config.toml": cargo_config})
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], **(env or {})}
    command = argv.parse(args)
    loaded = config.load({**settings, "CARGO_AGENT_CONFIG": str(tmp_path / "none.toml"),
                          "XDG_CONFIG_HOME": str(tmp_path)})
    return envshape.shape(command, cargoconfig.load(tmp_path, env, command.configs), loaded, env, cpus=cpus)


def _caps(tmp_path: Path, **settings: str) -> config.Config:
    return config.load({**settings, "CARGO_AGENT_CONFIG": str(tmp_path / "none.toml"),
                        "XDG_CONFIG_HOME": str(tmp_path)})


@pytest.mark.parametrize(("jobs", "cpus", "cap"), [(None, 6, 6), ("4", 6, 4), ("6", 6, 6), ("7", 6, 6),
                                                   ("1", 6, 1), (None, 1, 1), ("3", 1, 1), (None, 0, 1)])
def test_the_jobs_cap_is_the_jobs_setting_at_most_the_hosts_tokens(tmp_path: Path, jobs: str | None, cpus: int,
                                                                   cap: int) -> None:
    """At least 1 job, even with no token count known."""
    settings = {"CARGO_AGENT_JOBS": jobs} if jobs else {}
    assert envshape.jobs_cap(_caps(tmp_path, **settings), cpus) == cap


@pytest.mark.parametrize(("cores", "cap"), [(1, 1), (7, 7), (8, 8), (9, 8), (64, 8)])
def test_the_thread_caps_stop_at_8_on_a_bigger_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int,
                                                   cap: int) -> None:
    """This host has fewer cores than that, so the core count is the one thing faked here."""
    monkeypatch.setattr(envshape, "cores", lambda: cores)
    assert envshape.test_threads_cap(_caps(tmp_path)) == cap
    assert envshape.link_threads_cap(_caps(tmp_path)) == cap


def test_the_test_and_link_thread_caps_are_the_setting_else_the_cores_at_most_8(tmp_path: Path) -> None:
    default = min(cores(), 8)
    assert envshape.test_threads_cap(_caps(tmp_path)) == default
    assert envshape.link_threads_cap(_caps(tmp_path)) == default
    assert envshape.test_threads_cap(_caps(tmp_path, CARGO_AGENT_TEST_THREADS="13")) == 13  # a setting is not capped
    assert envshape.link_threads_cap(_caps(tmp_path, CARGO_AGENT_LINK_THREADS="11")) == 11


@pytest.mark.parametrize(("args", "after", "jobs"), [
    (["build", "-j", "3"], ["build", "-j", "3"], 3),  # within the cap: kept, and it is the build's jobs
    (["build", "-j", "4"], ["build", "-j", "4"], 4),  # exactly the cap
    (["build", "-j", "5"], ["build", "--jobs=4"], 4),
    (["build", "-j", "1"], ["build", "-j", "1"], 1),
    (["build", "-j", "0"], ["build", "--jobs=4"], 4),  # not a job count cargo-agent keeps
    (["build", "--jobs=-2"], ["build", "--jobs=4"], 4),
    (["build", "-j", "lots"], ["build", "--jobs=4"], 4),
    (["build", "-j", "2", "-j", "9"], ["build", "-j", "2", "--jobs=4"], 4),  # the last one counts, as for cargo
    (["build", "-j", "9", "-j", "2"], ["build", "-j", "9", "-j", "2"], 2),
    (["nextest", "run", "--build-jobs", "9"], ["nextest", "run", "--build-jobs=4"], 4),
    (["nextest", "run", "-j", "9"], ["nextest", "run", "-j", "9"], 4),  # nextest's -j is test threads
])
def test_a_jobs_option_above_the_cap_is_lowered_and_one_within_is_kept(tmp_path: Path, args: list[str],
                                                                     after: list[str], jobs: int) -> None:
    shaped = _shaped(tmp_path, args, CARGO_AGENT_JOBS="4")
    assert (shaped.argv, shaped.jobs) == (after, jobs)
    changed = [c for c in shaped.changes if c.name == "arg --jobs"]
    if after != args:
        assert len(changed) == 1 and changed[0].after == after[-1] and changed[0].why.startswith(
            "jobs capped at 4: the build runs on at most 4 of the host's 8 CPU tokens through its jobserver")
        assert shaped.jobs_option is not None
    else:
        assert not changed and shaped.jobs_option is None


def test_a_rewritten_jobs_option_leaves_the_jobs_variable_alone(tmp_path: Path) -> None:
    """cargo's -j beats CARGO_BUILD_JOBS, so only the option is lowered."""
    shaped = _shaped(tmp_path, ["build", "-j", "9"], {"CARGO_BUILD_JOBS": "16"}, cpus=1, CARGO_AGENT_JOBS="4")
    assert shaped.argv == ["build", "--jobs=1"] and shaped.env["CARGO_BUILD_JOBS"] == "16"
    assert [c.name for c in shaped.changes if "JOBS" in c.name or "jobs" in c.name] == ["arg --jobs"]


@pytest.mark.parametrize(("env", "cargo_config", "value", "why"), [
    ({"CARGO_BUILD_JOBS": "3"}, "", "3", None),
    ({"CARGO_BUILD_JOBS": "4"}, "", "4", None),
    ({"CARGO_BUILD_JOBS": "1"}, "", "1", None),
    ({"CARGO_BUILD_JOBS": "5"}, "", "4", " (was 5 from CARGO_BUILD_JOBS)"),
    ({"CARGO_BUILD_JOBS": "0"}, "", "4", " (was 0 from CARGO_BUILD_JOBS)"),
    ({}, "[build]\njobs = 16\n", "4", " (was 16 from build.jobs)"),
    ({}, "[build]\njobs = 2\n", None, None),  # kept in the file, so no variable is set
    ({}, "[build]\njobs = 4\n", None, None),  # exactly the cap: kept too
    ({"CARGO_BUILD_JOBS": "9"}, "[build]\njobs = 2\n", "4", " (was 9 from CARGO_BUILD_JOBS)"),  # the variable wins
])
def test_cargo_build_jobs_and_build_jobs_above_the_cap_are_lowered(tmp_path: Path, env: dict[str, str],
                                                                   cargo_config: str, value: str | None,
                                                                   why: str | None) -> None:
    shaped = _shaped(tmp_path, ["build"], env, cargo_config=cargo_config, CARGO_AGENT_JOBS="4")
    assert shaped.env.get("CARGO_BUILD_JOBS") == value
    assert shaped.jobs == int(value or cargo_config[-2])
    changes = [c for c in shaped.changes if c.name == "env CARGO_BUILD_JOBS"]
    if why is None:
        assert not changes
    else:
        assert len(changes) == 1 and changes[0].why.endswith(why) and changes[0].why.startswith("jobs capped at 4")


def test_without_any_jobs_value_cargos_default_is_left_alone_only_when_the_cap_covers_every_core(
        tmp_path: Path) -> None:
    covered = _shaped(tmp_path, ["build"], cpus=cores())
    assert "CARGO_BUILD_JOBS" not in covered.env and covered.jobs == cores()
    lower = _shaped(tmp_path, ["build"], cpus=cores(), CARGO_AGENT_JOBS="1")
    assert lower.env["CARGO_BUILD_JOBS"] == "1" and lower.jobs == 1
    assert lower.changes[0].why.startswith("jobs capped at 1") and "(was" not in lower.changes[0].why
    if cores() > 1:
        fewer = _shaped(tmp_path, ["build"], cpus=cores() - 1)
        assert fewer.env["CARGO_BUILD_JOBS"] == str(cores() - 1)


@pytest.mark.parametrize(("name", "raw", "after", "why"), [
    ("RUST_TEST_THREADS", None, "3", "test threads capped at 3"),
    ("RUST_TEST_THREADS", "3", "3", None),
    ("RUST_TEST_THREADS", "1", "1", None),
    ("RUST_TEST_THREADS", "4", "3", "test threads capped at 3 (was 4)"),
    ("RUST_TEST_THREADS", " 2 ", " 2 ", None),
    ("RUST_TEST_THREADS", " 3 ", " 3 ", None),  # exactly the cap: left as written
    ("NEXTEST_TEST_THREADS", "num-cpus", "3", "test threads capped at 3 (was num-cpus)"),
    ("NEXTEST_TEST_THREADS", "9", "3", "test threads capped at 3 (was 9)"),
    ("NEXTEST_TEST_THREADS", "2", "2", None),
])
def test_test_thread_variables_are_set_to_the_cap_or_kept_below_it(tmp_path: Path, name: str, raw: str | None,
                                                                   after: str, why: str | None) -> None:
    shaped = _shaped(tmp_path, ["test"], {name: raw} if raw is not None else {}, CARGO_AGENT_TEST_THREADS="3")
    assert shaped.env[name] == after
    changes = [c.why for c in shaped.changes if c.name == f"env {name}"]
    assert changes == ([why] if why else [])


@pytest.mark.parametrize("bad", ["0", "-1", "x", ""])
def test_a_test_thread_count_below_one_is_refused_naming_the_variable(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UsageError, match=f"^invalid value '{bad}' for NEXTEST_TEST_THREADS: expected a whole "
                                         "number >= 1$"):
        _shaped(tmp_path, ["test"], {"NEXTEST_TEST_THREADS": bad})


@pytest.mark.parametrize(("args", "after", "before"), [
    (["test", "--", "--test-threads=9"], ["test", "--", "--test-threads=3"], ["--test-threads=9"]),
    (["test", "--", "--test-threads", "9", "--nocapture"], ["test", "--", "--test-threads=3", "--nocapture"],
     ["--test-threads 9"]),
    (["bench", "--", "--test-threads=4"], ["bench", "--", "--test-threads=3"], ["--test-threads=4"]),
    (["test", "--", "--test-threads=3"], ["test", "--", "--test-threads=3"], []),
    (["test", "--", "--test-threads=2"], ["test", "--", "--test-threads=2"], []),
    (["test", "--", "--test-threads", "2", "x"], ["test", "--", "--test-threads", "2", "x"], []),
    (["test", "--", "--test-threads"], ["test", "--", "--test-threads"], []),  # no value: left to libtest
    (["test", "--", "--test-threads=many"], ["test", "--", "--test-threads=many"], []),
    (["test", "--", "a", "--test-threads=8", "--test-threads", "7"],
     ["test", "--", "a", "--test-threads=3", "--test-threads=3"], ["--test-threads=8", "--test-threads 7"]),
    (["test", "--", "--test-threads", "--test-threads=5"], ["test", "--", "--test-threads", "--test-threads=5"],
     []),  # the value of `--test-threads` is the next word, whatever it is (libtest refuses this one)
    (["run", "--", "--test-threads=9"], ["run", "--", "--test-threads=9"], []),  # the program's own argument
    (["test", "--test-threads=9"], ["test", "--test-threads=9"], []),  # before `--`: not libtest's
    (["test"], ["test"], []),
    (["test", "--", "--test-threads=9=9"], ["test", "--", "--test-threads=9=9"], []),  # not a count
])
@pytest.mark.timeout(30)  # a scan that stops advancing would loop
def test_a_test_threads_argument_after_the_double_dash_is_capped(tmp_path: Path, args: list[str],
                                                                 after: list[str], before: list[str]) -> None:
    shaped = _shaped(tmp_path, args, CARGO_AGENT_TEST_THREADS="3")
    assert shaped.argv == after
    changes = [c for c in shaped.changes if c.name == "arg --test-threads"]
    assert [c.before for c in changes] == before
    assert all(c.after == "--test-threads=3" and c.why == "test threads capped at 3" for c in changes)


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
