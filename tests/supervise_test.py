"""Supervision with real processes, real cargo and real signals: a build dies with its caller,
job control and terminals, timeouts, RLIMIT_AS, retries only where safe, no survivors."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import FAKE_CARGO, REPO, RunAgent, agent_command, alive, crate, wait_for, write_tree

from cargo_agent import lockdir, supervise

# Every test here waits on processes: a hang fails in two minutes, not 300 s.
pytestmark = pytest.mark.timeout(120)


def _tree(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _slots_free(lock_dir: Path) -> bool:
    for lock in lock_dir.glob("slot-*.lock"):
        fd = os.open(lock, os.O_RDONLY)
        try:
            if not lockdir.try_lock(fd):
                return False
        finally:
            os.close(fd)
    return True


HUNG_TEST = """
#[test]
fn hangs() {
    std::process::Command::new("setsid")
        .args(["sh", "-c", &format!("echo $$ > {}; exec sleep 300", env!("ESCAPEE_FILE"))])
        .spawn().unwrap();
    while !std::path::Path::new(env!("ESCAPEE_FILE")).exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    println!("HUNG-TEST-STARTED");
    std::thread::sleep(std::time::Duration::from_secs(300));
}
"""


def _start_hung_test(tmp_path: Path, agent_env: dict[str, str], caller: Callable[[list[str]], list[str]],
                     **popen: object) -> tuple[subprocess.Popen[bytes], Path, dict[str, str]]:
    """cargo-agent test of a crate whose test escapes with setsid and then hangs; returns once
    the test runs."""
    root = write_tree(tmp_path / "hung", crate("hungtest", lib=HUNG_TEST))
    escapee = tmp_path / "escapee.pid"
    env = {**agent_env, "CARGO_AGENT_SLOTS": "1", "ESCAPEE_FILE": str(escapee)}
    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        proc = subprocess.Popen(caller(agent_command("test", "--", "--nocapture")), cwd=root, env=env,
                                stdout=handle, stderr=subprocess.STDOUT, **popen)  # type: ignore[call-overload]
    wait_for(lambda: "HUNG-TEST-STARTED" in out.read_text(), 240)
    return proc, escapee, env


def _next_agent_is_admitted(virtual_ws: Path, env: dict[str, str]) -> None:
    later = subprocess.run(agent_command("build", "-p", "alpha"), cwd=virtual_ws, capture_output=True, text=True,
                           env={**env, "CARGO_AGENT_CARGO": str(FAKE_CARGO), "CARGO_AGENT_WAIT_TIMEOUT": "30s"},
                           timeout=60)
    assert later.returncode == 0, later.stderr


def test_harness_group_sigkill_during_a_hung_test_leaves_nothing_and_admits_the_next_agent(
        tmp_path: Path, agent_env: dict[str, str], virtual_ws: Path, reap: list[int]) -> None:
    """An agent harness runs the command through a shell in a process group of its own and, on
    timeout, SIGKILLs that group. The supervisor is outside it and takes the build down."""
    proc, escapee, env = _start_hung_test(tmp_path, agent_env, lambda cmd: ["sh", "-c", " ".join(cmd)],
                                          start_new_session=True)
    tree = _tree(proc.pid)
    test_binaries = [p for p in tree if psutil.Process(p).name().startswith("hungtest-")]
    assert test_binaries, "the hung test binary is not below the caller"
    reap.extend([*tree, int(escapee.read_text())])
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in [*tree, int(escapee.read_text())]), 10)
    assert _slots_free(Path(env["CARGO_AGENT_LOCK_DIR"]))
    _next_agent_is_admitted(virtual_ws, env)


def test_sigkill_of_the_wrapper_alone_takes_the_build_down(tmp_path: Path, agent_env: dict[str, str],
                                                           virtual_ws: Path, reap: list[int]) -> None:
    proc, escapee, env = _start_hung_test(tmp_path, agent_env, lambda cmd: cmd)
    tree = _tree(proc.pid)
    reap.extend([*tree, int(escapee.read_text())])
    proc.kill()
    proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in [*tree, int(escapee.read_text())]), 10)
    _next_agent_is_admitted(virtual_ws, env)


def test_status_names_the_survivors_of_a_build_whose_wrapper_is_gone(tmp_path: Path, agent_env: dict[str, str],
                                                                     run_agent: RunAgent, reap: list[int]) -> None:
    """Wrapper and supervisor both SIGKILLed at once (nothing is left to clean up): --status
    names the processes that still hold the slot."""
    proc, escapee, env = _start_hung_test(tmp_path, agent_env, lambda cmd: cmd)
    supervisor = psutil.Process(proc.pid).children()[0].pid
    tree = _tree(proc.pid)
    reap.extend([*tree, int(escapee.read_text())])
    os.kill(supervisor, signal.SIGKILL)
    proc.kill()
    proc.wait()
    test_pid = next(p for p in tree if alive(p) and psutil.Process(p).name().startswith("hungtest-"))
    status = run_agent("--status", cwd=tmp_path, env=env)
    assert "its wrapper is gone; still running and holding the slot:" in status.stdout, status.stdout
    assert f"pid {test_pid} hungtest-" in status.stdout
    data = json.loads(run_agent("--status", "--json", cwd=tmp_path, env=env).stdout)
    assert test_pid in [s["pid"] for s in data["holders"][0]["survivors"]]
    for pid in [*tree, int(escapee.read_text())]:  # nothing else will stop them: that was the point
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in tree), 10)


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
    tree = _tree(proc.pid)
    reap.extend(tree)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    wait_for(lambda: not any(alive(pid) for pid in tree), 5)
    assert _slots_free(Path(agent_env["CARGO_AGENT_LOCK_DIR"]))


def test_timeout_stops_the_whole_tree_and_says_what_ran_and_what_to_do(
        virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str], tmp_path: Path,
        reap: list[int]) -> None:
    grandchild = tmp_path / "grandchild.pid"
    cargo_pid = tmp_path / "cargo.pid"
    env = {"FAKE_SLEEP": "300", "FAKE_PIDFILE": str(cargo_pid),
           "FAKE_SPAWN": f"setsid sh -c 'echo $$ > {grandchild}; exec sleep 300'",
           "CARGO_AGENT_TIMEOUT": "2s", "CARGO_AGENT_KILL_GRACE": "1s"}
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env, extra_env=env)
    pids = [int(cargo_pid.read_text()), int(grandchild.read_text())]
    reap.extend(pids)
    assert result.returncode == 124
    first, *helps = result.stderr.strip().splitlines()
    assert first.startswith("error: timed out after 2s; stopped ")
    assert "`cargo-agent build -p alpha`" in first and "sleep" in first  # what was running
    assert helps and all(line.startswith("help: ") for line in helps)
    assert any("CARGO_AGENT_TIMEOUT" in line for line in helps)
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


def test_sigstop_of_the_wrapper_freezes_the_build_and_sigcont_continues_it(
        virtual_ws: Path, fake_cargo_env: dict[str, str], tmp_path: Path, reap: list[int]) -> None:
    pidfile, escapee = tmp_path / "cargo.pid", tmp_path / "escapee.pid"
    proc = subprocess.Popen(agent_command("build"), cwd=virtual_ws, stderr=subprocess.DEVNULL, env={
        **fake_cargo_env, "FAKE_SLEEP": "120", "FAKE_PIDFILE": str(pidfile),
        "FAKE_SPAWN": f"setsid sh -c 'echo $$ > {escapee}; exec sleep 300'"})
    wait_for(lambda: pidfile.exists() and escapee.exists() and escapee.read_text().strip() != "")
    pids = [int(pidfile.read_text()), int(escapee.read_text())]
    reap.extend(pids)
    proc.send_signal(signal.SIGSTOP)  # a harness freezing its command
    wait_for(lambda: all(_state(pid) == "T" for pid in pids), 10)
    status = subprocess.run(agent_command("--status", "--json"), cwd=virtual_ws, env=fake_cargo_env,
                            capture_output=True, text=True)
    assert [h["stopped"] for h in json.loads(status.stdout)["holders"]] == [True]
    proc.send_signal(signal.SIGCONT)
    wait_for(lambda: all(_state(pid) in ("S", "R") for pid in pids), 10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    wait_for(lambda: not any(alive(pid) for pid in pids), 10)


class _Terminal:
    """A process on a fresh pty that is its controlling terminal (the child is a session leader)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.pid, self.master = pty.fork()
        if self.pid == 0:  # pragma: no cover - the child
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        self.output = b""

    def read_until(self, marker: bytes, limit: float = 240) -> None:
        end = time.monotonic() + limit
        while marker not in self.output:
            assert time.monotonic() < end, f"{marker!r} never came; got {self.output[-2000:]!r}"
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:
                    assert marker in self.output, self.output[-2000:]
                    return

    def drain(self) -> None:
        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.output += chunk

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, limit: float = 60) -> int:
        end = time.monotonic() + limit
        while True:
            self.drain()
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            assert time.monotonic() < end, self.output[-2000:]
            time.sleep(0.05)


