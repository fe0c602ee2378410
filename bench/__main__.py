"""Benchmarks: `python -m bench [--quick] [--only NAME] [--save | --out PATH]`. Every figure is a median
with spread (p10..p90) over several runs, printed beside a baseline measured in the same run, and
written to bench/out/results.json (ignored by git); `--save` writes the tracked bench/results.json
that the docs quote. Not tests: nothing here asserts a time."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
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


def compiling_path(runs: int, env: dict[str, str], venv: Path, work: Path) -> dict[str, Any]:
    """The fixed cost of a compiling command: a no-op `check -p alpha` of the built demo, bare
    cargo and cargo-agent interleaved (A B A B ...), so drifting machine speed hits both alike.
    The fixed cost is the median of the pairwise differences. Measured twice:
    - own target dirs (the headline): each tool keeps its target dir, as an agent that always
      goes through cargo-agent (or never) does;
    - one shared target dir: cargo caches what `rustc -vV` says per target dir, keyed by the
      rustc wrapper among others, so every switch between bare cargo and cargo-agent (whose link
      gate is a rustc wrapper) asks rustc again, on both sides."""
    cargo = shutil.which("cargo") or "cargo"
    agent = str(venv / "bin" / "cargo-agent")
    command = ["check", "-p", "alpha", "-q"]
    variants = {"own target dirs": ({**env, "CARGO_TARGET_DIR": str(work / "target-bare")},
                                    {**env, "CARGO_TARGET_DIR": str(work / "target-agent")}),
                "one shared target dir": (env, env)}
    results: dict[str, Any] = {}
    for variant, (bare_env, agent_env) in variants.items():
        for program, run_env in ((cargo, bare_env), (agent, agent_env), (agent, agent_env)):  # build, warm up
            subprocess.run([program, *command], cwd=DEMO, env=run_env, check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bare_samples: list[float] = []
        agent_samples: list[float] = []
        for _ in range(runs):
            for program, run_env, samples in ((cargo, bare_env, bare_samples), (agent, agent_env, agent_samples)):
                start = time.perf_counter()
                subprocess.run([program, *command], cwd=DEMO, env=run_env, check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                samples.append(time.perf_counter() - start)
        differences = [a - b for a, b in zip(agent_samples, bare_samples, strict=True)]
        bare, through = summary(bare_samples), summary(agent_samples)
        results[variant] = {"bare cargo": bare, "cargo-agent (venv)": through,
                            "fixed_cost_ms": statistics.median(differences) * 1000,
                            "ratio": through["median"] / bare["median"]}
    return {**results["own target dirs"], "variants": results}


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


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def _has_ticket(lock_dir: Path, pid: int) -> bool:
    return any(p.name.endswith(f"-{pid}.ticket") for p in (lock_dir / "queue").glob("*.ticket"))


def waiting_cost(env: dict[str, str], venv: Path, work: Path, seconds: float = 10.0) -> dict[str, Any]:
    """What waiting costs: CPU (share of one core) and threads of the head waiter and of one
    behind it, over `seconds` of waiting on 1 busy slot; then how long the queue takes to skip a
    SIGSTOPped head once the slot is free."""
    lock_dir = work / "waiting-locks"
    run_env = {**env, "CARGO_AGENT_CARGO": str(FAKE), "CARGO_AGENT_SLOTS": "1", "CARGO_AGENT_LOCK_DIR": str(lock_dir),
               "FAKE_LOG": str(work / "waiting.log")}
    agent = [str(venv / "bin" / "cargo-agent"), "build", "-p", "alpha"]
    holder = subprocess.Popen(agent, cwd=DEMO, env={**run_env, "FAKE_SLEEP": str(seconds + 4)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (work / "waiting.log").exists():
        time.sleep(0.02)
    waiters = []
    for _ in range(2):
        waiters.append(subprocess.Popen(agent, cwd=DEMO, env={**run_env, "FAKE_SLEEP": "0"},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while not _has_ticket(lock_dir, waiters[-1].pid):
            time.sleep(0.02)
    time.sleep(1.0)  # past start-up
    before = [_cpu_seconds(w.pid) for w in waiters]
    threads = [[_threads(w.pid) for w in waiters]]
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        time.sleep(1.0)
        threads.append([_threads(w.pid) for w in waiters])
    span = time.monotonic() - start
    cpu = [(_cpu_seconds(w.pid) - b) / span for w, b in zip(waiters, before, strict=True)]
    # The head stops; the slot frees: how long until the waiter behind it is admitted?
    waiters[0].send_signal(signal.SIGSTOP)
    holder.kill()
    freed = time.monotonic()
    waiters[1].wait()
    skip = time.monotonic() - freed
    waiters[0].send_signal(signal.SIGCONT)
    waiters[0].wait()
    holder.wait()
    return {"head_cpu_share": cpu[0], "behind_cpu_share": cpu[1], "threads_seen": sorted({t for row in threads
                                                                                          for t in row}),
            "seconds": span, "stopped_head_skipped_after": skip}


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


def real_storm(env: dict[str, str], venv: Path, work: Path, quick: bool) -> dict[str, Any]:
    """Clean builds of the real-crate fixture (bench/realcrates.py): one lone build, then K concurrent
    builds in separate copies, for bare cargo and for cargo-agent with today's settings."""
    from bench import realcrates, storm

    template = work / "realcrates"
    try:
        fixture = realcrates.prepare(template, members=3 if quick else 4)
    except realcrates.Unavailable as e:
        print(f"bench: storm skipped: {e}", file=sys.stderr)
        return {"skipped": str(e)}
    k = 2 if quick else 4
    agent_env = {**env, "CARGO_AGENT_LOCK_DIR": str(work / "realstorm-locks")}
    rows = {"bare cargo": ([shutil.which("cargo") or "cargo"], env),
            "cargo-agent": ([str(venv / "bin" / "cargo-agent")], agent_env)}
    results: dict[str, Any] = {"fixture": fixture, "cargo_args": list(storm.DEFAULT_ARGS), "k": k,
                               "lone": {}, "storm": {}}
    for name, (prefix, run_env) in rows.items():
        label = name.split()[-1]
        results["lone"][name] = storm.lone_build(template, work, prefix, run_env, label=f"lone-{label}")
    for name, (prefix, run_env) in rows.items():
        label = name.split()[-1]
        results["storm"][name] = storm.storm(template, work, k, prefix, run_env, label=f"storm-{label}")
    return results


