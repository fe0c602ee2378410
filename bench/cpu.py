"""CPU bench: host CPU tokens lent through each build's jobserver, against bare cargo and against
the static split it replaced (jobs = cores / slots per build).

    python -m bench.cpu [--quick] [--workspace DIR | --real] [--k 4] [--runs N]

What it measures, each on clean builds (a fresh target dir per build):
- lone: the wall time of one build, bare cargo vs cargo-agent, runs alternated; the ratio of the
  medians (goal <= 1.05);
- lone, also under the static split: N slot locks and `CARGO_BUILD_JOBS = max(1, C / N)`, as
  cargo-agent did before (emulated by a small launcher, so it stays measurable after the change);
- storm: K concurrent builds, each of its own copy of the workspace (as agents' checkouts are),
  under bare cargo, cargo-agent with tokens and the static split, with this host's auto N and
  again with N = K: makespan and the peak number of compile jobs (rustc and build-script
  processes in the builds' trees, cargo's `rustc -vV` probes excluded, sampled every 50 ms)
  running at once host-wide. A sample walks /proc and is not atomic: a job that ends while the
  next starts during one walk may be counted with it (tests/tokens_test.py counts exactly);
- broker: the broker thread's own CPU time over each build's wall time, from the run log
  (goal < 2 % of a core), and its polls per second.

The workspace: `--workspace DIR` copies any workspace (e.g. the real-crate fixture of
bench/realcrates.py, generated with `python -m bench.realcrates DIR`); `--real` generates that
fixture itself when bench/realcrates.py is present; otherwise a generated fixture of independent
crates with CPU-bound build scripts and generic code, a shared base crate and a binary. Not a
test: nothing here asserts a time. Results go to bench/cpu-results.json.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.storm import copy_workspace

REPO = Path(__file__).resolve().parent.parent
JOB_COMMS = ("rustc", "build-script-bu", "build_script_bu")


# ---- the generated fixture -----------------------------------------------------------------

BUILD_RS = """\
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    // CPU-bound, like a build script that generates code: a few hundred ms in a debug build.
    let mut x: u64 = 1;
    for i in 0..40_000_000u64 { x = x.wrapping_mul(6364136223846793005).wrapping_add(i); }
    let out = std::env::var("OUT_DIR").unwrap();
    std::fs::write(format!("{out}/gen.rs"), format!("pub const SEED: u64 = {x};\\n")).unwrap();
}
"""


def _lib(index: int, functions: int) -> str:
    body = [f"pub fn f{j}<T: Clone + std::fmt::Debug + PartialEq>(x: T) -> Vec<T> "
            f"{{ let v = vec![x.clone(); {j % 5 + 1}]; assert!(v.iter().all(|y| *y == x)); v }}"
            for j in range(functions)]
    uses = [f"    total += f{j}(base::mix({j}u64)).len() + f{j}(format!(\"{index}-{j}\")).len();"
            for j in range(functions)]
    return ("include!(concat!(env!(\"OUT_DIR\"), \"/gen.rs\"));\n" + "\n".join(body)
            + "\npub fn run() -> usize {\n    let mut total = SEED as usize % 2;\n" + "\n".join(uses)
            + "\n    total\n}\n")


def generate(root: Path, members: int = 8, functions: int = 120) -> Path:
    """A workspace: `base`, `members` crates on it (each with a build script), and `app` using all."""
    names = ["base", *(f"m{i}" for i in range(members)), "app"]
    files: dict[str, str] = {
        "Cargo.toml": "[workspace]\nresolver = \"2\"\nmembers = [" + ", ".join(f'"{n}"' for n in names) + "]\n",
        "base/Cargo.toml": '[package]\nname = "base"\nversion = "0.1.0"\nedition = "2021"\n',
        "base/src/lib.rs": "pub fn mix(x: u64) -> u64 { x.wrapping_mul(0x9E3779B97F4A7C15) }\n",
    }
    for i in range(members):
        files[f"m{i}/Cargo.toml"] = (f'[package]\nname = "m{i}"\nversion = "0.1.0"\nedition = "2021"\n\n'
                                     '[dependencies]\nbase = { path = "../base" }\n')
        files[f"m{i}/build.rs"] = BUILD_RS
        files[f"m{i}/src/lib.rs"] = _lib(i, functions)
    deps = "\n".join(f'm{i} = {{ path = "../m{i}" }}' for i in range(members))
    files["app/Cargo.toml"] = (f'[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n'
                               f"[dependencies]\n{deps}\n")
    files["app/src/main.rs"] = ("fn main() {\n    let mut total = 0;\n"
                                + "".join(f"    total += m{i}::run();\n" for i in range(members))
                                + '    println!("{total}");\n}\n')
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def real_fixture(root: Path) -> Path:
    try:
        from bench import realcrates  # type: ignore[attr-defined]  # arrives with the real-crate bench
    except ImportError:
        raise SystemExit("error: --real needs bench/realcrates.py; use --workspace DIR or the generated fixture") \
            from None
    realcrates.prepare(root)
    return root


# ---- sampling and launching ----------------------------------------------------------------

def _table() -> dict[int, tuple[str, int]]:
    """{pid: (comm, ppid)} of every live process."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                raw = handle.read().decode(errors="replace")
        except OSError:
            continue
        close = raw.rfind(")")
        fields = raw[close + 2:].split()
        if fields[0] != "Z":
            found[int(name)] = (raw[raw.find("(") + 1:close], int(fields[1]))
    return found