def test_ctrl_z_stops_the_whole_build_and_fg_continues_it(virtual_ws: Path, fake_cargo_env: dict[str, str],
                                                          tmp_path: Path, reap: list[int]) -> None:
    """In an interactive shell: Ctrl-Z stops cargo and a setsid escapee with it, the shell gets its
    prompt back, `fg` continues all of it, and Ctrl-C then ends the build with nothing left."""
    pidfile, escapee = tmp_path / "cargo.pid", tmp_path / "escapee.pid"
    env = {**fake_cargo_env, "FAKE_SLEEP": "120", "FAKE_PIDFILE": str(pidfile), "PS1": "READY> ", "TERM": "dumb",
           "FAKE_SPAWN": f"setsid sh -c 'echo $$ > {escapee}; exec sleep 300'"}
    shell = _Terminal(["/bin/bash", "--norc", "--noprofile", "-i"], virtual_ws, env)
    try:
        shell.read_until(b"READY> ")
        shell.write(" ".join(agent_command("build", "-p", "alpha")).encode() + b"\n")
        wait_for(lambda: pidfile.exists() and escapee.exists() and escapee.read_text().strip() != "", 60)
        pids = [int(pidfile.read_text()), int(escapee.read_text())]
        reap.extend(pids)
        time.sleep(0.5)
        shell.write(b"\x1a")  # Ctrl-Z
        wait_for(lambda: all(_state(pid) == "T" for pid in pids), 10)
        shell.read_until(b"Stopped")
        shell.write(b"fg\n")
        wait_for(lambda: all(_state(pid) in ("S", "R") for pid in pids), 10)
        time.sleep(0.5)
        shell.write(b"\x03")  # Ctrl-C reaches the build, now the terminal's foreground job
        shell.read_until(b"KeyboardInterrupt")
        shell.write(b"echo BUILD-EXIT=$?\n")
        shell.read_until(b"BUILD-EXIT=130")
        wait_for(lambda: not any(alive(pid) for pid in pids), 10)
        shell.write(b"exit\n")
        shell.wait()
    finally:
        if alive(shell.pid):
            os.kill(shell.pid, signal.SIGKILL)
            os.waitpid(shell.pid, 0)
        os.close(shell.master)


