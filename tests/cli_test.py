"""cargo-agent as users run it: real cargo on fixture workspaces, exit codes, bad input."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE_CARGO, REPO, RunAgent, agent_command, crate, nest, write_tree

from cargo_agent import cli


def test_scoped_test_runs_real_cargo_tests(virtual_ws: Path, run_agent: RunAgent) -> None:
    result = run_agent("test", "-p", "alpha", cwd=virtual_ws)
    assert result.returncode == 0, result.stderr
    assert "test tests::works ... ok" in result.stdout


def test_unscoped_test_is_refused_before_cargo_runs(virtual_ws: Path, run_agent: RunAgent) -> None:
    result = run_agent("test", cwd=virtual_ws)
    assert result.returncode == 2
    assert result.stderr.startswith("error: refused by cargo-agent (rule unscoped-test)")
    assert "cargo-agent test -p <package>" in result.stderr
    assert "Compiling" not in result.stderr


def test_failing_test_exit_code_comes_back_unchanged(tmp_path: Path, run_agent: RunAgent) -> None:
    root = write_tree(tmp_path / "failing", crate("failing", lib="#[test]\nfn fails() { assert_eq!(1, 2); }\n"))
    result = run_agent("test", cwd=root)
    assert result.returncode == 101
    assert "test result: FAILED" in result.stdout


def test_compile_error_exit_code_comes_back_unchanged(tmp_path: Path, run_agent: RunAgent) -> None:
    root = write_tree(tmp_path / "broken", crate("broken", lib="pub fn f() -> u8 { \"no\" }\n"))
    result = run_agent("check", cwd=root)
    assert result.returncode == 101
    assert "mismatched types" in result.stderr


def test_version_is_real_cargos_version(virtual_ws: Path, run_agent: RunAgent, agent_env: dict[str, str]) -> None:
    result = run_agent("--version", cwd=virtual_ws)
    bare = subprocess.run(["cargo", "--version"], cwd=virtual_ws, capture_output=True, text=True, env=agent_env)
    assert result.returncode == 0 and result.stdout == bare.stdout


def test_cargo_agent_subcommand_form(virtual_ws: Path, run_agent: RunAgent) -> None:
    """`cargo agent test` runs us as `cargo-agent agent test`."""
    assert run_agent("agent", "test", cwd=virtual_ws).returncode == 2
    assert run_agent("agent", "check", "-p", "beta", cwd=virtual_ws).returncode == 0


def test_args_are_passed_through_untouched(virtual_ws: Path, run_agent: RunAgent,
                                           fake_cargo_env: dict[str, str]) -> None:
    args = ["-v", "--locked", "build", "-p", "alpha", "--features", "x y", "--weird-flag", "--", "a b", "-p"]
    result = run_agent(*args, cwd=virtual_ws, env=fake_cargo_env)
    assert result.returncode == 0, result.stderr
    logged = [json.loads(line[5:]) for line in Path(fake_cargo_env["FAKE_LOG"]).read_text().splitlines()
              if line.startswith("argv ")]
    assert logged == [args]


@pytest.mark.parametrize("code", ["0", "1", "3", "101"])
def test_fake_cargo_exit_codes_pass_through(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str],
                                            code: str) -> None:
    result = run_agent("build", cwd=virtual_ws, env=fake_cargo_env, extra_env={"FAKE_EXIT": code})
    assert result.returncode == int(code)


def test_death_by_signal_is_128_plus_n(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str]) -> None:
    result = run_agent("build", cwd=virtual_ws, env=fake_cargo_env, extra_env={"FAKE_SIGNAL": "SIGSEGV"})
    assert result.returncode == 139


def test_non_compiling_commands_never_take_a_slot(virtual_ws: Path, run_agent: RunAgent,
                                                  fake_cargo_env: dict[str, str]) -> None:
    result = run_agent("metadata", "--no-deps", cwd=virtual_ws, env=fake_cargo_env)
    assert result.returncode == 0
    assert not Path(fake_cargo_env["CARGO_AGENT_LOCK_DIR"]).exists()


# Modules neither path may import unless that run uses them: each costs more to import than the
# path's own work (docs/performance.md). The compiling path uses json (records, and so re), threading
# (the CPU token broker), signal, select, ctypes (prctl), hashlib (the link gate's directory) and,
# still, pathlib (the lock dir's paths in slots and report: the next to go, docs/performance.md).
PASSTHROUGH_BANNED = ("click", "filelock", "psutil", "tomllib", "tomli", "json", "re", "dataclasses", "pathlib",
                      "typing", "subprocess", "threading", "inspect", "enum")
COMPILING_BANNED = ("click", "filelock", "psutil", "tomllib", "tomli", "dataclasses", "typing", "subprocess",
                    "inspect", "glob", "random", "shlex", "getpass", "pathlib", "json", "re", "hashlib", "fnmatch",
                    "urllib", "ipaddress", "threading", "ctypes", "enum", "array", "collections", "functools")


def _imported(args: list[str], cwd: Path, env: dict[str, str], banned: tuple[str, ...]) -> list[str]:
    """The banned modules a real cargo-agent run imported (beyond what this interpreter had loaded
    before cargo-agent started, e.g. by a site hook), read at its exit or at its execve."""
    probe = ("import atexit, os, sys\n"
             f"banned = {banned!r}\n"
             "before = set(sys.modules)\n"
             "show = lambda *a: print('IMPORTED:' + ','.join(sorted(m for m in banned\n"
             "                         if m in sys.modules and m not in before)), flush=True)\n"
             "atexit.register(show)\n"
             "real_execve = os.execve\n"
             "os.execve = lambda *a: (show(), real_execve(*a))\n"
             "from cargo_agent import cli\n"
             f"sys.exit(cli.main({args!r}))\n")
    # -S: no site hooks (an editable install's finder imports pathlib and more at start-up); the
    # checkout and the dependencies' site-packages go on the path explicitly instead.
    import site

    path = os.pathsep.join([str(REPO), *site.getsitepackages()])
    result = subprocess.run([sys.executable, "-S", "-c", probe], cwd=cwd, env={**env, "PYTHONPATH": path},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("IMPORTED:"))
    return [m for m in line.removeprefix("IMPORTED:").split(",") if m]


def test_fast_path_imports_no_heavy_modules(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    assert _imported(["version"], virtual_ws, agent_env, PASSTHROUGH_BANNED) == []


def test_compiling_path_imports_only_what_it_uses(tmp_path: Path, agent_env: dict[str, str]) -> None:
    """A no-op `check -p` of a built workspace: the call agents make many times an hour. (Its
    manifests are plain `key = value` files; one with an inline table is read by tomllib until
    the parse cache may hold it: tests/tomlfile_test.py.)"""
    root = write_tree(tmp_path / "ws", {"Cargo.toml": '[workspace]\nresolver = "2"\nmembers = ["crates/*"]\n',
                                        **nest("crates/alpha", crate("alpha")), **nest("crates/beta", crate("beta"))})
    _imported(["check", "-p", "alpha", "-q"], root, agent_env, COMPILING_BANNED)  # builds it
    assert _imported(["check", "-p", "alpha", "-q"], root, agent_env, COMPILING_BANNED) == []


def test_the_import_guard_sees_an_import(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    """The guard can fail: cargo-agent's own options are parsed with click, and the guard says so."""
    assert "click" in _imported(["--status"], virtual_ws, agent_env, COMPILING_BANNED)


