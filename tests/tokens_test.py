"""Host CPU tokens and the per-build jobserver, with real cargo, real make, real processes.

Concurrency is measured by overlap counting: every build script appends `end <name> <start>
<end>` to the file named by SCRIPT_LOG, and the most intervals open at one instant is the peak.
A script's logged interval lies inside the time its job holds a token, so the count can only
under-state what ran; nothing here asserts a duration.
"""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import FAKE_CARGO, RunAgent, agent_command, alive, crate, wait_for, write_tree

from cargo_agent import host, jobserver, lockdir, tokens

C = host.cpus()[0]
HOST_ENV = "X86_64_UNKNOWN_LINUX_GNU"

BUILD_RS = r'''
use std::io::Write;
fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}
fn log(line: String) {
    if let Ok(path) = std::env::var("SCRIPT_LOG") {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        file.write_all(format!("{line}\n").as_bytes()).unwrap(); // one write: lines never interleave
    }
}
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let name = std::env::var("CARGO_PKG_NAME").unwrap();
    let start = now();
    log(format!("start {name} {start:.6}"));
    let ms = std::env::var("SCRIPT_SLEEP_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    std::thread::sleep(std::time::Duration::from_millis(ms));
    log(format!("end {name} {start:.6} {:.6}", now()));
}
'''


def scripts_ws(root: Path, count: int = 6, prefix: str = "s") -> Path:
    """`count` independent crates, each with a build script that logs its interval."""
    members = ", ".join(f'"{prefix}{i}"' for i in range(count))
    files = {"Cargo.toml": f'[workspace]\nresolver = "2"\nmembers = [{members}]\n'}
    for i in range(count):
        files[f"{prefix}{i}/Cargo.toml"] = (f'[package]\nname = "{prefix}{i}"\nversion = "0.1.0"\n'
                                            'edition = "2021"\n')
        files[f"{prefix}{i}/build.rs"] = BUILD_RS
        files[f"{prefix}{i}/src/lib.rs"] = "pub fn f() {}\n"
    return write_tree(root, files)


def intervals(log: Path) -> list[tuple[float, float]]:
    if not log.exists():
        return []
    return [(float(p[2]), float(p[3])) for p in (line.split() for line in log.read_text().splitlines())
            if p and p[0] == "end"]


def peak(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant do not overlap)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = top = 0
    for _, delta in events:
        running += delta
        top = max(top, running)
    return top


def tokens_locked(lock_dir: Path) -> int:
    holders = lockdir.lock_holders()
    found = 0
    for path in lock_dir.glob("cpu-*.lock"):
        info = os.stat(path, follow_symlinks=False)
        found += len(holders.get((info.st_dev, info.st_ino), []))
    return found


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return scripts_ws(tmp_path / "ws")


