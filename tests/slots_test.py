"""Build slots with real processes and real lock files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import RunAgent, agent_command, alive, wait_for

from cargo_agent import config, slots

# Every test here waits for a lock or a process: a hang fails in two minutes, not 300 s.
pytestmark = pytest.mark.timeout(120)


def _remove_dir(path: Path) -> None:
    """Take a lock dir away at once, as an operator or a tmp cleaner does: renamed out of the way
    first, then deleted. (rmtree alone races with the builds that recreate files in it: "Directory
    not empty".)"""
    gone = path.with_name(path.name + ".removed")
    path.rename(gone)
    shutil.rmtree(gone)


def _events(log: Path) -> list[tuple[str, str, float]]:
    events = []
    for line in log.read_text().splitlines() if log.exists() else []:
        parts = line.split()
        if parts[0] in ("start", "end"):
            events.append((parts[0], parts[1], float(parts[2])))
    return events


def _max_concurrency(events: list[tuple[str, str, float]]) -> int:
    running = peak = 0
    for kind, _, _ in sorted(events, key=lambda e: (e[2], e[0] == "start")):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    return peak


def _set_reading(path: Path, value: str) -> None:
    """Replace the memory reading at once: a reader must never see the file half written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(value)
    os.replace(tmp, path)


def _queued(lock_dir: Path) -> int:
    return len(list((lock_dir / "queue").glob("*.ticket"))) if (lock_dir / "queue").exists() else 0


def _arrived(lock_dir: Path, pid: int) -> bool:
    tickets = [p.name for p in (lock_dir / "queue").glob("*.ticket")] if (lock_dir / "queue").exists() else []
    holders = [p.read_text() for p in lock_dir.glob("slot-*.json")]
    return any(name.endswith(f"-{pid}.ticket") for name in tickets) or any(f'"pid": {pid},' in h for h in holders)


def test_eight_runs_on_two_slots_fifo_and_never_more_than_two(virtual_ws: Path, fake_cargo_env: dict[str, str]) -> None:
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "2", "FAKE_SLEEP": "0.4"}
    lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])
    log = Path(env["FAKE_LOG"])
    procs = []
    for index in range(8):
        procs.append(subprocess.Popen(agent_command("build", "-p", "alpha"), cwd=virtual_ws,
                                      env={**env, "FAKE_TAG": str(index)}, stderr=subprocess.DEVNULL))
        # Arrival order: the next run comes only once this one holds a ticket or a slot.
        wait_for(lambda pid=procs[-1].pid: _arrived(lock_dir, pid))
    assert [p.wait(120) for p in procs] == [0] * 8
    events = _events(log)
    assert _max_concurrency(events) <= 2
    records = [json.loads(line) for line in (lock_dir / "runs.jsonl").read_text().splitlines()]
    admitted = [r["pid"] for r in sorted(records, key=lambda r: r["admitted_at"])]
    assert admitted == [p.pid for p in procs]


def test_sigkilled_holder_frees_its_slot_and_leaves_no_stale_state(virtual_ws: Path, fake_cargo_env: dict[str, str],
                                                                   tmp_path: Path, reap: list[int]) -> None:
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    holder = subprocess.Popen(agent_command("build"), cwd=virtual_ws, stderr=subprocess.DEVNULL,
                              env={**env, "FAKE_SLEEP": "300", "FAKE_TAG": "holder",
                                   "FAKE_PIDFILE": str(tmp_path / "holder-cargo.pid")})
    wait_for(lambda: (tmp_path / "holder-cargo.pid").exists())
    cargo_pid = int((tmp_path / "holder-cargo.pid").read_text())
    reap.append(cargo_pid)
    waiter = subprocess.Popen(agent_command("build"), cwd=virtual_ws, env={**env, "FAKE_TAG": "waiter"},
                              stderr=subprocess.DEVNULL)
    wait_for(lambda: _queued(Path(env["CARGO_AGENT_LOCK_DIR"])) == 1)
    os.kill(cargo_pid, signal.SIGKILL)  # the whole build dies: wrapper and cargo
    holder.kill()
    holder.wait()
    assert waiter.wait(30) == 0
    later = subprocess.run(agent_command("build"), cwd=virtual_ws, env={**env, "FAKE_TAG": "later"}, timeout=30)
    assert later.returncode == 0


def test_wrapper_sigkilled_mid_build_takes_its_build_down_and_frees_the_slot(
        virtual_ws: Path, fake_cargo_env: dict[str, str], tmp_path: Path, reap: list[int]) -> None:
    """The supervisor outlives the wrapper only to stop the build: a worker that keeps the
    inherited slot fd is gone too, and the slot is free."""
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    worker = tmp_path / "worker.pid"
    holder = subprocess.Popen(agent_command("build"), cwd=virtual_ws, stderr=subprocess.DEVNULL, env={
        **env, "FAKE_SLEEP": "300", "FAKE_SPAWN": f"sh -c 'echo $$ > {worker}; exec sleep 300'"})
    wait_for(lambda: worker.exists() and worker.read_text().strip() != "")
    worker_pid = int(worker.read_text())
    reap.append(worker_pid)
    settings = slots.resolve(config.load(env), env)
    assert len(slots.holders(settings)) == 1
    holder.kill()
    holder.wait()
    wait_for(lambda: not slots.holders(settings) and not alive(worker_pid), 10)


def test_two_checkouts_share_the_same_slots(virtual_ws: Path, single_ws: Path, fake_cargo_env: dict[str, str]) -> None:
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1", "FAKE_SLEEP": "0.5"}
    procs = [subprocess.Popen(agent_command("build"), cwd=cwd, env={**env, "FAKE_TAG": str(i)})
             for i, cwd in enumerate([virtual_ws, single_ws, virtual_ws, single_ws])]
    assert [p.wait(60) for p in procs] == [0] * 4
    assert _max_concurrency(_events(Path(env["FAKE_LOG"]))) == 1


def test_nested_call_inside_a_held_slot_completes(virtual_ws: Path, fake_cargo_env: dict[str, str]) -> None:
    nested = " ".join(agent_command("build", "-p", "beta"))
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1", "FAKE_NESTED": nested, "FAKE_TAG": "outer"}
    result = subprocess.run(agent_command("build", "-p", "alpha"), cwd=virtual_ws, env=env, timeout=60,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "nested outer 0" in Path(env["FAKE_LOG"]).read_text()


def test_forged_slot_variable_is_not_honoured(virtual_ws: Path, fake_cargo_env: dict[str, str]) -> None:
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1", "CARGO_AGENT_WAIT_TIMEOUT": "1s"}
    holder = subprocess.Popen(agent_command("build"), cwd=virtual_ws, env={**env, "FAKE_SLEEP": "20"})
    try:
        lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])
        wait_for(lambda: bool(slots.holders(slots.resolve(config.load(env), env))))
        forged = f"{lock_dir / 'slot-0.lock'}:0:{holder.pid}"
        result = subprocess.run(agent_command("build"), cwd=virtual_ws, env={**env, "CARGO_AGENT_SLOT": forged},
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 75
    finally:
        holder.kill()
        holder.wait()


def test_wait_timeout_is_75_and_leaves_no_ticket(virtual_ws: Path, fake_cargo_env: dict[str, str]) -> None:
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    holder = subprocess.Popen(agent_command("build"), cwd=virtual_ws, env={**env, "FAKE_SLEEP": "30"})
    try:
        lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])
        wait_for(lambda: "start" in (Path(env["FAKE_LOG"]).read_text() if Path(env["FAKE_LOG"]).exists() else ""))
        result = subprocess.run(agent_command("build"), cwd=virtual_ws, capture_output=True, text=True, timeout=30,
                                env={**env, "CARGO_AGENT_WAIT_TIMEOUT": "1s"})
        assert result.returncode == 75
        assert "error: gave up waiting for a build slot after 1s (1/1 slots busy" in result.stderr
        assert "help: retry later" in result.stderr
        assert _queued(lock_dir) == 0
    finally:
        holder.kill()
        holder.wait()


def test_ctrl_c_while_waiting_is_130_and_leaves_no_ticket(virtual_ws: Path, fake_cargo_env: dict[str, str]) -> None:
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])
    holder = subprocess.Popen(agent_command("build"), cwd=virtual_ws, env={**env, "FAKE_SLEEP": "30"})
    try:
        wait_for(lambda: Path(env["FAKE_LOG"]).exists())
        waiter = subprocess.Popen(agent_command("build"), cwd=virtual_ws, env=env, stderr=subprocess.DEVNULL)
        wait_for(lambda: _queued(lock_dir) == 1)
        waiter.send_signal(signal.SIGINT)
        assert waiter.wait(10) == 130
        assert _queued(lock_dir) == 0
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("problem", ["world-writable", "symlink", "file", "other-owner"])
def test_unsafe_lock_dir_is_exit_2(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str],
                                   tmp_path: Path, problem: str) -> None:
    lock_dir = tmp_path / "bad-locks"
    if problem == "world-writable":
        lock_dir.mkdir()
        lock_dir.chmod(0o777)
    elif problem == "symlink":
        (tmp_path / "real").mkdir(mode=0o700)
        lock_dir.symlink_to(tmp_path / "real")
    elif problem == "file":
        lock_dir.write_text("")
    else:
        lock_dir.mkdir(mode=0o700)
        os.chown(lock_dir, 12345, 12345)
    result = run_agent("build", cwd=virtual_ws, env=fake_cargo_env, extra_env={"CARGO_AGENT_LOCK_DIR": str(lock_dir)})
    assert result.returncode == 2
    assert len(result.stderr.splitlines()[0]) > 10 and str(lock_dir) in result.stderr.splitlines()[0]
    assert not Path(fake_cargo_env["FAKE_LOG"]).exists()


def test_memory_pressure_holds_a_run_back_until_it_drops(virtual_ws: Path, fake_cargo_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    reading = tmp_path / "memory"
    _set_reading(reading, "90")
    env = {**fake_cargo_env, "CARGO_AGENT_MEMORY_SOURCE": str(reading)}
    err = tmp_path / "stderr"
    with err.open("w") as handle:
        proc = subprocess.Popen(agent_command("build"), cwd=virtual_ws, env=env, stderr=handle)
    wait_for(lambda: "memory at 90% is above mem_high 85%" in err.read_text())
    assert not Path(env["FAKE_LOG"]).exists()
    _set_reading(reading, "40")
    assert proc.wait(30) == 0
    assert Path(env["FAKE_LOG"]).exists()


def test_slot_count_lives_in_the_host_file_and_can_only_be_lowered(tmp_path: Path) -> None:
    host = tmp_path / "host.toml"
    host.write_text(f'slots = 3\nlock_dir = "{tmp_path / "shared"}"\n')
    env = {"CARGO_AGENT_CONFIG": str(host), "XDG_CONFIG_HOME": str(tmp_path)}
    assert slots.resolve(config.load(env), env).count == 3
    assert slots.resolve(config.load({**env, "CARGO_AGENT_SLOTS": "9"}), env).count == 3
    assert slots.resolve(config.load({**env, "CARGO_AGENT_SLOTS": "1"}), env).count == 1
    moved = slots.resolve(config.load({**env, "CARGO_AGENT_LOCK_DIR": str(tmp_path / "elsewhere")}), env)
    assert moved.lock_dir == str(tmp_path / "shared")
    host.write_text(f'slots = 5\nlock_dir = "{tmp_path / "shared"}"\n')
    assert slots.resolve(config.load(env), env).ceiling == 5  # the host file's count, on the next run


def test_status_shows_holders_and_queue(virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str]) -> None:
    import json

    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    holder = subprocess.Popen(agent_command("build", "-p", "alpha"), cwd=virtual_ws, env={**env, "FAKE_SLEEP": "30"})
    waiter = None
    try:
        wait_for(lambda: Path(env["FAKE_LOG"]).exists())
        waiter = subprocess.Popen(agent_command("build", "-p", "beta"), cwd=virtual_ws, env=env,
                                  stderr=subprocess.DEVNULL)
        wait_for(lambda: _queued(Path(env["CARGO_AGENT_LOCK_DIR"])) == 1)
        status = json.loads(run_agent("--status", "--json", cwd=virtual_ws, env=env).stdout)
        assert status["usable"] == 1
        assert [h["command"] for h in status["holders"]] == [["build", "-p", "alpha"]]
        assert [q["command"] for q in status["queue"]] == [["build", "-p", "beta"]]
        assert "used_percent" in status["memory"]
        assert status["queue"][0]["cwd"] == str(virtual_ws) and status["queue"][0]["usable"] == 1
        text = run_agent("--status", cwd=virtual_ws, env=env).stdout
        assert "slots: 1 of 2 busy on this host; you may use 1 of them" in text and "queue: 1 waiting" in text
        assert f"`build -p beta` in {virtual_ws}, waiting" in text and "may use 1 of 2 slots" in text
    finally:
        holder.kill()
        holder.wait()
        if waiter:
            waiter.kill()
            waiter.wait()


def _log_text(env: dict[str, str]) -> str:
    log = Path(env["FAKE_LOG"])
    return log.read_text() if log.exists() else ""


def test_memory_kill_guard_stops_only_the_newest_build(virtual_ws: Path, fake_cargo_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    reading = tmp_path / "memory"
    _set_reading(reading, "50")
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "2", "CARGO_AGENT_MEMORY_SOURCE": str(reading),
           "CARGO_AGENT_MEM_KILL": "95", "CARGO_AGENT_KILL_GRACE": "1s"}
    lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])
    older = subprocess.Popen(agent_command("build", "-p", "alpha"), cwd=virtual_ws, stderr=subprocess.PIPE,
                             text=True, env={**env, "FAKE_SLEEP": "6", "FAKE_TAG": "older"})
    wait_for(lambda: _arrived(lock_dir, older.pid) and "start older" in _log_text(env))
    newer = subprocess.Popen(agent_command("build", "-p", "beta"), cwd=virtual_ws, stderr=subprocess.PIPE,
                             text=True, env={**env, "FAKE_SLEEP": "60", "FAKE_TAG": "newer"})
    wait_for(lambda: "start newer" in _log_text(env))
    _set_reading(reading, "97")
    newer_code = newer.wait(30)
    _set_reading(reading, "50")
    newer_err = newer.communicate()[1]
    assert newer_code == 128 + signal.SIGTERM, newer_err
    assert "stopped by cargo-agent: host memory stayed above mem_kill 95%" in newer_err
    assert "`cargo-agent build -p beta`" in newer_err
    assert "help: retry later; your build was not at fault" in newer_err
    assert older.wait(30) == 0
    assert "end older" in _log_text(env)


def test_a_shared_lock_dir_stays_usable_by_the_group_whatever_the_umask(virtual_ws: Path,
                                                                         fake_cargo_env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    import stat

    shared = tmp_path / "shared-locks"
    host = Path(fake_cargo_env["CARGO_AGENT_CONFIG"])
    host.write_text(f'slots = 2\nlock_dir = "{shared}"\n')
    env = {k: v for k, v in fake_cargo_env.items() if k != "CARGO_AGENT_LOCK_DIR"}
    result = subprocess.run(agent_command("build", "-p", "alpha"), cwd=virtual_ws, env=env, capture_output=True,
                            text=True, timeout=60, preexec_fn=lambda: os.umask(0o077))
    assert result.returncode == 0, result.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in shared.iterdir() if not p.name.startswith(".")}
    assert stat.S_IMODE(shared.stat().st_mode) == 0o2770
    assert modes["queue"] == 0o2770
    for name in ("slot-0.lock", "slot-1.lock", "queue.lock", "queue.seq", "runs.lock", "runs.jsonl"):
        assert modes[name] == 0o660, name


def test_a_removed_lock_dir_keeps_the_count_and_the_queue_order(virtual_ws: Path, fake_cargo_env: dict[str, str],
                                                                tmp_path: Path) -> None:
    """One slot: A holds it, B and C wait; the lock dir is deleted (an operator, a tmp cleaner).
    A takes a slot in the new dir, B and C queue again in their order, and D, arriving after,
    queues behind them: never two builds at once, starts in arrival order."""

    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(tag: str) -> None:
        gate = tmp_path / f"go-{tag}"
        hold = f"sh -c 'while [ ! -e {gate} ]; do sleep 0.02; done'"  # runs while the slot is held
        with (tmp_path / f"{tag}.err").open("w") as err:
            procs[tag] = subprocess.Popen(agent_command("build", "-p", "alpha"), cwd=virtual_ws, stderr=err,
                                          env={**env, "FAKE_TAG": tag, "FAKE_NESTED": hold})

    def started() -> list[str]:
        return [tag for kind, tag, _ in sorted(_events(Path(env["FAKE_LOG"])), key=lambda e: e[2])
                if kind == "start"]

    try:
        start("A")
        wait_for(lambda: started() == ["A"])
        for tag in ("B", "C"):
            start(tag)
            wait_for(lambda tag=tag: _arrived(lock_dir, procs[tag].pid))
        _remove_dir(lock_dir)
        # A holds a slot in the new dir, B and C hold tickets there.
        wait_for(lambda: f'"pid": {procs["A"].pid},' in ((lock_dir / "slot-0.json").read_text()
                                                        if (lock_dir / "slot-0.json").exists() else ""))
        wait_for(lambda: all(_arrived(lock_dir, procs[tag].pid) for tag in ("B", "C")))
        start("D")
        wait_for(lambda: _arrived(lock_dir, procs["D"].pid))
        assert _queued(lock_dir) == 3 and started() == ["A"]
        for tag, following in (("A", "B"), ("B", "C"), ("C", "D"), ("D", None)):
            (tmp_path / f"go-{tag}").touch()
            assert procs[tag].wait(60) == 0
            if following:
                wait_for(lambda following=following: following in started())
        assert started() == ["A", "B", "C", "D"]
        assert _max_concurrency(_events(Path(env["FAKE_LOG"]))) == 1
        for tag in ("B", "C"):
            assert "lock dir" in (tmp_path / f"{tag}.err").read_text() and "queueing again in the new one" in (
                tmp_path / f"{tag}.err").read_text()
        assert "warning" not in (tmp_path / "A.err").read_text() + (tmp_path / "D.err").read_text()
        assert _queued(lock_dir) == 0 and not list(lock_dir.glob("slot-*.json"))
    finally:
        for tag in procs:
            (tmp_path / f"go-{tag}").touch()
        for proc in procs.values():
            proc.kill()
            proc.wait()


def _kill_wrapper_and_supervisor(wrapper: subprocess.Popen[bytes]) -> None:
    """SIGKILL the wrapper and its supervisor together (both stopped first, so neither can act on
    the other's death): the processes of the build go on, holding the slot."""
    import psutil

    supervisor = psutil.Process(wrapper.pid).children()[0].pid
    for pid in (supervisor, wrapper.pid):
        os.kill(pid, signal.SIGSTOP)
    for pid in (supervisor, wrapper.pid):
        os.kill(pid, signal.SIGKILL)
    wrapper.wait()


def test_a_build_whose_wrapper_died_still_counts_after_the_lock_dir_is_removed(
        virtual_ws: Path, fake_cargo_env: dict[str, str], tmp_path: Path, reap: list[int]) -> None:
    """The holder's wrapper and its supervisor are SIGKILLed (a process of its build goes on,
    holding the old slot), then the lock dir is deleted. That build cannot take a slot in the new dir, but the waiter,
    which queues again there, still counts it: neither the waiter nor a later arrival starts
    until that build is gone."""

    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])
    log = Path(env["FAKE_LOG"])
    worker, cargo = tmp_path / "worker.pid", tmp_path / "cargo.pid"
    holder = subprocess.Popen(agent_command("build"), cwd=virtual_ws, stderr=subprocess.DEVNULL, env={
        **env, "FAKE_TAG": "holder", "FAKE_SLEEP": "300", "FAKE_PIDFILE": str(cargo),
        "FAKE_SPAWN": f"sh -c 'echo $$ > {worker}; exec sleep 300'"})
    wait_for(lambda: worker.exists() and worker.read_text().strip() != "")
    worker_pid, cargo_pid = int(worker.read_text()), int(cargo.read_text())
    reap.extend([worker_pid, cargo_pid])
    waiter = subprocess.Popen(agent_command("build"), cwd=virtual_ws, stderr=subprocess.DEVNULL,
                              env={**env, "FAKE_TAG": "waiter"})
    later = None
    try:
        wait_for(lambda: _arrived(lock_dir, waiter.pid))
        _kill_wrapper_and_supervisor(holder)  # the one case where a process of the build goes on
        _remove_dir(lock_dir)
        wait_for(lambda: _arrived(lock_dir, waiter.pid))  # queued again in the new dir
        later = subprocess.Popen(agent_command("build"), cwd=virtual_ws, stderr=subprocess.DEVNULL,
                                 env={**env, "FAKE_TAG": "later"})
        wait_for(lambda: _arrived(lock_dir, later.pid))
        time.sleep(1.0)  # several head polls and supervisor ticks: nothing may start meanwhile
        assert [tag for kind, tag, _ in _events(log) if kind == "start"] == ["holder"]
        assert alive(worker_pid) and alive(cargo_pid)
        for pid in (worker_pid, cargo_pid):  # the build's last processes end
            os.kill(pid, signal.SIGKILL)
        assert waiter.wait(60) == 0 and later.wait(60) == 0
        starts = [tag for kind, tag, _ in sorted(_events(log), key=lambda e: e[2]) if kind == "start"]
        assert starts == ["holder", "waiter", "later"]
    finally:
        for proc in (waiter, later):
            if proc is not None:
                proc.kill()
                proc.wait()