def test_missing_cargo_is_127(virtual_ws: Path, run_agent: RunAgent, agent_env: dict[str, str],
                              tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {**agent_env, "PATH": str(empty)}
    result = run_agent("version", cwd=virtual_ws, env=env)
    assert result.returncode == 127
    assert result.stderr.startswith("error: cannot find the real cargo")


@pytest.mark.parametrize(("name", "value", "accepted"), [
    ("CARGO_AGENT_SLOTS", "abc", "a whole number >= 1 or 'auto'"),
    ("CARGO_AGENT_SLOTS", "0", "a whole number >= 1 or 'auto'"),
    ("CARGO_AGENT_LIMIT_AS", "4Q", "a size like 4G"),
    ("CARGO_AGENT_TIMEOUT", "soon", "a duration like 90s"),
    ("CARGO_AGENT_MEM_HIGH", "120", "a percentage"),
    ("CARGO_AGENT_REPORT", "maybe", "1/0, true/false"),
    ("CARGO_AGENT_RUSTC_WRAPPER", "drop", "keep, clear-sccache or clear"),
])
def test_bad_env_value_is_one_clear_line(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str],
                                         name: str, value: str, accepted: str) -> None:
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env, extra_env={name: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"'{value}' for {name}" in lines[0] and accepted in lines[0]
    assert not Path(fake_cargo_env["FAKE_LOG"]).exists()


def test_unknown_key_in_host_config_names_file_and_key(virtual_ws: Path, run_agent: RunAgent,
                                                       fake_cargo_env: dict[str, str]) -> None:
    Path(fake_cargo_env["CARGO_AGENT_CONFIG"]).write_text("slotz = 3\n")
    result = run_agent("build", cwd=virtual_ws, env=fake_cargo_env)
    assert result.returncode == 2
    assert "unknown key 'slotz' in" in result.stderr and "host-config.toml" in result.stderr


def test_malformed_cargo_toml_is_exit_2(tmp_path: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str]) -> None:
    write_tree(tmp_path / "bad", {"Cargo.toml": "[package\nname = 1\n"})
    result = run_agent("test", cwd=tmp_path / "bad", env=fake_cargo_env)
    assert result.returncode == 2 and "malformed TOML" in result.stderr and "Traceback" not in result.stderr


