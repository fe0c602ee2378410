"""The run log and the link log: one JSON line per build in `<lock dir>/runs.jsonl` and one per
link in `<lock dir>/links.jsonl`, each size-bounded (rotated to `<name>.1`); typed records read
back from them; the peak-memory predictions learned from them; and the one-line run summary.

Learning: every build records the peak memory of its whole process tree (`peak_rss`: the
highest sampled sum of RSS over the tree, or the kernel's exit accounting of the largest
waited-for process where that is higher, as on runs too short to sample) under a key of
workspace, subcommand, profile and package set. A command's predicted peak is the highest
peak among the last PREDICTION_RUNS runs with the same key; a command never seen before is
predicted at `per_build_memory`. The link gate records each link's peak the same way. Auto
slots use the median recent build peak, link slots the highest recent link peak.
"""

from __future__ import annotations

import os

from cargo_agent import jsontext, lockdir
from cargo_agent.errors import UsageError

TYPE_CHECKING = False  # collections.abc only for the checker: this module is on the compiling path
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

MAX_LOG_BYTES = 1 << 20
LOG_LOCK_SECONDS = 5.0  # appending takes microseconds; a lock held longer is not a writer's
RUNS = "runs.jsonl"
LINKS = "links.jsonl"
PREDICTION_RUNS = 5  # a key's prediction: the highest of its last runs
LEARNED_RUNS = 50  # auto slots and link slots: the highest peak among the last runs of any key
SOURCE_SAMPLED = "sampled build tree"
SOURCE_KERNEL = "kernel accounting of the largest process"


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

    @property
    def peak(self) -> int | None:
        """The recorded peak memory in bytes, if it is a plausible number."""
        value = self.number("peak_rss")
        return int(value) if value is not None and 0 < value < 1 << 62 else None


def append(lock_dir: str | os.PathLike[str], record: Mapping[str, object], shared: bool, name: str = RUNS) -> None:
    """Append one record; rotation is serialised by a kernel lock on `runs.lock`. (fcntl, not
    filelock: this runs after every build, and importing filelock costs more than the rest.)
    The log is a convenience: a build never fails over it."""
    log = os.path.join(lock_dir, name)
    line = jsontext.dumps(record, compact=True) + "\n"
    try:
        guard = lockdir.open_lock(os.path.join(lock_dir, "runs.lock"), shared)
    except (OSError, UsageError):
        return
    try:
        if not lockdir.lock_within(guard, LOG_LOCK_SECONDS):  # held for good by someone: skip
            return
        try:
            if os.stat(log, follow_symlinks=False).st_size + len(line) > MAX_LOG_BYTES:
                lockdir.rename(log, f"{name}.1")
        except FileNotFoundError:
            pass
        lockdir.append(log, line.encode(), shared)
    except (OSError, UsageError):
        pass
    finally:
        os.close(guard)


def _newest_first(lock_dir: str | os.PathLike[str], name: str) -> Iterator[str]:
    """The log's non-empty lines, newest first, read from the end (the rotated half after the
    current one, and only if reached): builds read the log on every run, and it grows to 2 MiB.
    A half that cannot be read safely is skipped, as `_lines` skips it."""
    for file_name in (name, f"{name}.1"):
        try:
            for line in lockdir.lines_from_end(os.path.join(lock_dir, file_name)):
                if line.strip():
                    yield line
        except UsageError:
            continue


def recent(lock_dir: str | os.PathLike[str], count: int = 10, name: str = RUNS) -> list[RunRecord]:
    """The last `count` records among the last 2 * count lines (malformed ones count against
    it), oldest first; parsed newest first, so no more lines are parsed than needed."""
    found: list[RunRecord] = []
    for seen, line in enumerate(_newest_first(lock_dir, name), 1):
        found += _parse([line])[0]
        if len(found) >= count or seen >= 2 * count:
            break
    return found[::-1]


def _lines(lock_dir: str | os.PathLike[str], name: str) -> list[str]:
    """The log's lines, the rotated older half first; a log that cannot be read safely is empty."""
    lines: list[str] = []
    for file_name in (f"{name}.1", name):
        try:
            lines += (lockdir.read_text(os.path.join(lock_dir, file_name)) or "").splitlines()
        except UsageError:
            continue
    return lines