def _is_probe(pid: int) -> bool:
    """cargo's short `rustc -vV` / `rustc - --print=...` queries: not compile jobs, hold no token."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            args = handle.read().split(b"\0")
    except OSError:
        return True
    return b"-vV" in args or any(a.startswith(b"--print") for a in args)


class JobSampler:
    """Peak compile jobs at once in the process trees under `roots`, sampled every 50 ms."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            table = _table()
            children: dict[int, list[int]] = {}
            for pid, (_, ppid) in table.items():
                children.setdefault(ppid, []).append(pid)
            seen, stack = set(), list(self.roots)
            while stack:
                pid = stack.pop()
                if pid not in seen:
                    seen.add(pid)
                    stack += children.get(pid, [])
            jobs = sum(1 for pid in seen if pid in table and table[pid][0].startswith(JOB_COMMS)
                       and not _is_probe(pid))
            self.peak = max(self.peak, jobs)
            self.samples += 1

    def __enter__(self) -> JobSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def storm(template: Path, work: Path, k: int, prefix: Sequence[str], env: Mapping[str, str],
          label: str) -> dict[str, Any]:
    """K concurrent clean `build`s, one per fresh copy, each with its own target dir."""
    copies = [copy_workspace(template, work / f"{label}-{i}") for i in range(k)]
    roots: list[int] = []
    procs = []
    walls = [0.0] * k
    with JobSampler(roots) as sampler:
        start = time.perf_counter()
        for copy in copies:
            procs.append(subprocess.Popen([*prefix, "build", "--offline"], cwd=copy, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          env={**env, "CARGO_TARGET_DIR": str(copy / "target")}))
            roots.append(procs[-1].pid)
        pending = dict(enumerate(procs))
        while pending:
            for i, proc in list(pending.items()):
                if proc.poll() is not None:
                    walls[i] = time.perf_counter() - start
                    del pending[i]
            time.sleep(0.01)
        makespan = time.perf_counter() - start
    for copy in copies:
        shutil.rmtree(copy, ignore_errors=True)
    return {"k": k, "makespan_seconds": round(makespan, 2), "wall_seconds": [round(w, 2) for w in walls],
            "exit_codes": [p.returncode for p in procs], "peak_jobs": sampler.peak}


def broker_figures(lock_dir: Path) -> list[dict[str, float]]:
    """Per run: the broker thread's CPU as a share of one core over the build's wall time."""
    log = lock_dir / "runs.jsonl"
    rows = []
    for line in log.read_text().splitlines() if log.exists() else []:
        record = json.loads(line)
        if "broker_cpu_seconds" in record and record.get("wall_seconds"):
            rows.append({"wall_seconds": record["wall_seconds"],
                         "broker_cpu_percent": round(100 * record["broker_cpu_seconds"] / record["wall_seconds"], 3),
                         "polls_per_second": round(record.get("broker_polls", 0) / record["wall_seconds"], 1),
                         "tokens_peak": record.get("tokens_peak")})
    return rows


