"""CPU bench: host CPU tokens lent through each build's jobserver, against bare cargo and against
the static split it replaced (jobs = cores / slots per build).

    python -m bench.cpu [--quick] [--workspace DIR | --real] [--k 4] [--runs N]

What it measures, each on clean builds (a fresh target dir per build):
- lone: the wall time of one build, bare cargo vs cargo-agent, runs alternated; the ratio of the
  medians (goal <= 1.05);
- storm: K concurrent builds, each of its own copy of the workspace (as agents' checkouts are),
  under bare cargo, cargo-agent with tokens, and cargo-agent with the static split
  (CARGO_AGENT_JOBS = max(1, C / N)), with this host's auto N and again with N = K: makespan, each
  build's wall time, and the peak number of compile jobs (rustc and build-script processes in
  the builds' trees, sampled every 50 ms) running at once host-wide;
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
            jobs = sum(1 for pid in seen if pid in table and table[pid][0].startswith(JOB_COMMS))
            self.peak = max(self.peak, jobs)
            self.samples += 1

    def __enter__(self) -> JobSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def copy_workspace(template: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns("target"), symlinks=True)
    return dest


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

def agent_prefix() -> list[str]:
    return [sys.executable, "-m", "cargo_agent"]


def base_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARGO_AGENT_", "CARGO_BUILD_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["CARGO_AGENT_MEM_KILL"] = "off"
    env["CARGO_AGENT_CONFIG"] = str(work / "no-host-config.toml")
    return env


def lone(template: Path, work: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    cargo = shutil.which("cargo") or "cargo"
    lock_dir = work / "lone-locks"
    agent_env = {**env, "CARGO_AGENT_LOCK_DIR": str(lock_dir)}
    bare_walls, agent_walls = [], []
    for _ in range(runs):  # alternated, so that load from elsewhere hits both alike
        bare_walls.append(storm(template, work, 1, [cargo], env, "lone-bare")["wall_seconds"][0])
        agent_walls.append(storm(template, work, 1, agent_prefix(), agent_env, "lone-agent")["wall_seconds"][0])
    brokers = broker_figures(lock_dir)
    return {"bare_seconds": bare_walls, "agent_seconds": agent_walls,
            "ratio": round(statistics.median(agent_walls) / statistics.median(bare_walls), 3),
            "broker": brokers, "broker_cpu_percent_median": median_row(brokers, "broker_cpu_percent")}


def storms(template: Path, work: Path, env: dict[str, str], k: int) -> dict[str, Any]:
    cargo = shutil.which("cargo") or "cargo"
    plan = json.loads(subprocess.run([*agent_prefix(), "--dry-run", "--json", "build"], cwd=template,
                                     env={**env, "CARGO_AGENT_LOCK_DIR": str(work / "plan-locks")},
                                     capture_output=True, text=True, check=True).stdout)
    slots, cpus = plan["slots"]["count"], plan["cpu"]["tokens"]
    split_jobs = max(1, cpus // slots)
    results: dict[str, Any] = {"slots": slots, "cpus": cpus, "static_split_jobs": split_jobs}
    results["bare cargo"] = storm(template, work, k, [cargo], env, "bare")
    token_locks = work / "storm-locks"
    results["cargo-agent (tokens)"] = storm(template, work, k, agent_prefix(),
                                            {**env, "CARGO_AGENT_LOCK_DIR": str(token_locks)}, "tokens")
    results["cargo-agent (tokens)"]["broker"] = broker_figures(token_locks)
    results["static split"] = storm(template, work, k, agent_prefix(),
                                    {**env, "CARGO_AGENT_LOCK_DIR": str(work / "split-locks"),
                                     "CARGO_AGENT_JOBS": str(split_jobs)}, "split")
    # The same with every build admitted at once (host file: slots = K), where a static split
    # of cores / K either oversubscribes (K > C) or idles cores when builds finish unevenly.
    host_file = work / f"slots-{k}.toml"
    host_file.write_text(f"slots = {k}\n")
    wide = {**env, "CARGO_AGENT_CONFIG": str(host_file)}
    wide_split = max(1, cpus // k)
    wide_locks = work / "wide-locks"
    results[f"cargo-agent (tokens), slots = {k}"] = storm(
        template, work, k, agent_prefix(), {**wide, "CARGO_AGENT_LOCK_DIR": str(wide_locks)}, "wide-tokens")
    results[f"cargo-agent (tokens), slots = {k}"]["broker"] = broker_figures(wide_locks)
    results[f"static split, slots = {k}"] = storm(
        template, work, k, agent_prefix(), {**wide, "CARGO_AGENT_LOCK_DIR": str(work / "wide-split-locks"),
                                            "CARGO_AGENT_JOBS": str(wide_split)}, "wide-split")
    results["static_split_jobs_wide"] = wide_split
    return results


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workspace", type=Path, help="a workspace to copy for every build")
    parser.add_argument("--real", action="store_true", help="the real-crate fixture of bench/realcrates.py")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--runs", type=int)
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
        results: dict[str, Any] = {
            "machine": {"cores": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                        "date": time.strftime("%Y-%m-%d")},
            "fixture": fixture, "mode": "quick" if args.quick else "full",
            "lone": lone(template, work, env, runs),
            "storm": storms(template, work, env, args.k),
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
    print(f"lone build: bare {statistics.median(lone_row['bare_seconds']):.2f} s, cargo-agent "
          f"{statistics.median(lone_row['agent_seconds']):.2f} s (medians of {len(lone_row['bare_seconds'])}): "
          f"ratio {lone_row['ratio']:.3f}x; broker CPU {lone_row['broker_cpu_percent_median']}% of a core")
    storm_rows = results["storm"]
    print(f"storm of {storm_rows['bare cargo']['k']} builds (C = {storm_rows['cpus']} tokens, "
          f"N = {storm_rows['slots']} slots, static split -j{storm_rows['static_split_jobs']}):")
    for name, row in storm_rows.items():
        if not isinstance(row, dict):
            continue
        print(f"  {name:32s} makespan {row['makespan_seconds']:7.2f} s  peak jobs {row['peak_jobs']:3d}  "
              f"walls {row['wall_seconds']}  exits {row['exit_codes']}")
    brokers = [b for row in storm_rows.values() if isinstance(row, dict) for b in row.get("broker", [])]
    if brokers:
        print(f"  broker CPU in the storm: median {median_row(brokers, 'broker_cpu_percent')}% of a core, "
              f"{median_row(brokers, 'polls_per_second')} polls/s")


if __name__ == "__main__":
    sys.exit(main())