# Every section: (needs the venv, how to run it). `--only NAME` picks sections by these names,
# which are also the keys in the results file.
SECTIONS: dict[str, tuple[bool, Callable[[dict[str, Any]], Any]]] = {
    "machine": (False, lambda ctx: machine()),
    "passthrough": (True, lambda ctx: passthrough(ctx["runs"], ctx["env"], ctx["venv"], ctx["work"])),
    "compiling_path": (True, lambda ctx: compiling_path(20 if ctx["quick"] else 60, ctx["env"], ctx["venv"],
                                                        ctx["work"])),
    "imports_us": (True, lambda ctx: import_breakdown(ctx["venv"])),
    "handoff": (True, lambda ctx: handoff(8 if ctx["quick"] else 16, ctx["env"], ctx["venv"], ctx["work"])),
    "makespan": (True, lambda ctx: makespan(ctx["env"], ctx["venv"], ctx["work"])),
    "waiting": (True, lambda ctx: waiting_cost(ctx["env"], ctx["venv"], ctx["work"])),
    "wrapper_rss_bytes": (True, lambda ctx: wrapper_rss(ctx["env"], ctx["venv"], ctx["work"])),
    "build_storm": (True, lambda ctx: build_storm(ctx["env"], ctx["venv"], ctx["work"], 3 if ctx["quick"] else 6)),
    "storm": (True, lambda ctx: real_storm(ctx["env"], ctx["venv"], ctx["work"], ctx["quick"])),
}

