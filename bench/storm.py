"""A harness for CPU and memory benches over real builds: K concurrent clean builds of copies of a
workspace (each copy with its own target dir, as separate agent checkouts have), under a command
prefix (bare `cargo`, or `cargo-agent` with its env), and a lone clean build.

What one run measures:
- makespan: first launch to last exit, plus each build's own wall time and exit code;
- peak host memory: MemTotal - MemAvailable from /proc/meminfo every 100 ms, also above the level
  just before launch (the host is shared, so that figure includes other people's work);
- peak build-tree RSS: the sum of VmRSS over every process descended from the launched builds,
  every 100 ms (only ours; RSS double-counts shared pages, so it over-states a little);
- peak concurrent jobs: processes in those trees whose comm is `rustc` or `build-script-*`,
  sampled every 50 ms, as a total and per kind.

Processes that leave their tree (reparented to init after their parent died) are no longer seen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_ARGS = ("build", "--offline", "--tests")  # libraries, binaries and test binaries: many links
JOB_INTERVAL = 0.05
MEMORY_EVERY = 2  # memory is read on every 2nd job sample: every 100 ms
_PAGE = os.sysconf("SC_PAGE_SIZE")


def host_used_bytes() -> int:
    """MemTotal - MemAvailable."""
    total = available = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
            elif line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    return total - available


def _processes() -> dict[int, tuple[str, str, int]]:
    """{pid: (comm, state, ppid)} for every process, from /proc/PID/stat."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError:  # gone since listdir
            continue
        close = raw.rfind(")")  # comm may hold spaces and parentheses
        fields = raw[close + 2:].split()
        table[int(name)] = (raw[raw.find("(") + 1:close], fields[0], int(fields[1]))
    return table


def tree(roots: Iterable[int], table: Mapping[int, tuple[str, str, int]]) -> set[int]:
    """The roots (those still alive) and all their descendants in `table`."""
    children: dict[int, list[int]] = {}
    for pid, (_, _, ppid) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def job_kind(comm: str) -> str | None:
    """'rustc', 'build-script' or None. comm is cut at 15 bytes: `build-script-build` reads
    `build-script-bu`."""
    if comm == "rustc":
        return "rustc"
    if comm.startswith("build-script-"):
        return "build-script"
    return None


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class Sampler:
    """Samples the build trees under `roots` (a list the caller may append to) on a thread."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.peak_jobs = 0
        self.peak = {"rustc": 0, "build-script": 0}
        self.peak_tree_rss = 0
        self.baseline_used = host_used_bytes()
        self.peak_used = self.baseline_used
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storm-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        table = _processes()
        pids = tree(list(self.roots), table)
        counts = {"rustc": 0, "build-script": 0}
        for pid in pids:
            comm, state, _ = table[pid]
            kind = job_kind(comm)
            if kind and state != "Z":
                counts[kind] += 1
        self.peak_jobs = max(self.peak_jobs, sum(counts.values()))
        for kind, count in counts.items():
            self.peak[kind] = max(self.peak[kind], count)
        if self.samples % MEMORY_EVERY == 0:
            self.peak_used = max(self.peak_used, host_used_bytes())
            self.peak_tree_rss = max(self.peak_tree_rss, sum(_rss(pid) for pid in pids))
        self.samples += 1

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(JOB_INTERVAL):
                return

    def result(self) -> dict[str, Any]:
        return {"peak_jobs": self.peak_jobs, "peak_rustc": self.peak["rustc"],
                "peak_build_scripts": self.peak["build-script"], "peak_tree_rss_bytes": self.peak_tree_rss,
                "peak_host_used_bytes": self.peak_used, "baseline_host_used_bytes": self.baseline_used,
                "peak_host_above_baseline_bytes": self.peak_used - self.baseline_used, "samples": self.samples}


def copy_workspace(template: Path, dest: Path) -> Path:
    """A fresh copy of the workspace (sources, config and lock file; never a target dir)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns("target"), symlinks=True)
    return dest


def storm(template: Path, work: Path, k: int, prefix: Sequence[str], env: Mapping[str, str],
          cargo_args: Sequence[str] = DEFAULT_ARGS, label: str = "storm", keep: bool = False) -> dict[str, Any]:
    """K concurrent clean builds `prefix + cargo_args`, one per fresh copy of `template` under
    `work`, each with its own target dir. Output of build i goes to work/<label>-<i>.log."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    copies = [copy_workspace(template, work / f"{label}-{i}") for i in range(k)]
    command = [*prefix, *cargo_args]
    roots: list[int] = []
    procs: list[subprocess.Popen[bytes]] = []
    walls: list[float] = [0.0] * k
    logs = [work / f"{label}-{i}.log" for i in range(k)]
    with Sampler(roots) as sampler:
        start = time.perf_counter()
        try:
            for copy, log in zip(copies, logs, strict=True):
                with open(log, "wb") as out:
                    proc = subprocess.Popen(command, cwd=copy, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT,
                                            env={**env, "CARGO_TARGET_DIR": str(copy / "target")})
                procs.append(proc)
                roots.append(proc.pid)
            pending = dict(enumerate(procs))
            while pending:  # each build's own wall time, to 10 ms
                for i, proc in list(pending.items()):
                    if proc.poll() is not None:
                        walls[i] = time.perf_counter() - start
                        del pending[i]
                time.sleep(0.01)
        except BaseException:  # Ctrl-C or a failed launch: leave no build behind
            _stop(procs, copies)
            raise
        makespan = time.perf_counter() - start
    codes = [p.returncode for p in procs]
    result: dict[str, Any] = {"k": k, "command": command, "makespan_seconds": makespan, "wall_seconds": walls,
                              "exit_codes": codes, **sampler.result()}
    failed = [i for i, code in enumerate(codes) if code != 0]
    if failed:
        result["first_failure"] = _first_error(logs[failed[0]])
    if not keep:
        for copy in copies:
            shutil.rmtree(copy, ignore_errors=True)
    return result


def lone_build(template: Path, work: Path, prefix: Sequence[str], env: Mapping[str, str],
               cargo_args: Sequence[str] = DEFAULT_ARGS, label: str = "lone") -> dict[str, Any]:
    """One clean build: `wall_seconds` is a number here, with the same peaks as a storm."""
    result = storm(template, work, 1, prefix, env, cargo_args, label)
    result["wall_seconds"] = result["wall_seconds"][0]
    return result


def _stop(procs: Sequence[subprocess.Popen[bytes]], copies: Sequence[Path]) -> None:
    """SIGTERM every build we started, then SIGKILL what is left after 30 s. A build whose Popen
    was interrupted before it returned is found as our child running in one of the copies."""
    import signal

    pids = {p.pid for p in procs if p.poll() is None}
    places = {str(c) for c in copies}
    for pid, (_, state, ppid) in _processes().items():
        if ppid == os.getpid() and state != "Z" and pid not in {p.pid for p in procs}:
            try:
                if os.readlink(f"/proc/{pid}/cwd") in places:
                    pids.add(pid)
            except OSError:
                continue
    deadline = time.monotonic() + 30
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        while pids and (sig == signal.SIGKILL or time.monotonic() < deadline):
            for pid in list(pids):
                proc = next((p for p in procs if p.pid == pid), None)
                try:
                    done = proc.poll() is not None if proc else os.waitpid(pid, os.WNOHANG)[0] == pid
                except ChildProcessError:
                    done = True
                if done:
                    pids.discard(pid)
            time.sleep(0.05)


def _first_error(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()
    return next((line for line in lines if line.startswith("error")), lines[-1] if lines else "no output")
