"""Benchmarks: `python -m bench [--quick]`. Every figure is a median with spread (p10..p90) over
several runs, printed beside a baseline measured in the same run, and written to
bench/results.json. Not tests: nothing here asserts a time."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "demo-workspace"
FAKE = REPO / "tests" / "fakes" / "cargo"


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"median": statistics.median(ordered), "p10": pick(0.1), "p90": pick(0.9), "p99": pick(0.99),
            "n": len(ordered)}


def timed(command: list[str], runs: int, env: dict[str, str], cwd: Path = DEMO) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        samples.append(time.perf_counter() - start)
    return summary(samples)


def make_venv(work: Path) -> Path:
    """A fresh venv with a regular (non-editable) install, as users get from `pip install .`."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(REPO)], check=True)
    return venv


def base_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_AGENT_")}
    env["CARGO_AGENT_LOCK_DIR"] = str(work / "locks")
    env["CARGO_AGENT_MEM_KILL"] = "off"
    return env


def passthrough(runs: int, env: dict[str, str], venv: Path, work: Path) -> dict[str, Any]:
    cargo = shutil.which("cargo") or "cargo"
    agent = str(venv / "bin" / "cargo-agent")
    floor = [str(venv / "bin" / "python"), "-c", f"import os; os.execv({cargo!r}, [{cargo!r}, 'version'])"]
    shim_dir = work / "shim"
    subprocess.run([agent, "--install-shim", str(shim_dir)], check=True, stdout=subprocess.DEVNULL)
    shim_env = {**env, "PATH": f"{shim_dir}:{venv / 'bin'}:{env['PATH']}"}
    results: dict[str, Any] = {}
    for name, sub in (("version", ["version"]), ("metadata --no-deps", ["metadata", "--no-deps"])):
        rows = {"bare cargo": timed([cargo, *sub], runs, env)}
        if name == "version":
            rows["floor: venv python that only execs cargo"] = timed(floor, runs, env)
        rows["cargo-agent (venv)"] = timed([agent, *sub], runs, env)
        rows["shims/cargo"] = timed([str(shim_dir / "cargo"), *sub], runs, shim_env)
        bare = rows["bare cargo"]["median"]
        results[name] = {k: {**v, "ratio": v["median"] / bare} for k, v in rows.items()}
    subprocess.run([agent, "check", "-p", "alpha", "-q"], cwd=DEMO, env=env, check=False)
    check_runs = max(5, runs // 2)
    rows = {"bare cargo": timed([cargo, "check", "-p", "alpha", "-q"], check_runs, env),
            "cargo-agent (venv)": timed([agent, "check", "-p", "alpha", "-q"], check_runs, env)}
    bare = rows["bare cargo"]["median"]
    results["no-op check -p alpha"] = {k: {**v, "ratio": v["median"] / bare} for k, v in rows.items()}
    return results


def import_breakdown(venv: Path) -> dict[str, int]:
    """Self import time (us) of the modules `cargo-agent version` loads, largest first."""
    # From the demo dir: run from the repo, `import cargo_agent` would find the source tree instead.
    out = subprocess.run([str(venv / "bin" / "python"), "-X", "importtime", "-c", "import cargo_agent.cli"],
                         capture_output=True, text=True, cwd=DEMO).stderr
    costs: dict[str, int] = {}
    for line in out.splitlines()[1:]:
        parts = line.split("|")
        if len(parts) == 3 and parts[0].split(":")[-1].strip().isdigit():
            costs[parts[2].strip()] = int(parts[0].split(":")[-1])
    return dict(sorted(costs.items(), key=lambda kv: -kv[1])[:12])


BASELINE = r"""
import fcntl, json, os, sys, time
path, log, hold, queued = sys.argv[1], sys.argv[2], float(sys.argv[3]), time.time()
fd = os.open(path, os.O_RDWR | os.O_CREAT)
while True:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); break
    except BlockingIOError:
        time.sleep(0.1)
admitted = time.time()
time.sleep(hold)
released = time.time()
os.close(fd)
with open(log, "a") as f:
    f.write(json.dumps({"queued_at": queued, "admitted_at": admitted, "released_at": released}) + "\n")
"""


def _records(log: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _handoffs(records: list[dict[str, float]], slots: int) -> tuple[list[float], bool]:
    """Release -> next admission gaps where someone was waiting, and whether admission was FIFO."""
    by_admission = sorted(records, key=lambda r: r["admitted_at"])
    fifo = [r["queued_at"] for r in by_admission] == sorted(r["queued_at"] for r in records)
    releases = sorted(r["released_at"] for r in records)
    gaps = []
    for record in by_admission[slots:]:
        before = [t for t in releases if t <= record["admitted_at"]]
        if before and record["queued_at"] < before[-1]:
            gaps.append(record["admitted_at"] - before[-1])
    return gaps, fifo


def _launch(count: int, command: list[str], env: dict[str, str], gap: float, per_job: list[str] | None = None,
            ) -> None:
    procs = []
    for index in range(count):
        extra = {"FAKE_SLEEP": per_job[index]} if per_job else {}
        procs.append(subprocess.Popen(command, cwd=DEMO, env={**env, **extra}, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        time.sleep(gap)
    for proc in procs:
        proc.wait()


def handoff(count: int, env: dict[str, str], venv: Path, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    agent_env = {**env, "CARGO_AGENT_CARGO": str(FAKE), "CARGO_AGENT_SLOTS": "1", "FAKE_SLEEP": "0.3",
                 "CARGO_AGENT_LOCK_DIR": str(work / "handoff-locks")}
    _launch(count, [str(venv / "bin" / "cargo-agent"), "build", "-p", "alpha"], agent_env, 0.05)
    gaps, fifo = _handoffs(_records(work / "handoff-locks" / "runs.jsonl"), 1)
    results["cargo-agent"] = {**summary(gaps), "fifo": fifo}
    log = work / "baseline.jsonl"
    _launch(count, [sys.executable, "-c", BASELINE, str(work / "baseline.lock"), str(log), "0.3"], env, 0.05)
    gaps, fifo = _handoffs(_records(log), 1)
    results["100 ms polling flock"] = {**summary(gaps), "fifo": fifo}
    return results


def makespan(env: dict[str, str], venv: Path, work: Path, slots: int = 2) -> dict[str, Any]:
    """16 jobs of known, varied length on N slots: wall time from the first queue entry to the last
    release, against the ideal max(sum / N, longest job)."""
    durations = [0.2, 0.9, 0.4, 0.6, 0.3, 1.0, 0.5, 0.7, 0.2, 0.8, 0.4, 0.6, 0.3, 0.5, 0.9, 0.7]
    lock_dir = work / "makespan-locks"
    sleeper = work / "sleeper"  # a job of exactly known length: no interpreter start-up inside it
    sleeper.write_text('#!/bin/sh\nexec sleep "$FAKE_SLEEP"\n')
    sleeper.chmod(0o755)
    run_env = {**env, "CARGO_AGENT_CARGO": str(sleeper), "CARGO_AGENT_SLOTS": str(slots),
               "CARGO_AGENT_LOCK_DIR": str(lock_dir)}
    _launch(len(durations), [str(venv / "bin" / "cargo-agent"), "build", "-p", "alpha"], run_env, 0.02,
            [str(d) for d in durations])
    records = _records(lock_dir / "runs.jsonl")
    span = max(r["released_at"] for r in records) - min(r["queued_at"] for r in records)
    ideal = max(sum(durations) / slots, max(durations))
    held = [r["released_at"] - r["admitted_at"] for r in records]
    return {"makespan": span, "ideal": ideal, "ratio": span / ideal,
            "overhead_per_job": statistics.median(h - d for h, d in zip(sorted(held), sorted(durations), strict=True))}


def _generate_workspace(root: Path, crates: int) -> None:
    (root / "Cargo.toml").parent.mkdir(parents=True, exist_ok=True)
    members = ", ".join(f'"c{i}"' for i in range(crates))
    (root / "Cargo.toml").write_text(f'[workspace]\nresolver = "2"\nmembers = [{members}]\n')
    for i in range(crates):
        src = root / f"c{i}" / "src"
        src.mkdir(parents=True, exist_ok=True)
        (root / f"c{i}" / "Cargo.toml").write_text(
            f'[package]\nname = "c{i}"\nversion = "0.1.0"\nedition = "2021"\n')
        body = [f"pub fn f{j}<T: Clone + std::fmt::Debug>(x: T) -> Vec<T> {{ vec![x.clone(); {j % 7 + 1}] }}"
                for j in range(300)]
        tests = [f"#[test] fn t{j}() {{ assert_eq!(f{j}({j}u64).len(), {j % 7 + 1}); }}" for j in range(300)]
        (src / "lib.rs").write_text("\n".join(body) + "\n#[cfg(test)]\nmod tests {\nuse super::*;\n"
                                    + "\n".join(tests) + "\n}\n")


def _sample_memory(stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        used = (int(fields["MemTotal"].split()[0]) - int(fields["MemAvailable"].split()[0])) * 1024
        peak[0] = max(peak[0], used)
        time.sleep(0.05)


def build_storm(env: dict[str, str], venv: Path, work: Path, crates: int) -> dict[str, Any]:
    """`crates` concurrent `test -p` runs, each in its own target dir (as separate agent
    checkouts would be), with and without cargo-agent: peak host memory and wall time."""
    root = work / "storm"
    _generate_workspace(root, crates)
    results: dict[str, Any] = {}
    for name, program in (("bare cargo", [shutil.which("cargo") or "cargo"]),
                          ("cargo-agent", [str(venv / "bin" / "cargo-agent")])):
        stop, peak = threading.Event(), [0]
        sampler = threading.Thread(target=_sample_memory, args=(stop, peak), daemon=True)
        sampler.start()
        start = time.perf_counter()
        procs = [subprocess.Popen([*program, "test", "-q", "-p", f"c{i}"], cwd=root,
                                  env={**env, "CARGO_TARGET_DIR": str(work / f"storm-target-{name[:4]}-{i}"),
                                       "CARGO_AGENT_LOCK_DIR": str(work / "storm-locks")},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(crates)]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
        results[name] = {"wall_seconds": wall, "peak_host_memory_bytes": peak[0], "exit_codes": codes}
    return results


def wrapper_rss(env: dict[str, str], venv: Path, work: Path) -> int:
    run_env = {**env, "CARGO_AGENT_CARGO": str(FAKE), "FAKE_SLEEP": "2", "FAKE_PIDFILE": str(work / "rss.pid")}
    proc = subprocess.Popen([str(venv / "bin" / "cargo-agent"), "build", "-p", "alpha"], cwd=DEMO, env=run_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (work / "rss.pid").exists():
        time.sleep(0.05)
    time.sleep(0.8)  # past the first process-tree sample, which loads psutil
    status = Path(f"/proc/{proc.pid}/status").read_text()
    proc.wait()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) * 1024


def main() -> None:
    quick = "--quick" in sys.argv
    runs = 10 if quick else 30
    work = Path(tempfile.mkdtemp(prefix="cargo-agent-bench-"))
    try:
        venv = make_venv(work)
        env = base_env(work)
        results: dict[str, Any] = {
            "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")},
            "mode": "quick" if quick else "full",
            "passthrough": passthrough(runs, env, venv, work),
            "imports_us": import_breakdown(venv),
            "handoff": handoff(8 if quick else 16, env, venv, work),
            "makespan": makespan(env, venv, work),
            "wrapper_rss_bytes": wrapper_rss(env, venv, work),
        }
        results["build_storm"] = build_storm(env, venv, work, 3 if quick else 6)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (REPO / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    for group, rows in results["passthrough"].items():
        print(f"\n{group}")
        for name, row in rows.items():
            print(f"  {name:42s} median {row['median'] * 1000:7.1f} ms  (p10 {row['p10'] * 1000:.1f}, "
                  f"p90 {row['p90'] * 1000:.1f})  {row['ratio']:.2f}x")
    print("\nslot handoff: release -> next admission, with a waiter queued")
    for name, row in results["handoff"].items():
        print(f"  {name:42s} p50 {row['median'] * 1000:7.1f} ms  p99 {row['p99'] * 1000:7.1f} ms  "
              f"FIFO {row['fifo']}  (n={row['n']})")
    m = results["makespan"]
    print(f"\nmakespan of 16 jobs on 2 slots: {m['makespan']:.2f} s vs ideal {m['ideal']:.2f} s = {m['ratio']:.3f}x "
          f"(median per-job overhead {m['overhead_per_job'] * 1000:.0f} ms)")
    print("\nbuild storm (concurrent test -p, one target dir each)")
    for name, row in results["build_storm"].items():
        print(f"  {name:42s} wall {row['wall_seconds']:6.1f} s  peak host memory "
              f"{row['peak_host_memory_bytes'] / (1 << 30):.2f} GiB  exits {row['exit_codes']}")
    print(f"\nwrapper RSS while holding a slot: {results['wrapper_rss_bytes'] / (1 << 20):.1f} MiB")
    print("imports of `cargo-agent version` (us, self):", results["imports_us"])


if __name__ == "__main__":
    main()