def test_a_holder_that_finds_no_slot_in_the_new_lock_dir_says_so_and_leaves_the_new_records_alone(
        virtual_ws: Path, fake_cargo_env: dict[str, str], tmp_path: Path) -> None:
    """A's wrapper is stopped while the lock dir is deleted and C takes the only slot of the new
    one (the documented window). A, continued, cannot take a slot there: one warning, and when A
    ends it must not delete C's holder record, which sits at the path A's record had."""

    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(tag: str) -> None:
        gate = tmp_path / f"go-{tag}"
        with (tmp_path / f"{tag}.err").open("w") as err:
            procs[tag] = subprocess.Popen(agent_command("build"), cwd=virtual_ws, stderr=err, env={
                **env, "FAKE_TAG": tag, "FAKE_NESTED": f"sh -c 'while [ ! -e {gate} ]; do sleep 0.02; done'"})

    try:
        start("A")
        wait_for(lambda: "start A" in _log_text(env))
        os.kill(procs["A"].pid, signal.SIGSTOP)
        _remove_dir(lock_dir)
        start("C")
        wait_for(lambda: "start C" in _log_text(env))
        os.kill(procs["A"].pid, signal.SIGCONT)
        wait_for(lambda: "could not take one in the new dir" in (tmp_path / "A.err").read_text())
        assert (tmp_path / "A.err").read_text().splitlines() == [
            f"warning: cargo-agent: lock dir {lock_dir} was removed or replaced while this build held a slot, "
            "and it could not take one in the new dir: every slot there is taken (1 usable)"]
        (tmp_path / "go-A").touch()
        assert procs["A"].wait(60) == 0
        assert f'"pid": {procs["C"].pid},' in (lock_dir / "slot-0.json").read_text()
        (tmp_path / "go-C").touch()
        assert procs["C"].wait(60) == 0
        assert not (lock_dir / "slot-0.json").exists()
    finally:
        for tag, proc in procs.items():
            (tmp_path / f"go-{tag}").touch()
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()


