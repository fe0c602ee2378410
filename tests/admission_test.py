"""What slots.py decides about admission, quickly and in-process: N from memory, cores and the
run log; the host file's N and what a lower layer may do to it; memory held back above mem_high
or under pressure; a predicted peak against the room under mem_high next to what running builds
still need; an earlier waiter that stepped aside goes first; the free slot taken under the queue
mutex. Real lock files and real flock holders in a tmp lock dir; memory and pressure pinned with
the test hooks (which can only raise the readings: the real host's use here is far lower).
slots_test.py and report_test.py run the same with real processes and real builds."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_tree

from cargo_agent import config, host, lockdir, slots

pytestmark = pytest.mark.timeout(60)  # a mutex or a lock that is never let go fails, never hangs

GONE_PID = 4_000_000  # above any pid_max: no such process, so no tree memory is counted for it
MIB = 1 << 20


def _config(tmp_path: Path, host_file: str | None = None, **env: str) -> tuple[config.Config, dict[str, str]]:
    path = tmp_path / "host.toml"
    if host_file is not None:
        path.write_text(host_file)
    environ = {"CARGO_AGENT_CONFIG": str(path), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
               "CARGO_AGENT_LOCK_DIR": str(tmp_path / "locks"), **env}
    return config.load(environ), environ


def _formula(total: int, source: str, reserve: int, per_build: int, what: str) -> tuple[int, str]:
    by_memory = max(1, (total - reserve) // per_build)
    n = max(1, min(by_memory, host.cores()))
    return n, (f"min(floor(({total / (1 << 30):.1f}G {source} - {reserve / (1 << 30):.2f}G reserve) / "
               f"{per_build / (1 << 30):.2f}G per build ({what})) = {by_memory}, {host.cores()} cores) = {n}")


LIMIT = host.in_force()
ROOM = LIMIT.limit - host.reserve_within(1 << 30, LIMIT.limit)  # with a 1 GiB reserve


# ---- N ------------------------------------------------------------------------------------

@pytest.mark.parametrize("per_build", [ROOM // 1024 * 1024, ROOM // 2048 * 1024, ROOM // 1024 * 1024 + 1024, 1 << 20])
def test_auto_slots_are_the_room_over_the_per_build_memory_at_most_the_cores(tmp_path: Path, per_build: int) -> None:
    settings, env = _config(tmp_path, CARGO_AGENT_PER_BUILD_MEMORY=f"{per_build >> 10}k",
                            CARGO_AGENT_HOST_RESERVE="1g")
    reserve = host.reserve_within(1 << 30, LIMIT.limit)
    expected = _formula(LIMIT.limit, LIMIT.source, reserve, per_build, "per_build_memory")
    assert slots.auto_slots(settings, env) == expected
    assert slots.auto_slots(settings, env, lock_dir=tmp_path / "no-such-dir") == expected  # nothing learned


def test_auto_slots_take_explicit_sizing_over_the_settings(tmp_path: Path) -> None:
    settings, env = _config(tmp_path)
    reserve = host.reserve_within(3 << 30, LIMIT.limit)
    assert slots.auto_slots(settings, env, per_build=5 << 30, reserve=3 << 30) == _formula(
        LIMIT.limit, LIMIT.source, reserve, 5 << 30, "per_build_memory")


def test_auto_slots_never_divide_by_a_per_build_size_below_one_byte(tmp_path: Path) -> None:
    settings, env = _config(tmp_path)
    reserve = host.reserve_within(1 << 30, LIMIT.limit)
    assert slots.auto_slots(settings, env, per_build=1, reserve=1 << 30) == _formula(
        LIMIT.limit, LIMIT.source, reserve, 1, "per_build_memory")
    count, formula = slots.auto_slots(settings, env, per_build=0, reserve=1 << 30)  # counted as 1 byte
    assert count == host.cores() and f"0.00G per build (per_build_memory)) = {LIMIT.limit - reserve}, " in formula


def test_auto_slots_learn_the_median_build_peak_of_the_run_log(tmp_path: Path) -> None:
    lock_dir = tmp_path / "learned"
    lock_dir.mkdir()
    peaks = [1 << 30, ROOM // 2 + 4096, ROOM // 2 + 8192]  # the median: two of them do not fit
    (lock_dir / "runs.jsonl").write_text("".join(json.dumps({"peak_rss": p}) + "\n" for p in peaks))
    assert slots.learned_per_build(lock_dir) == ROOM // 2 + 4096
    assert slots.learned_per_build(tmp_path / "missing") is None
    settings, env = _config(tmp_path, CARGO_AGENT_HOST_RESERVE="1g")
    reserve = host.reserve_within(1 << 30, LIMIT.limit)
    assert slots.auto_slots(settings, env, lock_dir=lock_dir) == _formula(
        LIMIT.limit, LIMIT.source, reserve, ROOM // 2 + 4096, "median of recent runs")
    assert slots.auto_slots(settings, env, lock_dir=lock_dir)[0] == 1


def test_resolve_without_a_host_count_sizes_from_the_baseline_and_a_lower_layer_only_lowers(tmp_path: Path) -> None:
    host_file = 'per_build_memory = "1m"\nhost_reserve = "1g"\n'
    settings, env = _config(tmp_path, host_file)
    resolved = slots.resolve(settings, env)
    ceiling, formula = slots.auto_slots(settings, env, 1 << 20, 1 << 30, tmp_path / "locks")
    assert (resolved.count, resolved.ceiling, resolved.formula) == (ceiling, ceiling, formula)
    assert (resolved.lock_dir, resolved.shared) == (str(tmp_path / "locks"), False)
    assert (tmp_path / "locks").is_dir()  # created
    # An environment that sizes builds bigger gets fewer slots for itself; N stays the host's.
    bigger, env = _config(tmp_path, host_file, CARGO_AGENT_PER_BUILD_MEMORY=f"{ROOM >> 10}k")
    own = slots.resolve(bigger, env)
    assert (own.count, own.ceiling) == (1, ceiling)
    # One that sizes them smaller raises nothing.
    smaller, env = _config(tmp_path, 'per_build_memory = "8g"\nhost_reserve = "1g"\n',
                           CARGO_AGENT_PER_BUILD_MEMORY="1m")
    assert slots.resolve(smaller, env).count == slots.resolve(smaller, env).ceiling
    reserve, env = _config(tmp_path, 'per_build_memory = "1m"\nhost_reserve = "1k"\n',
                           CARGO_AGENT_PER_BUILD_MEMORY=f"{(LIMIT.limit * 3 // 4 + 4096) >> 10}k",
                           CARGO_AGENT_HOST_RESERVE="1g")
    assert slots.resolve(reserve, env).count == 1  # a reserve of its own (at most a quarter) counts too


def test_resolve_carries_the_memory_and_wait_settings(tmp_path: Path) -> None:
    settings, env = _config(tmp_path, CARGO_AGENT_MEM_HIGH="70", CARGO_AGENT_MEM_KILL="80",
                            CARGO_AGENT_WAIT_TIMEOUT="9s", CARGO_AGENT_PRESSURE_HIGH="40",
                            CARGO_AGENT_PRESSURE_KILL="60")
    resolved = slots.resolve(settings, env, create=False)
    assert (resolved.mem_high, resolved.mem_kill, resolved.wait_timeout, resolved.pressure_high,
            resolved.pressure_kill) == (70.0, 80.0, 9.0, 40.0, 60.0)
    assert not (tmp_path / "locks").exists()  # create=False: nothing made


def test_a_slot_request_within_the_hosts_count_lowers_this_runs_count(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    host_file = f'slots = 2\nlock_dir = "{tmp_path / "shared"}"\n'
    settings, env = _config(tmp_path, host_file)
    resolved = slots.resolve(settings, env)
    assert (resolved.count, resolved.ceiling, resolved.shared) == (2, 2, True)
    assert resolved.formula == f"slots = 2 in {tmp_path / 'host.toml'}:slots"
    settings, env = _config(tmp_path, host_file, CARGO_AGENT_SLOTS="2")
    assert slots.resolve(settings, env).count == 2
    settings, env = _config(tmp_path, host_file, CARGO_AGENT_SLOTS="1")
    assert (slots.resolve(settings, env).count, slots.resolve(settings, env).ceiling) == (1, 2)
    assert capsys.readouterr().err == ""


def test_a_slot_request_above_the_auto_count_is_clamped_and_said(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    host_file = 'per_build_memory = "1m"\nhost_reserve = "1g"\n'
    ceiling = slots.resolve(*_config(tmp_path, host_file)).ceiling
    settings, env = _config(tmp_path, host_file, CARGO_AGENT_SLOTS=str(ceiling + 1))
    assert (slots.resolve(settings, env).count, slots.resolve(settings, env).ceiling) == (ceiling, ceiling)
    assert capsys.readouterr().err == (f"warning: cargo-agent: CARGO_AGENT_SLOTS asks for {ceiling + 1} slots but "
                                       f"the host has {ceiling}; using {ceiling}\n") * 2
    settings, env = _config(tmp_path, host_file, CARGO_AGENT_SLOTS=str(ceiling))
    assert slots.resolve(settings, env).count == ceiling and capsys.readouterr().err == ""


# ---- memory and pressure ------------------------------------------------------------------

@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    path = tmp_path / "locks"
    lockdir.prepare(path, False)
    return path


def _settings(lock_dir: Path, mem_high: float = 90.0, pressure_high: float | None = None,
              count: int = 2) -> slots.SlotSettings:
    return slots.SlotSettings(lock_dir, count, count, False, "test", mem_high, None, 0.2, pressure_high, None)


def _memory(tmp_path: Path, percent: int) -> dict[str, str]:
    """Memory use pinned at `percent` of the limit in force (far above this host's real use)."""
    reading = tmp_path / f"memory-{percent}"
    reading.write_text(f"{percent}\n")
    return {host.SOURCE_ENV: str(reading)}


class Holders:
    """Slots held by other builds: a real flock on slot-<k>.lock, and the record it wrote."""

    def __init__(self, lock_dir: Path) -> None:
        self.lock_dir, self.fds = lock_dir, []

    def hold(self, k: int, predicted: int | None, pid: int = GONE_PID) -> None:
        fd = lockdir.open_lock(self.lock_dir / f"slot-{k}.lock", False)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.fds.append(fd)
        record: dict[str, object] = {"pid": pid, "slot": k, "admitted": 1.0}
        if predicted is not None:
            record["predicted"] = predicted
        lockdir.write_atomic(self.lock_dir / f"slot-{k}.json", json.dumps(record).encode(), False)

    def aside(self, seq: int, predicted: int | None) -> Path:
        """A waiter that stepped aside: its flock'ed `.aside` marker in the queue."""
        lockdir.make_dir(self.lock_dir / "queue", False)
        path = self.lock_dir / "queue" / f"{seq:012d}-{GONE_PID}.aside"
        fd = lockdir.open_file(path, os.O_RDWR, lockdir.file_mode(False), exclusive=True)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.fds.append(fd)
        lockdir.write_fd(fd, json.dumps({"pid": GONE_PID, "predicted": predicted}).encode(), path)
        return path

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


@pytest.fixture
def others(lock_dir: Path) -> Iterator[Holders]:
    held = Holders(lock_dir)
    yield held
    held.close()


def test_use_above_mem_high_holds_back_and_at_mem_high_does_not(tmp_path: Path, lock_dir: Path) -> None:
    settings = _settings(lock_dir, mem_high=60.0)
    env = _memory(tmp_path, 61)
    why = f"memory at 61% is above mem_high 60% ({LIMIT.source}, raised by {host.SOURCE_ENV})"
    assert slots._hold_back(settings, env) == why
    assert slots.memory_verdict(settings, env, None) == (why, False)
    assert slots._hold_back(settings, _memory(tmp_path, 60)) is None
    assert slots.memory_verdict(settings, _memory(tmp_path, 60), None) == (None, False)


@pytest.mark.parametrize(("file", "line", "what"), [
    ("memory", "some avg10=70.00 avg60=0 avg300=0 total=1", "memory pressure (PSI some avg10) at 70%"),
    ("io", "full avg10=55.00 avg60=0 avg300=0 total=1", "I/O pressure (PSI full avg10) at 55%"),
])
def test_pressure_above_pressure_high_holds_back(tmp_path: Path, lock_dir: Path, file: str, line: str,
                                                 what: str) -> None:
    hook = write_tree(tmp_path / "psi", {file: line + "\n"})
    env = {host.PRESSURE_ENV: str(hook)}
    settings = _settings(lock_dir, pressure_high=50.0)
    assert slots.memory_verdict(settings, env, None) == (
        f"{what} is above pressure_high 50% (/proc/pressure, raised by {host.PRESSURE_ENV})", False)
    assert slots.memory_verdict(_settings(lock_dir, pressure_high=None), env, None) == (None, False)  # off


def test_pressure_at_pressure_high_or_of_the_other_kind_does_not_hold_back(tmp_path: Path, lock_dir: Path) -> None:
    hook = write_tree(tmp_path / "psi", {"memory": "full avg10=99.00 avg60=0 avg300=0 total=1\n"
                                                   "some avg10=50.00 avg60=0 avg300=0 total=1\n",
                                         "io": "some avg10=99.00 avg60=0 avg300=0 total=1\n"})
    assert slots.memory_verdict(_settings(lock_dir, pressure_high=50.0), {host.PRESSURE_ENV: str(hook)}, 1) == (
        None, False)


def _budget(mem_high: float) -> int:
    return int(LIMIT.limit * mem_high / 100)


def test_with_no_build_running_any_prediction_is_admitted(tmp_path: Path, lock_dir: Path, others: Holders) -> None:
    env = _memory(tmp_path, 50)
    assert slots.memory_verdict(_settings(lock_dir), env, 1 << 62) == (None, False)
    others.hold(0, 1 << 40)
    assert slots.memory_verdict(_settings(lock_dir), env, 1 << 62, own_slot=0) == (None, False)  # slot 0 is ours
    assert slots.memory_verdict(_settings(lock_dir), env, None) == (None, False)  # no prediction: nothing to fit


def test_a_predicted_peak_is_admitted_while_it_fits_under_mem_high_next_to_the_running_builds(
        tmp_path: Path, lock_dir: Path, others: Holders) -> None:
    env = _memory(tmp_path, 50)
    used = int(LIMIT.limit * 50 / 100)
    budget = _budget(90.0)
    others.hold(0, 300 * MIB)
    others.hold(1, None)  # a running build with no prediction needs nothing more
    settings = _settings(lock_dir)
    fits = budget - used - 300 * MIB
    assert slots.memory_verdict(settings, env, fits) == (None, False)  # exactly the room left
    reason, too_big = slots.memory_verdict(settings, env, fits + 1)
    assert too_big and reason == (
        f"predicted peak {(fits + 1) >> 20} MiB does not fit: {used >> 20} MiB used + 300 MiB still needed by "
        f"2 running builds > {budget >> 20} MiB (mem_high 90% of {LIMIT.limit >> 20} MiB, "
        f"{LIMIT.source}, raised by {host.SOURCE_ENV})")


def test_what_a_running_build_still_needs_is_its_prediction_less_its_tree_now(tmp_path: Path, lock_dir: Path,
                                                                            others: Holders) -> None:
    env = _memory(tmp_path, 50)
    used = int(LIMIT.limit * 50 / 100)
    budget = _budget(90.0)
    me = host.tree_rss([os.getpid()])[os.getpid()]
    assert me > 10 * MIB
    others.hold(0, me // 2, pid=os.getpid())  # already above its prediction: needs nothing more
    assert slots.memory_verdict(_settings(lock_dir), env, budget - used) == (None, False)
    assert slots.memory_verdict(_settings(lock_dir), env, budget - used + 1)[1]  # and never less than nothing
    others.close()
    others.fds = []
    others.hold(0, 1 << 40, pid=os.getpid())  # far above what it holds now: needs the rest
    verdict = slots.memory_verdict(_settings(lock_dir), env, 1)
    assert verdict[1] and "1 running builds" in (verdict[0] or "")


def test_a_held_slot_counts_with_or_without_its_record_and_a_record_alone_does_not(
        tmp_path: Path, lock_dir: Path, others: Holders) -> None:
    env = _memory(tmp_path, 50)
    settings = _settings(lock_dir, count=3)
    (lock_dir / "slot-2.json").write_text(json.dumps({"pid": GONE_PID, "slot": 2, "predicted": 1 << 40}))
    assert slots.memory_verdict(settings, env, 1 << 40) == (None, False)  # a record whose slot nobody holds
    fd = lockdir.open_lock(lock_dir / "slot-1.lock", False)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    others.fds.append(fd)  # held, but no record written yet
    assert slots.memory_verdict(settings, env, 1 << 40, own_slot=1) == (None, False)  # that one is ours
    (lock_dir / "slot-2.json").unlink()
    reason, too_big = slots.memory_verdict(settings, env, 1 << 40)
    assert too_big and "still needed by 1 running builds" in (reason or "")
    assert slots._others_held(settings, None) and not slots._others_held(settings, 1)


def test_an_earlier_waiter_that_stepped_aside_goes_first_once_it_fits(tmp_path: Path, lock_dir: Path,
                                                                      others: Holders) -> None:
    env = _memory(tmp_path, 50)
    room = _budget(90.0) - int(LIMIT.limit * 50 / 100) - 100 * MIB
    others.hold(0, 100 * MIB)
    settings = _settings(lock_dir)
    others.aside(5, room)  # fits exactly
    first = (f"an earlier build predicted at {room >> 20} MiB fits now and goes first", False)
    assert slots.memory_verdict(settings, env, 1, seq=6) == first
    assert slots.memory_verdict(settings, env, 1) == first  # no ticket (--dry-run): every aside is earlier
    assert slots.memory_verdict(settings, env, 1, seq=5) == (None, False)  # not earlier than itself
    assert slots.memory_verdict(settings, env, 1, seq=4) == (None, False)


def test_an_earlier_waiter_that_still_does_not_fit_lets_others_go(tmp_path: Path, lock_dir: Path,
                                                                  others: Holders) -> None:
    env = _memory(tmp_path, 50)
    room = _budget(90.0) - int(LIMIT.limit * 50 / 100) - 100 * MIB
    others.hold(0, 100 * MIB)
    others.aside(5, room + 1)
    others.aside(3, None)  # no prediction: never goes first this way
    assert slots.memory_verdict(_settings(lock_dir), env, 1, seq=6) == (None, False)


def test_only_live_asides_of_earlier_waiters_count(lock_dir: Path, others: Holders) -> None:
    others.aside(2, 7 * MIB)
    others.aside(9, 8 * MIB)
    dead = lock_dir / "queue" / f"{1:012d}-{GONE_PID}.aside"
    dead.write_text(json.dumps({"predicted": 1}))  # nobody holds it: its waiter is gone
    (lock_dir / "queue" / "junk-1.aside").write_text("{}")
    (lock_dir / "queue" / f"{3:012d}-1.ticket").write_text("{}")
    found = slots._asides(_settings(lock_dir), 9)
    assert [(entry.seq, entry.predicted) for entry in found] == [(2, 7 * MIB)]
    assert [entry.seq for entry in slots._asides(_settings(lock_dir), 10)] == [2, 9]


def test_stepping_aside_turns_the_ticket_into_a_locked_marker_with_the_prediction(lock_dir: Path) -> None:
    settings = _settings(lock_dir)
    meta = {"pid": os.getpid(), "predicted": 42 * MIB, "command": ["build"]}
    ticket = slots._enqueue(settings, meta)
    stale = Path(ticket.path).with_suffix(".aside")
    stale.write_text("left by a waiter that died with our pid")  # never reused, never in the way
    aside = slots._step_aside(settings, ticket, meta)
    try:
        assert not os.path.exists(ticket.path)  # the waiter behind it is the head now
        with pytest.raises(OSError):
            os.fstat(ticket.fd)  # and the ticket's fd is closed
        assert isinstance(json.loads(Path(aside.path).read_text())["queued"], float)
        assert (aside.seq, aside.path, aside.queued) == (ticket.seq, str(stale), ticket.queued)
        assert lockdir.is_locked(aside.path, lockdir.locked_inodes())
        assert json.loads(Path(aside.path).read_text())["predicted"] == 42 * MIB
        assert [(e.seq, e.predicted) for e in slots._asides(settings, ticket.seq + 1)] == [(ticket.seq, 42 * MIB)]
        assert slots._asides(settings, ticket.seq) == []
    finally:
        os.close(aside.fd)
    assert slots._asides(settings, ticket.seq + 1) == []  # its waiter let go


# ---- taking a free slot ----------------------------------------------------------------------

def _take(settings: slots.SlotSettings, env: dict[str, str], predicted: int | None
          ) -> tuple[slots.Slot | None, str | None, bool, slots.Ticket, slots.LockDirWatch, dict[int, int]]:
    meta: dict[str, object] = {"pid": os.getpid(), "command": ["build"]}
    ticket = slots._enqueue(settings, meta)
    watch = slots.LockDirWatch(settings)
    fds = watch.slots(settings.count)
    slot, reason, too_big = slots._take_free_slot(settings, env, predicted, ticket, fds, meta,
                                                  slots._Progress(settings), ticket.queued, watch)
    return slot, reason, too_big, ticket, watch, fds


def _close(ticket: slots.Ticket, watch: slots.LockDirWatch, fds: dict[int, int]) -> None:
    os.close(ticket.fd)
    for fd in fds.values():
        os.close(fd)
    watch.close()


def test_the_first_free_slot_is_taken_and_its_record_written(tmp_path: Path, lock_dir: Path,
                                                             others: Holders) -> None:
    others.hold(0, None)
    settings = _settings(lock_dir)
    slot, reason, too_big, ticket, watch, fds = _take(settings, _memory(tmp_path, 50), 1)
    try:
        assert (reason, too_big) == (None, False) and slot is not None
        assert (slot.index, slot.path, slot.meta_path) == (1, str(lock_dir / "slot-1.lock"),
                                                           str(lock_dir / "slot-1.json"))
        assert 1 not in fds  # the slot's fd is the build's now
        record = json.loads((lock_dir / "slot-1.json").read_text())
        assert record == slot.record and record["slot"] == 1 and record["pid"] == os.getpid()
        assert isinstance(record["admitted"], float)
        assert lockdir.lock_holder(lock_dir / "slot-1.lock", lockdir.locked_inodes()) == os.getpid()
        assert slot.queued_at == ticket.queued and slot.admitted_at is not None and slot.waited >= 0
    finally:
        _close(ticket, watch, fds)
        if slot is not None:
            slot.release()


def test_a_free_slot_refused_by_the_verdict_is_let_go_and_says_why(tmp_path: Path, lock_dir: Path,
                                                                   others: Holders) -> None:
    others.hold(0, 1 << 40)
    settings = _settings(lock_dir)
    slot, reason, too_big, ticket, watch, fds = _take(settings, _memory(tmp_path, 50), 1 << 30)
    try:
        assert slot is None and too_big and (reason or "").startswith("predicted peak 1024 MiB does not fit")
        assert not (lock_dir / "slot-1.json").exists()
        assert lockdir.lock_holder(lock_dir / "slot-1.lock", lockdir.locked_inodes()) is None  # let go
    finally:
        _close(ticket, watch, fds)
    slot, reason, too_big, ticket, watch, fds = _take(settings, _memory(tmp_path, 95), 1)
    try:
        assert slot is None and not too_big and (reason or "").startswith("memory at 95% is above mem_high 90%")
    finally:
        _close(ticket, watch, fds)


def test_no_free_slot_is_no_slot_and_no_reason(tmp_path: Path, lock_dir: Path, others: Holders) -> None:
    others.hold(0, None)
    others.hold(1, None)
    slot, reason, too_big, ticket, watch, fds = _take(_settings(lock_dir), _memory(tmp_path, 50), 1)
    try:
        assert (slot, reason, too_big) == (None, None, False)
    finally:
        _close(ticket, watch, fds)


def test_a_held_queue_mutex_refuses_admission_for_now(tmp_path: Path, lock_dir: Path, others: Holders) -> None:
    settings = _settings(lock_dir)
    meta: dict[str, object] = {"pid": os.getpid()}
    ticket = slots._enqueue(settings, meta)
    watch = slots.LockDirWatch(settings)
    mutex = lockdir.open_lock(lock_dir / "queue.lock", False)
    fcntl.flock(mutex, fcntl.LOCK_EX)
    try:
        assert slots._decide(settings, _memory(tmp_path, 50), 1, ticket, meta, 0, watch) == (
            "the queue mutex is held by another process", False, None, None)
        assert not (lock_dir / "slot-0.json").exists()
    finally:
        os.close(mutex)
        os.close(ticket.fd)
        watch.close()
    ticket = slots._enqueue(settings, meta)
    watch = slots.LockDirWatch(settings)
    try:
        reason, too_big, record, path = slots._decide(settings, _memory(tmp_path, 50), 1, ticket, meta, 0, watch)
        assert (reason, too_big, path) == (None, False, str(lock_dir / "slot-0.json"))
        assert record is not None and record["slot"] == 0 and json.loads(Path(str(path)).read_text()) == record
        # the mutex was let go: the next decision gets it at once
        assert slots._decide(settings, _memory(tmp_path, 50), 1, ticket, meta, 1, watch)[0] is None
    finally:
        os.close(ticket.fd)
        watch.close()


def test_a_lock_dir_replaced_while_looking_takes_no_slot_and_lets_go(tmp_path: Path, lock_dir: Path) -> None:
    settings = _settings(lock_dir)
    meta: dict[str, object] = {"pid": os.getpid()}
    ticket = slots._enqueue(settings, meta)
    watch = slots.LockDirWatch(settings)
    fds = watch.slots(settings.count)
    os.rename(lock_dir, tmp_path / "old")
    lockdir.prepare(lock_dir, False)
    try:
        assert slots._take_free_slot(settings, _memory(tmp_path, 50), 1, ticket, fds, meta,
                                     slots._Progress(settings), ticket.queued, watch) == (None, None, False)
        assert lockdir.lock_holder(tmp_path / "old" / "slot-0.lock", lockdir.locked_inodes()) is None
        assert not (lock_dir / "slot-0.json").exists() and not (tmp_path / "old" / "slot-0.json").exists()
    finally:
        _close(ticket, watch, fds)