def test_closing_the_terminal_stops_the_build(virtual_ws: Path, fake_cargo_env: dict[str, str], tmp_path: Path,
                                              reap: list[int]) -> None:
    pidfile, escapee = tmp_path / "cargo.pid", tmp_path / "escapee.pid"
    env = {**fake_cargo_env, "FAKE_SLEEP": "120", "FAKE_PIDFILE": str(pidfile),
           "FAKE_SPAWN": f"setsid sh -c 'echo $$ > {escapee}; exec sleep 300'"}
    terminal = _Terminal(agent_command("build", "-p", "alpha"), virtual_ws, env)
    wait_for(lambda: pidfile.exists() and escapee.exists() and escapee.read_text().strip() != "", 60)
    pids = [terminal.pid, int(pidfile.read_text()), int(escapee.read_text())]
    reap.extend(pids[1:])
    os.close(terminal.master)  # the terminal goes away: SIGHUP
    end = time.monotonic() + 30
    while not os.waitpid(terminal.pid, os.WNOHANG)[0]:
        assert time.monotonic() < end
        time.sleep(0.05)
    wait_for(lambda: not any(alive(pid) for pid in pids[1:]), 10)


RUN_WITH_TTY = """
use std::io::{BufRead, Write};
fn main() {
    let mut tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").expect("no /dev/tty");
    writeln!(tty, "TTY-OK").unwrap();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    println!("GOT {}", line.trim());
}
"""


def test_a_program_started_by_run_has_the_controlling_terminal(tmp_path: Path, agent_env: dict[str, str]) -> None:
    files = crate("ttyprog")
    files["src/main.rs"] = RUN_WITH_TTY
    root = write_tree(tmp_path / "ttyprog", files)
    terminal = _Terminal(agent_command("run", "-q"), root, {**agent_env, "TERM": "dumb"})
    try:
        terminal.read_until(b"TTY-OK")
        terminal.write(b"hello\n")
        terminal.read_until(b"GOT hello")
        assert terminal.wait() == 0
    finally:
        os.close(terminal.master)