def test_a_symlink_planted_where_the_lock_dir_was_is_refused_by_waiters_and_holders(
        virtual_ws: Path, fake_cargo_env: dict[str, str], tmp_path: Path) -> None:
    """Red team: the lock dir is replaced by a symlink to a directory of someone else's choosing.
    The waiter stops with exit 2 naming it; the holder says it cannot follow, and runs on."""

    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])
    gate = tmp_path / "go"
    with (tmp_path / "holder.err").open("w") as err:
        holder = subprocess.Popen(agent_command("build"), cwd=virtual_ws, stderr=err, env={
            **env, "FAKE_TAG": "holder", "FAKE_NESTED": f"sh -c 'while [ ! -e {gate} ]; do sleep 0.02; done'"})
    wait_for(lambda: "start holder" in _log_text(env))
    waiter = subprocess.Popen(agent_command("build"), cwd=virtual_ws, stderr=subprocess.PIPE, text=True,
                              env={**env, "FAKE_TAG": "waiter"})
    try:
        wait_for(lambda: _arrived(lock_dir, waiter.pid))
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        while True:  # a waiter may recreate the dir between the two steps: then plant again
            _remove_dir(lock_dir)
            try:
                lock_dir.symlink_to(elsewhere)
                break
            except FileExistsError:
                continue
        assert waiter.wait(60) == 2
        # Refused where it meets the link: preparing the dir ("lock dir X is a symlink") or making
        # its queue in it ("cannot use X: it is a symlink"), as the race with the plant falls.
        stderr = waiter.communicate()[1]
        assert any(line.startswith("error: ") and str(lock_dir) in line and "is a symlink; refusing to follow it"
                   in line for line in stderr.splitlines()), stderr
        wait_for(lambda: "is a symlink" in (tmp_path / "holder.err").read_text())
        gate.touch()
        assert holder.wait(60) == 0
        assert "start waiter" not in _log_text(env) and not (elsewhere / "runs.jsonl").exists()
    finally:
        gate.touch()
        for proc in (holder, waiter):
            proc.kill()
            proc.wait()


