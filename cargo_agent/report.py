"""The run log: one JSON line per run in `<lock dir>/runs.jsonl`, size-bounded (rotated to
`runs.jsonl.1`), and the optional one-line summary on stderr."""

from __future__ import annotations

import json
import os
from pathlib import Path

MAX_LOG_BYTES = 1 << 20


def append(lock_dir: Path, record: dict[str, object], shared: bool) -> None:
    """Append one record; rotation is serialised by a kernel lock on `runs.lock`. (fcntl, not
    filelock: this runs after every build, and importing filelock costs more than the rest.)"""
    import fcntl

    log = lock_dir / "runs.jsonl"
    line = json.dumps(record, separators=(",", ":")) + "\n"
    mode = 0o660 if shared else 0o600
    from cargo_agent.slots import LOCK_FLAGS, open_shared

    try:
        guard = open_shared(lock_dir / "runs.lock", LOCK_FLAGS, mode)
    except OSError:
        return  # the log is a convenience; never fail a build over it
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            if log.stat().st_size + len(line) > MAX_LOG_BYTES:
                os.replace(log, lock_dir / "runs.jsonl.1")
        except FileNotFoundError:
            pass
        fd = open_shared(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
        with os.fdopen(fd, "a") as handle:
            handle.write(line)
    except OSError:
        pass
    finally:
        os.close(guard)


def recent(lock_dir: Path, count: int = 10) -> list[dict[str, object]]:
    try:
        lines = (lock_dir / "runs.jsonl").read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines[-count:]:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def summary(record: dict[str, object]) -> str:
    rss = int(str(record.get("peak_rss", 0))) / (1 << 20)
    return (f"cargo-agent: exit {record.get('exit_code')} in {record.get('wall_seconds')}s "
            f"(waited {record.get('slot_wait_seconds')}s for slot {record.get('slot')}, "
            f"peak RSS {rss:.0f} MiB, {record.get('retries')} retries)")