def _parse(lines: Sequence[str]) -> tuple[list[RunRecord], int]:
    records, malformed = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            data = jsontext.loads(line)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            records.append(RunRecord(data))
        else:
            malformed += 1
    return records, malformed


def read_log(lock_dir: str | os.PathLike[str], name: str = RUNS) -> tuple[list[RunRecord], int]:
    """The records of a log (its rotated half first), and how many lines were skipped as
    malformed (not JSON, or JSON that is not an object: `[1,2]`, `42`); an unusable log reads
    as empty."""
    return _parse(_lines(lock_dir, name))


# ---- learned peaks -------------------------------------------------------------------

def command_key(workspace: str | None, subcommand: str | None, options: Sequence[tuple[str, str | None]]
                ) -> dict[str, object]:
    """What makes two commands alike for memory: workspace, subcommand, profile, package set.
    `options` are the (canonical name, value) pairs of the command's options."""
    profile = "default"
    packages: list[str] = []
    for name, value in options:
        if name == "--profile" and value:
            profile = value
        elif name == "--release" and profile == "default":
            profile = "release"
        elif name == "--package" and value:
            packages.append(value)
        elif name in ("--workspace", "--all"):
            packages.append("--workspace")
        elif name == "--exclude" and value:
            packages.append(f"!{value}")
    return {"workspace": workspace or "", "subcommand": subcommand or "", "profile": profile,
            "packages": sorted(set(packages))}


def _same_key(record: RunRecord, key: Mapping[str, object]) -> bool:
    stored = record.data.get("key")
    return isinstance(stored, dict) and all(stored.get(k) == v for k, v in key.items())


class Prediction:
    __slots__ = ("peak", "runs", "source")

    def __init__(self, peak: int, source: str, runs: int = 0) -> None:
        self.peak, self.source, self.runs = peak, source, runs

    def as_json(self) -> dict[str, object]:
        return {"peak": self.peak, "source": self.source, "runs": self.runs}


def predict(lock_dir: str | os.PathLike[str], key: Mapping[str, object], default: int) -> Prediction:
    """The highest peak among the last PREDICTION_RUNS runs with this key, else `default`."""
    # Newest first, parsing only lines that name the workspace and subcommand, until enough runs.
    needles = [jsontext.dumps(key.get(field, "")) for field in ("workspace", "subcommand")]
    recent_peaks: list[int] = []
    for line in _newest_first(lock_dir, RUNS):
        if len(recent_peaks) >= PREDICTION_RUNS:
            break
        if not all(needle in line for needle in needles):
            continue
        for record in _parse([line])[0]:
            if _same_key(record, key) and record.peak and not record.data.get("nested"):
                recent_peaks.append(record.peak)
    if not recent_peaks:
        return Prediction(default, "per_build_memory (no history for this command)")
    return Prediction(max(recent_peaks), f"history: highest peak of the last {len(recent_peaks)} runs "
                      "of this command", len(recent_peaks))


def learned_peak(lock_dir: str | os.PathLike[str], name: str = RUNS, typical: bool = False) -> int | None:
    """Among the last LEARNED_RUNS records of a log: the highest peak, or with `typical` the
    median one (None without any). Auto slots size for a typical build (admission sees to
    the big ones); link slots for the biggest link (a link cannot be held back once started)."""
    peaks = sorted(p for p in (r.peak for r in recent(lock_dir, LEARNED_RUNS, name) if not r.data.get("nested"))
                   if p is not None)
    if not peaks:
        return None
    return peaks[len(peaks) // 2] if typical else peaks[-1]


# ---- the summary ---------------------------------------------------------------------

def mib(value: object) -> str:
    return f"{int(value) / (1 << 20):.0f} MiB" if isinstance(value, (int, float)) else "?"


def summary(record: Mapping[str, object]) -> str:
    predicted = record.get("predicted_peak")
    memory = f"peak memory {mib(record.get('peak_rss', 0))} ({record.get('peak_source', 'unknown source')}"
    memory += f"; predicted {mib(predicted)})" if isinstance(predicted, (int, float)) else ")"
    return (f"cargo-agent: exit {record.get('exit_code')} in {record.get('wall_seconds')}s "
            f"(waited {record.get('slot_wait_seconds')}s for slot {record.get('slot')}, "
            f"{memory}, {record.get('retries')} retries"
            + (f", peak {record['tokens_peak']} CPU tokens" if "tokens_peak" in record else "") + ")")
