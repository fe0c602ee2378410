"""The run log: one JSON line per run in `<lock dir>/runs.jsonl`, size-bounded (rotated to
`runs.jsonl.1`), typed records read back from it, and the optional one-line summary on stderr."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cargo_agent import lockdir
from cargo_agent.errors import UsageError

MAX_LOG_BYTES = 1 << 20
LOG_LOCK_SECONDS = 5.0  # appending takes microseconds; a lock held longer is not a writer's


class RunRecord:
    """One line of the run log. Any line may be damaged or planted: a field of the wrong type
    reads as missing, and a line that is not a JSON object is skipped."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, object]) -> None:
        self.data = data

    def number(self, key: str) -> float | None:
        """A finite number (1e400 and NaN are valid JSON, and read as missing)."""
        import math

        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            return None
        return number if math.isfinite(number) else None

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        return value if isinstance(value, str) else None

    @property
    def command(self) -> list[str]:
        value = self.data.get("command")
        return [w for w in value if isinstance(w, str)] if isinstance(value, list) else []

    @property
    def shown_command(self) -> str:
        """The command line for a terminal, control characters escaped (it may be another user's)."""
        return lockdir.printable(" ".join(self.command))

    @property
    def exit_code(self) -> int | None:
        value = self.number("exit_code")
        return int(value) if value is not None else None


def append(lock_dir: Path, record: dict[str, object], shared: bool) -> None:
    """Append one record; rotation is serialised by a kernel lock on `runs.lock`. (fcntl, not
    filelock: this runs after every build, and importing filelock costs more than the rest.)
    The log is a convenience: a build never fails over it."""
    log = lock_dir / "runs.jsonl"
    line = json.dumps(record, separators=(",", ":")) + "\n"
    try:
        guard = lockdir.open_lock(lock_dir / "runs.lock", shared)
    except (OSError, UsageError):
        return
    try:
        if not lockdir.lock_within(guard, LOG_LOCK_SECONDS):  # held for good by someone: skip
            return
        try:
            if os.stat(log, follow_symlinks=False).st_size + len(line) > MAX_LOG_BYTES:
                lockdir.rename(log, "runs.jsonl.1")
        except FileNotFoundError:
            pass
        lockdir.append(log, line.encode(), shared)
    except (OSError, UsageError):
        pass
    finally:
        os.close(guard)


def recent(lock_dir: Path, count: int = 10) -> list[RunRecord]:
    return read_log(lock_dir)[0][-count:]


def read_log(lock_dir: Path) -> tuple[list[RunRecord], int]:
    """The records of the run log, and how many lines were skipped as malformed (not JSON, or
    JSON that is not an object: `[1,2]`, `42`); an unusable log reads as empty."""
    try:
        text = lockdir.read_text(lock_dir / "runs.jsonl")
    except UsageError:
        return [], 0
    records, malformed = [], 0
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            records.append(RunRecord(data))
        else:
            malformed += 1
    return records, malformed


def summary(record: dict[str, object]) -> str:
    rss = int(str(record.get("peak_rss", 0))) / (1 << 20)
    return (f"cargo-agent: exit {record.get('exit_code')} in {record.get('wall_seconds')}s "
            f"(waited {record.get('slot_wait_seconds')}s for slot {record.get('slot')}, "
            f"peak RSS {rss:.0f} MiB, {record.get('retries')} retries"
            + (f", peak {record['tokens_peak']} CPU tokens" if "tokens_peak" in record else "") + ")")