SERVER = """
use std::io::Write;
fn main() {
    println!("SERVER-UP {}", std::process::id());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(300));
}
"""


@pytest.mark.parametrize("quiet", [False, True], ids=["status-lines", "quiet"])
def test_run_gives_its_slot_back_once_the_program_starts(tmp_path: Path, agent_env: dict[str, str],
                                                         virtual_ws: Path, reap: list[int], quiet: bool) -> None:
    """A dev server started with `run` does not hold a build slot: with one slot, the next agent's
    build is admitted while the server keeps running; the server is still supervised."""
    files = crate("devserver")
    files["src/main.rs"] = SERVER
    root = write_tree(tmp_path / "devserver", files)
    env = {**agent_env, "CARGO_AGENT_SLOTS": "1"}
    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        proc = subprocess.Popen(agent_command("run", *(["-q"] if quiet else [])), cwd=root, env=env, stdout=handle,
                                stderr=subprocess.DEVNULL)
    wait_for(lambda: "SERVER-UP" in out.read_text(), 240)
    server = int(out.read_text().split()[1])
    reap.append(server)
    _next_agent_is_admitted(virtual_ws, env)
    assert alive(server) and proc.poll() is None
    assert _cpu_tokens_locked(Path(env["CARGO_AGENT_LOCK_DIR"])) == 0  # the CPU tokens went back too
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    wait_for(lambda: not alive(server), 10)


def _cpu_tokens_locked(lock_dir: Path) -> int:
    from cargo_agent import lockdir

    holders = lockdir.lock_holders()
    return sum(len(holders.get((p.stat().st_dev, p.stat().st_ino), [])) for p in lock_dir.glob("cpu-*.lock"))


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
    assert line.split()[-3] == expected and line.split()[-2] == expected  # soft and hard


def test_a_test_binary_that_aborts_gives_cargos_own_code(tmp_path: Path, run_agent: RunAgent) -> None:
    root = write_tree(tmp_path / "aborts", crate("aborts", lib="#[test]\nfn boom() { std::process::abort(); }\n"))
    result = run_agent("test", cwd=root)
    assert result.returncode == 101


# ---- retries only where safe: one test per case, with real cargo -----------------------------

EAGAIN_TEXT = ("error: could not exec the linker `cc`\\n  = note: Resource temporarily unavailable "
               "(os error 11)")


def _retries(env: dict[str, str]) -> int:
    record = json.loads((Path(env["CARGO_AGENT_LOCK_DIR"]) / "runs.jsonl").read_text().splitlines()[-1])
    return int(record["retries"])


def test_run_is_never_retried_so_a_programs_side_effect_happens_once(tmp_path: Path, run_agent: RunAgent,
                                                                     agent_env: dict[str, str]) -> None:
    files = crate("sideeffect")
    files["src/main.rs"] = (
        "use std::io::Write;\nfn main() {\n"
        "    let mut f = std::fs::OpenOptions::new().append(true).create(true)"
        ".open(env!(\"SIDE_EFFECT\")).unwrap();\n"
        "    writeln!(f, \"charged the card\").unwrap();\n"
        f"    eprintln!(\"{EAGAIN_TEXT}\");\n    std::process::exit(1);\n}}\n")
    root = write_tree(tmp_path / "sideeffect", files)
    effect = tmp_path / "effect.log"
    result = run_agent("run", cwd=root, extra_env={"SIDE_EFFECT": str(effect)})
    assert result.returncode == 1, result.stderr
    assert "retrying" not in result.stderr
    assert effect.read_text().count("charged the card") == 1
    assert _retries(agent_env) == 0


def test_a_genuine_compile_error_quoting_wouldblock_is_not_retried(tmp_path: Path, run_agent: RunAgent,
                                                                   agent_env: dict[str, str]) -> None:
    root = write_tree(tmp_path / "wouldblock", crate("wouldblock", lib=(
        "pub fn kind() -> u32 {\n    // Resource temporarily unavailable (os error 11)\n"
        "    std::io::ErrorKind::WouldBlock\n}\n")))
    result = run_agent("build", cwd=root)
    assert result.returncode == 101
    assert "WouldBlock" in result.stderr and "retrying" not in result.stderr
    assert _retries(agent_env) == 0