SAVED = REPO / "bench" / "results.json"  # tracked: the figures docs/performance.md quotes
UNSAVED = REPO / "bench" / "out" / "results.json"  # ignored by git


def machine() -> dict[str, Any]:
    cargo = subprocess.run([shutil.which("cargo") or "cargo", "--version"], capture_output=True, text=True,
                           check=False).stdout.strip()
    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "cargo": cargo, "date": time.strftime("%Y-%m-%d")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and smaller storms")
    parser.add_argument("--only", action="append", metavar="NAME", default=[],
                        help=f"run only these sections (repeat or comma-separate): {', '.join(SECTIONS)}")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--save", action="store_true",
                       help=f"write the tracked {SAVED.relative_to(REPO)} (with --only: update those sections)")
    where.add_argument("--out", type=Path, metavar="PATH", help=f"write here (default {UNSAVED.relative_to(REPO)})")
    args = parser.parse_args(argv)
    only = [name for value in args.only for name in value.split(",") if name]
    unknown = [name for name in only if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; accepted: {', '.join(SECTIONS)}")
    args.only = only
    return args


def selected(args: argparse.Namespace) -> list[str]:
    """Section names to run, in table order; the machine description always comes along."""
    return [name for name in SECTIONS if not args.only or name in args.only or name == "machine"]


def output_path(args: argparse.Namespace) -> Path:
    """Where results go: the tracked file only when asked with --save, so a bench run leaves
    `git status` clean."""
    if args.out is not None:
        return Path(args.out)
    return SAVED if args.save else UNSAVED


def merged(previous: dict[str, Any], results: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """`--save --only`: replace the chosen sections of the saved file and keep the rest."""
    combined = {**previous, **{name: results[name] for name in names}}
    combined["modes"] = {**previous.get("modes", {}), **results["modes"]}
    return combined


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = selected(args)
    mode = "quick" if args.quick else "full"
    work = Path(tempfile.mkdtemp(prefix="cargo-agent-bench-"))
    try:
        ctx: dict[str, Any] = {"quick": args.quick, "runs": 10 if args.quick else 30, "work": work,
                               "env": base_env(work)}
        if any(SECTIONS[name][0] for name in names):
            ctx["venv"] = make_venv(work)
        results: dict[str, Any] = {"mode": mode, "modes": {name: mode for name in names if name != "machine"}}
        for name in names:
            results[name] = SECTIONS[name][1](ctx)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = output_path(args)
    if args.only and args.save and out.exists():
        results = merged(json.loads(out.read_text()), results, names)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, names)
    print(f"\nresults written to {out}" + ("" if args.save or args.out else " (not tracked; --save to keep them)"))
    return 0


def _print_passthrough(section: dict[str, Any]) -> None:
    for group, rows in section.items():
        print(f"\n{group}")
        for name, row in rows.items():
            print(f"  {name:42s} median {row['median'] * 1000:7.1f} ms  (p10 {row['p10'] * 1000:.1f}, "
                  f"p90 {row['p90'] * 1000:.1f})  {row['ratio']:.2f}x")


def _print_handoff(section: dict[str, Any]) -> None:
    print("\nslot handoff: release -> next admission, with a waiter queued")
    for name, row in section.items():
        print(f"  {name:42s} p50 {row['median'] * 1000:7.1f} ms  p99 {row['p99'] * 1000:7.1f} ms  "
              f"FIFO {row['fifo']}  (n={row['n']})")


def _print_makespan(m: dict[str, Any]) -> None:
    print(f"\nmakespan of 16 jobs on 2 slots: {m['makespan']:.2f} s vs ideal {m['ideal']:.2f} s = {m['ratio']:.3f}x "
          f"(median per-job overhead {m['overhead_per_job'] * 1000:.0f} ms)")


def _print_build_storm(section: dict[str, Any]) -> None:
    print("\nbuild storm (concurrent test -p, one target dir each)")
    for name, row in section.items():
        print(f"  {name:42s} wall {row['wall_seconds']:6.1f} s  peak host memory "
              f"{row['peak_host_memory_bytes'] / (1 << 30):.2f} GiB  exits {row['exit_codes']}")


def _storm_row(name: str, row: dict[str, Any], wall: float) -> str:
    gib = 1 << 30
    return (f"  {name:14s} {wall:6.1f} s  jobs {row['peak_jobs']:2d} (rustc {row['peak_rustc']}, "
            f"scripts {row['peak_build_scripts']})  tree RSS {row['peak_tree_rss_bytes'] / gib:.2f} GiB  "
            f"host +{row['peak_host_above_baseline_bytes'] / gib:.2f} GiB  exits {row['exit_codes']}"
            + (f"\n    {row['first_failure']}" if "first_failure" in row else ""))


def _print_storm(section: dict[str, Any]) -> None:
    if "skipped" in section:
        print(f"\nreal-crate storm skipped: {section['skipped']}")
        return
    fixture = section["fixture"]
    print(f"\nreal-crate fixture: {fixture['members']} members, {len(fixture['versions'])} registry crates, "
          f"`cargo {' '.join(section['cargo_args'])}`; peaks are concurrent rustc/build-script processes, "
          "summed RSS of the build trees, host memory above the level at launch")
    print("  lone clean build:")
    for name, row in section["lone"].items():
        print(_storm_row(name, row, row["wall_seconds"]))
    print(f"  {section['k']} concurrent clean builds (makespan):")
    for name, row in section["storm"].items():
        print(_storm_row(name, row, row["makespan_seconds"]))


def _print_compiling_path(section: dict[str, Any]) -> None:
    for variant, row in section.get("variants", {"": section}).items():
        bare, through = row["bare cargo"], row["cargo-agent (venv)"]
        print(f"\nno-op check -p alpha{', ' + variant if variant else ''}, interleaved ({bare['n']} pairs): "
              f"bare cargo {bare['median'] * 1000:.1f} ms, cargo-agent {through['median'] * 1000:.1f} ms: "
              f"fixed cost {row['fixed_cost_ms']:.1f} ms, {row['ratio']:.2f}x")


def _print_waiting(w: dict[str, Any]) -> None:
    print(f"\nwaiting on a busy slot for {w['seconds']:.0f} s: head waiter "
          f"{w['head_cpu_share'] * 100:.2f} % of a core, the one behind it {w['behind_cpu_share'] * 100:.2f} %, "
          f"threads seen {w['threads_seen']}; a SIGSTOPped head is skipped "
          f"{w['stopped_head_skipped_after']:.2f} s after the slot frees")


def print_table(results: dict[str, Any], names: list[str]) -> None:
    printers: dict[str, Callable[[Any], None]] = {
        "passthrough": _print_passthrough,
        "compiling_path": _print_compiling_path,
        "handoff": _print_handoff,
        "makespan": _print_makespan,
        "waiting": _print_waiting,
        "build_storm": _print_build_storm,
        "wrapper_rss_bytes": lambda v: print(f"\nwrapper RSS while holding a slot: {v / (1 << 20):.1f} MiB"),
        "imports_us": lambda v: print("imports of `cargo-agent version` (us, self):", v),
        "storm": _print_storm,
        "machine": lambda v: print(f"machine: {v['cores']} cores, {v['cargo']}, Python {v['python']}, "
                                   f"{results['mode']} mode"),
    }
    for name in ("machine", "passthrough", "compiling_path", "handoff", "makespan", "waiting", "build_storm",
                 "wrapper_rss_bytes", "imports_us", "storm"):
        if name in names:
            printers[name](results[name])


if __name__ == "__main__":
    sys.exit(main())
