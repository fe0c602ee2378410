"""What tokens.py decides, quickly and in-process: how many host CPU tokens there are (`resolve`),
what one build may take (BuildCpu's cap), and the broker's lend / keep / take-back choice on each
poll. Real lock files in a tmp lock dir, a real jobserver pipe, real flock holders in another
open file description; no cargo. (tokens_test.py runs the same with real builds, slowly.)"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from cargo_agent import background, config, host, jobserver, lockdir, tokens

pytestmark = pytest.mark.timeout(60)  # a broker or a token wait that never ends fails, never hangs

DETECTED, HOW = host.cpus()


def _config(tmp_path: Path, **env: str) -> config.Config:
    return config.load({"CARGO_AGENT_CONFIG": str(tmp_path / "no-host.toml"), "XDG_CONFIG_HOME": str(tmp_path),
                        **env})


@pytest.fixture
def pool(tmp_path: Path) -> tokens.Pool:
    lock_dir = tmp_path / "locks"
    lockdir.prepare(lock_dir, False)
    return tokens.Pool(lock_dir, 3, "three for the test", False)


@pytest.fixture
def pipe() -> Iterator[jobserver.Pipe]:
    made = jobserver.Pipe()
    yield made
    made.close()


class Other:
    """Another build's hold on the lock dir's files: its own open file descriptions."""

    def __init__(self, pool: tokens.Pool) -> None:
        self.pool, self.fds = pool, []

    def hold(self, name: str, shared: bool = False) -> None:
        fd = lockdir.open_lock(os.path.join(self.pool.lock_dir, name), False)
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        self.fds.append(fd)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


@pytest.fixture
def other(pool: tokens.Pool) -> Iterator[Other]:
    holder = Other(pool)
    yield holder
    holder.close()


# ---- how many tokens ---------------------------------------------------------------------

def test_the_token_count_is_the_cpus_this_host_may_use_without_a_setting(tmp_path: Path) -> None:
    pool = tokens.resolve(_config(tmp_path), tmp_path, shared=True)
    assert (pool.count, pool.formula, pool.lock_dir, pool.shared) == (DETECTED, HOW, tmp_path, True)


def test_a_lower_cpus_setting_is_the_token_count_and_names_its_origin(tmp_path: Path) -> None:
    pool = tokens.resolve(_config(tmp_path, CARGO_AGENT_CPUS="1"), tmp_path, shared=False)
    assert (pool.count, pool.formula, pool.shared) == (1, "1 from CARGO_AGENT_CPUS", False)
    same = tokens.resolve(_config(tmp_path, CARGO_AGENT_CPUS=str(DETECTED)), tmp_path, shared=False)
    assert (same.count, same.formula) == (DETECTED, f"{DETECTED} from CARGO_AGENT_CPUS")


def test_a_cpus_setting_above_the_host_is_lowered_to_the_host_and_says_so(tmp_path: Path) -> None:
    pool = tokens.resolve(_config(tmp_path, CARGO_AGENT_CPUS=str(DETECTED + 1)), tmp_path, shared=False)
    assert pool.count == DETECTED
    assert pool.formula == (f"{DETECTED + 1} from CARGO_AGENT_CPUS, lowered to the {DETECTED} CPUs this host "
                            f"may use ({HOW})")


# ---- the broker's choice on each poll ------------------------------------------------------

def _broker(pool: tokens.Pool, pipe: jobserver.Pipe, cap: int, implicit: bool = True) -> tokens.Broker:
    held = tokens.Tokens(pool)
    if implicit:
        assert held.try_take()
    return tokens.Broker(held, pipe, cap)


def test_a_dry_pipe_gets_one_token_per_poll_up_to_the_cap(pool: tokens.Pool, pipe: jobserver.Pipe) -> None:
    broker = _broker(tokens.Pool(pool.lock_dir, 4, "four", False), pipe, cap=2)  # one token more than it may take
    try:
        broker.step(0.0)
        assert (pipe.waiting(), broker.lent, broker.peak, len(broker.tokens.held)) == (1, 1, 1, 2)
        broker.step(0.001)  # the byte sits unread: nothing more is lent
        assert (pipe.waiting(), broker.lent) == (1, 1)
        assert os.read(pipe.read_fd, 1) == b"+"  # cargo takes it for a job
        broker.step(0.002)
        assert (pipe.waiting(), broker.lent, broker.peak) == (1, 2, 2)
        assert os.read(pipe.read_fd, 1) == b"+"
        broker.step(0.003)  # at the cap: the pipe stays dry, and it wants no token either
        assert (pipe.waiting(), broker.lent, broker.peak, len(broker.tokens.held)) == (0, 2, 2, 3)
        assert not broker.tokens.wanting
        assert broker.polls == 4
    finally:
        broker.stop()
        broker.tokens.close()
    assert broker.lent == 0


def test_a_broker_with_no_free_token_says_it_wants_one_until_it_gets_one(pool: tokens.Pool, pipe: jobserver.Pipe,
                                                                         other: Other) -> None:
    other.hold("cpu-1.lock")
    other.hold("cpu-2.lock")
    broker = _broker(pool, pipe, cap=2)  # takes cpu-0, the only free one
    watcher = tokens.Tokens(pool)
    try:
        assert not watcher.wanters()
        broker.step(0.0)
        assert (pipe.waiting(), broker.lent, broker.tokens.wanting) == (0, 0, True)
        assert watcher.wanters()  # another build's broker sees it
        os.close(other.fds.pop())  # cpu-2 is freed
        broker.step(0.001)
        assert (pipe.waiting(), broker.lent, broker.tokens.wanting) == (1, 1, False)
        assert not watcher.wanters()
        assert os.read(pipe.read_fd, 1) == b"+"
        broker.step(0.002)  # dry again, and no token free: it wants one...
        assert broker.tokens.wanting and watcher.wanters()
        other.hold(tokens.WAIT_FILE, shared=True)
        broker.step(0.003)  # ...but not while a build waits for its first token
        assert not broker.tokens.wanting
        os.close(other.fds.pop())
        broker.step(0.004)
        assert broker.tokens.wanting
        broker.stop()  # ...nor once it stops lending
        assert not broker.tokens.wanting and not watcher.wanters()
    finally:
        watcher.close()
        broker.stop()
        broker.tokens.close()


def test_a_broker_lends_nothing_while_a_build_waits_for_its_first_token(pool: tokens.Pool, pipe: jobserver.Pipe,
                                                                        other: Other) -> None:
    broker = _broker(pool, pipe, cap=2)
    other.hold(tokens.WAIT_FILE, shared=True)
    try:
        broker.step(0.0)
        assert (pipe.waiting(), broker.lent, broker.tokens.wanting) == (0, 0, False)
    finally:
        broker.stop()
        broker.tokens.close()


def test_an_unused_byte_goes_back_at_once_when_a_build_waits_for_its_first_token(
        pool: tokens.Pool, pipe: jobserver.Pipe, other: Other) -> None:
    broker = _broker(pool, pipe, cap=2)
    try:
        broker.step(0.0)
        assert broker.lent == 1
        other.hold(tokens.WAIT_FILE, shared=True)
        broker.step(0.001)  # long before IDLE_SECONDS
        assert (pipe.waiting(), broker.lent, len(broker.tokens.held)) == (0, 0, 1)
    finally:
        broker.stop()
        broker.tokens.close()


def test_a_lone_build_keeps_one_spare_byte_and_gives_back_the_rest_after_the_idle_time(
        pool: tokens.Pool, pipe: jobserver.Pipe) -> None:
    broker = _broker(pool, pipe, cap=2)
    try:
        broker.step(0.0)
        pipe.put()  # a job ended and cargo wrote its byte back: two unused bytes, both lent
        broker.lent += 1
        assert broker.tokens.try_take()
        broker.step(0.0)  # the idle clock starts
        assert (pipe.waiting(), broker.lent) == (2, 2)
        broker.step(tokens.IDLE_SECONDS / 2)  # not idle long enough yet
        assert (pipe.waiting(), broker.lent) == (2, 2)
        broker.step(tokens.IDLE_SECONDS)  # idle for exactly IDLE_SECONDS: one goes back, one stays
        assert (pipe.waiting(), broker.lent, len(broker.tokens.held)) == (1, 1, 2)
        broker.step(3 * tokens.IDLE_SECONDS)  # nobody asks: the spare stays
        assert (pipe.waiting(), broker.lent) == (1, 1)
        other = Other(pool)
        other.hold(tokens.WANT_FILE, shared=True)  # now somebody asks: the idle clock restarted at the last check
        try:
            broker.step(3.5 * tokens.IDLE_SECONDS)
            assert (pipe.waiting(), broker.lent) == (1, 1)
            broker.step(4 * tokens.IDLE_SECONDS)
            assert (pipe.waiting(), broker.lent) == (0, 0)
        finally:
            other.close()
    finally:
        broker.stop()
        broker.tokens.close()


def test_an_unused_byte_goes_back_after_the_idle_time_when_another_broker_wants_one(
        pool: tokens.Pool, pipe: jobserver.Pipe, other: Other) -> None:
    broker = _broker(pool, pipe, cap=2)
    try:
        broker.step(0.0)
        other.hold(tokens.WANT_FILE, shared=True)
        broker.step(1.0)  # the byte is seen unused: its idle clock starts now, not when it was lent
        assert (pipe.waiting(), broker.lent) == (1, 1)  # not at once: cargo may take it any moment
        broker.step(1.0 + tokens.IDLE_SECONDS / 2)
        assert (pipe.waiting(), broker.lent) == (1, 1)
        broker.step(1.0 + 2 * tokens.IDLE_SECONDS)
        assert (pipe.waiting(), broker.lent, len(broker.tokens.held)) == (0, 0, 1)
        assert not broker.tokens.wanting
    finally:
        broker.stop()
        broker.tokens.close()


def test_the_idle_clock_restarts_whenever_the_pipe_runs_dry(pool: tokens.Pool, pipe: jobserver.Pipe,
                                                             other: Other) -> None:
    broker = _broker(pool, pipe, cap=2)
    other.hold(tokens.WANT_FILE, shared=True)
    try:
        broker.step(0.0)
        broker.step(0.01)  # unused since 0.01
        assert os.read(pipe.read_fd, 1) == b"+"  # then cargo takes it
        broker.step(1.0)  # dry: another byte
        broker.step(1.01)  # unused since 1.01, not since 0.01
        assert (pipe.waiting(), broker.lent) == (1, 2)
    finally:
        broker.stop()
        broker.tokens.close()


def test_after_a_take_back_for_a_waiter_the_idle_clock_starts_again(pool: tokens.Pool, pipe: jobserver.Pipe,
                                                                     other: Other) -> None:
    broker = _broker(pool, pipe, cap=2)
    try:
        broker.step(0.0)
        other.hold(tokens.WAIT_FILE, shared=True)
        broker.step(0.0)  # taken back at once
        assert (pipe.waiting(), broker.lent) == (0, 0)
        other.close()
        other.fds = []
        other.hold(tokens.WANT_FILE, shared=True)
        pipe.put()  # a byte comes back from the build
        broker.step(1.0)  # unused since 1.0
        assert pipe.waiting() == 1
    finally:
        broker.stop()
        broker.tokens.close()


def test_a_byte_the_broker_did_not_lend_is_dropped_not_counted(pool: tokens.Pool, pipe: jobserver.Pipe,
                                                               other: Other) -> None:
    broker = _broker(pool, pipe, cap=2)
    try:
        pipe.put()  # written by something in the build, not by the broker
        other.hold(tokens.WAIT_FILE, shared=True)
        broker.step(0.0)
        assert (pipe.waiting(), broker.lent, len(broker.tokens.held)) == (0, 0, 1)  # the implicit token stays
    finally:
        broker.stop()
        broker.tokens.close()


def test_with_j1_there_is_nothing_to_lend_and_no_thread(pool: tokens.Pool, pipe: jobserver.Pipe) -> None:
    broker = _broker(pool, pipe, cap=0)
    broker.start()
    try:
        assert not broker._thread.started
        broker.step(0.0)
        assert (pipe.waiting(), broker.lent, broker.peak, broker.cpu_seconds) == (0, 0, 0, 0.0)
    finally:
        broker.stop()
        broker.tokens.close()


# ---- what one build may take -------------------------------------------------------------

def _spec() -> SimpleNamespace:
    return SimpleNamespace(env={}, pass_fds=(99,))


def _take_bytes(spec: SimpleNamespace, n: int) -> int:
    """Cargo's side: block on the jobserver pipe until `n` bytes came."""
    read_fd = jobserver.inherited(spec.env)
    assert read_fd is not None and spec.pass_fds == (99, *read_fd)
    got = 0
    while got < n:
        got += len(os.read(read_fd[0], n - got))
    return got