# ---- the queue never stalls, and waiting is free ---------------------------------------------

def _start_holder(virtual_ws: Path, env: dict[str, str], seconds: str) -> subprocess.Popen[bytes]:
    holder = subprocess.Popen(agent_command("build", "-p", "alpha"), cwd=virtual_ws, stderr=subprocess.DEVNULL,
                              env={**env, "FAKE_SLEEP": seconds, "FAKE_TAG": "holder"})
    wait_for(lambda: "start holder" in _log_text(env))
    return holder


def _start_waiter(virtual_ws: Path, env: dict[str, str], tag: str, **popen: object) -> subprocess.Popen[bytes]:
    waiter = subprocess.Popen(agent_command("build", "-p", "beta"), cwd=virtual_ws,
                              env={**env, "FAKE_TAG": tag, "FAKE_SLEEP": "0.2"}, **popen)  # type: ignore[call-overload]
    wait_for(lambda: _arrived(Path(env["CARGO_AGENT_LOCK_DIR"]), waiter.pid))
    return waiter


def test_a_stopped_head_waiter_is_skipped_and_waits_again_when_continued(
        virtual_ws: Path, fake_cargo_env: dict[str, str]) -> None:
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    holder = _start_holder(virtual_ws, env, "1")
    head = _start_waiter(virtual_ws, env, "head", stderr=subprocess.DEVNULL)
    behind = _start_waiter(virtual_ws, env, "behind", stderr=subprocess.DEVNULL)
    try:
        head.send_signal(signal.SIGSTOP)  # Ctrl-Z, or a frozen container
        assert holder.wait(30) == 0
        assert behind.wait(30) == 0  # the slot went past the stopped head
        assert "start head" not in _log_text(env)
        status = json.loads(subprocess.run(agent_command("--status", "--json"), cwd=virtual_ws, env=env,
                                           capture_output=True, text=True).stdout)
        assert [q["stopped"] for q in status["queue"]] == [True]
        head.send_signal(signal.SIGCONT)
        assert head.wait(30) == 0  # it waited again, and ran
    finally:
        for proc in (holder, head, behind):
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
    starts = [tag for kind, tag, _ in sorted(_events(Path(env["FAKE_LOG"])), key=lambda e: e[2]) if kind == "start"]
    assert starts == ["holder", "behind", "head"]


