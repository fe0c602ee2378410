"""Files in a lock dir are hostile input: the one helper that touches them, and what a build,
`--status` and `--doctor` do when a FIFO, a directory, an unreadable file, a full disk, poisoned
JSON or escape sequences are found there."""

from __future__ import annotations

import ast
import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import users
from conftest import REPO, RunAgent, agent_command, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from cargo_agent import lockdir
from cargo_agent.errors import UsageError

# ---- the helper itself ---------------------------------------------------------------------


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A private lock dir and a file outside it that must never change."""
    lock_dir = tmp_path / "locks"
    lockdir.prepare(lock_dir, shared=False)
    (tmp_path / "outside").write_text("precious\n")
    (tmp_path / "outside").chmod(0o600)
    return lock_dir


def _unchanged(path: Path) -> tuple[str, int, int]:
    info = path.stat()
    return path.read_text(), stat.S_IMODE(info.st_mode), info.st_uid


def test_no_open_follows_a_symlink_and_nothing_outside_changes(box: Path) -> None:
    outside = box.parent / "outside"
    before = _unchanged(outside)
    (box / "slot-0.lock").symlink_to(outside)
    (box / "slot-0.json").symlink_to(outside)
    (box / "runs.jsonl").symlink_to(outside)
    with pytest.raises(UsageError, match=r"slot-0.lock: it is a symlink; refusing to follow it"):
        lockdir.open_lock(box / "slot-0.lock", shared=False)
    with pytest.raises(UsageError, match="symlink"):
        lockdir.read_text(box / "slot-0.json")
    with pytest.raises(UsageError, match="symlink"):
        lockdir.append(box / "runs.jsonl", b"x\n", shared=True)
    lockdir.write_atomic(box / "slot-0.json", b"{}", shared=True)  # replaces the link itself
    assert not (box / "slot-0.json").is_symlink() and (box / "slot-0.json").read_text() == "{}"
    assert _unchanged(outside) == before


def test_a_fifo_a_directory_and_a_hard_link_are_refused_without_blocking(box: Path) -> None:
    os.mkfifo(box / "queue.lock")
    (box / "queue.seq").mkdir()
    (box.parent / "mine").write_text("1\n")
    os.link(box.parent / "mine", box / "runs.lock")
    with pytest.raises(UsageError, match="it is a FIFO; refusing it"):
        lockdir.open_lock(box / "queue.lock", shared=False)
    with pytest.raises(UsageError, match="it is a FIFO; refusing it"):
        lockdir.read_text(box / "queue.lock")
    with pytest.raises(UsageError, match=r"cannot open .*queue\.lock"):  # a writer would block on open
        lockdir.append(box / "queue.lock", b"x", shared=False)
    with pytest.raises(UsageError, match="it is a directory"):
        lockdir.read_text(box / "queue.seq")
    with pytest.raises(UsageError, match="it is a file with 2 hard links"):
        lockdir.open_lock(box / "runs.lock", shared=False)


def test_a_subdir_swapped_for_a_symlink_leads_nowhere(box: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "000000000001-1.ticket").write_text("keep\n")
    (box / "queue").symlink_to(elsewhere)
    with pytest.raises(UsageError, match="queue: it is a symlink"):
        lockdir.make_dir(box / "queue", shared=False)
    with pytest.raises(UsageError, match="symlink"):
        lockdir.open_file(box / "queue" / "000000000002-1.ticket", os.O_RDWR, 0o600)
    with pytest.raises(UsageError, match="symlink"):
        lockdir.write_atomic(box / "queue" / "x", b"x", shared=False)
    lockdir.remove(box / "queue" / "000000000001-1.ticket")
    assert lockdir.listdir(box / "queue") == []
    assert sorted(os.listdir(elsewhere)) == ["000000000001-1.ticket"]


def test_an_exclusive_open_never_takes_over_an_existing_file(box: Path) -> None:
    (box / "t.ticket").write_text("planted")
    with pytest.raises(UsageError, match="file exists"):
        lockdir.open_file(box / "t.ticket", os.O_RDWR, 0o600, exclusive=True)
    assert (box / "t.ticket").read_text() == "planted"


def test_files_are_created_with_their_mode_whatever_the_umask(box: Path) -> None:
    old = os.umask(0o077)
    try:
        os.close(lockdir.open_lock(box / "a.lock", shared=True))
        lockdir.write_atomic(box / "b.json", b"{}", shared=True)
        lockdir.make_dir(box / "queue", shared=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((box / "a.lock").stat().st_mode) == 0o660
    assert stat.S_IMODE((box / "b.json").stat().st_mode) == 0o660
    assert stat.S_IMODE((box / "queue").stat().st_mode) == 0o2770


def test_printable_escapes_every_control_character() -> None:
    text = "build \x1b]0;owned\x07\x1b[2J\r\n\x9b31m\u202e"
    shown = lockdir.printable(text)
    assert shown.isprintable() and "\x1b" not in shown and "\\x1b" in shown
    assert lockdir.printable("cargo build -p alpha") == "cargo build -p alpha"


_FORBIDDEN_OS = {"open", "write", "replace", "rename", "renames", "unlink", "remove", "rmdir", "mkdir", "makedirs",
                 "chmod", "chown", "lchown", "link", "symlink", "mkfifo", "truncate", "fdopen"}
_FORBIDDEN_METHODS = {"write_text", "write_bytes", "mkdir", "chmod", "touch", "unlink", "rename", "symlink_to",
                      "hardlink_to", "rmdir", "lchmod"}


def test_every_file_op_on_a_lock_dir_goes_through_lockdir() -> None:
    """The audit: a module that works with a lock dir (it imports lockdir, or handles a `lock_dir`)
    creates, opens, writes, renames, removes and changes modes only through lockdir. This covers
    modules added later (CPU tokens, link slots) as soon as they touch a lock dir."""
    offenders = []
    for path in sorted((REPO / "cargo_agent").rglob("*.py")):
        if path.name == "lockdir.py":
            continue
        tree = ast.parse(path.read_text())
        imports = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   for alias in node.names}
        handles = any((isinstance(node, ast.Attribute) and node.attr == "lock_dir")
                      or (isinstance(node, ast.Name) and node.id == "lock_dir") for node in ast.walk(tree))
        if "lockdir" not in imports and not handles:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = None
            if isinstance(func, ast.Name) and func.id == "open":
                name = "open"
            elif isinstance(func, ast.Attribute):
                owner = func.value.id if isinstance(func.value, ast.Name) else None
                if owner == "os" and func.attr in _FORBIDDEN_OS:
                    name = f"os.{func.attr}"
                elif owner != "lockdir" and func.attr in _FORBIDDEN_METHODS:
                    name = f".{func.attr}"
            if name:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert not offenders, "file ops on a lock dir outside lockdir: " + "; ".join(offenders)


# ---- hostile files, end to end ------------------------------------------------------------

NAMES = ["slot-0.lock", "slot-0.json", "queue.lock", "queue.seq", "queue", "runs.lock", "runs.jsonl",
         "queue/000000000000-1.ticket"]


def _one_error_or_success(result: subprocess.CompletedProcess[str], codes: tuple[int, ...] = (2,)) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:
        return
    assert result.returncode in codes, result.stderr
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    assert all(line.startswith(("help: ", "note: ")) for line in lines[1:]), result.stderr


def _plant(lock_dir: Path, name: str, kind: str) -> None:
    path = lock_dir / name
    path.parent.mkdir(mode=0o700, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    else:
        path.mkdir(mode=0o700)
        (path / "inside").write_text("x")


# Every name gets a FIFO, and a directory where a file belongs (`queue` is the one directory).
HOSTILE = [(name, kind) for name in NAMES for kind in ("fifo", "directory") if (name, kind) != ("queue", "directory")]


@pytest.mark.parametrize("name,kind", HOSTILE)
def test_a_fifo_or_directory_in_the_lock_dir_never_hangs_a_build_or_status(
        virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str], name: str, kind: str) -> None:
    lock_dir = Path(fake_cargo_env["CARGO_AGENT_LOCK_DIR"])
    lockdir.prepare(lock_dir, shared=False)
    _plant(lock_dir, name, kind)
    env = {**fake_cargo_env, "CARGO_AGENT_WAIT_TIMEOUT": "20s"}
    result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=env, timeout=60)  # a hang fails here
    _one_error_or_success(result, (2, 75))
    if name in ("slot-0.lock", "queue.lock", "queue.seq", "queue"):  # these stop a build, with one line
        assert result.returncode == 2 and lockdir.printable(str(lock_dir / name)) in result.stderr
    status = run_agent("--status", cwd=virtual_ws, env=env, timeout=60)
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    doctor = run_agent("--doctor", cwd=virtual_ws, env=env, timeout=60)
    assert "Traceback" not in doctor.stderr + doctor.stdout
    if os.path.lexists(lock_dir / name):  # unless the build replaced it (a record is written by rename)
        assert doctor.returncode == 1 and f"  planted: {name} is a" in doctor.stdout, doctor.stdout
        assert "lock dir: error: " in doctor.stdout


accounts = users.accounts_fixture("l")


@pytest.fixture(scope="module")
def agent(accounts: users.Accounts) -> users.Account:
    return accounts.user("agent")


@pytest.fixture
def user_place(agent: users.Account) -> Iterator[Path]:
    place = users.open_dir("cargo-agent-lockdir-")
    ws = place / "ws"
    ws.mkdir()
    (ws / "Cargo.toml").write_text('[package]\nname = "solo"\nversion = "0.1.0"\n')
    os.chown(place, agent.uid, agent.gid)
    try:
        yield place
    finally:
        shutil.rmtree(place)


def _user_env(fake_cargo_env: dict[str, str], place: Path) -> dict[str, str]:
    env = {k: v for k, v in fake_cargo_env.items() if not k.startswith("XDG_")}
    env.update(CARGO_AGENT_CONFIG="/dev/null", CARGO_AGENT_LOCK_DIR=str(place / "locks"),
               FAKE_LOG=str(place / "fake.log"), CARGO_AGENT_WAIT_TIMEOUT="20s")
    return env


@pytest.mark.parametrize("name", ["slot-0.json", "queue.seq", "runs.jsonl", "slot-0.lock", "queue.lock"])
def test_an_unreadable_file_is_one_error_line_for_a_real_user(agent: users.Account, user_place: Path,
                                                               fake_cargo_env: dict[str, str], name: str) -> None:
    env = _user_env(fake_cargo_env, user_place)
    first = users.run_as(agent, agent_command("build"), cwd=user_place / "ws", env=env)
    assert first.returncode == 0, first.stderr
    target = user_place / "locks" / name
    if not target.exists():  # a holder record is gone once its build is
        target.write_text("{}")
        os.chown(target, agent.uid, agent.gid)
    target.chmod(0)  # the agent's own file, which it can no longer read (root still could)
    result = users.run_as(agent, agent_command("build"), cwd=user_place / "ws", env=env)
    _one_error_or_success(result)
    if name in ("queue.seq", "slot-0.lock", "queue.lock"):
        assert result.returncode == 2 and f"{target}: permission denied" in result.stderr, result.stderr
    status = users.run_as(agent, agent_command("--status"), cwd=user_place / "ws", env=env)
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr


def _can_mount_tmpfs() -> str | None:
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True, text=True)
    return None if probe.returncode == 0 else (probe.stderr.strip() or "mount failed")


def test_a_full_filesystem_is_one_error_line_for_a_real_user(agent: users.Account, user_place: Path,
                                                             fake_cargo_env: dict[str, str]) -> None:
    """A 64 KiB tmpfs, filled up, as the lock dir: mounted in a private mount namespace, so it is
    gone (unmounted) with the command, whatever happens to the test."""
    reason = _can_mount_tmpfs()
    if reason:
        pytest.skip(f"cannot mount a tmpfs here: {reason}")
    env = _user_env(fake_cargo_env, user_place)
    locks = user_place / "locks"
    locks.mkdir(mode=0o700)
    os.chown(locks, agent.uid, agent.gid)
    setup = (f"mount -t tmpfs -o size=64k,mode=0700,uid={agent.uid},gid={agent.gid} tmpfs {locks}\n"
             f"head -c 1M /dev/zero > {locks}/filler 2>/dev/null || true")
    for args in (["build"], ["--status"]):
        result = users.run_as(agent, agent_command(*args), cwd=user_place / "ws", env=env, setup=setup)
        if args == ["build"]:
            assert result.returncode == 2, result.stderr
            _one_error_or_success(result)
            assert "no space left on the device" in result.stderr, result.stderr
            assert not (user_place / "fake.log").exists()
        else:
            assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert os.listdir(locks) == []  # the tmpfs was only ever mounted in the namespace


POISON = ["[1, 2]", "42", '"text"', "null", "{", '{"pid": "x", "command": 5, "admitted": "soon"}',
          '{"pid": -1, "slot": 1e400, "admitted": 1e400}', '{"pid": 100000000000000000000000}',
          '{"command": [1, null, {"a": 2}], "user": 7, "cwd": []}',
          "[" * 100_000]  # nested past the recursion limit: a RecursionError, not a ValueError, from json


def test_poisoned_json_is_ignored_by_status_and_waiting_builds_and_named_by_doctor(
        virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str], reap: list[int]) -> None:
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])
    holder = subprocess.Popen(agent_command("build", "-p", "alpha"), cwd=virtual_ws,
                              env={**env, "FAKE_SLEEP": "60"}, stderr=subprocess.DEVNULL)
    reap.append(holder.pid)
    held_tickets = []
    try:
        wait_for(lambda: Path(env["FAKE_LOG"]).exists())
        lines = "\n".join([*POISON, '{"exit_code": 1e400, "wall_seconds": "x", "command": "no"}', '{"exit_code": 0}'])
        (lock_dir / "runs.jsonl").write_text(lines + "\n")
        for index, poison in enumerate(POISON):
            (lock_dir / "slot-0.json").write_text(poison)  # the holder's record, overwritten
            ticket = lock_dir / "queue" / f"{index:012d}-{index + 1}.ticket"
            ticket.write_text(poison)
            fd = os.open(ticket, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)  # a live waiter's ticket
            held_tickets.append(fd)
            for args in (("--status",), ("--status", "--json")):
                status = run_agent(*args, cwd=virtual_ws, env=env, timeout=60)
                assert status.returncode == 0 and "Traceback" not in status.stderr, (poison, status.stderr)
        for fd in held_tickets:
            os.close(fd)
        held_tickets.clear()
        waiter = run_agent("build", "-p", "beta", cwd=virtual_ws, env={**env, "CARGO_AGENT_WAIT_TIMEOUT": "3s"},
                           timeout=60)
        assert waiter.returncode == 75, waiter.stderr
        assert "waiting for a build slot" in waiter.stderr and "Traceback" not in waiter.stderr
        doctor = run_agent("--doctor", cwd=virtual_ws, env=env, timeout=60)
        assert "malformed record ignored: slot-0.json" in doctor.stdout, doctor.stdout
        assert "runs.jsonl: 6 lines not a JSON object" in doctor.stdout, doctor.stdout  # 6 of POISON
        assert "malformed record ignored: queue/" in doctor.stdout, doctor.stdout
    finally:
        for fd in held_tickets:
            os.close(fd)
        holder.send_signal(signal.SIGINT)
        holder.wait(30)


ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b[31m\r\n\x08\x9b1m"


def test_escape_sequences_in_another_users_command_never_reach_the_terminal(
        virtual_ws: Path, run_agent: RunAgent, fake_cargo_env: dict[str, str], reap: list[int]) -> None:
    env = {**fake_cargo_env, "CARGO_AGENT_SLOTS": "1"}
    lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])
    holder = subprocess.Popen(agent_command("build", "-p", "alpha", "--features", ESCAPES), cwd=virtual_ws,
                              env={**env, "FAKE_SLEEP": "60"}, stderr=subprocess.DEVNULL)
    reap.append(holder.pid)
    try:
        wait_for(lambda: Path(env["FAKE_LOG"]).exists())
        record = json.loads((lock_dir / "slot-0.json").read_text())
        assert ESCAPES in record["command"]  # the raw text is in the file, as written by its owner
        record.update(user="mallory" + ESCAPES, cwd="/tmp/" + ESCAPES)
        (lock_dir / "slot-0.json").write_text(json.dumps(record))
        (lock_dir / "runs.jsonl").write_text(json.dumps({"exit_code": 0, "command": ["build", ESCAPES]}) + "\n")
        status = run_agent("--status", cwd=virtual_ws, env=env, timeout=60)
        waiter = run_agent("build", "-p", "beta", cwd=virtual_ws, env={**env, "CARGO_AGENT_WAIT_TIMEOUT": "3s"},
                           timeout=60)
        assert status.returncode == 0 and waiter.returncode == 75
        assert "\\x1b]0;pwned\\x07" in status.stdout and "\\x1b]0;pwned" in waiter.stderr
        for text in (status.stdout, status.stderr, waiter.stdout):
            assert not any(c in text for c in "\x1b\x07\r\x08\x9b"), text
        for line in waiter.stderr.splitlines():
            assert line.isprintable(), line
        as_json = run_agent("--status", "--json", cwd=virtual_ws, env=env, timeout=60)
        assert "\x1b" not in as_json.stdout and json.loads(as_json.stdout)["holders"]
    finally:
        holder.send_signal(signal.SIGINT)
        holder.wait(30)


def test_a_queue_lock_held_for_good_gives_up_at_the_wait_timeout(virtual_ws: Path, run_agent: RunAgent,
                                                                fake_cargo_env: dict[str, str]) -> None:
    lock_dir = Path(fake_cargo_env["CARGO_AGENT_LOCK_DIR"])
    lockdir.prepare(lock_dir, shared=False)
    fd = lockdir.open_lock(lock_dir / "queue.lock", shared=False)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a group member's process that never lets go
    try:
        result = run_agent("build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env, timeout=60,
                           extra_env={"CARGO_AGENT_WAIT_TIMEOUT": "2s"})
    finally:
        os.close(fd)
    assert result.returncode == 75, result.stderr
    assert result.stderr.splitlines()[0] == (f"error: gave up waiting for {lock_dir / 'queue.lock'}: pid {os.getpid()} "
                                             "has held it for longer than the wait timeout")
    assert not Path(fake_cargo_env["FAKE_LOG"]).exists()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="ab{}\u00e9", max_size=30), max_size=30), st.booleans(), st.integers(1, 64))
def test_lines_from_end_are_the_lines_last_first(tmp_path_factory: pytest.TempPathFactory, lines: list[str],
                                                 final_newline: bool, chunk: int) -> None:
    path = tmp_path_factory.mktemp("tail") / "log"
    text = "\n".join(lines) + ("\n" if final_newline else "")
    path.write_bytes(text.encode())
    expected = list(reversed(text.split("\n"))) if text else []  # an empty file has no line
    assert list(lockdir.lines_from_end(path, chunk)) == expected


def test_lines_from_end_stop_at_the_read_cap_without_a_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "log"
    line = "x" * 99 + "\n"
    path.write_text("HEAD-" + line * (lockdir.MAX_READ // len(line) + 10))
    lines = list(lockdir.lines_from_end(path, 4096))
    assert lines[0] == "" and set(lines[1:]) == {"x" * 99}  # whole lines only, the head line never
    assert len(lines) - 1 == lockdir.MAX_READ // len(line)