@pytest.mark.parametrize(("jobs", "lent"), [(3, 2), (9, 2), (2, 1)])
def test_a_build_may_take_its_jobs_at_most_the_pool_less_its_implicit_token(pool: tokens.Pool, jobs: int,
                                                                            lent: int) -> None:
    build = tokens.for_build(pool, nested=False, env={}, wait_timeout=5)
    assert build.peak == 1 and build.tokens is not None and len(build.tokens.held) == 1
    spec = _spec()
    seen: list[int] = []
    threads: list[background.Thread] = []
    pipes: list[int] = []

    def body() -> str:
        _take_bytes(spec, lent)  # the broker lends this many...
        assert build._broker is not None
        while build._broker.lent < lent:  # its thread counts a byte just after writing it
            time.sleep(0.001)
        thread = build._broker._thread
        assert thread.started and thread.alive()
        threads.append(thread)
        pipes.extend(build._broker.pipe.fds)
        for when in (1.0, 2.0):  # ...and never more, however often it polls with the pipe dry
            build._broker.step(when)
        seen.append(build._broker.lent)
        return "done"

    assert build.run(spec, jobs, body) == "done"  # type: ignore[arg-type]
    assert seen == [lent] and build.peak == 1 + lent
    assert spec.pass_fds == (99,) and build._broker is None
    assert build.tokens is not None and len(build.tokens.held) == 1  # lent tokens freed, the implicit one kept
    record = build.record()
    assert (record["tokens_peak"], record["jobserver"]) == (1 + lent, "private")
    assert record["broker_polls"] >= 2 and build.broker_cpu_seconds > 0
    assert not threads[0].alive()  # stopped and joined
    for fd in pipes:  # the pipe is closed
        with pytest.raises(OSError):
            os.fstat(fd)
    build.release()
    assert build.tokens is None


