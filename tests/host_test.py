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

# ---- the limit in force and the CPUs, from fake /proc and cgroup trees ------------------------

def _proc(tmp_path: Path, meminfo: str = "MemTotal: 16000000 kB\nMemAvailable: 15000000 kB\n",
          cgroup: str = "", mountinfo: str = "") -> str:
    proc = tmp_path / "proc"
    files = {"self/cgroup": cgroup, "self/mountinfo": mountinfo}
    if meminfo is not None:
        files["meminfo"] = meminfo
    write_tree(proc, files)
    return str(proc)


def _v1_memory(tmp_path: Path, cgroup_path: str, levels: dict[str, dict[str, str]], root: str = "/",
               controllers: str = "memory", options: str = "rw,memory") -> str:
    mount = tmp_path / "v1 mem"  # a space in the mount point: octal-escaped in mountinfo
    for relative, files in levels.items():
        write_tree(mount / relative.lstrip("/"), files)
    return _proc(tmp_path, cgroup=f"5:{controllers}:{cgroup_path}\n",
                 mountinfo=f"40 23 0:30 {root} {str(mount).replace(' ', chr(92) + '040')} rw - cgroup cgroup "
                           f"{options}\n")


def test_meminfo_reads_kb_as_bytes_and_plain_counts_as_they_are(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "MemTotal:       2048 kB\nHugePages_Total:       7\nBroken: lots kB\nNoColon\n")
    assert host.meminfo(proc) == {"MemTotal": 2048 * 1024, "HugePages_Total": 7}
    assert host.meminfo(str(tmp_path / "nowhere")) == {}


def test_memtotal_use_is_total_minus_available_else_free(tmp_path: Path) -> None:
    with_available = host.limits(_proc(tmp_path / "a", "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 400 kB\n"))
    assert [(found.limit, found.used, found.source) for found in with_available] == [
        (1000 << 10, 600 << 10, "MemTotal (/proc/meminfo)")]
    free_only = host.limits(_proc(tmp_path / "b", "MemTotal: 1000 kB\nMemFree: 100 kB\n"))
    assert free_only[0].used == 900 << 10
    assert host.limits(_proc(tmp_path / "c", "MemFree: 100 kB\n")) == []  # no MemTotal: no limit from it


def test_without_any_limit_the_limit_in_force_is_unknown(tmp_path: Path) -> None:
    unknown = host.in_force(_proc(tmp_path, ""))
    assert (unknown.limit, unknown.used, unknown.source) == (0, 0, "unknown (no /proc/meminfo)")


def test_a_limit_counts_no_negative_use_and_its_room_is_what_is_left() -> None:
    assert (host.Limit(100, -5, "x").used, host.Limit(100, -5, "x").room) == (0, 100)
    assert host.Limit(100, 30, "x").room == 70
    assert repr(host.Limit(100, 30, "src")) == "Limit(100, 30, 'src')"


def test_the_limit_with_least_room_wins_and_on_a_tie_the_smaller_limit(tmp_path: Path) -> None:
    proc = _fake_root(tmp_path, "/a/b", {"/a/b": (str(8 << 30), 1000 + (1 << 30)),  # 7 GiB room
                                         "/a": (str(4 << 30), 1000 + (1 << 30))})  # 3 GiB room: wins
    assert host.in_force(proc).source == f"cgroup v2 memory.max of {tmp_path / 'cg' / 'a'}"
    # MemTotal 16000000 kB with 15000000 kB available: 1000000 kB room; a cgroup with the same room
    tie = _fake_root(tmp_path / "tie", "/t", {"/t": (str((1000000 << 10) + 5000), 5000 + 1000)})
    assert host.in_force(tie).source == f"cgroup v2 memory.max of {tmp_path / 'tie' / 'cg' / 't'}"


def test_a_cgroup_path_with_a_colon_is_read_whole(tmp_path: Path) -> None:
    proc = _fake_root(tmp_path, "/user:1/a:b", {"/user:1/a:b": (str(1 << 30), 0)})
    assert host.in_force(proc).source == f"cgroup v2 memory.max of {tmp_path / 'cg' / 'user:1' / 'a:b'}"
    v1 = _v1_memory(tmp_path / "v1", "/job:7", {"/job:7": {"memory.limit_in_bytes": str(1 << 30),
                                                           "memory.usage_in_bytes": "0"}})
    assert host.in_force(v1).source.endswith("job:7")


