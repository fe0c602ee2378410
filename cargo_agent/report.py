"""The run log: one JSON line per run in `<lock dir>/runs.jsonl`, size-bounded (rotated to
`runs.jsonl.1`), and the optional one-line summary on stderr."""

from __future__ import annotations

import json
import os
from pathlib import Path

MAX_LOG_BYTES = 1 << 20


def append(lock_dir: Path, record: dict[str, object], shared: bool) -> None:
    from filelock import FileLock, Timeout

    log = lock_dir / "runs.jsonl"
    line = json.dumps(record, separators=(",", ":")) + "\n"
    try:
        # filelock serialises rotation; appends of one short line are atomic on their own.
        with FileLock(str(lock_dir / "runs.lock"), timeout=2, mode=0o660 if shared else 0o600):
            try:
                if log.stat().st_size + len(line) > MAX_LOG_BYTES:
                    os.replace(log, lock_dir / "runs.jsonl.1")
            except FileNotFoundError:
                pass
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o660 if shared else 0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write(line)
    except (Timeout, OSError):
        pass  # the log is a convenience; never fail a build over it


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