def test_a_build_with_j1_gets_the_pipe_but_no_byte(pool: tokens.Pool) -> None:
    build = tokens.for_build(pool, nested=False, env={}, wait_timeout=5)
    spec = _spec()

    def body() -> int:
        assert build._broker is not None and build._broker.cap == 0
        return jobserver.inherited(spec.env) is not None

    assert build.run(spec, 1, body) == 1  # type: ignore[arg-type]
    assert build.peak == 1
    assert build.record() == {"tokens_peak": 1, "token_wait_seconds": 0.0, "broker_cpu_seconds": 0.0,
                              "broker_polls": 0, "jobserver": "private"}
    build.release()


def test_the_run_record_rounds_the_waits_and_the_brokers_cpu(pool: tokens.Pool) -> None:
    build = tokens.BuildCpu(pool, None, None, 1.23456)
    build.broker_cpu_seconds, build.broker_polls, build.peak = 0.0123456, 7, 3
    assert build.record() == {"tokens_peak": 3, "token_wait_seconds": 1.235, "broker_cpu_seconds": 0.0123,
                              "broker_polls": 7, "jobserver": "private"}


def test_give_back_frees_every_token_while_the_program_runs(pool: tokens.Pool) -> None:
    build = tokens.for_build(pool, nested=False, env={}, wait_timeout=5)
    spec = _spec()
    watcher = tokens.Tokens(pool)

    def body() -> None:
        _take_bytes(spec, 2)
        build.give_back()  # `cargo run`: the program was started
        assert build._broker is None and build.tokens is None
        assert watcher.try_take() and watcher.try_take() and watcher.try_take()  # all three are free

    try:
        build.run(spec, 3, body)  # type: ignore[arg-type]
    finally:
        watcher.close()
    assert build.peak == 3