def test_dry_run_json_shows_decision_env_and_argv(virtual_ws: Path, run_agent: RunAgent) -> None:
    result = run_agent("--dry-run", "--json", "test", "-p", "alpha", "-j", "64", cwd=virtual_ws,
                       extra_env={"RUST_TEST_THREADS": "100"})
    plan = json.loads(result.stdout)
    assert plan["decision"]["allowed"] is True
    assert plan["argv"][-1].startswith("--jobs=")
    assert any(e["name"] == "RUST_TEST_THREADS" and e["before"] == "100" for e in plan["env"])
    assert "formula" in plan["slots"]


def test_dry_run_of_a_refused_command_exits_2_and_shows_the_rule(virtual_ws: Path, run_agent: RunAgent) -> None:
    result = run_agent("--dry-run", "build", "--all-targets", cwd=virtual_ws)
    assert result.returncode == 2 and "refused (rule all-targets)" in result.stdout


def test_own_options_do_not_collide_with_cargo_globals() -> None:
    cargo_globals = {"--explain", "--list", "-V", "--version", "-C", "--config", "-Z", "--color", "-v", "-q",
                     "--locked", "--offline", "--frozen", "-h", "--help", "--verbose", "--quiet"}
    assert not (cli.OWN_FLAGS | cli.OWN_VALUE_OPTIONS) & cargo_globals


def test_bad_own_option_value_is_exit_2(virtual_ws: Path, run_agent: RunAgent) -> None:
    result = run_agent("--install-shim", cwd=virtual_ws)
    assert result.returncode == 2 and result.stderr.startswith("error:")


def test_fake_cargo_is_executable() -> None:
    assert os.access(FAKE_CARGO, os.X_OK)


def _installed_launcher() -> str:
    import shutil

    beside = Path(sys.executable).parent / "cargo-agent"  # the README's venv, used without activating it
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("cargo-agent")
    if found is None:
        pytest.fail("cargo-agent is not installed: run the README's test command")
    return found