def test_cgroup_v2_levels_without_a_limit_or_a_reading_are_skipped(tmp_path: Path) -> None:
    proc = _fake_root(tmp_path, "/x/y/z", {"/x/y/z": ("0", 5), "/x/y": ("max", 5), "/x": (str(3 << 30), 2000)})
    write_tree(tmp_path / "cg" / "w", {"memory.max": str(1 << 30)})  # not our cgroup
    (tmp_path / "cg" / "x" / "memory.current").unlink()
    assert [found.source for found in host.limits(proc)] == ["MemTotal (/proc/meminfo)"]
    (tmp_path / "cg" / "x" / "memory.current").write_text("2000\n")
    found = host.limits(proc)[1]
    assert (found.limit, found.used) == (3 << 30, 1000)  # 2000 charged, 1000 of it file cache


def test_a_cgroup_v1_memory_limit_and_its_ancestors_count_cache_excluded(tmp_path: Path) -> None:
    proc = _v1_memory(tmp_path, "/job/step", {
        "/job/step": {"memory.limit_in_bytes": str(1 << 61), "memory.usage_in_bytes": "10"},  # "no limit"
        "/job": {"memory.limit_in_bytes": str(2 << 30), "memory.usage_in_bytes": str(1 << 30),
                 "memory.stat": "cache 1\ntotal_inactive_file 1000\ntotal_active_file 24\ninactive_file 7\n"},
        "/": {"memory.limit_in_bytes": str(host.UNLIMITED_CGROUP - 1), "memory.usage_in_bytes": str(1 << 30),
              "memory.stat": "inactive_file 1000\nactive_file 24\n"},  # no total_*: this level's own figures
    }, controllers="cpuset,memory")
    mount = tmp_path / "v1 mem"
    found = [(f.limit, f.used, f.source) for f in host.limits(proc)[1:]]
    assert found == [(2 << 30, (1 << 30) - 1024, f"cgroup v1 memory.limit_in_bytes of {mount / 'job'}"),
                     (host.UNLIMITED_CGROUP - 1, (1 << 30) - 1024, f"cgroup v1 memory.limit_in_bytes of {mount}")]
    assert host.in_force(proc).source.endswith(str(mount / "job"))


def test_a_cgroup_v1_level_with_a_zero_or_unreadable_limit_is_skipped(tmp_path: Path) -> None:
    proc = _v1_memory(tmp_path, "/a", {"/a": {"memory.limit_in_bytes": "0", "memory.usage_in_bytes": "1"},
                                       "/": {"memory.limit_in_bytes": str(1 << 30)}})
    assert len(host.limits(proc)) == 1
    tiny = _v1_memory(tmp_path / "t", "/a", {"/a": {"memory.limit_in_bytes": "1", "memory.usage_in_bytes": "0"}})
    assert host.in_force(tiny).limit == 1  # any positive limit counts, however small


def test_a_cgroup_v2_limit_of_one_byte_counts(tmp_path: Path) -> None:
    proc = _fake_root(tmp_path, "/a", {"/a": ("1", 0)})
    assert host.in_force(proc).limit == 1


def test_a_containers_cgroup_view_is_read_relative_to_its_mount_root(tmp_path: Path) -> None:
    """In a container, /proc/self/cgroup names /docker/abc/job while the mount's root is /docker/abc."""
    levels = {"/job": {"memory.limit_in_bytes": str(1 << 30), "memory.usage_in_bytes": "0"}}
    proc = _v1_memory(tmp_path, "/docker/abc/job", levels, root="/docker/abc")
    assert host.in_force(proc).source == f"cgroup v1 memory.limit_in_bytes of {tmp_path / 'v1 mem' / 'job'}"
    at_root = _v1_memory(tmp_path / "r", "/docker/abc", {"/": levels["/job"]}, root="/docker/abc")
    assert host.in_force(at_root).source == f"cgroup v1 memory.limit_in_bytes of {tmp_path / 'r' / 'v1 mem'}"
    elsewhere = _v1_memory(tmp_path / "e", "/other/job", {"/other/job": levels["/job"]}, root="/docker/abc")
    assert host.in_force(elsewhere).limit == 1 << 30  # a path outside the root is read as it is
    lookalike = _v1_memory(tmp_path / "l", "/docker/abcd/job", {"/docker/abcd/job": levels["/job"]},
                           root="/docker/abc")
    assert host.in_force(lookalike).limit == 1 << 30


