"""Supervision with real processes: timeouts, signals, RLIMIT_AS, retries, no survivors."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import RunAgent, agent_command, alive, crate, wait_for, write_tree

from cargo_agent import supervise

# Every test here waits on processes: a hang fails in two minutes, not 300 s.
pytestmark = pytest.mark.timeout(120)


def test_timeout_stops_the_whole_tree_including_setsid_grandchild(
        virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str], tmp_path: Path,
        reap: list[int]) -> None:
    grandchild = tmp_path / "grandchild.pid"
    cargo_pid = tmp_path / "cargo.pid"
    env = {"FAKE_SLEEP": "300", "FAKE_PIDFILE": str(cargo_pid),
           "FAKE_SPAWN": f"setsid sh -c 'echo $$ > {grandchild}; exec sleep 300'",
           "CARGO_AGENT_TIMEOUT": "2s", "CARGO_AGENT_KILL_GRACE": "1s"}
    result = run_agent("build", cwd=virtual_ws, env=fake_cargo_env, extra_env=env)
    pids = [int(cargo_pid.read_text()), int(grandchild.read_text())]
    reap.extend(pids)
    assert result.returncode == 124
    assert "error: timed out after 0m2s; stopped" in result.stderr
    assert not any(alive(pid) for pid in pids)


def test_leftover_processes_are_stopped_when_cargo_exits(virtual_ws: Path, run_agent: RunAgent,
                                                         fake_cargo_env: dict[str, str], tmp_path: Path,
                                                         reap: list[int]) -> None:
    daemon = tmp_path / "daemon.pid"
    result = run_agent("build", cwd=virtual_ws, env=fake_cargo_env,
                       extra_env={"FAKE_SPAWN": f"setsid sh -c 'echo $$ > {daemon}; exec sleep 300'",
                                  "FAKE_SLEEP": "0.5"})
    reap.append(int(daemon.read_text()))
    assert result.returncode == 0
    assert not alive(int(daemon.read_text()))


def test_sigint_during_real_cargo_test_is_130_with_no_survivors_and_slot_free(
        tmp_path: Path, agent_env: dict[str, str], reap: list[int]) -> None:
    root = write_tree(tmp_path / "slow", crate("slowtest", lib=(
        "#[test]\nfn slow() {\n    println!(\"SLOW-TEST-STARTED\");\n"
        "    std::thread::sleep(std::time::Duration::from_secs(120));\n}\n")))
    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        proc = subprocess.Popen(agent_command("test", "--", "--nocapture"), cwd=root, env=agent_env, stdout=handle,
                                stderr=subprocess.STDOUT)
    wait_for(lambda: "SLOW-TEST-STARTED" in out.read_text(), 180)
    import psutil

    tree = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    reap.extend(tree)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    wait_for(lambda: not any(alive(pid) for pid in tree), 5)
    from cargo_agent import lockdir

    lock_dir = Path(agent_env["CARGO_AGENT_LOCK_DIR"])
    for lock in lock_dir.glob("slot-*.lock"):
        fd = os.open(lock, os.O_RDWR)
        try:
            assert lockdir.try_lock(fd), f"{lock} is still held"
        finally:
            os.close(fd)


@pytest.mark.parametrize(("setting", "expected"), [("3G", str(3 << 30)), ("unlimited", "unlimited")])
def test_rlimit_as_reaches_rustc_and_build_scripts(tmp_path: Path, run_agent: RunAgent, setting: str,
                                                   expected: str) -> None:
    files = crate("limited")
    files["build.rs"] = ('fn main() {\n    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();\n'
                         '    let line = limits.lines().find(|l| l.starts_with("Max address space")).unwrap();\n'
                         '    println!("cargo::warning=LIMIT {line}");\n}\n')
    root = write_tree(tmp_path / "limited", files)
    result = run_agent("build", cwd=root, extra_env={"CARGO_AGENT_LIMIT_AS": setting})
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if "LIMIT Max address space" in line)
    assert line.split()[-3] == expected


def test_a_test_binary_that_aborts_gives_cargos_own_code(tmp_path: Path, run_agent: RunAgent) -> None:
    root = write_tree(tmp_path / "aborts", crate("aborts", lib="#[test]\nfn boom() { std::process::abort(); }\n"))
    result = run_agent("test", cwd=root)
    assert result.returncode == 101


TRANSIENT = [
    "error: could not compile `x`: Resource temporarily unavailable (os error 11) while spawning rustc",
    "thread 'rustc' panicked: failed to spawn helper thread: WouldBlock",
    "error: failed to spawn helper thread",
    "error: could not exec the linker `cc`\n  = note: Resource temporarily unavailable (os error 11)",
    "called `Result::unwrap()` on an `Err` value: ThreadPoolBuildError { kind: IOError(...) }",
]


@pytest.mark.parametrize("stderr", TRANSIENT)
def test_transient_failure_is_retried_once_then_succeeds(virtual_ws: Path, run_agent: RunAgent,
                                                         fake_cargo_env: dict[str, str], tmp_path: Path,
                                                         stderr: str) -> None:
    marker = tmp_path / "failed-once"
    result = run_agent("build", cwd=virtual_ws, env=fake_cargo_env,
                       extra_env={"FAKE_FAIL_ONCE_FILE": str(marker), "FAKE_STDERR": stderr, "FAKE_EXIT": "101"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("retrying with --jobs") == 1
    assert Path(fake_cargo_env["FAKE_LOG"]).read_text().count("start ") == 2


@pytest.mark.parametrize("stderr", ["error[E0308]: mismatched types",
                                    "test result: FAILED. 0 passed; 1 failed\nos error 11"])
def test_real_errors_and_test_failures_are_not_retried(virtual_ws: Path, run_agent: RunAgent,
                                                       fake_cargo_env: dict[str, str], stderr: str) -> None:
    result = run_agent("build", cwd=virtual_ws, env=fake_cargo_env,
                       extra_env={"FAKE_STDERR": stderr, "FAKE_EXIT": "101"})
    assert result.returncode == 101
    assert "retrying" not in result.stderr
    assert Path(fake_cargo_env["FAKE_LOG"]).read_text().count("start ") == 1


def test_no_retry_after_a_timeout(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str]) -> None:
    result = run_agent("build", cwd=virtual_ws, env=fake_cargo_env,
                       extra_env={"FAKE_SLEEP": "30", "FAKE_STDERR": "os error 11", "CARGO_AGENT_TIMEOUT": "1"})
    assert result.returncode == 124 and "retrying" not in result.stderr


def test_transient_detection() -> None:
    assert supervise.transient_failure("spawning rustc: Resource temporarily unavailable")
    assert supervise.transient_failure("Resource temporarily unavailable") is None  # no context
    assert supervise.transient_failure("error: test failed, to rerun pass `--lib`\nos error 11") is None


def test_run_report_is_logged(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str]) -> None:
    import json

    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env,
                       extra_env={"CARGO_AGENT_REPORT": "1", "FAKE_EXIT": "3"})
    assert result.returncode == 3 and "cargo-agent: exit 3 in" in result.stderr
    record = json.loads((Path(fake_cargo_env["CARGO_AGENT_LOCK_DIR"]) / "runs.jsonl").read_text().splitlines()[-1])
    assert record["exit_code"] == 3 and record["command"] == ["build", "-p", "alpha"]
    assert {"wall_seconds", "slot_wait_seconds", "peak_rss", "retries", "cwd"} <= record.keys()


def test_format_duration() -> None:
    assert supervise.format_duration(1800) == "30m0s"
    assert supervise.format_duration(3725) == "1h2m5s"


def test_second_ctrl_c_kills_a_build_that_ignores_the_first(virtual_ws: Path, fake_cargo_env: dict[str, str],
                                                            tmp_path: Path, reap: list[int]) -> None:
    pidfile = tmp_path / "cargo.pid"
    proc = subprocess.Popen(agent_command("build"), cwd=virtual_ws, stderr=subprocess.DEVNULL,
                            env={**fake_cargo_env, "FAKE_SLEEP": "120", "FAKE_IGNORE_SIGINT": "1",
                                 "FAKE_PIDFILE": str(pidfile)})
    wait_for(lambda: pidfile.exists() and pidfile.read_text() != "")
    cargo_pid = int(pidfile.read_text())
    reap.append(cargo_pid)
    time.sleep(0.3)  # the fake installs its SIGINT handler right after writing its pid
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert alive(cargo_pid) and proc.poll() is None  # the first Ctrl-C was forwarded and ignored
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 128 + signal.SIGKILL
    wait_for(lambda: not alive(cargo_pid), 5)


def _read_until_closed(master: int) -> bytes:
    """Everything written to a pty until its last writer is gone (EIO on Linux)."""
    output = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            return output
        if not chunk:
            return output
        output += chunk


def test_a_terminal_still_sees_cargos_colours(tmp_path: Path, agent_env: dict[str, str]) -> None:
    """With stderr on a terminal, cargo writes to a pty of ours: it still sees a terminal."""
    import pty

    root = write_tree(tmp_path / "colour", crate("colour"))
    master, slave = pty.openpty()
    env = {**agent_env, "TERM": "xterm-256color"}
    env.pop("CARGO_TERM_COLOR", None)
    proc = subprocess.Popen(agent_command("check"), cwd=root, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    output = _read_until_closed(master)
    assert proc.wait(240) == 0
    os.close(master)
    assert b"\x1b[" in output and b"Finished" in output  # ANSI colours: cargo saw a terminal


def test_cargo_sees_the_terminal_width(tmp_path: Path, agent_env: dict[str, str]) -> None:
    """The pty cargo writes to has the size of the user's terminal."""
    import fcntl
    import pty
    import struct
    import termios

    probe = tmp_path / "probe"
    probe.write_text("#!/usr/bin/env python3\nimport os, sys\n"
                     "print(os.get_terminal_size(2).columns, file=sys.stderr)\n")
    probe.chmod(0o755)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 123, 0, 0))
    proc = subprocess.Popen(agent_command("build"), cwd=tmp_path, env={**agent_env, "CARGO_AGENT_CARGO": str(probe)},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    output = _read_until_closed(master)
    assert proc.wait(60) == 0
    os.close(master)
    assert b"123" in output