def test_a_dead_head_waiter_is_skipped(virtual_ws: Path, fake_cargo_env: dict[str, str]) -> None:
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    holder = _start_holder(virtual_ws, env, "1")
    head = _start_waiter(virtual_ws, env, "head", stderr=subprocess.DEVNULL)
    behind = _start_waiter(virtual_ws, env, "behind", stderr=subprocess.DEVNULL)
    head.kill()
    head.wait()
    assert holder.wait(30) == 0 and behind.wait(30) == 0
    assert _queued(Path(env["CARGO_AGENT_LOCK_DIR"])) == 0
    text = subprocess.run(agent_command("--status"), cwd=virtual_ws, env=env, capture_output=True, text=True).stdout
    assert f"`build -p beta` in {virtual_ws}" in text.split("recent runs:", 1)[1]


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def test_a_waiters_thread_count_stays_flat(virtual_ws: Path, fake_cargo_env: dict[str, str]) -> None:
    """Over 10 s of waiting, behind the head and at the head, no waiter grows threads."""
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    holder = _start_holder(virtual_ws, env, "60")
    head = _start_waiter(virtual_ws, env, "head", stderr=subprocess.DEVNULL)
    behind = _start_waiter(virtual_ws, env, "behind", stderr=subprocess.DEVNULL)
    try:
        samples = []
        for _ in range(11):
            samples.append((_threads(head.pid), _threads(behind.pid)))
            time.sleep(1)
        assert samples == [(1, 1)] * 11
    finally:
        for proc in (holder, head, behind):
            proc.kill()
            proc.wait()


