"""Host facts with the real kernel: the memory limit in force (a real cgroup v1 limit, cgroup v2
ancestors), pressure, the test hooks (which may only make readings worse), admission held on
pressure, the kill guard on full memory pressure, and RLIMIT_AS made safe, also for a real
unprivileged user under an inherited `ulimit -v`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import users
from conftest import RunAgent, agent_command, wait_for, write_tree

from cargo_agent import host


def _memory_cgroup_dir() -> Path:
    dirs = host._cgroup_dirs("/proc", v2=False)
    assert dirs, "this host has no cgroup v1 memory controller mounted (see cargo-facts.md)"
    return Path(dirs[0])


@pytest.fixture
def limited_cgroup() -> Iterator[Path]:
    """A real cgroup v1 memory cgroup below ours, limited to 3 GiB; removed afterwards."""
    directory = _memory_cgroup_dir() / f"cargo-agent-test-{os.getpid()}"
    directory.mkdir()
    try:
        (directory / "memory.limit_in_bytes").write_text(str(3 << 30))
        yield directory
    finally:
        for _ in range(50):  # the processes we moved in must be gone before rmdir
            try:
                directory.rmdir()
                break
            except OSError:
                import time

                time.sleep(0.1)


def _in_cgroup(directory: Path) -> object:
    def enter() -> None:
        (directory / "cgroup.procs").write_text(str(os.getpid()))

    return enter


def test_a_cgroup_v1_limit_is_the_limit_in_force_and_doctor_and_dry_run_name_it(
        limited_cgroup: Path, virtual_ws: Path, agent_env: dict[str, str]) -> None:
    doctor = subprocess.run(agent_command("--doctor"), cwd=virtual_ws, env=agent_env, capture_output=True, text=True,
                            preexec_fn=_in_cgroup(limited_cgroup))  # type: ignore[arg-type]
    line = next(line for line in doctor.stdout.splitlines() if line.startswith("memory limit:"))
    assert line.startswith("memory limit: 3072 MiB") and f"cgroup v1 memory.limit_in_bytes of {limited_cgroup}" in line
    assert "  also " in doctor.stdout and "(MemTotal (/proc/meminfo))" in doctor.stdout  # the looser one too
    plan = subprocess.run(agent_command("--dry-run", "build", "-p", "alpha"), cwd=virtual_ws, env=agent_env,
                          capture_output=True, text=True, preexec_fn=_in_cgroup(limited_cgroup))  # type: ignore[arg-type]
    limit_line = next(line for line in plan.stdout.splitlines() if line.startswith("limit:"))
    assert "3072 MiB in force" in limit_line and str(limited_cgroup) in limit_line
    slots_line = next(line for line in plan.stdout.splitlines() if line.startswith("slots:"))
    assert "(3.0G cgroup v1" in slots_line and slots_line.endswith("= 1")  # (3G - 0.75G reserve) / 4G -> 1


def _fake_root(tmp_path: Path, cgroup_path: str, levels: dict[str, tuple[str, int]]) -> str:
    """A /proc look-alike with a cgroup2 mount in `tmp_path/cg` and memory files per level."""
    proc, mount = tmp_path / "proc", tmp_path / "cg"
    write_tree(proc, {"meminfo": "MemTotal:       16000000 kB\nMemAvailable:   15000000 kB\n",
                      "self/cgroup": f"0::{cgroup_path}\n",
                      "self/mountinfo": f"30 23 0:27 / {mount} rw,nosuid - cgroup2 cgroup2 rw\n"})
    for relative, (limit, current) in levels.items():
        write_tree(mount / relative.lstrip("/"), {"memory.max": f"{limit}\n", "memory.current": f"{current}\n",
                                                  "memory.stat": "anon 1\ninactive_file 600\nactive_file 400\n"})
    return str(proc)


def test_cgroup_v2_limits_of_every_ancestor_count_and_the_tightest_wins(tmp_path: Path) -> None:
    proc = _fake_root(tmp_path, "/agents.slice/agent-7.scope", {
        "/agents.slice/agent-7.scope": ("max", 100),
        "/agents.slice": (str(2 << 30), (1 << 30) + 1000),
        "/": ("max", 0),
    })
    limit = host.in_force(proc)
    assert limit.limit == 2 << 30 and limit.used == 1 << 30  # file cache is not counted
    assert limit.source == f"cgroup v2 memory.max of {tmp_path / 'cg' / 'agents.slice'}"
    assert [found.source.split(" of ")[0] for found in host.limits(proc)] == ["MemTotal (/proc/meminfo)",
                                                                              "cgroup v2 memory.max"]


def test_a_cgroup_limit_above_memtotal_does_not_win(tmp_path: Path) -> None:
    proc = _fake_root(tmp_path, "/big", {"/big": (str(64 << 30), 1 << 20)})
    assert host.in_force(proc).source == "MemTotal (/proc/meminfo)"


def test_the_hooks_can_only_make_readings_worse(tmp_path: Path) -> None:
    real = host.read({})
    low = tmp_path / "low"
    low.write_text("0")
    assert host.read({host.SOURCE_ENV: str(low)}).used_percent >= real.used_percent - 5
    assert "raised by" not in host.read({host.SOURCE_ENV: str(low)}).source
    high = tmp_path / "high"
    high.write_text("97%")
    raised = host.read({host.SOURCE_ENV: str(high)})
    assert raised.used_percent == 97 and raised.used == int(raised.total * 0.97) and "raised by" in raised.source
    calm = write_tree(tmp_path / "calm", {"memory": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
                                                    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
                                          "io": "garbage\n"})
    real_psi = host.pressure({})
    hooked = host.pressure({host.PRESSURE_ENV: str(calm)})
    assert hooked.io_some >= real_psi.io_some - 5 and "raised by" not in hooked.source
    hot = write_tree(tmp_path / "hot", {"memory": "some avg10=70.00 avg60=1 avg300=1 total=9\n"
                                                  "full avg10=55.50 avg60=1 avg300=1 total=9\n"})
    worse = host.pressure({host.PRESSURE_ENV: str(hot)})
    assert (worse.memory_some, worse.memory_full) == (70.0, 55.5) and "raised by" in worse.source


def test_tree_rss_sums_a_real_process_tree() -> None:
    child = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
    try:
        def sleeping() -> bool:  # both children have exec'd sleep (a child just forked reports no RSS yet)
            kids = Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split()
            return len(kids) == 2 and all(Path(f"/proc/{k}/comm").read_text().strip() == "sleep" for k in kids)

        wait_for(sleeping)
        totals = host.tree_rss([child.pid, 999999999])
        alone = int(Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[21]) * os.sysconf(
            "SC_PAGE_SIZE")
        assert totals[child.pid] > alone and totals[999999999] == 0
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the session we started: sh and its two sleeps
        child.wait()


# ---- pressure and admission, with real cargo ------------------------------------------

def _blocking_ws(root: Path, gate: Path) -> Path:
    """alpha's and beta's build scripts wait until the file `gate`-<name> exists."""
    files = {"Cargo.toml": '[workspace]\nresolver = "2"\nmembers = ["alpha", "beta", "gamma"]\n'}
    for name in ("alpha", "beta", "gamma"):
        files[f"{name}/Cargo.toml"] = f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n'
        files[f"{name}/src/lib.rs"] = "pub fn f() {}\n"
        if name != "gamma":
            files[f"{name}/build.rs"] = (
                "fn main() {\n"
                f'    let go = std::path::Path::new("{gate}-{name}");\n'
                '    while !go.exists() { std::thread::sleep(std::time::Duration::from_millis(50)); }\n}\n')
    return write_tree(root, files)


def test_pressure_holds_admission_and_says_why(tmp_path: Path, agent_env: dict[str, str], reap: list[int]) -> None:
    ws = _blocking_ws(tmp_path / "ws", tmp_path / "go")
    psi = write_tree(tmp_path / "psi", {"memory": "some avg10=0.00\nfull avg10=0.00\n",
                                        "io": "some avg10=80.00 avg60=1 avg300=1 total=1\nfull avg10=45.00\n"})
    env = {**agent_env, host.PRESSURE_ENV: str(psi), "CARGO_TARGET_DIR": str(tmp_path / "t")}
    err = tmp_path / "stderr"
    with err.open("w") as handle:
        build = subprocess.Popen(agent_command("build", "-p", "gamma"), cwd=ws, env=env, stderr=handle)
    reap.append(build.pid)
    wait_for(lambda: "I/O pressure (PSI full avg10) at 45% is above pressure_high 25%" in err.read_text(), 60)
    status = subprocess.run(agent_command("--status"), cwd=ws, env=env, capture_output=True, text=True).stdout
    assert "admission held: I/O pressure 45% > pressure_high 25%" in status
    assert not (tmp_path / "t" / "debug").exists()  # cargo never started, though every slot is free
    (psi / "io").write_text("full avg10=3.00\n")
    assert build.wait(120) == 0, err.read_text()


def test_the_kill_guard_stops_the_newest_build_on_full_memory_pressure_never_the_oldest(
        tmp_path: Path, agent_env: dict[str, str], reap: list[int]) -> None:
    go = tmp_path / "go"
    ws = _blocking_ws(tmp_path / "ws", go)
    psi = write_tree(tmp_path / "psi", {"memory": "full avg10=0.00\n"})
    env = {**agent_env, host.PRESSURE_ENV: str(psi), "CARGO_AGENT_SLOTS": "2", "CARGO_AGENT_KILL_GRACE": "1s",
           "CARGO_AGENT_PRESSURE_HIGH": "off"}
    lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])

    def start(name: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(agent_command("build", "-p", name), cwd=ws, stderr=subprocess.PIPE, text=True,
                                env={**env, "CARGO_TARGET_DIR": str(tmp_path / f"t-{name}")})
        reap.append(proc.pid)
        return proc

    def holding(count: int) -> bool:
        return len(list(lock_dir.glob("slot-*.json"))) == count

    older = start("alpha")
    wait_for(lambda: holding(1), 60)
    # Alone, the oldest build is never stopped, whatever the pressure.
    (psi / "memory").write_text("some avg10=90.00\nfull avg10=90.00\n")
    import time

    time.sleep(2.5)  # ten guard readings: a wrong stop would have happened by now (not a timing claim)
    assert older.poll() is None
    newer = start("beta")
    wait_for(lambda: holding(2), 60)
    assert newer.wait(60) == 128 + signal.SIGTERM
    assert "full memory pressure above pressure_kill 60%" in (newer.stderr.read() if newer.stderr else "")
    (psi / "memory").write_text("full avg10=0.00\n")
    Path(f"{go}-alpha").touch()
    assert older.wait(120) == 0


# ---- RLIMIT_AS ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["8", "99999999999999999999", "255M", "8E", "4Q", "-1G"])
def test_a_bad_limit_as_exits_2_with_one_line(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str],
                                              value: str) -> None:
    for where in ("env", "config"):
        env = dict(fake_cargo_env)
        if where == "env":
            env["CARGO_AGENT_LIMIT_AS"] = value
        else:
            raw = value if value.lstrip("-").isdigit() else f'"{value}"'
            Path(env["CARGO_AGENT_CONFIG"]).write_text(f"limit_as = {raw}\n")
        result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=env)
        assert result.returncode == 2, (where, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"invalid value '{value}'" in result.stderr and "a unit is required" in result.stderr
        assert not Path(env["FAKE_LOG"]).exists()


def test_sizes_with_a_unit_are_accepted(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str]) -> None:
    for value in ("256M", "4G", "12GiB", "1.5g", "unlimited"):
        result = run_agent("--dry-run", "build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env,
                           extra_env={"CARGO_AGENT_LIMIT_AS": value})
        assert result.returncode == 0, (value, result.stderr)


accounts = users.accounts_fixture("h")


@pytest.fixture(scope="module")
def builder(accounts: users.Accounts) -> users.Account:
    return accounts.user("build")


@pytest.mark.parametrize(("inherited_gib", "setting", "expected_gib", "note"), [
    (3, "unlimited", 3, True),  # cannot raise: stays at the inherited limit, says so
    (3, "8G", 3, True),  # cannot raise above it either
    (3, "1G", 1, False),  # lowering is always allowed
    (None, "2G", 2, False),  # nothing inherited
])
def test_rlimit_as_under_an_inherited_ulimit_as_an_unprivileged_user(
        builder: users.Account, agent_env: dict[str, str], inherited_gib: int | None, setting: str,
        expected_gib: int, note: bool) -> None:
    """Real cargo and rustc as a real unprivileged user whose shell set `ulimit -v`: a build
    script reports the limit its build runs under. (Before, `unlimited` here was a traceback
    from the pre-exec hook.)"""
    user = builder
    place = users.open_dir("cargo-agent-rlimit-")
    try:
        files = {"Cargo.toml": '[package]\nname = "limited"\nversion = "0.1.0"\nedition = "2021"\n',
                 "src/lib.rs": "pub fn f() {}\n",
                 "build.rs": 'fn main() {\n    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();\n'
                             '    let line = limits.lines().find(|l| l.starts_with("Max address space")).unwrap();\n'
                             '    println!("cargo::warning=LIMIT {line}");\n}\n'}
        ws = write_tree(place / "ws", files)
        for path in [place, *place.rglob("*")]:
            os.chown(path, user.uid, user.gid)
        env = {**agent_env, "CARGO_AGENT_LOCK_DIR": str(place / "locks"), "XDG_CACHE_HOME": str(place / "cache"),
               "CARGO_TARGET_DIR": str(place / "target"), "CARGO_AGENT_LIMIT_AS": setting}
        ulimit = f"ulimit -v {inherited_gib << 20}; " if inherited_gib is not None else ""
        command = ["sh", "-c", f'{ulimit}exec "$0" "$@"', *agent_command("build")]
        result = users.run_as(user, command, cwd=ws, env=env, timeout=300)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 0, result.stderr[-3000:]
        line = next(line for line in result.stderr.splitlines() if "LIMIT Max address space" in line)
        assert int(line.split()[-3]) == expected_gib << 30, line
        assert ("RLIMIT_AS stays at the inherited hard limit" in result.stderr) == note, result.stderr
    finally:
        shutil.rmtree(place, ignore_errors=True)