def test_a_nested_build_takes_no_token_and_joins_the_jobserver_it_inherited(pool: tokens.Pool,
                                                                            pipe: jobserver.Pipe) -> None:
    build = tokens.for_build(pool, nested=True, env={jobserver.MAKEFLAGS_ENV: pipe.makeflags}, wait_timeout=0)
    assert (build.tokens, build.inherited, build.peak, build.waited) == (None, pipe.fds, 0, 0.0)
    spec = _spec()
    assert build.run(spec, 8, lambda: spec.pass_fds) == (99, *pipe.fds)  # type: ignore[arg-type]
    assert spec.pass_fds == (99,) and jobserver.MAKEFLAGS_ENV not in spec.env
    assert build.record()["jobserver"] == "inherited" and build.record()["tokens_peak"] == 0


def test_a_nested_build_without_a_jobserver_lends_free_tokens_on_its_parents_token(pool: tokens.Pool) -> None:
    build = tokens.for_build(pool, nested=True, env={}, wait_timeout=0)
    assert (build.tokens, build.inherited, build.peak) == (None, None, 0)
    spec = _spec()

    def body() -> int:
        return _take_bytes(spec, 2)

    assert build.run(spec, 3, body) == 2  # type: ignore[arg-type]
    assert build.peak == 2 and build.tokens is not None and build.tokens.held == []
    build.release()
