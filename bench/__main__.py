"""Benchmarks: `python -m bench [--quick]`. Figures are medians with spread (p10..p90),
printed as ratios against baselines measured in the same run, and written to
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "demo-workspace"
FAKE = REPO / "tests" / "fakes" / "cargo"


def timed(command: list[str], runs: int, env: dict[str, str], cwd: Path = DEMO) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        samples.append(time.perf_counter() - start)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"median": statistics.median(ordered), "p10": pick(0.1), "p90": pick(0.9),
            "p99": pick(0.99), "n": len(ordered)}


def passthrough(runs: int, env: dict[str, str], lock_dir: Path) -> dict[str, object]:
    cargo = shutil.which("cargo") or "cargo"
    agent = [sys.executable, "-m", "cargo_agent"]
    floor = [sys.executable, "-S", "-c", f"import os; os.execv({cargo!r}, [{cargo!r}, 'version'])"]
    shim_dir = Path(tempfile.mkdtemp())
    subprocess.run([*agent, "--install-shim", str(shim_dir)], check=True, stdout=subprocess.DEVNULL)
    shim_env = {**env, "PATH": f"{shim_dir}:{env['PATH']}"}
    results: dict[str, object] = {}
    for name, sub in (("version", ["version"]), ("metadata --no-deps", ["metadata", "--no-deps", "-q"])):
        bare = summary(timed([cargo, *sub], runs, env))
        rows = {"bare cargo": bare,
                "cargo-agent": summary(timed([*agent, *sub], runs, env)),
                "shims/cargo": summary(timed([str(shim_dir / "cargo"), *sub], runs, shim_env))}
        if name == "version":
            rows["floor (python exec only)"] = summary(timed(floor, runs, env))
        results[name] = {k: {**v, "ratio": v["median"] / bare["median"]} for k, v in rows.items()}
    bare = summary(timed([cargo, "check", "-p", "alpha", "-q"], max(3, runs // 3), env))
    agent_check = summary(timed([*agent, "check", "-p", "alpha", "-q"], max(3, runs // 3), env))
    results["no-op check -p alpha"] = {"bare cargo": {**bare, "ratio": 1.0},
                                       "cargo-agent": {**agent_check, "ratio": agent_check["median"] / bare["median"]}}
    return results


def import_breakdown() -> dict[str, int]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import cargo_agent.cli"], capture_output=True,
                         text=True, cwd=REPO).stderr
    costs: dict[str, int] = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[1].isdigit():
            name = parts[2].strip()
            if not name.startswith(" ") and (name.startswith("cargo_agent") or parts[2] == parts[2].lstrip()):
                costs[name] = int(parts[1])
    return dict(sorted(costs.items(), key=lambda kv: -kv[1])[:10])


BASELINE = r"""
import fcntl, os, sys, time, random
path, log, tag, hold = sys.argv[1:5]
fd = os.open(path, os.O_RDWR | os.O_CREAT)
while True:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); break
    except BlockingIOError:
        time.sleep(0.1)
with open(log, "a") as f: f.write(f"start {tag} {time.time():.6f}\n")
time.sleep(float(hold))
with open(log, "a") as f: f.write(f"end {tag} {time.time():.6f}\n")
"""


def _handoffs(log: Path) -> tuple[list[float], list[str]]:
    events = sorted((float(t), kind, tag) for kind, tag, t in (line.split() for line in log.read_text().splitlines()
                                                               if line.split()[0] in ("start", "end")))
    gaps, order = [], []
    last_end = None
    for stamp, kind, tag in events:
        if kind == "end":
            last_end = stamp
        elif kind == "start":
            order.append(tag)
            if last_end is not None:
                gaps.append(stamp - last_end)
    return gaps, order


def handoff(count: int, env: dict[str, str]) -> dict[str, object]:
    results: dict[str, object] = {}
    for name in ("cargo-agent", "100 ms polling flock"):
        work = Path(tempfile.mkdtemp())
        log = work / "log"
        run_env = {**env, "CARGO_AGENT_CARGO": str(FAKE), "CARGO_AGENT_SLOTS": "1", "FAKE_LOG": str(log),
                   "FAKE_SLEEP": "0.05", "CARGO_AGENT_LOCK_DIR": str(work / "locks"), "CARGO_AGENT_MEM_KILL": "off"}
        procs = []
        for index in range(count):
            if name == "cargo-agent":
                command = [sys.executable, "-m", "cargo_agent", "build", "-p", "alpha"]
            else:
                command = [sys.executable, "-c", BASELINE, str(work / "slot.lock"), str(log), str(index), "0.05"]
            procs.append(subprocess.Popen(command, cwd=DEMO, env={**run_env, "FAKE_TAG": str(index)},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.15)  # arrival order
        for proc in procs:
            proc.wait()
        gaps, order = _handoffs(log)
        # The fake cargo's own start-up sits in every cargo-agent gap; it is reported, not subtracted.
        results[name] = {**summary(gaps), "fifo": order == [str(i) for i in range(count)]}
    return results


def wrapper_rss(env: dict[str, str]) -> int:
    work = Path(tempfile.mkdtemp())
    run_env = {**env, "CARGO_AGENT_CARGO": str(FAKE), "FAKE_SLEEP": "2", "FAKE_PIDFILE": str(work / "pid"),
               "CARGO_AGENT_LOCK_DIR": str(work / "locks")}
    proc = subprocess.Popen([sys.executable, "-m", "cargo_agent", "build", "-p", "alpha"], cwd=DEMO, env=run_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (work / "pid").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    status = Path(f"/proc/{proc.pid}/status").read_text()
    proc.wait()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) * 1024


def main() -> None:
    quick = "--quick" in sys.argv
    runs = 10 if quick else 30
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_AGENT_")}
    lock_dir = Path(tempfile.mkdtemp()) / "locks"
    env["CARGO_AGENT_LOCK_DIR"] = str(lock_dir)
    subprocess.run([sys.executable, "-m", "cargo_agent", "build", "-p", "alpha", "-q"], cwd=DEMO, env=env, check=False)
    results = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "mode": "quick" if quick else "full",
        "passthrough": passthrough(runs, env, lock_dir),
        "imports_us": import_breakdown(),
        "handoff": handoff(6 if quick else 16, env),
        "wrapper_rss_bytes": wrapper_rss(env),
    }
    (REPO / "bench" / "results.json").write_text(json.dumps(results, indent=2))
    for group, rows in results["passthrough"].items():  # type: ignore[union-attr]
        print(f"\n{group}")
        for name, row in rows.items():
            print(f"  {name:28s} median {row['median'] * 1000:7.1f} ms  (p10 {row['p10'] * 1000:.1f}, "
                  f"p90 {row['p90'] * 1000:.1f})  {row['ratio']:.2f}x")
    print("\nslot handoff (release -> next start)")
    for name, row in results["handoff"].items():  # type: ignore[union-attr]
        print(f"  {name:28s} p50 {row['median'] * 1000:7.1f} ms  p99 {row['p99'] * 1000:7.1f} ms  FIFO {row['fifo']}")
    print(f"\nwrapper RSS while holding a slot: {results['wrapper_rss_bytes'] / (1 << 20):.1f} MiB")
    print("imports on the fast path (us, self):", results["imports_us"])


if __name__ == "__main__":
    main()
