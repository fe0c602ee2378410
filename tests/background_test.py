"""background: Stop and Thread hold what threading.Event and threading.Thread promise, with
several threads at once."""

from __future__ import annotations

import _thread

import pytest

from cargo_agent import background


def _hammer(stop: background.Stop, until: background.Stop) -> None:
    """Two other threads waiting on `stop` meanwhile (a joiner with a timeout), until `until`."""
    running = [background.Stop(), background.Stop()]

    def waiter(me: background.Stop) -> None:
        me.set()
        while not until.wait(0):
            stop.wait(1)

    for me in running:
        _thread.start_new_thread(waiter, (me,))
    assert all(me.wait(10) for me in running)


def test_a_set_stop_is_seen_set_while_other_threads_wait_on_it() -> None:
    stop, done = background.Stop(), background.Stop()
    stop.set()
    _hammer(stop, done)
    try:
        assert all(stop.wait(0) for _ in range(20_000))
    finally:
        done.set()


def test_a_finished_thread_is_not_alive_while_another_thread_joins_it() -> None:
    thread, done = background.Thread(lambda: None), background.Stop()
    thread.start()
    assert thread.join(10)
    _hammer(thread._done, done)
    try:
        assert not any(thread.alive() for _ in range(20_000))
    finally:
        done.set()


def test_a_thread_that_could_not_start_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """start_new_thread fails when the user's process limit is reached: join must not hang."""
    def refuse(*_args: object) -> int:
        raise RuntimeError("can't start new thread")

    thread = background.Thread(lambda: None)
    monkeypatch.setattr(_thread, "start_new_thread", refuse)
    with pytest.raises(RuntimeError):
        thread.start()
    assert thread.join(0) and not thread.alive()