def test_installed_launcher_runs(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    from cargo_agent import __version__

    result = subprocess.run([_installed_launcher(), "--agent-version"], cwd=virtual_ws, env=agent_env,
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == f"cargo-agent {__version__}\n"


def test_cargo_agent_as_a_real_cargo_external_subcommand(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    """Real cargo finds `cargo-agent` on PATH and runs it as `cargo-agent agent ...`."""
    env = {**agent_env, "PATH": f"{Path(_installed_launcher()).parent}:{agent_env['PATH']}"}
    refused = subprocess.run(["cargo", "agent", "test"], cwd=virtual_ws, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "rule unscoped-test" in refused.stderr
    allowed = subprocess.run(["cargo", "agent", "test", "-p", "beta"], cwd=virtual_ws, env=env, capture_output=True,
                             text=True, timeout=240)
    assert allowed.returncode == 0 and "test tests::works ... ok" in allowed.stdout


def test_doctor_reports_each_check(virtual_ws: Path, run_agent: RunAgent) -> None:
    result = run_agent("--doctor", cwd=virtual_ws)
    assert result.returncode == 0, result.stdout
    names = [line.split(":", 1)[0] for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert names == ["config", "real cargo", "cargo on PATH", "rustup", "lock dir", "slots", "memory limit",
                     "settings"]


def test_doctor_fails_on_a_bad_setting(virtual_ws: Path, run_agent: RunAgent) -> None:
    result = run_agent("--doctor", cwd=virtual_ws, extra_env={"CARGO_AGENT_SLOTS": "many"})
    assert result.returncode == 1 and "config: error: invalid value 'many' for CARGO_AGENT_SLOTS" in result.stdout


def test_agent_help_lists_own_options_only(virtual_ws: Path, run_agent: RunAgent) -> None:
    result = run_agent("--agent-help", cwd=virtual_ws)
    assert result.returncode == 0
    for option in ("--dry-run", "--json", "--status", "--doctor", "--install-shim", "--agent-version"):
        assert option in result.stdout


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["help"], []])
def test_cargo_help_is_cargos_then_one_note_pointing_to_agent_help(virtual_ws: Path, run_agent: RunAgent,
                                                                   agent_env: dict[str, str],
                                                                   args: list[str]) -> None:
    result = run_agent(*args, cwd=virtual_ws)
    bare = subprocess.run(["cargo", *args], cwd=virtual_ws, env=agent_env, capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (bare.returncode, bare.stdout)
    assert result.stderr.splitlines() == ["note: cargo-agent's own options (--dry-run, --status, --doctor, ...): "
                                          "cargo-agent --agent-help"]


def test_cargo_help_through_the_shim_says_this_cargo_is_cargo_agent(virtual_ws: Path, run_agent: RunAgent) -> None:
    result = run_agent("--help", cwd=virtual_ws, extra_env={"CARGO_AGENT_INVOKED_AS": "cargo"})
    assert result.returncode == 0 and "Usage: cargo" in result.stdout
    assert result.stderr.splitlines() == ["note: this `cargo` runs through cargo-agent; its own options: "
                                          "cargo-agent --agent-help"]


@pytest.mark.parametrize("args", [["help", "build"], ["build", "--help"], ["--version"]])
def test_other_help_and_version_get_no_note(virtual_ws: Path, run_agent: RunAgent, args: list[str]) -> None:
    result = run_agent(*args, cwd=virtual_ws)
    assert result.returncode == 0 and result.stdout and "agent-help" not in result.stderr  # (man may warn)


def test_cargo_helps_exit_code_comes_back(virtual_ws: Path, run_agent: RunAgent,
                                         fake_cargo_env: dict[str, str]) -> None:
    result = run_agent("--help", cwd=virtual_ws, env=fake_cargo_env, extra_env={"FAKE_EXIT": "3"})
    assert result.returncode == 3


def test_agent_help_shows_usage_settings_and_docs(virtual_ws: Path, run_agent: RunAgent) -> None:
    result = run_agent("--agent-help", cwd=virtual_ws)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("Usage: cargo-agent [OPTIONS] [CARGO ARGS]...\n")
    assert "docs/configuration.md" in result.stdout and "CARGO_AGENT_*" in result.stdout
    assert "Docs: " in result.stdout


@pytest.mark.parametrize(("args", "unexpected"), [
    (["--json"], "'--json'"),
    (["--doctor", "build"], "'build'"),
    (["--status", "build"], "'build'"),
    (["--agent-version", "build"], "'build'"),
])
def test_extra_arguments_are_one_line_errors(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str],
                                             args: list[str], unexpected: str) -> None:
    result = run_agent(*args, cwd=virtual_ws, env=fake_cargo_env)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unexpected argument " + unexpected)
    assert not Path(fake_cargo_env["FAKE_LOG"]).exists()


@pytest.mark.parametrize("args", [["--status"], ["--status", "--json"], ["--agent-help"], ["--agent-version"],
                                  ["--dry-run", "build", "-p", "alpha"]])
def test_a_closed_pipe_stops_quietly_like_cargo(virtual_ws: Path, agent_env: dict[str, str],
                                                args: list[str]) -> None:
    """The reader is gone before the first write: a real pipe whose read end is closed."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        ours = subprocess.run(agent_command(*args), cwd=virtual_ws, env=agent_env, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
        cargos = subprocess.run(["cargo", "--list"], cwd=virtual_ws, env=agent_env, stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert (cargos.returncode, cargos.stderr) == (0, "")  # the convention we follow
    assert (ours.returncode, ours.stderr) == (0, "")


def test_status_into_head_exits_0_through_a_shell_pipe(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    script = f"{shlex.join(agent_command('--status'))} | head -1; exit ${{PIPESTATUS[0]}}"
    result = subprocess.run(["bash", "-c", script], cwd=virtual_ws, env=agent_env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stderr == "" and result.stdout.startswith("slots: ")


@pytest.mark.parametrize(("where", "expected"), [
    ("env", "error: mem_kill 80% (CARGO_AGENT_MEM_KILL) is below mem_high 90% (CARGO_AGENT_MEM_HIGH): "
            "expected mem_kill >= mem_high, or mem_kill 'off'"),
    ("host", "error: mem_kill 80% ({host}:mem_kill) is below mem_high 90% ({host}:mem-high): "
             "expected mem_kill >= mem_high, or mem_kill 'off'"),
    ("mixed", "error: mem_kill 80% (CARGO_AGENT_MEM_KILL) is below mem_high 90% ({host}:mem-high): "
              "expected mem_kill >= mem_high, or mem_kill 'off'"),
])
def test_mem_kill_below_mem_high_is_refused(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str],
                                            where: str, expected: str) -> None:
    env = {k: v for k, v in fake_cargo_env.items() if k != "CARGO_AGENT_MEM_KILL"}
    host = Path(env["CARGO_AGENT_CONFIG"])
    if where == "env":
        env.update(CARGO_AGENT_MEM_HIGH="90", CARGO_AGENT_MEM_KILL="80")
    elif where == "host":
        host.write_text("mem-high = 90\nmem_kill = 80\n")
    else:
        host.write_text("mem-high = 90\nmem_kill = 99\n")
        env["CARGO_AGENT_MEM_KILL"] = "80"
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [expected.format(host=host)]
    assert not Path(env["FAKE_LOG"]).exists()


@pytest.mark.parametrize(("high", "kill"), [("90", "90"), ("99", "off"), ("50", "60")])
def test_mem_kill_at_or_above_mem_high_or_off_is_fine(virtual_ws: Path, run_agent: RunAgent,
                                                      fake_cargo_env: dict[str, str], high: str, kill: str) -> None:
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env,
                       extra_env={"CARGO_AGENT_MEM_HIGH": high, "CARGO_AGENT_MEM_KILL": kill})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("text", "suggestion"), [
    ("slotz = 3\n", "; did you mean 'slots'?"),
    ("mem-hihg = 80\n", "; did you mean 'mem-high'?"),
    ("wait_timout = '1m'\n", "; did you mean 'wait_timeout'?"),
    ("colour = 'red'\n", ""),
])
def test_unknown_config_key_suggests_a_close_one(virtual_ws: Path, run_agent: RunAgent,
                                                 fake_cargo_env: dict[str, str], text: str, suggestion: str) -> None:
    host = Path(fake_cargo_env["CARGO_AGENT_CONFIG"])
    host.write_text(text)
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env)
    key = text.split(" ", 1)[0]
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"error: unknown key '{key}' in {host}{suggestion}"


def test_a_slot_count_above_the_hosts_is_clamped_with_one_warning(virtual_ws: Path, run_agent: RunAgent,
                                                                  fake_cargo_env: dict[str, str]) -> None:
    Path(fake_cargo_env["CARGO_AGENT_CONFIG"]).write_text("slots = 2\n")
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env,
                       extra_env={"CARGO_AGENT_SLOTS": "99"})
    assert result.returncode == 0
    assert result.stderr.splitlines() == ["warning: cargo-agent: CARGO_AGENT_SLOTS asks for 99 slots but the host "
                                          "has 2; using 2"]
    plan = run_agent("--dry-run", "--json", "build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env,
                     extra_env={"CARGO_AGENT_SLOTS": "99"})
    assert json.loads(plan.stdout)["slots"]["count"] == 2
    lowered = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env,
                        extra_env={"CARGO_AGENT_SLOTS": "1"})
    assert lowered.returncode == 0 and lowered.stderr == ""


@pytest.fixture
def shim_path_env(tmp_path: Path, agent_env: dict[str, str]) -> dict[str, str]:
    """agent_env with the installed `cargo` shim first on PATH (and a cargo-agent launcher)."""
    shim_dir, bin_dir = tmp_path / "shim", tmp_path / "bin"
    subprocess.run(agent_command("--install-shim", str(shim_dir)), env=agent_env, check=True, capture_output=True)
    bin_dir.mkdir()
    (bin_dir / "cargo-agent").write_text(f"#!/bin/sh\nexec {sys.executable} -m cargo_agent \"$@\"\n")
    (bin_dir / "cargo-agent").chmod(0o755)
    return {**agent_env, "PATH": f"{shim_dir}:{bin_dir}:{agent_env['PATH']}"}


@pytest.mark.parametrize("broken", ["host", "user", "value"])
def test_a_broken_config_warns_once_for_commands_that_compile_nothing(virtual_ws: Path, shim_path_env: dict[str, str],
                                                                      agent_env: dict[str, str], broken: str) -> None:
    host = Path(shim_path_env["CARGO_AGENT_CONFIG"])
    if broken == "host":
        host.write_text("this is = = not toml\n")
        named = str(host)
    elif broken == "user":
        user = Path(shim_path_env["XDG_CONFIG_HOME"]) / "cargo-agent" / "config.toml"
        user.parent.mkdir(parents=True)
        user.write_text("[slots\n")
        named = str(user)
    else:
        host.write_text('slots = "many"\n')
        named = f"for {host}:slots"
    for args in (["--version"], ["fmt", "--version"], ["metadata", "--no-deps", "--format-version", "1"],
                 ["help"], ["--list"]):
        through = subprocess.run(["cargo", *args], cwd=virtual_ws, env=shim_path_env, capture_output=True, text=True,
                                 timeout=120)
        bare = subprocess.run(["cargo", *args], cwd=virtual_ws, env=agent_env, capture_output=True, text=True,
                              timeout=120)
        assert (through.returncode, through.stdout) == (bare.returncode, bare.stdout) == (0, bare.stdout), args
        warnings = [line for line in through.stderr.splitlines() if line.startswith("warning: cargo-agent:")]
        assert len(warnings) == 1 and named in warnings[0], (args, through.stderr)
        assert "which compiles nothing" in warnings[0] and "error:" not in through.stderr
    compiling = subprocess.run(["cargo", "build", "-p", "alpha"], cwd=virtual_ws, env=shim_path_env,
                               capture_output=True, text=True, timeout=120)
    assert compiling.returncode == 2, compiling.stderr
    assert compiling.stderr.startswith("error: ") and named in compiling.stderr.splitlines()[0]
    assert "Compiling" not in compiling.stderr and "warning: cargo-agent:" not in compiling.stderr


def test_cargo_plus_toolchain_agent_honours_the_explicit_toolchain(tmp_path: Path, virtual_ws: Path,
                                                                    agent_env: dict[str, str]) -> None:
    """`cargo +nightly agent ...`: rustup's proxy passes the `+nightly` on as RUSTUP_TOOLCHAIN
    with RUSTUP_TOOLCHAIN_SOURCE=cli; it beats the checkout's rust-toolchain file, as `+nightly`
    on cargo-agent's own command line does. An inherited RUSTUP_TOOLCHAIN does not."""
    (virtual_ws / "rust-toolchain.toml").write_text('[toolchain]\nchannel = "stable"\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "cargo-agent"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -m cargo_agent \"$@\"\n")
    launcher.chmod(0o755)
    env = {**agent_env, "PATH": f"{bin_dir}:{agent_env['PATH']}"}

    def chosen(*args: str, extra: dict[str, str] | None = None) -> str:
        result = subprocess.run(["cargo", *args, "agent", "--dry-run", "--json", "build", "-p", "alpha"],
                                cwd=virtual_ws, env={**env, **(extra or {})}, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["toolchain"]["name"])

    assert chosen("+nightly").startswith("nightly")
    assert chosen() == "stable"
    assert chosen(extra={"RUSTUP_TOOLCHAIN": "nightly"}) == "stable"


def test_a_compiling_command_without_rustc_is_127(virtual_ws: Path, fake_cargo_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    env = {**fake_cargo_env, "PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path / "cold-cache")}
    result = subprocess.run(agent_command("build", "-p", "alpha"), cwd=virtual_ws, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 127
    assert result.stderr.splitlines()[0] == "error: cannot find rustc on PATH"
    assert "Errno" not in result.stderr
    result = subprocess.run(agent_command("build", "-p", "alpha"), cwd=virtual_ws, capture_output=True, text=True,
                            env={**env, "RUSTC": str(tmp_path / "no-rustc")})
    assert result.returncode == 127 and "RUSTC is set to" in result.stderr


def test_dry_run_of_a_command_that_compiles_nothing_says_nothing_is_applied(virtual_ws: Path,
                                                                           run_agent: RunAgent) -> None:
    result = run_agent("--dry-run", "metadata", "--no-deps", cwd=virtual_ws)
    assert result.returncode == 0
    assert "applied:   nothing" in result.stdout
    assert "slots:" not in result.stdout and "RLIMIT_AS" not in result.stdout
    compiling = run_agent("--dry-run", "build", "-p", "alpha", cwd=virtual_ws)
    assert "(was None)" not in compiling.stdout and "(was unset)" in compiling.stdout
    assert "RLIMIT_AS 4 GiB" in compiling.stdout


def test_output_that_cannot_be_written_is_one_line_and_exit_74(virtual_ws: Path, agent_env: dict[str, str]) -> None:
    """`--status > /dev/full`: no traceback, one error line, EX_IOERR."""
    with open("/dev/full", "w") as full:
        result = subprocess.run(agent_command("--status"), cwd=virtual_ws, env=agent_env, stdout=full,
                                stderr=subprocess.PIPE, text=True)
    assert result.returncode == 74, result.stderr
    assert result.stderr == "error: cannot write cargo-agent's output: no space left on device\n"


@pytest.mark.parametrize("closed", [">&-", "2>&-", "<&- >&- 2>&-"])
def test_closed_standard_streams_are_neither_a_traceback_nor_a_lock_file(
        virtual_ws: Path, fake_cargo_env: dict[str, str], tmp_path: Path, closed: str) -> None:
    """With stdout closed by the caller, the first file cargo-agent opens would take fd 1, and
    cargo, inheriting it, would write its output there: into a lock file. fds 0-2 are put on
    /dev/null first."""
    env = {**fake_cargo_env, "FAKE_NESTED": "echo OUTPUT-MARK; echo OUTPUT-MARK >&2"}
    for args in (["build", "-p", "alpha"], ["--status"]):
        command = " ".join(shlex.quote(a) for a in agent_command(*args))
        result = subprocess.run(["sh", "-c", f"{command} {closed}; echo $? > {tmp_path / 'code'}"],
                                cwd=virtual_ws, env=env, capture_output=True, text=True)
        assert (tmp_path / "code").read_text().strip() == "0", result.stderr
        assert "Traceback" not in result.stderr
    for path in Path(env["CARGO_AGENT_LOCK_DIR"]).rglob("*"):
        if path.is_file():
            assert b"OUTPUT-MARK" not in path.read_bytes(), path