def test_only_the_memory_hierarchy_and_real_cgroup_mounts_are_read(tmp_path: Path) -> None:
    levels = {"/a": {"memory.limit_in_bytes": str(1 << 30), "memory.usage_in_bytes": "0"}}
    not_memory = _v1_memory(tmp_path / "n", "/a", levels, controllers="cpu", options="rw,cpu")
    assert len(host.limits(not_memory)) == 1
    not_ours = _v1_memory(tmp_path / "o", "/a", levels, controllers="cpu")  # a memory mount, but not our hierarchy
    assert len(host.limits(not_ours)) == 1
    mounted_without_memory = _v1_memory(tmp_path / "m", "/a", levels, options="rw,cpu")
    assert len(host.limits(mounted_without_memory)) == 1
    mount = tmp_path / "v1 mem"
    write_tree(mount / "a", levels["/a"])
    broken = _proc(tmp_path, cgroup="bad line\n5:memory:/a\n",
                   mountinfo=f"1 2 0:1 / /proc rw - proc proc rw\nshort - cgroup\n"
                             f"40 23 0:30 / {str(mount).replace(' ', chr(92) + '040')} rw - cgroup cgroup rw,memory\n")
    assert host.in_force(broken).source.endswith(str(mount / "a"))


def test_mount_lines_too_short_to_name_a_root_and_mount_point_are_skipped(tmp_path: Path) -> None:
    mount = tmp_path / "mem"
    write_tree(mount / "a", {"memory.limit_in_bytes": str(1 << 30), "memory.usage_in_bytes": "0"})
    write_tree(tmp_path / "cpu" / "a", {"cpu.max": "50000 100000\n"})
    short = ("1 2 0:1 /x - cgroup cgroup rw,memory\n"  # no mount point
             "1 2 0:1 / /t2 rw - cgroup cgroup\n"  # no super options
             "1 2 0:1 / /t1 rw - cgroup\n"
             "- cgroup2 cgroup2 rw\n"
             "1 2 0:1 / /c2 rw - cgroup2 cgroup2\n")
    proc = _proc(tmp_path, cgroup="0::/a\n5:memory:/a\n",
                 mountinfo=short + f"1 2 0:1 / {mount} - cgroup cgroup rw,memory\n"  # 5 fields: enough
                                   f"3 2 0:2 / {tmp_path / 'cpu'} rw - cgroup2 cgroup2 rw\n")
    assert host.in_force(proc).source == f"cgroup v1 memory.limit_in_bytes of {mount / 'a'}"
    assert host.cpu_limit(proc) == (0.5, str(tmp_path / "cpu" / "a" / "cpu.max"))


def test_reserve_is_at_most_a_quarter_of_the_limit() -> None:
    assert host.reserve_within(2 << 30, 4 << 30) == 1 << 30
    assert host.reserve_within(1 << 30, 4 << 30) == 1 << 30
    assert host.reserve_within(1 << 30, 8 << 30) == 1 << 30
    assert host.reserve_within(5, 0) == 5  # no limit known: the reserve as set


def _cpu_tree(tmp_path: Path, version: str, files: dict[str, str], path: str = "/a/b", root: str = "/") -> str:
    mount = tmp_path / "cg"
    if version == "v2":
        cgroup, mountinfo = f"0::{path}\n", f"30 25 0:26 {root} {mount} rw - cgroup2 cgroup2 rw\n"
    else:
        cgroup = f"2:memory:{path}\n4:cpu,cpuacct:{path}\n"
        mountinfo = (f"29 25 0:25 {root} {tmp_path / 'mem'} rw - cgroup cgroup rw,memory\n"
                     f"31 25 0:27 {root} {mount} rw - cgroup cgroup rw,cpu,cpuacct\n")
    write_tree(mount, files)
    return _proc(tmp_path, cgroup=cgroup, mountinfo=mountinfo)