def _env(agent_env: dict[str, str], tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    return {**agent_env, "SCRIPT_LOG": str(tmp_path / f"{name}.log"),
            "CARGO_TARGET_DIR": str(tmp_path / f"target-{name}"), **extra}


# ---- a lone build, -j, build.jobs -------------------------------------------------------

def test_lone_build_runs_every_core_and_returns_every_token(ws: Path, tmp_path: Path, run_agent: RunAgent,
                                                            agent_env: dict[str, str]) -> None:
    env = _env(agent_env, tmp_path, "lone", CARGO_AGENT_REPORT="1")
    result = run_agent("build", cwd=ws, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    spans = intervals(tmp_path / "lone.log")
    assert len(spans) == 6
    assert peak(spans) == min(C, 6)
    assert f"peak {min(C, 6)} CPU tokens" in result.stderr
    assert tokens_locked(Path(agent_env["CARGO_AGENT_LOCK_DIR"])) == 0
    record = json.loads((Path(agent_env["CARGO_AGENT_LOCK_DIR"]) / "runs.jsonl").read_text().splitlines()[-1])
    assert record["tokens_peak"] == min(C, 6) and record["jobserver"] == "private"


def test_build_jobs_64_cannot_exceed_the_pool_but_does_so_bare(ws: Path, tmp_path: Path, run_agent: RunAgent,
                                                               agent_env: dict[str, str]) -> None:
    bare_env = _env(agent_env, tmp_path, "bare")
    bare = subprocess.run(["cargo", "--config", "build.jobs=64", "build"], cwd=ws, env=bare_env,
                          capture_output=True, text=True, timeout=240)
    assert bare.returncode == 0, bare.stderr[-2000:]
    assert peak(intervals(tmp_path / "bare.log")) > C  # the fixture can exceed the pool: this test can fail
    result = run_agent("--config", "build.jobs=64", "build", cwd=ws, env=_env(agent_env, tmp_path, "agent"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert peak(intervals(tmp_path / "agent.log")) == min(C, 6)


def test_a_lower_user_jobs_value_limits_the_build(ws: Path, tmp_path: Path, run_agent: RunAgent,
                                                  agent_env: dict[str, str]) -> None:
    result = run_agent("build", "-j", "1", cwd=ws, env=_env(agent_env, tmp_path, "j1", SCRIPT_SLEEP_MS="300"))
    assert result.returncode == 0, result.stderr[-3000:]
    spans = intervals(tmp_path / "j1.log")
    assert len(spans) == 6 and peak(spans) == 1
    env = _env(agent_env, tmp_path, "env1", SCRIPT_SLEEP_MS="300", CARGO_BUILD_JOBS="1")
    assert run_agent("build", cwd=ws, env=env).returncode == 0
    assert peak(intervals(tmp_path / "env1.log")) == 1


# ---- several builds at once -------------------------------------------------------------

def _launch(ws: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(agent_command(*args), cwd=ws, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_three_concurrent_builds_never_exceed_the_pool(ws: Path, tmp_path: Path, agent_env: dict[str, str],
                                                       reap: list[int]) -> None:
    Path(agent_env["CARGO_AGENT_CONFIG"]).write_text("slots = 3\n")
    shared_log = str(tmp_path / "all.log")
    procs = []
    for name in ("a", "b", "c"):
        procs.append(_launch(ws, _env(agent_env, tmp_path, name, SCRIPT_LOG=shared_log, SCRIPT_SLEEP_MS="500"),
                             "build"))
        reap.append(procs[-1].pid)
    outputs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(o[-1500:] for o in outputs)
    spans = intervals(Path(shared_log))
    assert len(spans) == 18
    assert peak(spans) <= C
    assert tokens_locked(Path(agent_env["CARGO_AGENT_LOCK_DIR"])) == 0


def test_a_sigkilled_build_loses_no_token(ws: Path, tmp_path: Path, agent_env: dict[str, str], run_agent: RunAgent,
                                          reap: list[int]) -> None:
    Path(agent_env["CARGO_AGENT_CONFIG"]).write_text("slots = 2\n")  # the victim's orphans keep its slot
    lock_dir = Path(agent_env["CARGO_AGENT_LOCK_DIR"])
    victim_log = tmp_path / "victim.log"
    victim = _launch(ws, _env(agent_env, tmp_path, "victim", SCRIPT_SLEEP_MS="20000"), "build")
    reap.append(victim.pid)
    wait_for(lambda: victim_log.exists() and victim_log.read_text().count("start ") >= min(C, 2), 120)
    assert tokens_locked(lock_dir) == min(C, 6)
    cargo_pids = [int(p) for p in Path(f"/proc/{victim.pid}/task/{victim.pid}/children").read_text().split()]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    try:
        wait_for(lambda: tokens_locked(lock_dir) == 0, 10)  # the kernel freed them with their holder
        result = run_agent("build", cwd=ws, env=_env(agent_env, tmp_path, "after"))
        assert result.returncode == 0, result.stderr[-3000:]
        assert peak(intervals(tmp_path / "after.log")) == min(C, 6)
    finally:
        for pid in cargo_pids:  # the victim's cargo runs in its own session: stop what it left
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---- make, nested cargo, a build that closes the fds ------------------------------------

MAKE_BUILD_RS = r'''
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let flags = std::env::var("CARGO_MAKEFLAGS").expect("cargo hands build scripts its jobserver");
    let out = std::process::Command::new("make")
        .args(["-f", concat!(env!("CARGO_MANIFEST_DIR"), "/jobs.mk")])
        .env("MAKEFLAGS", flags)
        .output()
        .unwrap();
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "make failed");
    println!("cargo::warning=MAKE-OK stderr={:?}", String::from_utf8_lossy(&out.stderr));
}
'''

MAKEFILE = """\
all: j1 j2 j3 j4
j1 j2 j3 j4:
\t@s=$$(date +%s.%N); sleep 0.4; echo "end $@ $$s $$(date +%s.%N)" >> $(SCRIPT_LOG)
.PHONY: all j1 j2 j3 j4
"""


def test_make_in_a_build_script_joins_the_build_jobserver(tmp_path: Path, run_agent: RunAgent,
                                                          agent_env: dict[str, str]) -> None:
    version = subprocess.run(["make", "--version"], capture_output=True, text=True).stdout
    assert version.startswith("GNU Make")
    root = write_tree(tmp_path / "withmake", {**crate("withmake"), "build.rs": MAKE_BUILD_RS, "jobs.mk": MAKEFILE})
    result = run_agent("build", cwd=root, env=_env(agent_env, tmp_path, "make"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'MAKE-OK stderr=""' in result.stderr  # not even a jobserver warning from make
    spans = intervals(tmp_path / "make.log")
    assert len(spans) == 4
    assert peak(spans) == min(C, 4)  # make ran on the build script's token plus lent ones


NESTED_BUILD_RS = r'''
use std::io::Write;
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let flags = std::env::var("CARGO_MAKEFLAGS").unwrap_or_default();
    let fd = flags.split("--jobserver-auth=").nth(1).and_then(|s| s.split(',').next()).unwrap_or("none");
    let pipe = std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.display().to_string());
    let mut file = std::fs::OpenOptions::new().create(true).append(true)
        .open(std::env::var("PIPE_LOG").unwrap()).unwrap();
    file.write_all(format!("{} {:?}\n", std::env::var("CARGO_PKG_NAME").unwrap(), pipe).as_bytes()).unwrap();
    if let Ok(inner) = std::env::var("INNER_MANIFEST") {
        let mut command = std::process::Command::new("cargo");
        command.args(["build", "-q", "--manifest-path", &inner])
            .env_remove("INNER_MANIFEST")
            .env("CARGO_TARGET_DIR", std::env::var("INNER_TARGET").unwrap());
        if std::env::var("DROP_JOBSERVER").is_ok() {
            command.env_remove("CARGO_MAKEFLAGS");
        }
        let status = command.status().unwrap();
        assert!(status.success(), "nested cargo failed");
        println!("cargo::warning=NESTED-OK");
    }
}
'''


@pytest.fixture
def shim_path(tmp_path: Path, agent_env: dict[str, str]) -> str:
    shim_dir = tmp_path / "shim"
    subprocess.run(agent_command("--install-shim", str(shim_dir)), env=agent_env, check=True,
                   capture_output=True)
    launcher = tmp_path / "bin" / "cargo-agent"
    launcher.parent.mkdir()
    launcher.write_text(f"#!/bin/sh\nexec {agent_command()[0]} -m cargo_agent \"$@\"\n")
    launcher.chmod(0o755)
    return f"{shim_dir}:{launcher.parent}:{agent_env['PATH']}"


@pytest.mark.parametrize("drop", [False, True], ids=["joins", "without-jobserver"])
@pytest.mark.parametrize("cpus", ["1", "2"])
def test_nested_cargo_joins_the_parents_jobserver_and_takes_no_token(tmp_path: Path, agent_env: dict[str, str],
                                                                     shim_path: str, cpus: str, drop: bool) -> None:
    """With one slot (and with one token), the outer build holds everything while its build script
    runs cargo through the shim: the nested build must run inside, on the parent's jobserver.
    Handed no jobserver, it runs on the parent's token plus tokens it can borrow without waiting."""
    inner = scripts_ws(tmp_path / "inner", 3, "n")
    for i in range(3):
        (inner / f"n{i}" / "build.rs").write_text(BUILD_RS.replace(
            'println!("cargo::rerun-if-changed=build.rs");',
            'println!("cargo::rerun-if-changed=build.rs");\n    pipe_log();') + NESTED_PIPE_LOG)
    outer = write_tree(tmp_path / "outer", {**crate("outer"), "build.rs": NESTED_BUILD_RS})
    env = {**_env(agent_env, tmp_path, "nested", SCRIPT_SLEEP_MS="500"), "PATH": shim_path,
           "CARGO_AGENT_SLOTS": "1", "CARGO_AGENT_CPUS": cpus, "CARGO_AGENT_WAIT_TIMEOUT": "60s",
           "PIPE_LOG": str(tmp_path / "pipes.log"), "INNER_MANIFEST": str(inner / "Cargo.toml"),
           "INNER_TARGET": str(tmp_path / "inner-target"), **({"DROP_JOBSERVER": "1"} if drop else {})}
    result = subprocess.run(["cargo", "build"], cwd=outer, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NESTED-OK" in result.stderr
    pipes = dict(line.split(" ", 1) for line in (tmp_path / "pipes.log").read_text().splitlines())
    assert set(pipes) == {"outer", "n0", "n1", "n2"}
    assert "pipe:" in pipes["outer"] and "pipe:" in pipes["n0"]
    assert len(set(pipes.values())) == (2 if drop else 1)  # one jobserver for all, or the nested one's own
    assert peak(intervals(tmp_path / "nested.log")) == min(int(cpus), 3)


NESTED_PIPE_LOG = r'''
fn pipe_log() {
    let flags = std::env::var("CARGO_MAKEFLAGS").unwrap_or_default();
    let fd = flags.split("--jobserver-auth=").nth(1).and_then(|s| s.split(',').next()).unwrap_or("none");
    let pipe = std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.display().to_string());
    let mut file = std::fs::OpenOptions::new().create(true).append(true)
        .open(std::env::var("PIPE_LOG").unwrap()).unwrap();
    file.write_all(format!("{} {:?}\n", std::env::var("CARGO_PKG_NAME").unwrap(), pipe).as_bytes()).unwrap();
}
'''


def test_a_build_that_closes_the_jobserver_fds_still_runs(ws: Path, tmp_path: Path, run_agent: RunAgent,
                                                          agent_env: dict[str, str]) -> None:
    real = subprocess.run(["sh", "-c", "command -v cargo"], capture_output=True, text=True, env=agent_env).stdout
    closer = tmp_path / "close-fds-cargo"
    closer.write_text("#!/bin/bash\nfor fd in $(ls /proc/$$/fd); do\n"
                      "  if [ \"$fd\" -gt 2 ]; then eval \"exec $fd>&-\" 2>/dev/null; fi\ndone\n"
                      f"exec {real.strip()} \"$@\"\n")
    closer.chmod(0o755)
    env = _env(agent_env, tmp_path, "closed", SCRIPT_SLEEP_MS="200", CARGO_AGENT_CARGO=str(closer))
    result = run_agent("build", cwd=ws, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(intervals(tmp_path / "closed.log")) == 6
    assert tokens_locked(Path(agent_env["CARGO_AGENT_LOCK_DIR"])) == 0


# ---- no rebuilds --------------------------------------------------------------------------

def fingerprint_ws(root: Path) -> Path:
    """A binary (it links), a library it uses, and a build script."""
    return write_tree(root, {
        "Cargo.toml": '[workspace]\nresolver = "2"\nmembers = ["app", "lib1"]\n',
        **{f"app/{k}": v for k, v in crate("app", 'lib1 = { path = "../lib1" }').items() if k != "src/lib.rs"},
        "app/src/main.rs": "fn main() { println!(\"{}\", lib1::name()); }\n",
        "app/build.rs": 'fn main() { println!("cargo::rerun-if-changed=build.rs"); }\n',
        **{f"lib1/{k}": v for k, v in crate("lib1").items()},
    })


def _compiles(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr[-3000:]
    return [line.strip() for line in result.stderr.splitlines() if line.strip().startswith("Compiling")]


def _bare_agent_bare(root: Path, run_agent: RunAgent, env: dict[str, str]) -> list[list[str]]:
    bare = ["cargo", "build", "-p", "app"]
    first = subprocess.run(bare, cwd=root, env=env, capture_output=True, text=True, timeout=240)
    assert _compiles(first), "the first bare build compiled nothing: the fixture is stale"
    through = run_agent("build", "-p", "app", cwd=root, env=env)
    again = subprocess.run(bare, cwd=root, env=env, capture_output=True, text=True, timeout=240)
    return [_compiles(through), _compiles(again)]


def test_bare_then_agent_then_bare_compiles_nothing_without_lld(tmp_path: Path, run_agent: RunAgent,
                                                                agent_env: dict[str, str]) -> None:
    """With a linker that is not lld nothing of the link-thread cap is added; everything else
    cargo-agent sets (jobserver, jobs, test threads, slot, wrappers) must leave fingerprints alone."""
    root = fingerprint_ws(tmp_path / "fp")
    env = {**agent_env, "CARGO_TARGET_DIR": str(tmp_path / "fp-target"), "RUSTFLAGS": "-C link-arg=-fuse-ld=bfd"}
    assert _bare_agent_bare(root, run_agent, env) == [[], []]


def test_bare_then_agent_then_bare_compiles_nothing_with_lld(tmp_path: Path, run_agent: RunAgent,
                                                             agent_env: dict[str, str]) -> None:
    root = fingerprint_ws(tmp_path / "fp")
    env = {**agent_env, "CARGO_TARGET_DIR": str(tmp_path / "fp-target")}
    assert _bare_agent_bare(root, run_agent, env) == [[], []]


def test_changing_slots_and_tokens_compiles_nothing(tmp_path: Path, run_agent: RunAgent,
                                                    agent_env: dict[str, str]) -> None:
    root = fingerprint_ws(tmp_path / "fp")
    env = {**agent_env, "CARGO_TARGET_DIR": str(tmp_path / "fp-target")}
    first = run_agent("build", "-p", "app", cwd=root, env={**env, "CARGO_AGENT_SLOTS": "1", "CARGO_AGENT_CPUS": "1"})
    assert _compiles(first)
    for slots, cpus in (("2", "2"), ("1", "2"), ("2", "1")):
        again = run_agent("build", "-p", "app", cwd=root,
                          env={**env, "CARGO_AGENT_SLOTS": slots, "CARGO_AGENT_CPUS": cpus})
        assert _compiles(again) == [], (slots, cpus)


# ---- visible: --status, --dry-run -----------------------------------------------------------

def test_status_shows_tokens_held_and_builds_waiting_for_one(virtual_ws: Path, fake_cargo_env: dict[str, str],
                                                             tmp_path: Path, run_agent: RunAgent,
                                                             reap: list[int]) -> None:
    Path(fake_cargo_env["CARGO_AGENT_CONFIG"]).write_text("slots = 2\n")
    env = {**fake_cargo_env, "CARGO_AGENT_CPUS": "1", "FAKE_SLEEP": "60", "FAKE_PIDFILE": str(tmp_path / "first")}
    first = _launch(virtual_ws, env, "build", "-p", "alpha")
    reap.append(first.pid)
    wait_for(lambda: (tmp_path / "first").exists())
    second = _launch(virtual_ws, {**env, "FAKE_SLEEP": "0", "FAKE_PIDFILE": str(tmp_path / "second")},
                     "build", "-p", "beta")
    reap.append(second.pid)

    def status() -> dict[str, object]:
        out = run_agent("--status", "--json", cwd=virtual_ws, env=env)
        assert out.returncode == 0, out.stderr
        data: dict[str, object] = json.loads(out.stdout)
        return data

    wait_for(lambda: status()["cpu"]["waiting"] == [second.pid])  # type: ignore[index]
    data = status()
    cpu = data["cpu"]
    assert cpu == {**cpu, "tokens": 1, "held": 1, "by_pid": [{"pid": first.pid, "tokens": 1}]}  # type: ignore[dict-item]
    by_pid = {h["pid"]: h for h in data["holders"]}  # type: ignore[attr-defined]
    assert by_pid[first.pid]["tokens"] == 1 and not by_pid[first.pid]["waiting_for_token"]
    assert by_pid[second.pid]["waiting_for_token"] and by_pid[second.pid]["tokens"] == 0
    text = run_agent("--status", cwd=virtual_ws, env=env).stdout
    assert "cpu tokens: 1/1 held, 1 builds waiting for a token" in text
    assert "[waiting for a CPU token]" in text and ", 1 CPU tokens" in text
    assert not (tmp_path / "second").exists()  # its cargo has not started
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=30)
    assert second.wait(timeout=60) == 0
    assert tokens_locked(Path(env["CARGO_AGENT_LOCK_DIR"])) == 0


def test_a_stopped_holder_makes_waiters_give_up_after_the_wait_timeout(
        virtual_ws: Path, fake_cargo_env: dict[str, str], tmp_path: Path, run_agent: RunAgent,
        reap: list[int]) -> None:
    Path(fake_cargo_env["CARGO_AGENT_CONFIG"]).write_text("slots = 2\n")
    env = {**fake_cargo_env, "CARGO_AGENT_CPUS": "1", "FAKE_SLEEP": "60", "FAKE_PIDFILE": str(tmp_path / "first")}
    first = _launch(virtual_ws, env, "build", "-p", "alpha")
    reap.append(first.pid)
    wait_for(lambda: (tmp_path / "first").exists())
    first.send_signal(signal.SIGSTOP)  # the holder (the supervising cargo-agent) stops answering
    try:
        result = run_agent("build", "-p", "beta", cwd=virtual_ws, env={**env, "CARGO_AGENT_WAIT_TIMEOUT": "1s"})
    finally:
        first.send_signal(signal.SIGCONT)
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
    assert result.returncode == 75
    assert result.stderr.startswith(
        f"error: gave up waiting for a CPU token after 1s (1/1 held (pid {first.pid}: 1))")
    assert tokens_locked(Path(env["CARGO_AGENT_LOCK_DIR"])) == 0


def test_dry_run_shows_the_token_plan_and_that_a_higher_j_cannot_exceed_it(virtual_ws: Path,
                                                                           run_agent: RunAgent) -> None:
    result = run_agent("--dry-run", "build", "-p", "alpha", "-j", "64", cwd=virtual_ws)
    assert result.returncode == 0, result.stderr
    assert f"cpu:       {C} of {C} CPU tokens at most" in result.stdout
    assert f"-j 64 -> --jobs={C}: jobs capped at {C}" in result.stdout
    plan = json.loads(run_agent("--dry-run", "--json", "build", "-p", "alpha", "-j", "1", cwd=virtual_ws).stdout)
    assert plan["cpu"]["tokens"] == C and plan["cpu"]["build_cap"] == 1
    assert plan["argv"][-2:] == ["-j", "1"]
    lowered = json.loads(run_agent("--dry-run", "--json", "build", "-p", "alpha", cwd=virtual_ws,
                                   extra_env={"CARGO_AGENT_CPUS": "1"}).stdout)
    assert lowered["cpu"]["tokens"] == 1
    jobs = next(e for e in lowered["env"] if e["name"] == "CARGO_BUILD_JOBS")
    assert jobs["before"] is None and jobs["after"] == "1"


@pytest.mark.parametrize(("args", "expected"), [
    (["test", "-p", "alpha", "--", "--test-threads=64"], ["--test-threads=CAP"]),
    (["test", "-p", "alpha", "--", "--test-threads", "64", "--nocapture"], ["--test-threads=CAP", "--nocapture"]),
    (["test", "-p", "alpha", "--", "--test-threads=1"], ["--test-threads=1"]),
    (["run", "-p", "alpha", "--", "--test-threads=64"], ["--test-threads=64"]),  # the program's own args
])
def test_test_threads_after_the_double_dash_are_capped_never_raised(virtual_ws: Path, run_agent: RunAgent,
                                                                     args: list[str], expected: list[str]) -> None:
    plan = json.loads(run_agent("--dry-run", "--json", *args, cwd=virtual_ws,
                                extra_env={"CARGO_AGENT_TEST_THREADS": "2"}).stdout)
    tail = plan["argv"][-len(expected):]
    assert tail == [e.replace("CAP", "2") for e in expected]


def test_test_threads_cap_does_not_depend_on_slots_or_tokens(virtual_ws: Path, run_agent: RunAgent) -> None:
    seen = set()
    for slots, cpus in (("1", "1"), ("2", "2"), ("1", "2")):
        plan = json.loads(run_agent("--dry-run", "--json", "test", "-p", "alpha", cwd=virtual_ws,
                                    extra_env={"CARGO_AGENT_SLOTS": slots, "CARGO_AGENT_CPUS": cpus}).stdout)
        seen.add(next(e["after"] for e in plan["env"] if e["name"] == "RUST_TEST_THREADS"))
    assert len(seen) == 1


# ---- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["lots", "0", "-2", "1.5", ""])
def test_a_garbage_token_count_exits_2_with_one_line(virtual_ws: Path, run_agent: RunAgent,
                                                     fake_cargo_env: dict[str, str], bad: str) -> None:
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env={**fake_cargo_env, "CARGO_AGENT_CPUS": bad})
    assert result.returncode == 2
    assert result.stderr == (f"error: invalid value '{bad}' for CARGO_AGENT_CPUS: "
                             "expected a whole number >= 1 or 'auto'\n")


def _plant(lock_dir: Path, kind: str, victim: Path) -> Path:
    lock_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(lock_dir, 0o700)
    path = lock_dir / "cpu-0.lock"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(victim)
    return path


@pytest.mark.parametrize(("kind", "message"), [
    ("directory", "it is a directory; refusing it"),
    ("fifo", "it is a FIFO; refusing it"),
    ("symlink", "it is a symlink; refusing to follow it"),
])
def test_a_planted_token_file_is_one_line_error_never_a_hang_or_a_write(
        virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str], tmp_path: Path,
        kind: str, message: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    lock_dir = Path(fake_cargo_env["CARGO_AGENT_LOCK_DIR"])
    planted = _plant(lock_dir, kind, victim)
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env={**fake_cargo_env, "CARGO_AGENT_CPUS": "2"},
                       timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr.splitlines()[0]
    assert str(planted) in result.stderr and "Traceback" not in result.stderr
    assert victim.read_text() == "precious\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert not Path(fake_cargo_env["FAKE_LOG"]).exists()  # cargo never started
    assert tokens_locked(lock_dir) == 0
    status = run_agent("--status", cwd=virtual_ws, env={**fake_cargo_env, "CARGO_AGENT_CPUS": "2"}, timeout=60)
    assert status.returncode == 0, status.stderr  # --status takes no lock and opens no token file


# ---- pieces -----------------------------------------------------------------------------------

def _cgroup_tree(tmp_path: Path, version: str, files: dict[str, str]) -> Path:
    proc = tmp_path / "proc"
    mount = tmp_path / "cg"
    if version == "v2":
        cgroup, mountinfo = "0::/a/b\n", f"30 25 0:26 / {mount} rw - cgroup2 cgroup2 rw\n"
    else:
        cgroup, mountinfo = "4:cpu,cpuacct:/a/b\n", f"31 25 0:27 / {mount} rw - cgroup cgroup rw,cpu,cpuacct\n"
    write_tree(proc, {"self/cgroup": cgroup, "self/mountinfo": mountinfo})
    write_tree(mount, files)
    return proc


@pytest.mark.parametrize(("version", "files", "expected"), [
    ("v2", {"a/b/cpu.max": "max 100000\n", "a/cpu.max": "150000 100000\n"}, 1.5),
    ("v2", {"a/b/cpu.max": "50000 100000\n", "a/cpu.max": "300000 100000\n"}, 0.5),
    ("v2", {"a/b/cpu.max": "max 100000\n"}, None),
    ("v1", {"a/b/cpu.cfs_quota_us": "-1\n", "a/b/cpu.cfs_period_us": "100000\n",
            "cpu.cfs_quota_us": "250000\n", "cpu.cfs_period_us": "100000\n"}, 2.5),
    ("v1", {"a/b/cpu.cfs_quota_us": "garbage\n", "a/b/cpu.cfs_period_us": "100000\n"}, None),
])
def test_cgroup_cpu_quota_of_this_cgroup_or_an_ancestor(tmp_path: Path, version: str, files: dict[str, str],
                                                        expected: float | None) -> None:
    proc = _cgroup_tree(tmp_path, version, files)
    found = host.cpu_limit(proc)
    assert (found[0] if found else None) == expected
    count, how = host.cpus(proc)
    if expected is not None and math.ceil(expected) < host.cores():
        assert count == max(1, math.ceil(expected)) and "cgroup CPU quota" in how
    else:
        assert count == host.cores()


def test_this_hosts_cgroup_reading_does_not_fail() -> None:
    assert 1 <= host.cpus()[0] <= host.cores()


def test_inherited_jobserver_is_only_open_pipes(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    plain = os.open(tmp_path / "plain", os.O_CREAT | os.O_RDWR)
    try:
        assert jobserver.inherited({"CARGO_MAKEFLAGS": jobserver.makeflags(read_fd, write_fd)}) \
            == (read_fd, write_fd)
        assert jobserver.inherited({"CARGO_MAKEFLAGS": f"-j --jobserver-auth={plain},{plain}"}) is None
        other_read, other_write = os.pipe()
        assert jobserver.inherited({"CARGO_MAKEFLAGS": f"-j --jobserver-auth={read_fd},{other_write}"}) is None
        assert jobserver.inherited({"CARGO_MAKEFLAGS": f"-j --jobserver-auth={write_fd},{read_fd}"}) is None
        os.close(other_read)
        os.close(other_write)
        assert jobserver.inherited({"CARGO_MAKEFLAGS": "-j --jobserver-auth=999,998"}) is None
        assert jobserver.inherited({"CARGO_MAKEFLAGS": "-j --jobserver-auth=fifo:/x"}) is None
        assert jobserver.inherited({}) is None
    finally:
        for fd in (read_fd, write_fd, plain):
            os.close(fd)


def test_a_killed_holder_frees_its_token_at_once(tmp_path: Path, reap: list[int]) -> None:
    """Tokens are kernel locks held by the supervising process: SIGKILL frees them."""
    lock_dir = tmp_path / "locks"
    lockdir.prepare(lock_dir, False)
    pool = tokens.Pool(lock_dir, 2, "test", False)
    holder = subprocess.Popen(
        [*agent_command()[:1], "-c",
         "import sys, time; from pathlib import Path; from cargo_agent import tokens; "
         f"p = tokens.Pool(Path({str(lock_dir)!r}), 2, 't', False); t = tokens.Tokens(p); "
         "assert t.try_take() and t.try_take(); print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    reap.append(holder.pid)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    mine = tokens.Tokens(pool)
    try:
        assert not mine.try_take()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert not alive(holder.pid)
        assert mine.try_take() and mine.try_take()
    finally:
        mine.close()


def test_fake_cargo_is_given_the_private_jobserver(virtual_ws: Path, run_agent: RunAgent,
                                                   fake_cargo_env: dict[str, str]) -> None:
    """Argument passing only: CARGO_MAKEFLAGS names two fds in the pipe style cargo itself uses."""
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws,
                       env={**fake_cargo_env, "CARGO_MAKEFLAGS": "-j --jobserver-auth=fifo:/tmp/evil"})
    assert result.returncode == 0, result.stderr
    seen = next(json.loads(line[4:]) for line in Path(fake_cargo_env["FAKE_LOG"]).read_text().splitlines()
                if line.startswith("env "))
    words = seen["CARGO_MAKEFLAGS"].split()
    assert words[0] == "-j" and words[1].startswith("--jobserver-fds=") and words[2].startswith("--jobserver-auth=")
    assert words[1].split("=")[1] == words[2].split("=")[1]
    assert FAKE_CARGO.exists()


GREEDY_CARGO = """#!{python}
# Takes every byte its jobserver offers for a while, logs how many, and fails once with a
# transient error: a real jobserver client, for the broker's cap on the first run and the retry.
import os, sys, time
flags = os.environ["CARGO_MAKEFLAGS"]
read_fd = int(flags.split("--jobserver-auth=")[1].split(",")[0])
os.set_blocking(read_fd, False)
got, end = 0, time.monotonic() + 1.5
while time.monotonic() < end:
    try:
        got += len(os.read(read_fd, 1))
    except BlockingIOError:
        time.sleep(0.01)
with open(os.environ["GREEDY_LOG"], "a") as log:
    log.write(f"{{got}}\\n")
marker = os.environ["GREEDY_MARKER"]
if not os.path.exists(marker):
    open(marker, "w").close()
    sys.stderr.write("error: linking with `cc` failed: exit status: 1\\n"
                     "  = note: collect2: fatal error: cannot fork: Resource temporarily unavailable\\n")
    sys.exit(101)
"""


def test_a_retry_after_a_transient_failure_halves_the_lent_tokens(virtual_ws: Path, tmp_path: Path,
                                                                  run_agent: RunAgent,
                                                                  agent_env: dict[str, str]) -> None:
    greedy = tmp_path / "greedy-cargo"
    greedy.write_text(GREEDY_CARGO.format(python=agent_command()[0]))
    greedy.chmod(0o755)
    env = {**agent_env, "CARGO_AGENT_CARGO": str(greedy), "GREEDY_LOG": str(tmp_path / "greedy.log"),
           "GREEDY_MARKER": str(tmp_path / "failed-once"), "CARGO_AGENT_REPORT": "1"}
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=env)
    assert result.returncode == 0, result.stderr
    assert f"retrying with --jobs {max(1, C // 2)}" in result.stderr
    taken = [int(n) for n in (tmp_path / "greedy.log").read_text().split()]
    assert taken == [C - 1, max(1, C // 2) - 1]  # extra tokens on top of the implicit one
    assert f"peak {C} CPU tokens" in result.stderr
    assert tokens_locked(Path(agent_env["CARGO_AGENT_LOCK_DIR"])) == 0


TEST_CALLS_CARGO = r'''
#[test]
fn builds_through_the_shim() {
    let status = std::process::Command::new("cargo")
        .args(["build", "-q", "--manifest-path", env!("INNER_MANIFEST")])
        .env("CARGO_TARGET_DIR", env!("INNER_TARGET"))
        .status().unwrap();
    assert!(status.success(), "nested cargo failed");
}
'''


def test_a_test_binary_running_cargo_takes_no_slot_or_token(tmp_path: Path, agent_env: dict[str, str],
                                                            shim_path: str) -> None:
    """cargo lets test binaries inherit the jobserver it was given: a test running cargo through the
    shim joins it, with one slot and one token on the host, and never waits."""
    inner = scripts_ws(tmp_path / "inner", 3, "n")
    outer = write_tree(tmp_path / "outer", {**crate("outer"), "tests/nested.rs": TEST_CALLS_CARGO})
    env = {**_env(agent_env, tmp_path, "testbin", SCRIPT_SLEEP_MS="300"), "PATH": shim_path,
           "CARGO_AGENT_SLOTS": "1", "CARGO_AGENT_CPUS": "1", "CARGO_AGENT_WAIT_TIMEOUT": "60s",
           "INNER_MANIFEST": str(inner / "Cargo.toml"), "INNER_TARGET": str(tmp_path / "inner-target")}
    result = subprocess.run(["cargo", "test", "-p", "outer"], cwd=outer, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "test builds_through_the_shim ... ok" in result.stdout
    spans = intervals(tmp_path / "testbin.log")
    assert len(spans) == 3 and peak(spans) == 1
