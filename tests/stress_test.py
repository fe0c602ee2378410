"""32 runs on 2 slots with random SIGKILLs of wrappers and of cargo children (about 30 s)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import FAKE_CARGO, agent_command, alive

RUNS = 32


def _live_fake_cargos(log: str) -> list[int]:
    """Fake cargos of this test (matched by their FAKE_LOG), not zombies."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if len(cmdline) > 1 and cmdline[1] == str(FAKE_CARGO) and process.info["status"] != psutil.STATUS_ZOMBIE:
            with contextlib.suppress(psutil.Error):
                if process.environ().get("FAKE_LOG") == log:
                    found.append(process.pid)
    return found


@pytest.mark.timeout(180)  # waits on slots and killed processes: a hang fails here, not at 300 s
def test_random_sigkills_never_overrun_slots_or_leave_processes(virtual_ws: Path, fake_cargo_env: dict[str, str],
                                                                tmp_path: Path, reap: list[int]) -> None:
    rng = random.Random(20261125)
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "2", "CARGO_AGENT_KILL_GRACE": "1s"}
    plan = []
    for index in range(RUNS):
        fate = "kill-wrapper" if index % 4 == 1 else "kill-cargo" if index % 5 == 2 else "normal"
        plan.append((index, fate, rng.choice(["0", "1", "101"]), f"{rng.uniform(0.1, 0.6):.2f}"))
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(_live_fake_cargos(env["FAKE_LOG"])))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    procs: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for index, _, code, sleep in plan:
            procs[index] = subprocess.Popen(
                agent_command("build", "-p", "alpha"), cwd=virtual_ws, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env={**env, "FAKE_TAG": str(index), "FAKE_EXIT": code, "FAKE_SLEEP": sleep,
                                                "FAKE_PIDFILE": str(tmp_path / f"cargo-{index}.pid")})
            time.sleep(0.02)
        pending = {index: fate for index, fate, _, _ in plan if fate != "normal"}
        killed: set[int] = set()
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            for index, fate in list(pending.items()):
                pidfile = tmp_path / f"cargo-{index}.pid"
                if procs[index].poll() is not None:
                    pending.pop(index)  # finished before its kill came
                elif pidfile.exists() and pidfile.read_text():
                    cargo_pid = int(pidfile.read_text())
                    reap.append(cargo_pid)
                    with contextlib.suppress(ProcessLookupError):  # it may have just finished
                        os.kill(procs[index].pid if fate == "kill-wrapper" else cargo_pid, signal.SIGKILL)
                        killed.add(index)
                    pending.pop(index)
            time.sleep(0.01)
        codes = {index: proc.wait(120) for index, proc in procs.items()}
    finally:
        stop.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    sampler.join()
    for index, fate, code, _ in plan:
        if fate == "normal" or index not in killed:
            assert codes[index] == int(code), f"run {index} ({fate})"
        elif fate == "kill-cargo":
            assert codes[index] in (128 + signal.SIGKILL, int(code)), f"run {index}"
    assert peak[0] <= 2
    assert len(killed) >= 8  # the kills really happened
    time.sleep(0.5)
    assert not _live_fake_cargos(env["FAKE_LOG"])
    assert all(not alive(int(p.read_text())) for p in tmp_path.glob("cargo-*.pid") if p.read_text())
    later = subprocess.run(agent_command("build", "-p", "alpha"), cwd=virtual_ws, env={**env, "FAKE_TAG": "later"},
                           timeout=60, capture_output=True)
    assert later.returncode == 0