def test_a_failure_after_tests_ran_is_not_retried(tmp_path: Path, run_agent: RunAgent,
                                                  agent_env: dict[str, str]) -> None:
    root = write_tree(tmp_path / "testfails", crate("testfails", lib=(
        f"#[test]\nfn spawns() {{\n    eprintln!(\"{EAGAIN_TEXT}\");\n"
        "    panic!(\"thread 'rustc' panicked: failed to spawn helper thread: WouldBlock\");\n}\n")))
    result = run_agent("test", "-q", "--", "--nocapture", cwd=root)
    assert result.returncode == 101
    assert "retrying" not in result.stderr
    assert _retries(agent_env) == 0


def test_a_build_scripts_own_output_is_not_a_retry_signature(tmp_path: Path, run_agent: RunAgent,
                                                             agent_env: dict[str, str]) -> None:
    files = crate("scriptfails")
    files["build.rs"] = (f"fn main() {{\n    eprintln!(\"{EAGAIN_TEXT}\");\n"
                         "    eprintln!(\"error: the compiler unexpectedly panicked. this is a bug.\");\n"
                         "    std::process::exit(1);\n}\n")
    root = write_tree(tmp_path / "scriptfails", files)
    result = run_agent("build", cwd=root)
    assert result.returncode == 101
    assert "Resource temporarily unavailable" in result.stderr and "retrying" not in result.stderr
    assert _retries(agent_env) == 0


def test_compile_error_macro_text_is_not_a_retry_signature(tmp_path: Path, run_agent: RunAgent,
                                                          agent_env: dict[str, str]) -> None:
    root = write_tree(tmp_path / "usertext", crate("usertext", lib=(
        'compile_error!("could not exec the linker: Resource temporarily unavailable (os error 11)");\n')))
    result = run_agent("build", cwd=root)
    assert result.returncode == 101
    assert "retrying" not in result.stderr
    assert _retries(agent_env) == 0