def median_row(rows: list[dict[str, float]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


# ---- the bench -----------------------------------------------------------------------------

# Today's static split, outside cargo-agent: one of N slot locks, then cargo with jobs = C / N.
STATIC_SPLIT = r"""
import fcntl, os, subprocess, sys, time
lock_dir, slots, jobs, cargo = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.makedirs(lock_dir, exist_ok=True)
fds = [os.open(os.path.join(lock_dir, f"slot-{k}.lock"), os.O_RDWR | os.O_CREAT) for k in range(slots)]
while True:
    held = False
    for fd in fds:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
            break
        except BlockingIOError:
            pass
    if held:
        break
    time.sleep(0.01)
sys.exit(subprocess.call([cargo, *sys.argv[5:]], env={**os.environ, "CARGO_BUILD_JOBS": jobs}))
"""


def static_split_prefix(work: Path, label: str, slots: int, cpus: int) -> list[str]:
    cargo = shutil.which("cargo") or "cargo"
    return [sys.executable, "-c", STATIC_SPLIT, str(work / f"{label}-slots"), str(slots),
            str(max(1, cpus // slots)), cargo]

def agent_prefix() -> list[str]:
    return [sys.executable, "-m", "cargo_agent"]


def base_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARGO_AGENT_", "CARGO_BUILD_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["CARGO_AGENT_MEM_KILL"] = "off"
    env["CARGO_AGENT_CONFIG"] = str(work / "no-host-config.toml")
    return env


def host_plan(template: Path, work: Path, env: dict[str, str]) -> tuple[int, int]:
    """(N, C): the slots and CPU tokens cargo-agent would use on this host."""
    plan = json.loads(subprocess.run([*agent_prefix(), "--dry-run", "--json", "build"], cwd=template,
                                     env={**env, "CARGO_AGENT_LOCK_DIR": str(work / "plan-locks")},
                                     capture_output=True, text=True, check=True).stdout)
    return int(plan["slots"]["count"]), int(plan["cpu"]["tokens"])


def lone(template: Path, work: Path, env: dict[str, str], runs: int, slots: int, cpus: int) -> dict[str, Any]:
    cargo = shutil.which("cargo") or "cargo"
    lock_dir = work / "lone-locks"
    variants = {"bare cargo": ([cargo], env),
                "cargo-agent (tokens)": (agent_prefix(), {**env, "CARGO_AGENT_LOCK_DIR": str(lock_dir)}),
                "static split": (static_split_prefix(work, "lone-split", slots, cpus), env)}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):  # alternated, so that load from elsewhere hits every variant alike
        for name, (prefix, run_env) in variants.items():
            walls[name].append(storm(template, work, 1, prefix, run_env, "lone")["wall_seconds"][0])
    bare = statistics.median(walls["bare cargo"])
    brokers = broker_figures(lock_dir)
    return {"seconds": walls, "median_seconds": {k: round(statistics.median(v), 2) for k, v in walls.items()},
            "ratio_to_bare": {k: round(statistics.median(v) / bare, 3) for k, v in walls.items()},
            "broker": brokers, "broker_cpu_percent_median": median_row(brokers, "broker_cpu_percent")}


def storms(template: Path, work: Path, env: dict[str, str], k: int, runs: int, slots: int,
           cpus: int) -> dict[str, Any]:
    cargo = shutil.which("cargo") or "cargo"
    host_file = work / f"slots-{k}.toml"
    host_file.write_text(f"slots = {k}\n")
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "bare cargo": ([cargo], env),
        f"cargo-agent (tokens), N = {slots}": (agent_prefix(), env),
        f"static split, N = {slots}, -j{max(1, cpus // slots)}": (
            static_split_prefix(work, "split", slots, cpus), env),
        f"cargo-agent (tokens), N = {k}": (agent_prefix(), {**env, "CARGO_AGENT_CONFIG": str(host_file)}),
        f"static split, N = {k}, -j{max(1, cpus // k)}": (static_split_prefix(work, "wide", k, cpus), env),
    }
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    brokers: list[dict[str, float]] = []
    for rep in range(runs):
        for index, (name, (prefix, run_env)) in enumerate(variants.items()):
            locks = work / f"storm-locks-{rep}-{index}"
            rows[name].append(storm(template, work, k, prefix, {**run_env, "CARGO_AGENT_LOCK_DIR": str(locks)},
                                    f"storm{index}"))
            brokers += broker_figures(locks)
    results: dict[str, Any] = {"k": k, "slots": slots, "cpus": cpus, "runs": runs}
    for name, samples in rows.items():
        results[name] = {"makespan_seconds_median": round(statistics.median(r["makespan_seconds"] for r in samples), 2),
                         "makespan_seconds": [r["makespan_seconds"] for r in samples],
                         "peak_jobs_max": max(r["peak_jobs"] for r in samples),
                         "exit_codes": [r["exit_codes"] for r in samples],
                         "wall_seconds": [r["wall_seconds"] for r in samples]}
    results["broker"] = {"cpu_percent_median": median_row(brokers, "broker_cpu_percent"),
                         "cpu_percent_max": max((b["broker_cpu_percent"] for b in brokers), default=None),
                         "polls_per_second_median": median_row(brokers, "polls_per_second")}
    return results


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workspace", type=Path, help="a workspace to copy for every build")
    parser.add_argument("--real", action="store_true", help="the real-crate fixture of bench/realcrates.py")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--runs", type=int, help="lone builds per variant (default 5, quick 2)")
    parser.add_argument("--storm-runs", type=int, help="storms per variant (default 3, quick 1)")
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 5)
    work = Path(tempfile.mkdtemp(prefix="cargo-agent-bench-cpu-"))
    try:
        if args.workspace:
            template = copy_workspace(args.workspace, work / "template")
            fixture = str(args.workspace)
        elif args.real:
            template, fixture = real_fixture(work / "template"), "bench/realcrates.py"
        else:
            template = generate(work / "template", members=6 if args.quick else 8)
            fixture = "generated (bench/cpu.py)"
        env = base_env(work)
        slots, cpus = host_plan(template, work, env)
        results: dict[str, Any] = {
            "machine": {"cores": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                        "date": time.strftime("%Y-%m-%d")},
            "fixture": fixture, "mode": "quick" if args.quick else "full",
            "lone": lone(template, work, env, runs, slots, cpus),
            "storm": storms(template, work, env, args.k, args.storm_runs or (1 if args.quick else 3), slots, cpus),
        }
        results["machine"]["load_average_at_end"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (REPO / "bench" / "cpu-results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


def print_table(results: dict[str, Any]) -> None:
    lone_row = results["lone"]
    print(f"fixture: {results['fixture']}; load average {results['machine']['load_average_at_start']}")
    print(f"lone build, medians of {len(lone_row['seconds']['bare cargo'])} clean builds:")
    for name, seconds in lone_row["median_seconds"].items():
        print(f"  {name:34s} {seconds:7.2f} s  {lone_row['ratio_to_bare'][name]:.3f}x bare")
    print(f"  broker CPU: median {lone_row['broker_cpu_percent_median']}% of a core")
    rows = results["storm"]
    print(f"storm of {rows['k']} concurrent clean builds (C = {rows['cpus']} tokens, auto N = {rows['slots']}), "
          f"medians of {rows['runs']}:")
    for name, row in rows.items():
        if isinstance(row, dict) and "makespan_seconds_median" in row:
            print(f"  {name:34s} makespan {row['makespan_seconds_median']:7.2f} s  peak jobs {row['peak_jobs_max']:3d}"
                  f"  runs {row['makespan_seconds']}")
    broker = rows["broker"]
    print(f"  broker CPU in the storms: median {broker['cpu_percent_median']}%, max {broker['cpu_percent_max']}% "
          f"of a core, {broker['polls_per_second_median']} polls/s")


if __name__ == "__main__":
    sys.exit(main())
