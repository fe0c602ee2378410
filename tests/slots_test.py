"""Build slots with real processes and real lock files."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import RunAgent, agent_command, alive, wait_for

from cargo_agent import config, slots

# Every test here waits for a lock or a process: a hang fails in two minutes, not 300 s.
pytestmark = pytest.mark.timeout(120)


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
    starts = [tag for kind, tag, _ in sorted(events, key=lambda e: e[2]) if kind == "start"]
    assert starts == [str(i) for i in range(8)]


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


def test_wrapper_sigkilled_mid_build_keeps_the_slot_until_the_build_is_gone(
        virtual_ws: Path, fake_cargo_env: dict[str, str], tmp_path: Path, reap: list[int]) -> None:
    """Documented behaviour: the build inherits the slot lock, so the slot count never
    under-counts a build whose wrapper died."""
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    worker = tmp_path / "worker.pid"
    holder = subprocess.Popen(agent_command("build"), cwd=virtual_ws, stderr=subprocess.DEVNULL, env={
        **env, "FAKE_SLEEP": "300", "FAKE_SPAWN": f"sh -c 'echo $$ > {worker}; exec sleep 300'"})
    wait_for(lambda: worker.exists() and worker.read_text().strip() != "")
    worker_pid = int(worker.read_text())
    reap.append(worker_pid)
    holder.kill()
    holder.wait()
    settings = slots.resolve(config.load(env), env)
    wait_for(lambda: len(slots.holders(settings)) == 1)
    time.sleep(0.5)
    assert len(slots.holders(settings)) == 1 and alive(worker_pid)
    os.kill(worker_pid, signal.SIGKILL)
    wait_for(lambda: not slots.holders(settings), 10)


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
        assert "error: gave up waiting for a build slot after 0m1s (1/1 slots busy" in result.stderr
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
    reading.write_text("90")
    env = {**fake_cargo_env, "CARGO_AGENT_MEMORY_SOURCE": str(reading)}
    err = tmp_path / "stderr"
    with err.open("w") as handle:
        proc = subprocess.Popen(agent_command("build"), cwd=virtual_ws, env=env, stderr=handle)
    wait_for(lambda: "memory at 90% is above mem_high 85%" in err.read_text())
    assert not Path(env["FAKE_LOG"]).exists()
    reading.write_text("40")
    assert proc.wait(30) == 0
    assert Path(env["FAKE_LOG"]).exists()


def test_slot_count_lives_with_the_lock_dir_and_can_only_be_lowered(tmp_path: Path) -> None:
    host = tmp_path / "host.toml"
    host.write_text(f'slots = 3\nlock_dir = "{tmp_path / "shared"}"\n')
    env = {"CARGO_AGENT_CONFIG": str(host), "XDG_CONFIG_HOME": str(tmp_path)}
    assert slots.resolve(config.load(env), env).count == 3
    assert slots.resolve(config.load({**env, "CARGO_AGENT_SLOTS": "9"}), env).count == 3
    assert slots.resolve(config.load({**env, "CARGO_AGENT_SLOTS": "1"}), env).count == 1
    moved = slots.resolve(config.load({**env, "CARGO_AGENT_LOCK_DIR": str(tmp_path / "elsewhere")}), env)
    assert moved.lock_dir == tmp_path / "shared"
    host.write_text(f'slots = 5\nlock_dir = "{tmp_path / "shared"}"\n')
    assert slots.resolve(config.load(env), env).ceiling == 3  # the lock dir's own count wins


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
        text = run_agent("--status", cwd=virtual_ws, env=env).stdout
        assert "slots: 1/2 busy" in text and "queue: 1 waiting" in text
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
    reading.write_text("50")
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "2", "CARGO_AGENT_MEMORY_SOURCE": str(reading),
           "CARGO_AGENT_MEM_KILL": "95", "CARGO_AGENT_KILL_GRACE": "1s"}
    lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])
    older = subprocess.Popen(agent_command("build", "-p", "alpha"), cwd=virtual_ws, stderr=subprocess.PIPE,
                             text=True, env={**env, "FAKE_SLEEP": "6", "FAKE_TAG": "older"})
    wait_for(lambda: _arrived(lock_dir, older.pid) and "start older" in _log_text(env))
    newer = subprocess.Popen(agent_command("build", "-p", "beta"), cwd=virtual_ws, stderr=subprocess.PIPE,
                             text=True, env={**env, "FAKE_SLEEP": "60", "FAKE_TAG": "newer"})
    wait_for(lambda: "start newer" in _log_text(env))
    reading.write_text("97")
    newer_code = newer.wait(30)
    reading.write_text("50")
    newer_err = newer.communicate()[1]
    assert newer_code == 128 + signal.SIGTERM, newer_err
    assert "stopped by cargo-agent: host memory stayed above mem_kill 95%" in newer_err
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
