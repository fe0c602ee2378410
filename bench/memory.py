"""Memory bench: a storm of concurrent clean builds that link a lot, measured three ways, and the
cost of cargo-agent's RUSTC_WRAPPER per rustc call.

    python -m bench.memory [--quick] [--builds K] [--save]

Storm: K checkouts of one workspace (each with its own target dir, as separate agents have), all
started at once with `build --tests` (libraries, binaries and test binaries: many links):
- bare cargo;
- today's settings: cargo-agent as of TODAY_REV (CARGO_AGENT_BENCH_TODAY_REV, default the revision
  before the link gate), with its defaults (auto slots, mem_high, the lld thread cap in rustflags);
- link gate + learned admission: this checkout's cargo-agent, after one training storm whose run
  log it learns from (targets are cleaned in between; the measured storm starts cold on disk).
Every storm runs inside a cgroup v1 memory cgroup limited to --cgroup-limit (default 1G; 0: no
cgroup), as an agent container would: memory is where builds die, and there the kernel's OOM
killer is what ends a build that does not fit. For each: makespan, the cgroup's peak charge
(memory.max_usage_in_bytes) and its OOM kills, peak host memory above the level before launch
(MemTotal - MemAvailable, sampled every 50 ms: the host is shared, so other work shows too), the
peak sum of RSS over the builds' process trees, the most links running at once (processes named
rust-lld, ld or mold), and every build's exit code (all under the default RLIMIT_AS for the
cargo-agent rows, so the table also shows that the default limit fails no build that succeeds
bare).

Fixture: `bench.realcrates` (real crates from Debian's librust-*-dev packages) when that module
is there, else a generated path-only workspace of memory-heavy members (many monomorphized
generics, a binary and an integration test each).

Wrapper cost: the wrapper (a POSIX sh script) against a direct exec, with a no-op `rustc` and a
real rustc command line, per call; times the number of rustc calls of one clean build, as a
share of that build's wall time.

Results go to bench/out/results-memory.json (ignored by git), or with --save to the tracked
bench/results-memory.json. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
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
# "Today's settings": cargo-agent as of this git revision (before the link gate), exported with
# `git archive`, so that a working tree being edited meanwhile cannot get in the way.
TODAY_REV = os.environ.get("CARGO_AGENT_BENCH_TODAY_REV", "ded1b49")
LINKERS = {"rust-lld", "ld", "ld.bfd", "ld.gold", "mold", "ld.mold"}


# ---- fixture -------------------------------------------------------------------------

def generated_workspace(root: Path, members: int = 6, functions: int = 250) -> Path:
    """Members whose libraries monomorphize many generics (a heavy rustc each), each with a
    binary and an integration test that link against every member before it."""
    names = [f"m{i}" for i in range(members)]
    (root / "Cargo.toml").parent.mkdir(parents=True, exist_ok=True)
    (root / "Cargo.toml").write_text('[workspace]\nresolver = "2"\nmembers = [' + ", ".join(
        f'"{n}"' for n in names) + "]\n")
    for index, name in enumerate(names):
        deps = "".join(f'{dep} = {{ path = "../{dep}" }}\n' for dep in names[:index])
        (root / name / "src").mkdir(parents=True, exist_ok=True)
        (root / name / "tests").mkdir(exist_ok=True)
        (root / name / "Cargo.toml").write_text(
            f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n\n'
            f'[[bin]]\nname = "{name}-cli"\npath = "src/main.rs"\n\n[dependencies]\n{deps}')
        body = ["use std::collections::{BTreeMap, HashMap};",
                "pub trait Shape: Clone + std::fmt::Debug + Default { fn weight(&self) -> u64; }",
                "impl Shape for u64 { fn weight(&self) -> u64 { *self } }",
                "impl Shape for String { fn weight(&self) -> u64 { self.len() as u64 } }",
                "impl Shape for Vec<u8> { fn weight(&self) -> u64 { self.len() as u64 } }",
                "impl Shape for (u32, u32) { fn weight(&self) -> u64 { (self.0 + self.1) as u64 } }"]
        for j in range(functions):
            body.append(
                f"pub fn f{j}<T: Shape>(items: &[T]) -> (HashMap<u64, Vec<T>>, BTreeMap<String, u64>) {{\n"
                f"    let mut by = HashMap::new(); let mut names = BTreeMap::new();\n"
                f"    for (i, item) in items.iter().enumerate() {{\n"
                f"        by.entry(item.weight() % {j % 13 + 2}).or_insert_with(Vec::new).push(item.clone());\n"
                f"        names.insert(format!(\"{{:?}}-{{}}\", item, i), item.weight() * {j + 1});\n"
                f"    }}\n    (by, names)\n}}")
        calls = "\n".join(f"    total += f{j}(&[1u64, 2]).0.len() + f{j}(&[String::new()]).1.len()"
                          f" + f{j}(&[vec![1u8]]).0.len() + f{j}(&[(1u32, 2u32)]).1.len();"
                          for j in range(functions))
        body.append(f"pub fn run() -> usize {{\n    let mut total = 0;\n{calls}\n    total\n}}")
        (root / name / "src" / "lib.rs").write_text("\n".join(body) + "\n")
        uses = "".join(f"    total += {dep}::run();\n" for dep in names[:index + 1])
        main = f"fn main() {{\n    let mut total = 0;\n{uses}    println!(\"{{total}}\");\n}}\n"
        (root / name / "src" / "main.rs").write_text(main)
        (root / name / "tests" / "all.rs").write_text(
            f"#[test]\nfn runs() {{\n    let mut total = 0;\n{uses}    assert!(total > 0);\n}}\n")
    return root


def _realcrates() -> Any:
    """bench.realcrates, or the file CARGO_AGENT_BENCH_REALCRATES names (a checkout that has it)."""
    path = os.environ.get("CARGO_AGENT_BENCH_REALCRATES")
    if path:
        import importlib.util

        spec = importlib.util.spec_from_file_location("realcrates", path)
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    try:
        from bench import realcrates  # type: ignore[attr-defined]
    except ImportError:
        return None
    return realcrates


def fixture(work: Path, quick: bool) -> tuple[Path, str]:
    realcrates = _realcrates()
    members = 3 if quick else 4
    if realcrates is not None:
        try:
            root = work / "fixture"
            realcrates.prepare(root, members=members, bins=members, weight=12)
            return root, f"real crates (Debian librust-*-dev): {members} members, a binary and a test each"
        except Exception as err:  # noqa: BLE001 - fall back to the generated fixture, and say why
            print(f"bench: real-crate fixture unavailable ({err}); using the generated one", file=sys.stderr)
    functions = 120 if quick else 250
    return generated_workspace(work / "fixture", members + 2, functions), (
        f"generated: {members + 2} members x {functions} generic functions, a binary and a test each")


# ---- sampling --------------------------------------------------------------------------

def _meminfo_used() -> int:
    fields = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            fields[name] = int(rest.split()[0]) * 1024
    return fields["MemTotal"] - fields["MemAvailable"]


def _table() -> dict[int, tuple[str, int, int]]:
    page = os.sysconf("SC_PAGE_SIZE")
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                raw = handle.read()
        except OSError:
            continue
        close = raw.rfind(")")
        fields = raw[close + 2:].split()
        table[int(name)] = (raw[raw.find("(") + 1:close], int(fields[1]), int(fields[21]) * page)
    return table


def _tree(roots: list[int], table: dict[int, tuple[str, int, int]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


class Sampler(threading.Thread):
    def __init__(self, roots: list[int]) -> None:
        super().__init__(daemon=True)
        self.roots, self.stop = roots, threading.Event()
        self.base = _meminfo_used()
        self.peak_host = self.peak_rss = self.peak_links = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak_host = max(self.peak_host, _meminfo_used() - self.base)
            table = _table()
            tree = _tree(self.roots, table)
            self.peak_rss = max(self.peak_rss, sum(table[p][2] for p in tree))
            self.peak_links = max(self.peak_links, sum(1 for p in tree if table[p][0] in LINKERS))
            time.sleep(0.05)


# ---- the storm -------------------------------------------------------------------------

class Cgroup:
    """A cgroup v1 memory cgroup below our own, limited to `limit` bytes; removed by `close`."""

    def __init__(self, limit: int) -> None:
        sys.path.insert(0, str(REPO))
        from cargo_agent import host

        dirs = host._cgroup_dirs("/proc", v2=False)
        if not dirs:
            raise OSError("no cgroup v1 memory controller")
        self.path = Path(dirs[0]) / f"cargo-agent-bench-{os.getpid()}"
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(limit))
        self.limit = limit

    def reset(self) -> None:
        (self.path / "memory.max_usage_in_bytes").write_text("0")
        self.kills = self._oom_kills()

    def _oom_kills(self) -> int:
        for line in (self.path / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def figures(self) -> dict[str, int]:
        peak = int((self.path / "memory.max_usage_in_bytes").read_text())
        return {"cgroup_peak_mib": peak >> 20, "cgroup_oom_kills": self._oom_kills() - self.kills}

    def enter(self) -> None:
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def close(self) -> None:
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


CGROUP: Cgroup | None = None


def storm(checkouts: list[Path], command: list[str], env: dict[str, str]) -> dict[str, Any]:
    for checkout in checkouts:
        shutil.rmtree(checkout / "target", ignore_errors=True)
    if CGROUP is not None:
        CGROUP.reset()
    started = time.monotonic()
    procs = [subprocess.Popen([*command, "build", "--tests"], cwd=c, env={**env, "CARGO_TARGET_DIR": str(c / "target")},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=CGROUP.enter if CGROUP is not None else None) for c in checkouts]
    sampler = Sampler([p.pid for p in procs])
    sampler.start()
    walls, codes, tails = [], [], []
    for proc in procs:
        _, err = proc.communicate()
        walls.append(round(time.monotonic() - started, 2))
        codes.append(proc.returncode)
        if proc.returncode:
            tails.append(err.strip().splitlines()[-3:])
    makespan = time.monotonic() - started
    sampler.stop.set()
    sampler.join()
    return {"makespan_s": round(makespan, 2), **(CGROUP.figures() if CGROUP is not None else {}),
            "peak_host_mib": sampler.peak_host >> 20, "peak_tree_rss_mib": sampler.peak_rss >> 20,
            "peak_links": sampler.peak_links, "exit_codes": codes, "walls_s": walls, "failures": tails}


def _agent(repo: Path, lock_dir: Path, base: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    env = {**base, "PYTHONPATH": str(repo), "CARGO_AGENT_LOCK_DIR": str(lock_dir),
           "CARGO_AGENT_CONFIG": str(lock_dir.parent / f"{lock_dir.name}-none.toml"),
           "XDG_CACHE_HOME": str(lock_dir.parent / f"{lock_dir.name}-cache")}
    return [sys.executable, "-m", "cargo_agent"], env


def storms(root: Path, work: Path, builds: int, configs: set[str], repeat: int = 1) -> dict[str, Any]:
    """Each selected configuration `repeat` times, interleaved (bare, today, gate, bare, ...), so
    that the load of a shared host falls on all of them alike; the gate's run log is trained by
    one storm first. Each configuration's row is its median-makespan storm, with every makespan."""
    checkouts = []
    for index in range(builds):
        checkout = work / f"checkout{index}"
        shutil.copytree(root, checkout, ignore=shutil.ignore_patterns("target"))
        checkouts.append(checkout)
    base = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_AGENT_")}
    base["CARGO_AGENT_MEM_KILL"] = "off"  # the bench host is shared: never stop a build for others' use
    runs: dict[str, tuple[list[str], dict[str, str]]] = {}
    if "bare" in configs:
        runs["bare cargo"] = (["cargo"], base)
    today = _export(TODAY_REV, work / "today") if "today" in configs else None
    if today is not None:
        runs[f"today's settings ({TODAY_REV})"] = _agent(today, work / "locks-today", base)
    training = None
    if "gate" in configs:
        runs["link gate + learned admission"] = _agent(REPO, work / "locks-gate", base)
        command, env = runs["link gate + learned admission"]
        training = storm(checkouts, command, env)  # fills the run log and the link log
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, (command, env) in runs.items():
            measured[name].append(storm(checkouts, command, env))
    results: dict[str, Any] = {}
    for name, rows in measured.items():
        ordered = sorted(rows, key=lambda row: row["makespan_s"])
        results[name] = {**ordered[len(ordered) // 2], "makespans_s": [row["makespan_s"] for row in rows],
                         "oom_kills_all": [row.get("cgroup_oom_kills") for row in rows],
                         "failed_builds_all": [sum(1 for code in row["exit_codes"] if code) for row in rows]}
    if training is not None:
        results["link gate + learned admission"]["training_storm"] = training
        results["link gate + learned admission"]["learned"] = _learned(work / "locks-gate")
    return results


def _export(rev: str, into: Path) -> Path | None:
    """The package as of `rev`, from this repository's history; None if there is no such rev."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "cargo_agent"], capture_output=True)
    if archive.returncode != 0:
        print(f"bench: no revision {rev}: {archive.stderr.decode().strip()}", file=sys.stderr)
        return None
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _learned(lock_dir: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from cargo_agent import report

    peaks = [r.peak for r in report.recent(lock_dir, 100) if r.peak]
    links = [r.peak for r in report.recent(lock_dir, 1000, report.LINKS) if r.peak]
    return {"build_peaks_mib": sorted(p >> 20 for p in peaks if p),
            "links": len(links), "link_peak_max_mib": max(links, default=0) >> 20,
            "link_peak_median_mib": int(statistics.median(links)) >> 20 if links else 0}


# ---- the wrapper's cost ----------------------------------------------------------------

def wrapper_cost(root: Path, work: Path, calls: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from cargo_agent import linkgate

    env = {**os.environ, "XDG_CACHE_HOME": str(work / "wrapper-cache"),
           "CARGO_AGENT_GATE": "2:x86_64-unknown-linux-gnu:1:1"}
    wrapper = os.path.join(linkgate._gate_dir(env), linkgate.WRAPPER_NAME)
    target = work / "cost-target"
    shutil.rmtree(target, ignore_errors=True)
    started = time.monotonic()
    done = subprocess.run(["cargo", "build", "--tests", "-v"], cwd=root, env={**env, "CARGO_TARGET_DIR": str(target)},
                          capture_output=True, text=True)
    clean = time.monotonic() - started
    lines = [line for line in done.stderr.splitlines() if line.strip().startswith("Running `") and "rustc " in line]
    rustc_calls = len(lines) + 3  # cargo's own `rustc -vV` and target-info probes go through the wrapper too
    sample = lines[len(lines) // 2].split("rustc ", 1)[1].rstrip("`").split() if lines else ["--crate-name", "x"]

    def timed(command: list[str]) -> float:
        begin = time.perf_counter()
        for _ in range(calls):
            subprocess.run(command, env=env, check=False)
        return (time.perf_counter() - begin) / calls

    direct = timed(["/bin/true", *sample])
    through = timed([wrapper, "/bin/true", *sample])
    linking = timed([wrapper, "/bin/true", "--crate-type", "bin", *sample])
    per_call = max(0.0, through - direct)
    return {"clean_build_s": round(clean, 2), "clean_build_exit": done.returncode, "rustc_calls": rustc_calls,
            "args_in_sample_call": len(sample), "direct_exec_ms": round(direct * 1000, 3),
            "through_wrapper_ms": round(through * 1000, 3), "linking_call_ms": round(linking * 1000, 3),
            "overhead_per_call_ms": round(per_call * 1000, 3),
            "share_of_clean_build": round(per_call * rustc_calls / clean, 5) if clean else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--builds", type=int, default=None)
    parser.add_argument("--save", action="store_true", help="write bench/results-memory.json")
    parser.add_argument("--cgroup-limit", default="1G", help="memory limit of the storms' cgroup; 0: none")
    parser.add_argument("--configs", default="bare,today,gate", help="storms to run: bare, today, gate")
    parser.add_argument("--no-wrapper", action="store_true", help="skip the wrapper cost measurement")
    parser.add_argument("--repeat", type=int, default=None, help="storms per configuration, interleaved")
    args = parser.parse_args(argv)
    global CGROUP
    sys.path.insert(0, str(REPO))
    from cargo_agent.config import parse_size

    limit = 0 if args.cgroup_limit == "0" else parse_size(args.cgroup_limit) or 0
    with tempfile.TemporaryDirectory(prefix="cargo-agent-bench-memory-") as tmp:
        work = Path(tmp)
        root, what = fixture(work, args.quick)
        results: dict[str, Any] = {"fixture": what, "host": {"cores": os.cpu_count(),
                                                              "mem_total_mib": _meminfo_total() >> 20}}
        if not args.no_wrapper:
            results["wrapper"] = wrapper_cost(root, work, 50 if args.quick else 300)
            print(json.dumps({"wrapper": results["wrapper"]}, indent=2), flush=True)
        if limit:
            try:
                CGROUP = Cgroup(limit)
                results["cgroup_limit_mib"] = limit >> 20
            except OSError as err:
                print(f"bench: storms run without a memory cgroup ({err})", file=sys.stderr)
        try:
            results["storm"] = storms(root, work, args.builds or (2 if args.quick else 4),
                                      set(args.configs.split(",")), args.repeat or (1 if args.quick else 3))
        finally:
            if CGROUP is not None:
                CGROUP.close()
        print(json.dumps({"storm": results["storm"]}, indent=2), flush=True)
    out = REPO / "bench" / "results-memory.json" if args.save else REPO / "bench" / "out" / "results-memory.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")
    return 0


def _meminfo_total() -> int:
    with open("/proc/meminfo") as handle:
        return int(handle.readline().split()[1]) * 1024


if __name__ == "__main__":
    raise SystemExit(main())