def test_a_linker_that_hits_eagain_is_retried_with_fewer_jobs(tmp_path: Path, run_agent: RunAgent,
                                                              agent_env: dict[str, str]) -> None:
    """The signature comes from the linker itself (rustc quotes its output under `= note:`)."""
    marker = tmp_path / "failed-once"
    linker = tmp_path / "flaky-linker"
    linker.write_text(f"#!/bin/sh\nif [ ! -e {marker} ]; then\n    touch {marker}\n"
                      "    echo 'flaky-linker: fork: Resource temporarily unavailable' >&2\n    exit 1\nfi\n"
                      'exec cc "$@"\n')
    linker.chmod(0o755)
    files = crate("flakylink")
    files["src/main.rs"] = 'fn main() { println!("linked"); }\n'
    root = write_tree(tmp_path / "flakylink", files)
    result = run_agent("build", cwd=root, extra_env={
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER": str(linker), "CARGO_TARGET_DIR": str(tmp_path / "target")})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("warning: cargo-agent: transient resource failure") == 1
    assert "flaky-linker: fork: Resource temporarily unavailable" in result.stderr
    assert _retries(agent_env) == 1


def test_no_retry_after_a_timeout(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str]) -> None:
    result = run_agent("build", cwd=virtual_ws, env=fake_cargo_env,
                       extra_env={"FAKE_SLEEP": "30", "FAKE_STDERR": EAGAIN_TEXT.replace("\\n", "\n"),
                                  "CARGO_AGENT_TIMEOUT": "1"})
    assert result.returncode == 124 and "retrying" not in result.stderr


CARGO_SPAWN_FAILURE = """\
error: could not compile `x` (lib)

Caused by:
  could not execute process `rustc --crate-name x --edition=2021 src/lib.rs` (never executed)

Caused by:
  Resource temporarily unavailable (os error 11)
"""
RUSTC_ICE = """\
thread 'rustc' panicked at compiler/rustc_interface/src/util.rs:210:10:
failed to spawn helper thread: Os { code: 11, kind: WouldBlock, message: "Resource temporarily unavailable" }
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace

error: the compiler unexpectedly panicked. this is a bug.
"""
LLVM_ABORT = """\
terminate called after throwing an instance of 'std::system_error'
  what():  Resource temporarily unavailable
error: could not compile `x` (lib)

Caused by:
  process didn't exit successfully: `rustc --crate-name x` (signal: 6, SIGABRT: process abort signal)
"""
LINKER_FAILURE = """\
error: linking with `cc` failed: exit status: 1
  |
  = note:  "cc" "-m64" "/tmp/os error 11/x.o" "-o" "/tmp/x"
  = note: collect2: fatal error: cannot fork: Resource temporarily unavailable
"""


@pytest.mark.parametrize("tail", [CARGO_SPAWN_FAILURE, RUSTC_ICE, LLVM_ABORT, LINKER_FAILURE],
                         ids=["cargo-spawn", "rustc-ice", "llvm-abort", "linker"])
def test_tool_reported_eagain_is_a_retry_signature(tail: str) -> None:
    assert supervise.retry_signature(tail)


@pytest.mark.parametrize("tail", [
    "error[E0308]: mismatched types\n --> src/lib.rs:3:5\n  |\n3 |     std::io::ErrorKind::WouldBlock\n",
    "thread 'main' panicked at src/main.rs:3:5:\nfailed to spawn helper thread: WouldBlock\n",
    "error: failed to run custom build command for `x v0.1.0`\n\nCaused by:\n  process didn't exit successfully\n"
    "  --- stderr\n  thread 'main' panicked: Resource temporarily unavailable (os error 11)\n",
    "error: Resource temporarily unavailable (os error 11)\n --> src/lib.rs:1:1\n",
    "error: linking with `cc` failed: exit status: 1\n  = note:  \"cc\" \"/tmp/os error 11/x.o\"\n"
    "  = note: undefined reference to `f'\n",
    "error: test failed, to rerun pass `--lib`\nCaused by:\n  never executed: os error 11\n",
], ids=["source-line", "user-panic", "build-script", "compile-error-macro", "linker-command-line", "test-failed"])
def test_user_text_is_not_a_retry_signature(tail: str) -> None:
    assert supervise.retry_signature(tail) is None


def test_run_and_a_started_program_are_never_retried() -> None:
    outcome = supervise.Outcome(exit_code=101, stderr_tail=CARGO_SPAWN_FAILURE)
    assert supervise.retryable(outcome, "build")
    assert supervise.retryable(outcome, "run") is None
    outcome.program_started = True
    assert supervise.retryable(outcome, "test") is None


def test_program_start_lines() -> None:
    assert supervise.starts_program("     Running unittests src/lib.rs (target/debug/deps/x-1a2b)")
    assert supervise.starts_program("     Running `target/debug/app --port 80`")
    assert supervise.starts_program("\x1b[1m\x1b[92m     Running\x1b[0m `target/debug/app`")
    assert supervise.starts_program("   Doc-tests x")
    assert not supervise.starts_program("     Running `CARGO=/c /home/u/.rustup/toolchains/s/bin/rustc --crate-name x`")
    assert not supervise.starts_program("     Running `/t/debug/build/x-1a2b/build-script-build`")
    assert not supervise.starts_program("  Running `x`")  # a build script's indented output


def test_run_report_is_logged(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str]) -> None:
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env,
                       extra_env={"CARGO_AGENT_REPORT": "1", "FAKE_EXIT": "3"})
    assert result.returncode == 3 and "cargo-agent: exit 3 in" in result.stderr
    record = json.loads((Path(fake_cargo_env["CARGO_AGENT_LOCK_DIR"]) / "runs.jsonl").read_text().splitlines()[-1])
    assert record["exit_code"] == 3 and record["command"] == ["build", "-p", "alpha"]
    assert {"wall_seconds", "slot_wait_seconds", "peak_rss", "retries", "cwd"} <= record.keys()


def test_format_duration_and_size() -> None:
    assert supervise.format_duration(2) == "2s"
    assert supervise.format_duration(65) == "1m05s"
    assert supervise.format_duration(1800) == "30m00s"
    assert supervise.format_duration(3725) == "1h02m05s"
    assert supervise.format_size(4 << 30) == "4 GiB"
    assert supervise.format_size(1536 << 20) == "1.5 GiB"


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
    import struct
    import termios

    probe = tmp_path / "probe"
    probe.write_text(f"#!{sys.executable}\nimport os, sys\n"
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


def test_the_wrapper_becomes_a_subreaper_without_importing_ctypes() -> None:
    """prctl(PR_SET_CHILD_SUBREAPER) is reached through ctypes' C core; the check reads it back
    with PR_GET_CHILD_SUBREAPER (37) through ctypes itself, imported only afterwards."""
    probe = ("import sys\nfrom cargo_agent import supervise\nsupervise.become_subreaper()\n"
             "loaded = 'ctypes' in sys.modules\nimport ctypes\nflag = ctypes.c_int(0)\n"
             "ctypes.CDLL(None).prctl(37, ctypes.byref(flag), 0, 0, 0)\nprint(loaded, flag.value)\n")
    out = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO)}).stdout
    assert out.split() == ["False", "1"]