def test_the_waiting_line_fits_an_80_column_terminal_and_stays_one_line(
        virtual_ws: Path, fake_cargo_env: dict[str, str]) -> None:
    import fcntl
    import pty
    import struct
    import termios

    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    holder = _start_holder(virtual_ws, env, "5")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        waiter = _start_waiter(virtual_ws, env, "waiter", stderr=slave)
        os.close(slave)
        output = b""
        while waiter.poll() is None or select_ready(master):
            try:
                output += os.read(master, 65536)
            except OSError:
                break
        assert waiter.wait(30) == 0
    finally:
        holder.kill()
        holder.wait()
        os.close(master)
    text = output.decode()
    lines = [part for part in text.split("\r\x1b[K") if part.startswith("cargo-agent: waiting")]
    assert len(lines) >= 2, text  # updated in place, about every second
    assert all(len(line) <= 79 and "\n" not in line for line in lines), lines


def select_ready(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0.2)[0])


def test_a_holder_without_a_record_still_counts_for_memory_admission(virtual_ws: Path, fake_cargo_env: dict[str, str],
                                                                    tmp_path: Path) -> None:
    """A's lock dir is replaced by one on a full filesystem (a real tmpfs): A takes a slot there
    but cannot write its holder record (one warning). Space comes back; B, predicted not to fit
    next to any running build, must wait for A: a held slot is a running build, record or not
    (admission skips the read of /proc/locks only when no other slot is held)."""

    memory = tmp_path / "memory"
    memory.write_text("80")  # below mem_high 85%: only a prediction can hold a build back
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "2", "CARGO_AGENT_MEMORY_SOURCE": str(memory),
           "CARGO_AGENT_PRESSURE_HIGH": "off"}
    plan = subprocess.run(agent_command("--dry-run", "--json", "build"), cwd=virtual_ws, env=env, capture_output=True,
                          text=True, timeout=60)
    limit = json.loads(plan.stdout)["memory"]["limit"]["bytes"]
    env["CARGO_AGENT_PER_BUILD_MEMORY"] = f"{limit // 10 >> 20}M"  # 80% + 10% > 85%, and 2 slots
    lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])
    gate = tmp_path / "go-A"
    with (tmp_path / "A.err").open("w") as err:
        holder = subprocess.Popen(agent_command("build"), cwd=virtual_ws, stderr=err, env={
            **env, "FAKE_TAG": "A", "FAKE_NESTED": f"sh -c 'while [ ! -e {gate} ]; do sleep 0.02; done'"})
    mounted = False
    try:
        wait_for(lambda: "start A" in _log_text(env))
        _remove_dir(lock_dir)
        lock_dir.mkdir(mode=0o700)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(lock_dir)], check=True)
        mounted = True
        subprocess.run(f"head -c 1M /dev/zero > {lock_dir}/filler", shell=True, check=False)
        wait_for(lambda: "could not take one in the new dir" in (tmp_path / "A.err").read_text())
        assert "no space left on the device" in (tmp_path / "A.err").read_text()
        (lock_dir / "filler").unlink()  # space is back; A runs on
        waiter = subprocess.run(agent_command("build"), cwd=virtual_ws, capture_output=True, text=True, timeout=60,
                                env={**env, "FAKE_TAG": "B", "CARGO_AGENT_WAIT_TIMEOUT": "2s"})
        assert "start B" not in _log_text(env)
        assert waiter.returncode == 75 and "does not fit" in waiter.stderr, waiter.stderr
        gate.touch()
        assert holder.wait(60) == 0
    finally:
        gate.touch()
        holder.kill()
        holder.wait()
        if mounted:
            subprocess.run(["umount", "-l", str(lock_dir)], check=False)