@pytest.mark.timeout(30)  # a walk up the cgroup tree that never stops would loop
@pytest.mark.parametrize(("version", "files", "expected"), [
    ("v2", {"a/b/cpu.max": "150000\n"}, 1.5),  # the period defaults to 100000
    ("v2", {"a/b/cpu.max": "200000 50000\n"}, 4.0),
    ("v2", {"a/b/cpu.max": "max 100000\n", "a/cpu.max": "0 100000\n", "cpu.max": "300000 100000\n"}, 3.0),
    ("v2", {"a/b/cpu.max": "100000 0\n"}, None),
    ("v2", {"a/b/cpu.max": "-5 100000\n"}, None),
    ("v2", {"a/b/cpu.max": "many\n"}, None),
    ("v1", {"a/b/cpu.cfs_quota_us": "50000\n", "a/b/cpu.cfs_period_us": "100000\n"}, 0.5),
    ("v1", {"a/b/cpu.cfs_quota_us": "50000\n", "a/b/cpu.cfs_period_us": "0\n"}, None),
    ("v1", {"a/b/cpu.cfs_quota_us": "50000\n"}, None),
    ("v1", {"a/b/cpu.cfs_quota_us": "300000\n", "a/b/cpu.cfs_period_us": "100000\n",
            "a/cpu.cfs_quota_us": "200000\n", "a/cpu.cfs_period_us": "100000\n"}, 2.0),  # the tighter ancestor
])
def test_the_tightest_cpu_quota_of_the_cgroup_and_its_ancestors(tmp_path: Path, version: str, files: dict[str, str],
                                                                expected: float | None) -> None:
    found = host.cpu_limit(_cpu_tree(tmp_path, version, files))
    assert (found[0] if found else None) == expected
    if found is not None:
        name = "cpu.max" if version == "v2" else "cpu.cfs_quota_us"
        winner = next(path for path, text in files.items() if path.endswith(name)
                      and host._read_quota(str(tmp_path / "cg" / os.path.dirname(path)), version) == expected)
        assert found[1] == str(tmp_path / "cg" / winner)


@pytest.mark.timeout(30)
def test_of_equal_quotas_the_innermost_is_named(tmp_path: Path) -> None:
    proc = _cpu_tree(tmp_path, "v2", {"a/b/cpu.max": "50000 100000\n", "a/cpu.max": "50000 100000\n"})
    assert host.cpu_limit(proc) == (0.5, str(tmp_path / "cg" / "a" / "b" / "cpu.max"))


@pytest.mark.timeout(30)
def test_a_quota_is_read_no_higher_than_the_mount_point(tmp_path: Path) -> None:
    write_tree(tmp_path, {"cpu.max": "50000 100000\n"})  # above the mount: not ours
    proc = _cpu_tree(tmp_path, "v2", {"a/b/cpu.max": "max\n"})
    assert host.cpu_limit(proc) is None
    inside = _cpu_tree(tmp_path / "c", "v2", {"b/cpu.max": "50000 100000\n"}, path="/ns/b", root="/ns")
    assert host.cpu_limit(inside) == (0.5, str(tmp_path / "c" / "cg" / "b" / "cpu.max"))
    outside = _cpu_tree(tmp_path / "o", "v2", {"ns2/b/cpu.max": "50000 100000\n"}, path="/ns2/b", root="/ns")
    assert host.cpu_limit(outside) is None  # our cgroup is not below that mount's root
    assert host.cpu_limit(str(tmp_path / "no-proc")) is None


@pytest.mark.timeout(30)
def test_cpus_are_the_affinity_lowered_by_a_quota_rounded_up(tmp_path: Path) -> None:
    cores = host.cores()
    assert host.cpus(str(tmp_path / "none")) == (cores, f"{cores} cores (CPU affinity)")
    equal = _cpu_tree(tmp_path / "eq", "v2", {"a/b/cpu.max": f"{cores * 100000} 100000\n"})
    assert host.cpus(equal) == (cores, f"{cores} cores (CPU affinity)")  # a quota of every core lowers nothing
    tiny = _cpu_tree(tmp_path / "tiny", "v2", {"a/b/cpu.max": "1000 100000\n"})
    assert host.cpus(tiny) == (1, f"cgroup CPU quota 0.01 CPUs ({tmp_path / 'tiny' / 'cg' / 'a' / 'b' / 'cpu.max'})")
    if cores > 1:
        below = _cpu_tree(tmp_path / "below", "v2", {"a/b/cpu.max": f"{(cores - 1) * 100000 - 50000} 100000\n"})
        assert host.cpus(below)[0] == cores - 1  # e.g. 1.5 CPUs of quota keeps two jobs busy


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
