"""The link gate with real cargo, real linkers and real processes: links take their turn across
builds, a killed link frees its slot, the user's linker setup is kept (and still runs), lld and
mold get their thread cap without any rebuild, nested builds below a link never deadlock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import RunAgent, agent_command, wait_for, write_tree

from cargo_agent import config, host, linkgate, lockdir


def _host() -> str:
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("host: "))


HOST = _host()
HOST_ENV = HOST.upper().replace("-", "_")


def _bin(name: str, body: str = "fn main() {}\n") -> dict[str, str]:
    return {f"{name}/Cargo.toml": f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n',
            f"{name}/src/main.rs": body}


def bins_workspace(root: Path, count: int = 3) -> Path:
    files = {"Cargo.toml": '[workspace]\nresolver = "2"\nmembers = [' +
             ", ".join(f'"bin{i}"' for i in range(count)) + "]\n"}
    for i in range(count):
        files.update(_bin(f"bin{i}"))
    return write_tree(root, files)


def script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


def logging_linker(path: Path, log: Path, real: str = "cc", hold: Path | None = None,
                   go: Path | None = None) -> Path:
    """A user linker that logs `start <pid>` and `end <pid>` around the real linker. With
    `hold`, the first link of all (the one that creates `hold`) waits for the file `go`."""
    wait = (f'if mkdir "{hold}" 2>/dev/null; then while [ ! -e "{go}" ]; do sleep 0.05; done; fi\n'
            if hold is not None else "")
    return script(path, f'echo "start $$" >> "{log}"\n{wait}"{real}" "$@"\nrc=$?\n'
                        f'echo "end $$" >> "{log}"\nexit $rc\n')


def args_logger(path: Path, log: Path, real: str) -> Path:
    """A linker (or compiler driver) named like the real one that logs its arguments."""
    return script(path, f'printf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')


def max_overlap(lines: list[str]) -> int:
    """The most links running at once, from start/end lines in the order they were logged."""
    running = best = 0
    for line in lines:
        if line.startswith("start "):
            running += 1
            best = max(best, running)
        elif line.startswith("end "):
            running -= 1
    return best


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []

# ---- how many link slots (in-process) --------------------------------------------------------

def _settings(tmp_path: Path, **env: str) -> config.Config:
    return config.load({"CARGO_AGENT_CONFIG": str(tmp_path / "no-host.toml"), "XDG_CONFIG_HOME": str(tmp_path),
                        **env})


def test_the_link_slots_setting_is_the_count_and_names_where_it_came_from(tmp_path: Path) -> None:
    assert linkgate.slot_count(_settings(tmp_path, CARGO_AGENT_LINK_SLOTS="3"), tmp_path, {}) == (
        3, "link_slots = 3 (CARGO_AGENT_LINK_SLOTS)")


def _expected(per_link: int, source: str) -> tuple[int, str]:
    limit = host.in_force()
    reserve = host.reserve_within(1 << 30, limit.limit)
    by_memory = max(1, (limit.limit - reserve) // per_link)
    count = max(1, min(by_memory, host.cores()))
    return count, (f"min(floor(({limit.limit / (1 << 30):.1f}G {limit.source} - {reserve / (1 << 30):.2f}G reserve) / "
                   f"{per_link / (1 << 20):.0f}M per link ({source})) = {by_memory}, {host.cores()} cores) = {count}")


def test_link_slots_are_the_room_over_the_per_link_peak_at_most_the_cores_at_least_one(tmp_path: Path) -> None:
    room = host.in_force().limit - host.reserve_within(1 << 30, host.in_force().limit)
    unlearned = "per_build_memory, no link learned yet"
    for per_link, by_memory in ((room // 1024 * 1024, 1),  # the room holds exactly one link
                                (room // 2048 * 1024, 2),
                                (room // 1024 * 1024 + 1024, 1),  # not even one fits: still one
                                (1 << 20, room >> 20)):
        settings = _settings(tmp_path, CARGO_AGENT_HOST_RESERVE="1g", CARGO_AGENT_PER_BUILD_MEMORY=f"{per_link >> 10}k")
        count, formula = linkgate.slot_count(settings, tmp_path, {})
        assert (count, formula) == _expected(per_link, unlearned)
        assert count == max(1, min(by_memory, host.cores()))


def test_link_slots_learn_from_the_highest_recent_link(tmp_path: Path) -> None:
    room = host.in_force().limit - host.reserve_within(1 << 30, host.in_force().limit)
    peak = room // 2 + 4096  # two of these do not fit
    (tmp_path / "links.jsonl").write_text("".join(
        json.dumps({"exit_code": 0, "peak_rss": p}) + "\n" for p in (1 << 20, peak, 2 << 20)))
    settings = _settings(tmp_path, CARGO_AGENT_HOST_RESERVE="1g", CARGO_AGENT_PER_BUILD_MEMORY="1m")
    assert linkgate.slot_count(settings, tmp_path, {}) == _expected(peak, "learned from recent links")
    assert linkgate.slot_count(settings, tmp_path, {})[0] == 1
    (tmp_path / "links.jsonl").write_text(json.dumps({"exit_code": 0, "peak_rss": 1}) + "\n")  # a 1-byte link
    assert linkgate.slot_count(settings, tmp_path, {}) == _expected(1, "learned from recent links")


# ---- links wait their turn -----------------------------------------------------------

@pytest.mark.parametrize("link_slots", [1, 2])
def test_two_builds_of_three_binaries_never_link_more_than_the_link_slots_at_once(
        tmp_path: Path, agent_env: dict[str, str], reap: list[int], link_slots: int) -> None:
    ws = bins_workspace(tmp_path / "ws")
    log, hold, go = tmp_path / "links.log", tmp_path / "hold", tmp_path / "go"
    linker = logging_linker(tmp_path / "bin" / "user-linker.sh", log, hold=hold, go=go)
    write_tree(ws, {".cargo/config.toml": f'[target.{HOST}]\nlinker = "{linker}"\n'})
    env = {**agent_env, "CARGO_AGENT_LINK_SLOTS": str(link_slots), "CARGO_AGENT_SLOTS": "2"}
    lock_dir = env["CARGO_AGENT_LOCK_DIR"]
    builds = []
    for name in ("a", "b"):
        build_env = {**env, "CARGO_TARGET_DIR": str(tmp_path / f"target-{name}")}
        builds.append(subprocess.Popen(agent_command("build"), cwd=ws, env=build_env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True))
        reap.append(builds[-1].pid)
    try:
        wait_for(lambda: hold.exists(), 120)  # the first link runs and waits for `go`
        if link_slots == 1:
            # Another link reached the gate and waits: --status says so.
            wait_for(lambda: linkgate.waiters(lock_dir), 120)
            status = subprocess.run(agent_command("--status"), cwd=ws, env=env, capture_output=True, text=True)
            assert "waiting for a link slot" in status.stdout, status.stdout
            assert "links: 1/1 link slots busy" in status.stdout
            assert sum(1 for line in _lines(log) if line.startswith("start ")) == 1
        else:
            wait_for(lambda: max_overlap(_lines(log)) == 2, 120)  # the control: two links at once
    finally:
        go.touch()
    for build in builds:
        assert build.wait(240) == 0, build.stderr.read() if build.stderr else ""
    lines = _lines(log)
    # 3 binaries x 2 builds, each linked by the user's linker
    assert sum(1 for line in lines if line.startswith("start ")) == 6
    assert sum(1 for line in lines if line.startswith("end ")) == 6
    assert max_overlap(lines) == link_slots


def test_a_sigkilled_link_frees_its_slot(tmp_path: Path, agent_env: dict[str, str], reap: list[int]) -> None:
    ws = bins_workspace(tmp_path / "ws", count=1)
    log, hold, go = tmp_path / "links.log", tmp_path / "hold", tmp_path / "never"
    linker = logging_linker(tmp_path / "bin" / "user-linker.sh", log, hold=hold, go=go)
    write_tree(ws, {".cargo/config.toml": f'[target.{HOST}]\nlinker = "{linker}"\n'})
    env = {**agent_env, "CARGO_AGENT_LINK_SLOTS": "1", "CARGO_AGENT_SLOTS": "2"}
    lock_dir = env["CARGO_AGENT_LOCK_DIR"]
    first = subprocess.Popen(agent_command("build"), cwd=ws, env={**env, "CARGO_TARGET_DIR": str(tmp_path / "t1")},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reap.append(first.pid)
    wait_for(lambda: hold.exists() and _lines(log), 120)
    second = subprocess.Popen(agent_command("build"), cwd=ws, env={**env, "CARGO_TARGET_DIR": str(tmp_path / "t2")},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reap.append(second.pid)
    wait_for(lambda: linkgate.waiters(lock_dir), 120)
    holders = linkgate.holders(lock_dir)
    assert len(holders) == 1 and holders[0].pid is not None
    linker_pid = int(_lines(log)[0].split()[1])
    os.kill(holders[0].pid, signal.SIGKILL)  # the gate
    os.kill(linker_pid, signal.SIGKILL)  # and the user's linker it ran
    assert second.wait(240) == 0, second.stderr.read() if second.stderr else ""
    assert first.wait(240) != 0
    fd = lockdir.open_lock(Path(lock_dir) / "link-0.lock", False)
    try:
        assert lockdir.try_lock(fd)
    finally:
        os.close(fd)


# ---- the user's linker setup, and the thread cap ---------------------------------------

CASES = [
    # (id, env, cargo config, real linker the args logger stands for, expected cap or None)
    ("default cc", {}, "", "cc", "-Wl,--threads=2"),
    ("target.<host>.linker", {}, f'[target.{HOST}]\nlinker = "@SCRIPT@"\n', "script", "-Wl,--threads=2"),
    ("CARGO_TARGET_<HOST>_LINKER", {f"CARGO_TARGET_{HOST_ENV}_LINKER": "@SCRIPT@"}, "", "script",
     "-Wl,--threads=2"),
    ("-C linker= in RUSTFLAGS", {"RUSTFLAGS": "-C linker=@SCRIPT@"}, "", "script", "-Wl,--threads=2"),
    ("-C linker= in build.rustflags", {}, '[build]\nrustflags = ["-C", "linker=@SCRIPT@"]\n', "script",
     "-Wl,--threads=2"),
    ("clang with -fuse-ld=lld", {"RUSTFLAGS": "-C linker=clang -C link-arg=-fuse-ld=lld"}, "", "clang",
     "-Wl,--threads=2"),
    ("clang alone (GNU ld)", {}, f'[target.{HOST}]\nlinker = "clang"\n', "clang", None),
    ("gcc with -fuse-ld=mold", {"RUSTFLAGS": "-C link-arg=-fuse-ld=mold"}, "", "cc", "-Wl,--thread-count=2"),
    ("clang with mold in target rustflags", {},
     f'[target.{HOST}]\nlinker = "clang"\nrustflags = ["-C", "link-arg=-fuse-ld=mold"]\n', "clang",
     "-Wl,--thread-count=2"),
    ("-fuse-ld=bfd", {"RUSTFLAGS": "-C link-arg=-fuse-ld=bfd"}, "", "cc", None),
]


@pytest.mark.parametrize(("case", "env", "cargo_config", "real", "cap"), CASES, ids=[c[0] for c in CASES])
def test_the_users_linker_still_runs_and_gets_the_cap_where_it_is_lld_or_mold(
        tmp_path: Path, run_agent: RunAgent, case: str, env: dict[str, str], cargo_config: str, real: str,
        cap: str | None) -> None:
    root = write_tree(tmp_path / "app", _bin("app", 'fn main() { println!("linked"); }\n'))
    root = root / "app"
    log = tmp_path / "linker-args.log"
    tools = tmp_path / "tools"
    user_script = args_logger(tools / "user-linker.sh", log, "cc")
    if real in ("cc", "clang"):  # stand-ins on PATH with the real driver's name, logging what they get
        args_logger(tools / real, log, f"/usr/bin/{real}")
    env = {k: v.replace("@SCRIPT@", str(user_script)) for k, v in env.items()}
    if cargo_config:
        write_tree(root, {".cargo/config.toml": cargo_config.replace("@SCRIPT@", str(user_script))})
    extra = {**env, "PATH": f"{tools}:{os.environ['PATH']}", "CARGO_AGENT_LINK_THREADS": "2",
             "CARGO_TARGET_DIR": str(tmp_path / "target")}
    result = run_agent("build", cwd=root, extra_env=extra)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = _lines(log)
    assert lines, "the user's linker never ran"
    link_line = lines[-1]
    if cap is None:
        assert "threads" not in link_line and "thread-count" not in link_line
    else:
        assert link_line.split()[-1] == cap or cap in link_line.split()
    assert subprocess.run([str(tmp_path / "target" / "debug" / "app")], capture_output=True,
                          text=True).stdout == "linked\n"
    from cargo_agent import report

    gated = report.recent(tmp_path / "locks", 10, report.LINKS)  # the gate ran, and ran this linker
    assert gated and gated[-1].text("linker") == (str(user_script) if real == "script" else real)


def test_bare_then_cargo_agent_then_bare_compiles_nothing(tmp_path: Path, agent_env: dict[str, str],
                                                          run_agent: RunAgent) -> None:
    files = {"Cargo.toml": '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n'
                           '[dependencies]\nhelper = { path = "helper" }\n',
             "src/main.rs": "fn main() { helper::hi(); }\n",
             "helper/Cargo.toml": '[package]\nname = "helper"\nversion = "0.1.0"\nedition = "2021"\n',
             "helper/src/lib.rs": "pub fn hi() {}\n"}
    root = write_tree(tmp_path / "app", files)
    log = tmp_path / "cc.log"
    args_logger(tmp_path / "tools" / "cc", log, "/usr/bin/cc")
    env = {**agent_env, "PATH": f"{tmp_path / 'tools'}:{os.environ['PATH']}",
           "CARGO_TARGET_DIR": str(tmp_path / "target"), "CARGO_AGENT_LINK_THREADS": "1"}

    def bare() -> str:
        done = subprocess.run(["cargo", "build", "-v"], cwd=root, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "Compiling app" in bare()
    assert "--threads" not in log.read_text()
    agent = run_agent("-v", "build", cwd=root, env=env)
    assert agent.returncode == 0 and "Compiling" not in agent.stderr and "Fresh app" in agent.stderr, agent.stderr
    assert "Compiling" not in bare()
    (root / "src" / "main.rs").write_text("fn main() { helper::hi(); helper::hi(); }\n")
    agent = run_agent("-v", "build", cwd=root, env=env)
    assert agent.returncode == 0 and "Compiling app" in agent.stderr and "Compiling helper" not in agent.stderr
    link_line = _lines(log)[-1].split()
    assert "-fuse-ld=lld" in link_line and "-Wl,--threads=1" in link_line  # rust-lld, capped
    again = bare()
    assert "Compiling" not in again and "Fresh app" in again


# ---- rustc wrappers ------------------------------------------------------------------

def test_the_users_rustc_wrapper_is_chained_not_replaced(tmp_path: Path, run_agent: RunAgent) -> None:
    root = write_tree(tmp_path / "app", _bin("app"))
    root = root / "app"
    calls = tmp_path / "wrapper.log"
    script(root / "tools" / "wrap.sh", f'echo "$*" >> "{calls}"\nexec "$@"\n')
    write_tree(root, {".cargo/config.toml": '[build]\nrustc-wrapper = "tools/wrap.sh"\n'})
    result = run_agent("build", cwd=root, extra_env={"CARGO_TARGET_DIR": str(tmp_path / "target")})
    assert result.returncode == 0, result.stderr
    lines = _lines(calls)
    assert any("-vV" in line for line in lines)  # cargo's probe went through the user's wrapper
    link = [line for line in lines if "--crate-name app" in line]
    assert link and f"linker={Path(linkgate.__file__).name}" not in link[-1] and "-C linker=" in link[-1]


def test_a_sccache_wrapper_is_still_turned_off_by_default(tmp_path: Path, run_agent: RunAgent) -> None:
    root = write_tree(tmp_path / "app", _bin("app"))
    root = root / "app"
    wrapper = script(tmp_path / "bin" / "sccache", "echo sccache-was-used >&2\nexit 1\n")
    result = run_agent("build", cwd=root, extra_env={"RUSTC_WRAPPER": str(wrapper),
                                                     "CARGO_TARGET_DIR": str(tmp_path / "target")})
    assert result.returncode == 0 and "sccache-was-used" not in result.stderr, result.stderr


def test_the_parallel_frontend_is_turned_off_under_rlimit_as(tmp_path: Path, run_agent: RunAgent) -> None:
    root = write_tree(tmp_path / "app", _bin("app"))
    root = root / "app"
    calls = tmp_path / "wrapper.log"
    wrap = script(tmp_path / "wrap.sh", f'echo "$*" >> "{calls}"\nexec "$@"\n')
    extra = {"RUSTFLAGS": "-Zthreads=4", "RUSTC_WRAPPER": str(wrap), "CARGO_TARGET_DIR": str(tmp_path / "t")}
    result = run_agent("+nightly", "build", cwd=root, extra_env=extra)
    assert result.returncode == 0, result.stderr
    assert "note: cargo-agent: rustflags ask for rustc's parallel frontend (-Z threads)" in result.stderr
    compile_line = [line for line in _lines(calls) if "--crate-name app" in line][-1].split()
    assert compile_line.index("-Zthreads=1") > compile_line.index("-Zthreads=4")
    calls.unlink()
    result = run_agent("+nightly", "build", cwd=root, extra_env={**extra, "CARGO_AGENT_LIMIT_AS": "unlimited",
                                                                  "CARGO_TARGET_DIR": str(tmp_path / "t2")})
    assert result.returncode == 0 and "parallel frontend" not in result.stderr
    assert not any("-Zthreads=1" in line for line in _lines(calls))


# ---- the wrapper's argument handling (a stand-in rustc that prints its arguments) --------

@pytest.fixture
def wrapper(tmp_path: Path) -> tuple[str, Path, dict[str, str]]:
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": os.environ["PATH"]}
    directory = linkgate._gate_dir(env)
    printer = script(tmp_path / "rustc", 'printf "%s\\n" "$@"\n')
    env["CARGO_AGENT_GATE"] = f"3:{HOST}:1:1"
    return os.path.join(directory, linkgate.WRAPPER_NAME), printer, env


ARGS = [
    (["--crate-name", "x", "--crate-type", "lib"], None),
    (["--crate-type", "bin"], ["-C", "linker=@DIR@/cc", "-C", "link-arg=-Wl,--threads=3"]),
    (["--test"], ["-C", "linker=@DIR@/cc", "-C", "link-arg=-Wl,--threads=3"]),
    (["--crate-type", "proc-macro"], ["-C", "linker=@DIR@/cc", "-C", "link-arg=-Wl,--threads=3"]),
    (["-", "--crate-type", "bin", "--print=file-names"], None),
    (["--crate-type", "bin", "--target", "aarch64-unknown-linux-gnu"], None),
    (["--crate-type", "bin", "--target", "aarch64-unknown-linux-gnu", "-C", "linker=aarch64-linux-gnu-gcc"],
     ["-C", "linker=@DIR@/aarch64-linux-gnu-gcc"]),
    (["--crate-type", "cdylib", "-C", "linker=rust-lld"],
     ["-C", "linker=@DIR@/rust-lld", "-C", "link-arg=--threads=3"]),
    (["--crate-type", "bin", "-Clinker=/opt/bin/ld.mold"],
     ["-C", "linker=@DIR@/ld.mold", "-C", "link-arg=--thread-count=3"]),
    (["--crate-type", "bin", "-C", "link-args=-fuse-ld=mold -Wl,-O1"],
     ["-C", "linker=@DIR@/cc", "-C", "link-arg=-Wl,--thread-count=3"]),
    (["--crate-type", "bin", "-Zlinker-features=-lld"], ["-C", "linker=@DIR@/cc"]),
    (["--crate-type", "bin", "-C", "linker=x86_64-linux-gnu-gcc-12"], ["-C", "linker=@DIR@/x86_64-linux-gnu-gcc-12"]),
    (["--crate-type", "lib", "-Z", "threads=8"], ["-Zthreads=1"]),
]


@pytest.mark.parametrize(("args", "added"), ARGS, ids=[" ".join(a[0]) for a in ARGS])
def test_the_wrapper_adds_the_gate_only_to_rustc_calls_that_link(wrapper: tuple[str, Path, dict[str, str]],
                                                                 args: list[str], added: list[str] | None) -> None:
    path, printer, env = wrapper
    out = subprocess.run([path, str(printer), *args], env=env, capture_output=True, text=True, check=True).stdout
    directory = os.path.dirname(path)
    assert out.splitlines() == [*args, *[a.replace("@DIR@", directory) for a in (added or [])]]


def test_the_wrapper_runs_the_users_wrapper_first_and_passes_the_real_linker(
        wrapper: tuple[str, Path, dict[str, str]], tmp_path: Path) -> None:
    path, printer, env = wrapper
    chain = script(tmp_path / "chain", 'echo "chain $CARGO_AGENT_GATE_LINKER"\nexec "$@"\n')
    out = subprocess.run([path, str(printer), "--crate-type", "bin", "-C", "linker=my-cc"],
                         env={**env, "CARGO_AGENT_GATE_CHAIN": str(chain)}, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == "chain my-cc"
    assert out[-4:] == ["-C", f"linker={os.path.dirname(path)}/my-cc", "-C", "link-arg=-Wl,--threads=3"]
    assert os.readlink(os.path.join(os.path.dirname(path), "my-cc")) == linkgate.GATE_NAME


# ---- no deadlock below a link ------------------------------------------------------------

def test_a_build_inside_a_linker_neither_waits_for_a_link_slot_nor_a_build_slot(
        tmp_path: Path, agent_env: dict[str, str]) -> None:
    import sys

    inner = write_tree(tmp_path / "inner", _bin("inner"))
    inner = inner / "inner"
    outer = write_tree(tmp_path / "outer", _bin("outer"))
    outer = outer / "outer"
    # The user's linker builds another crate with cargo-agent first, with the slot variable
    # scrubbed: with one build slot and one link slot, waiting for either would hang forever.
    once = tmp_path / "nested-once"  # the inner build links through this linker too: nest only once
    nested = (f'env -u CARGO_AGENT_SLOT "{sys.executable}" -m cargo_agent build -q '
              f'--manifest-path "{inner / "Cargo.toml"}" --target-dir "{tmp_path / "inner-target"}"')
    linker = script(tmp_path / "linker.sh", f'mkdir "{once}" 2>/dev/null && {{ {nested} || exit 9; }}\nexec cc "$@"\n')
    env = {**agent_env, "CARGO_AGENT_SLOTS": "1", "CARGO_AGENT_LINK_SLOTS": "1",
           f"CARGO_TARGET_{HOST_ENV}_LINKER": str(linker), "CARGO_TARGET_DIR": str(tmp_path / "target")}
    result = subprocess.run(agent_command("build"), cwd=outer, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "inner-target" / "debug" / "inner").exists()
    assert (tmp_path / "target" / "debug" / "outer").exists()


# ---- hostile lock dirs -------------------------------------------------------------------

@pytest.mark.parametrize("plant", ["fifo", "symlink", "directory"])
def test_a_planted_link_lock_fails_the_link_with_one_line_and_no_hang(tmp_path: Path, run_agent: RunAgent,
                                                                      agent_env: dict[str, str], plant: str) -> None:
    root = write_tree(tmp_path / "app", _bin("app"))
    root = root / "app"
    lock_dir = Path(agent_env["CARGO_AGENT_LOCK_DIR"])
    lock_dir.mkdir(mode=0o700)
    target = lock_dir / "link-0.lock"
    if plant == "fifo":
        os.mkfifo(target)
    elif plant == "symlink":
        (tmp_path / "victim").write_text("x")
        target.symlink_to(tmp_path / "victim")
    else:
        target.mkdir()
    result = run_agent("build", cwd=root, extra_env={"CARGO_AGENT_LINK_SLOTS": "1",
                                                     "CARGO_TARGET_DIR": str(tmp_path / "target")}, timeout=120)
    assert result.returncode != 0
    assert "error: cargo-agent link gate: cannot" in result.stderr and str(target) in result.stderr
    assert "Traceback" not in result.stderr
    if plant == "symlink":
        assert (tmp_path / "victim").read_text() == "x"


# ---- the gate on its own (a real process, a stand-in linker) --------------------------------

def _gate(env: dict[str, str], linker: str, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    code = "import sys; from cargo_agent.linkgate import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          env={**env, linkgate.LINKER_ENV: linker})


def test_the_gate_passes_the_linkers_exit_status_and_signal_on(tmp_path: Path, agent_env: dict[str, str]) -> None:
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(mode=0o700)
    env = {**agent_env, linkgate.LOCKS_ENV: f"1:0:{lock_dir}"}
    failing = script(tmp_path / "failing-linker", 'echo "args: $*"; exit 3\n')
    result = _gate(env, str(failing), "-o", "out", "a.o")
    assert result.returncode == 3 and result.stdout == "args: -o out a.o\n"
    killed = script(tmp_path / "killed-linker", "kill -9 $$\n")
    assert _gate(env, str(killed)).returncode == -signal.SIGKILL
    assert report_links(lock_dir) == 2  # both links recorded their peak


def report_links(lock_dir: Path) -> int:
    from cargo_agent import report

    return len(report.recent(lock_dir, 100, report.LINKS))


def test_a_gate_whose_lock_dir_is_gone_links_anyway_and_says_so(tmp_path: Path, agent_env: dict[str, str]) -> None:
    env = {**agent_env, linkgate.LOCKS_ENV: f"1:0:{tmp_path / 'removed'}"}
    result = _gate(env, "true")
    assert result.returncode == 0
    assert result.stderr == (f"warning: cargo-agent link gate: lock dir {tmp_path / 'removed'} is gone; this link "
                             "runs without a link slot\n")
