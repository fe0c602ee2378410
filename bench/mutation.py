"""Mutation check: how much wrong code do the tests let through where cargo-agent decides?

    python -m bench.mutation                      # every module in TARGETS, every mutant
    python -m bench.mutation --module config      # one module (repeatable)
    python -m bench.mutation --sample 100         # a fixed-seed sample of N mutants per module
    python -m bench.mutation --list               # the mutants, without running anything
    python -m bench.mutation --show config:1a2b3c4d   # one mutant as a diff

A small AST mutator: it flips comparisons and `and`/`or`, removes `not`, nudges numbers by +-1,
blanks strings, swaps True/False, deletes statements and makes `return x` return None, one change
at a time. Each mutant is written over the module in a throw-away copy of this checkout (never the
working tree), and the module's tests run against that copy with PYTHONPATH pointing at it, so the
`python -m cargo_agent` subprocesses the tests start load the mutant too. A mutant is killed when
the tests fail or time out (a mutant that loops; a timeout is confirmed once with three times the
limit, so a busy machine does not count as a kill), and survives when they pass.

TARGETS names the modules that decide (policy, argv, config, lint, and the parts that decide
tokens, caps, admission, link slots, predictions and the memory limit: tokens, envshape, slots,
linkgate, report, host, each limited by `only` to its deciding functions and classes) and, for
each, the tests run per mutant: files, or `file::test` for one test of a slow file, the quickest
killers first (pytest -x stops at the first failure); a file missing from the checkout is skipped.

Equivalent mutants (no test could tell them apart) are listed with a reason in
bench/mutation-equivalent.toml and left out of the score. Not part of CI: it is slow.
See docs/mutation.md for the figures.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import difflib
import hashlib
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ALLOWLIST = REPO / "bench" / "mutation-equivalent.toml"
DEFAULT_SEED = 18
MAX_JOBS = 2  # the build host has 2 cores shared with other work
MEMORY_CAP = 4 << 30  # a test run's process tree above this: a mutant that loops appending (killed, not OOM)
WATCH_SECONDS = 0.5  # how often a running test run's memory is looked at


@dataclass(frozen=True)
class Target:
    path: str  # the module, relative to the repo root
    tests: tuple[str, ...]  # test files (or `file::test`) run per mutant, the quickest killers first (-x stops early)
    only: tuple[str, ...] = ()  # top-level functions/classes to mutate; empty: the whole module
    keyword: str = ""  # a pytest -k expression narrowing the tests run per mutant; empty: all of them


# The modules that decide, each with the tests run per mutant. To add one, add a row; `only`
# limits it to some top-level functions and classes (e.g. slots' admission, not its queue).
TARGETS: dict[str, Target] = {
    "policy": Target("cargo_agent/policy.py", ("tests/policy_test.py", "tests/cli_test.py")),
    "argv": Target("cargo_agent/argv.py", ("tests/argv_test.py", "tests/policy_test.py")),
    "config": Target("cargo_agent/config.py", ("tests/config_test.py", "tests/badinput_test.py",
                                               "tests/fuzz_test.py", "tests/docs_test.py")),
    # lint: its own tests without the slow ones that check nothing new about lint.py (docs/mutation.md):
    # fuzz_test's config tests, and the pre-commit hook install (4 s; what it checks, main() tests check).
    "lint": Target("cargo_agent/lint.py", ("tests/lint_test.py", "tests/fuzz_test.py"),
                   keyword="lint and not pre_commit"),
    # The parts that decide admission and tokens: only the deciding functions and classes (`only`),
    # not the lock-file, queue and supervisor plumbing around them. A file missing from a checkout
    # (a "before" measurement) is skipped; `file::test` runs one test of a slow file.
    "tokens": Target("cargo_agent/tokens.py", ("tests/tokens_decide_test.py", "tests/tokens_test.py"),
                     only=("resolve", "Broker", "BuildCpu", "for_build")),
    "envshape": Target("cargo_agent/envshape.py", ("tests/envshape_test.py",),
                       only=("jobs_cap", "test_threads_cap", "link_threads_cap", "_int_or_none", "_shape_jobs",
                             "_shape_test_threads", "_shape_test_threads_arg")),
    "slots": Target("cargo_agent/slots.py", (
        "tests/admission_test.py", "tests/report_test.py",
        "tests/slots_test.py::test_slot_count_lives_in_the_host_file_and_can_only_be_lowered",
        "tests/slots_test.py::test_memory_pressure_holds_a_run_back_until_it_drops",
        "tests/host_test.py::test_pressure_holds_admission_and_says_why"),
        only=("learned_per_build", "auto_slots", "resolve", "_hold_back", "_others_held", "memory_verdict", "_asides",
              "_step_aside", "_take_free_slot", "_decide")),
    "linkgate": Target("cargo_agent/linkgate.py", ("tests/linkgate_test.py", "tests/report_test.py"),
                       only=("slot_count",)),
    "report": Target("cargo_agent/report.py", ("tests/report_test.py",),
                     only=("command_key", "_same_key", "predict", "learned_peak")),
    "host": Target("cargo_agent/host.py", ("tests/host_test.py",),
                   only=("meminfo", "_mounts", "_cgroup_dirs", "_find_cgroup_dirs", "_stat_field", "_number", "Limit",
                         "limits", "in_force",
                         "reserve_within", "_cpu_cgroup_dirs", "_read_quota", "cpu_limit", "cpus")),
}

_CMP_FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
_CMP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
             ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
_KEPT_STATEMENTS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.Pass,
                    ast.Global, ast.Nonlocal)


@dataclass(frozen=True)
class Mutant:
    id: str  # stable: module + a hash of (scope, line text, column in the line, operator, change)
    module: str
    path: str
    line: int
    col: int
    operator: str  # cmp, boolop, not, number, string, bool, delete, return-none
    description: str  # e.g. "`<` -> `<=`"
    line_text: str  # the first source line of the mutated node, stripped
    start: int  # character offsets of the replaced text in the original source
    end: int
    replacement: str

    def apply(self, source: str) -> str:
        return source[:self.start] + self.replacement + source[self.end:]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}:{self.col + 1}"


# ---- generating mutants --------------------------------------------------------------

def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _candidates(node: ast.AST) -> list[tuple[str, ast.AST, str]]:
    """(operator, replacement node, description) for each mutation of `node` itself."""
    found: list[tuple[str, ast.AST, str]] = []
    if isinstance(node, ast.Compare):
        for k, op in enumerate(node.ops):
            new = ast.Compare(node.left, [*node.ops[:k], _CMP_FLIP[type(op)](), *node.ops[k + 1:]], node.comparators)
            found.append(("cmp", new, f"`{_CMP_TEXT[type(op)]}` -> `{_CMP_TEXT[_CMP_FLIP[type(op)]]}`"))
    elif isinstance(node, ast.BoolOp):
        flipped: ast.boolop = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        text = ("`and` -> `or`") if isinstance(node.op, ast.And) else "`or` -> `and`"
        found.append(("boolop", ast.BoolOp(flipped, node.values), text))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        found.append(("not", node.operand, f"drop `not` in `{_short(ast.unparse(node))}`"))
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            found.append(("bool", ast.Constant(not value), f"`{value}` -> `{not value}`"))
        elif isinstance(value, (int, float)):
            for delta in (1, -1):
                nudged = value + delta
                new_number: ast.expr = ast.Constant(nudged)
                if nudged < 0:  # `-1` is a unary minus in the tree that parsing the spliced text gives
                    new_number = ast.UnaryOp(ast.USub(), ast.Constant(-nudged))
                found.append(("number", new_number, f"`{value!r}` -> `{nudged!r}`"))
        elif isinstance(value, str) and value:
            found.append(("string", ast.Constant(""), f"`{_short(repr(value))}` -> `''`"))
    elif isinstance(node, ast.JoinedStr):  # an f-string is blanked whole (part positions are unreliable < 3.12)
        found.append(("string", ast.Constant(""), f"`{_short(ast.unparse(node))}` -> `''`"))
    elif isinstance(node, ast.Return) and node.value is not None \
            and not (isinstance(node.value, ast.Constant) and node.value.value is None):
        found.append(("return-none", ast.Return(ast.Constant(None)),
                      f"`return {_short(ast.unparse(node.value))}` -> `return None`"))
    return found


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


class _Walker:
    """Collects the mutations worth making, with the scope each sits in.

    Skipped: annotations (strings at run time under `from __future__ import annotations`),
    docstrings, imports, definitions as a whole, and the insides of f-strings (blanked whole)."""

    def __init__(self) -> None:
        self.found: list[tuple[ast.AST, str, str, ast.AST, str]] = []  # node, scope, op, replacement, description

    def block(self, stmts: list[ast.stmt], scope: str, function_body: bool = False) -> None:
        for n, stmt in enumerate(stmts):
            if isinstance(stmt, _KEPT_STATEMENTS) or _is_docstring(stmt):
                continue
            if function_body and n == len(stmts) - 1 and isinstance(stmt, ast.Return):
                continue  # deleting a function's last return is the return-none mutant, or nothing
            first = ast.unparse(stmt).splitlines()[0]
            self.found.append((stmt, scope, "delete", ast.Pass(), f"delete `{_short(first)}`"))
        for stmt in stmts:
            self.statement(stmt, scope)

    def statement(self, stmt: ast.stmt, scope: str) -> None:
        if _is_docstring(stmt) or isinstance(stmt, (ast.Import, ast.ImportFrom)):
            return
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            inner = f"{scope}.{stmt.name}" if scope else stmt.name
            if isinstance(stmt, ast.ClassDef):
                heads = [*stmt.decorator_list, *stmt.bases, *(k.value for k in stmt.keywords)]
            else:
                heads = [*stmt.decorator_list, *stmt.args.defaults, *filter(None, stmt.args.kw_defaults)]
            for expr in heads:
                self.expression(expr, scope)
            self.block(stmt.body, inner, function_body=not isinstance(stmt, ast.ClassDef))
            return
        for op, new, text in _candidates(stmt):
            self.found.append((stmt, scope, op, new, text))
        self.fields(stmt, scope, skip=("annotation",))
        for name in ("body", "orelse", "finalbody"):
            block = getattr(stmt, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                self.block(block, scope)
        for handler in getattr(stmt, "handlers", []):
            self.block(handler.body, scope)
        for case in getattr(stmt, "cases", []):
            self.block(case.body, scope)

    def other(self, node: ast.AST, scope: str) -> None:
        """Nodes that are neither statements nor expressions: keywords, comprehensions, handlers..."""
        self.fields(node, scope, skip=("annotation", "body", "pattern"))

    def fields(self, node: ast.AST, scope: str, skip: tuple[str, ...]) -> None:
        """The expressions and other nodes in `node`'s fields but `skip` (statements in them are
        walked as blocks by the caller)."""
        for name, value in ast.iter_fields(node):
            if name in skip:
                continue
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.expr):
                    self.expression(child, scope)
                elif isinstance(child, ast.AST) and not isinstance(child, ast.stmt):
                    self.other(child, scope)

    def expression(self, node: ast.expr, scope: str) -> None:
        for op, new, text in _candidates(node):
            self.found.append((node, scope, op, new, text))
        if isinstance(node, ast.JoinedStr):
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expression(child, scope)
            elif not isinstance(child, ast.stmt):
                self.other(child, scope)


def _line_starts(source: str) -> list[int]:
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def _parents(tree: ast.AST) -> dict[int, tuple[ast.AST, str, int | None]]:
    found: dict[int, tuple[ast.AST, str, int | None]] = {}
    for parent in ast.walk(tree):
        for name, value in ast.iter_fields(parent):
            if isinstance(value, list):
                for index, child in enumerate(value):
                    if isinstance(child, ast.AST):
                        found[id(child)] = (parent, name, index)
            elif isinstance(value, ast.AST):
                found[id(value)] = (parent, name, None)
    return found


def _swap(where: tuple[ast.AST, str, int | None], node: ast.AST) -> ast.AST:
    parent, name, index = where
    if index is None:
        old = getattr(parent, name)
        setattr(parent, name, node)
    else:
        old = getattr(parent, name)[index]
        getattr(parent, name)[index] = node
    return old  # type: ignore[no-any-return]


def generate(module: str, target: Target, source: str) -> list[Mutant]:
    """Every mutant of `source`, in source order, with stable ids.

    Each mutation is spliced into the source text (only the mutated node's text changes), then
    checked: the spliced source must parse to exactly the mutated tree, else it is dropped."""
    tree = ast.parse(source)
    walker = _Walker()
    kept = [s for s in tree.body if not target.only or getattr(s, "name", None) in target.only]
    if target.only:
        for stmt in kept:
            walker.statement(stmt, "")
    else:
        walker.block(kept, "")
    parents = _parents(tree)
    lines = source.splitlines(keepends=True)
    starts = _line_starts(source)

    def offset(line: int, col_bytes: int) -> int:  # ast columns count UTF-8 bytes
        return starts[line - 1] + len(lines[line - 1].encode()[:col_bytes].decode(errors="replace"))

    mutants: list[Mutant] = []
    dropped: list[str] = []
    seen: dict[str, int] = {}
    for node, scope, op, new, description in walker.found:
        lineno, col = node.lineno, node.col_offset  # type: ignore[attr-defined]
        start = offset(lineno, col)
        end = offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
        replacement = ast.unparse(new)
        if isinstance(new, ast.expr):
            replacement = f"({replacement})"
        elif op == "delete" and source.startswith("elif", start):
            replacement = "else: pass"
        old = _swap(parents[id(node)], new)
        expected = ast.dump(tree)
        _swap(parents[id(node)], old)
        mutated = source[:start] + replacement + source[end:]
        try:
            if ast.dump(ast.parse(mutated)) != expected:
                dropped.append(description)
                continue
        except SyntaxError:
            dropped.append(description)
            continue  # cannot be spliced in place: dropped, never run as a different mutant
        line_text = lines[lineno - 1].strip()
        column_in_line = col - (len(lines[lineno - 1]) - len(lines[lineno - 1].lstrip()))
        key = "\0".join([module, scope, line_text, str(column_in_line), op, description])
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        seen[digest] = seen.get(digest, 0) + 1
        ident = f"{module}:{digest}" + (f".{seen[digest]}" if seen[digest] > 1 else "")
        mutants.append(Mutant(ident, module, target.path, lineno, col, op, description, line_text, start, end,
                              replacement))
    mutants.sort(key=lambda m: (m.start, m.end, m.id))
    if os.environ.get("MUTATION_DEBUG"):
        print(f"{module}: {len(dropped)} dropped: {dropped}", file=sys.stderr)
    return mutants


# ---- the allowlist of equivalent mutants ---------------------------------------------

@dataclass
class Equivalent:
    reason: str
    id: str | None = None
    module: str | None = None
    line: str | None = None  # the stripped source line; with `mutation`, a substring of the description
    mutation: str | None = None
    used: int = 0

    def matches(self, mutant: Mutant) -> bool:
        if self.id is not None:
            return mutant.id == self.id
        return (mutant.module == self.module and mutant.line_text == self.line
                and (self.mutation is None or self.mutation in mutant.description))


def read_allowlist(path: Path) -> list[Equivalent]:
    """`[[equivalent]]` tables: `id`, or `module` + `line` (+ optional `mutation`); `reason` is required."""
    if not path.exists():
        return []
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    data = tomllib.loads(path.read_text())
    entries = []
    for n, raw in enumerate(data.get("equivalent", []), start=1):
        reason = str(raw.get("reason", "")).strip()
        if not reason or not (raw.get("id") or (raw.get("module") and raw.get("line"))):
            raise SystemExit(f"error: entry {n} of {path} needs a reason and either an id or a module and a line")
        entries.append(Equivalent(reason, raw.get("id"), raw.get("module"), raw.get("line"), raw.get("mutation")))
    return entries


def equivalent_of(mutant: Mutant, allowlist: list[Equivalent]) -> Equivalent | None:
    for entry in allowlist:
        if entry.matches(mutant):
            entry.used += 1
            return entry
    return None


# ---- running mutants -----------------------------------------------------------------

_IGNORED = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".hypothesis", ".pytest_cache", ".mypy_cache",
                                  ".ruff_cache", ".benchmarks", "target", "build", "dist", ".venv")


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, timeout, survived
    seconds: float
    detail: str = ""  # the first failing test, for a killed mutant


@dataclass
class Runner:
    """Copies of the checkout (one per worker) where mutants are written and tested."""

    repo: Path
    jobs: int = MAX_JOBS
    timeout: float | None = None
    memory_cap: int = MEMORY_CAP
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cargo-agent-mutation-")))
    copies: queue.Queue[Path] = field(default_factory=queue.Queue)
    _running: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: bool = False

    def __post_init__(self) -> None:
        for n in range(self.jobs):
            copy = self.work / f"w{n}" / "repo"
            shutil.copytree(self.repo, copy, ignore=_IGNORED, symlinks=True)
            self.copies.put(copy)

    @property
    def snapshot(self) -> Path:
        """The checkout as it was copied (the working tree may change during a long run)."""
        return self.work / "w0" / "repo"

    def env(self, copy: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_AGENT_")}
        env["PYTHONPATH"] = str(copy)  # the copy, never the working tree or an editable install
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant of the same size and mtime must not reuse a stale .pyc
        return env

    def check_copy_is_loaded(self) -> None:
        copy = self.copies.get()
        try:
            found = subprocess.run([sys.executable, "-c", "import cargo_agent; print(cargo_agent.__file__)"],
                                   cwd=copy, env=self.env(copy), capture_output=True, text=True, check=True)
            if not Path(found.stdout.strip()).is_relative_to(copy):
                raise SystemExit(f"error: the tests would load {found.stdout.strip()}, not the copy in {copy}")
        finally:
            self.copies.put(copy)

    def _pytest(self, copy: Path, tests: tuple[str, ...], timeout: float | None,
                keyword: str = "") -> tuple[str, float, str]:
        basetemp = copy.parent / "pytest-tmp"
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--basetemp={basetemp}",
                   "--hypothesis-seed=0", *(["-k", keyword] if keyword else []), *tests]
        start = time.monotonic()
        process = subprocess.Popen(command, cwd=copy, env=self.env(copy), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        with self._lock:
            self._running.add(process.pid)
            if self.stopping:  # started as stop() ran: stop() did not see it
                _kill_tree(process.pid)
        try:
            while True:
                try:
                    output, _ = process.communicate(timeout=WATCH_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if timeout is not None and time.monotonic() - start >= timeout:
                    _kill_tree(process.pid)
                    process.communicate()
                    return "timeout", time.monotonic() - start, f"no result after {timeout:.0f} s"
                if _tree_memory(process.pid) > self.memory_cap:  # before the OOM killer picks a victim
                    _kill_tree(process.pid)
                    process.communicate()
                    return "killed", time.monotonic() - start, (f"its tests held more than "
                                                                 f"{self.memory_cap >> 20} MiB")
        finally:
            with self._lock:
                self._running.discard(process.pid)
            shutil.rmtree(copy / ".hypothesis", ignore_errors=True)  # no replay of another mutant's failures
            shutil.rmtree(basetemp, ignore_errors=True)
        seconds = time.monotonic() - start
        if self.stopping:
            raise KeyboardInterrupt
        if process.returncode == 0:
            return "survived", seconds, ""
        if process.returncode < 0:  # a signal: the OOM killer, or a test's own process group kill
            return "killed", seconds, f"pytest killed by signal {-process.returncode}"
        if process.returncode in (1, 2, 3):  # failed, interrupted (collection error), internal error
            failed = next((line for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))), "")
            last = output.strip().splitlines()[-1] if output.strip() else ""
            return "killed", seconds, failed or last
        raise SystemExit(f"error: pytest exited {process.returncode} (usage error or no tests):\n{output}")

    def baseline(self, target: Target) -> float:
        """Run the tests on unmutated code: they must pass; their time sets the per-mutant timeout."""
        copy = self.copies.get()
        try:
            status, seconds, _ = self._pytest(copy, self.tests(copy, target), None, target.keyword)
        finally:
            self.copies.put(copy)
        if status != "survived":
            raise SystemExit(f"error: {target.path}'s tests fail on unmutated code; fix them first")
        return seconds

    @staticmethod
    def tests(copy: Path, target: Target) -> tuple[str, ...]:
        """The target's tests that exist in `copy` (a `file::test` entry names one test of a file)."""
        return tuple(t for t in target.tests if (copy / t.split("::")[0]).exists())

    def run(self, mutant: Mutant, target: Target, timeout: float) -> Outcome:
        if self.stopping:
            raise KeyboardInterrupt
        copy = self.copies.get()
        module = copy / mutant.path
        original = module.read_text()
        try:
            module.write_text(mutant.apply(original))
            status, seconds, detail = self._pytest(copy, self.tests(copy, target), timeout, target.keyword)
            if status == "timeout":  # a busy machine is not a loop: confirm with a longer limit
                status, seconds, detail = self._pytest(copy, self.tests(copy, target), 3 * timeout, target.keyword)
        finally:
            module.write_text(original)
            self.copies.put(copy)
        return Outcome(mutant, status, seconds, detail)

    def stop(self) -> None:
        """Kill every running test run and what it started (Ctrl-C, SIGTERM)."""
        with self._lock:
            self.stopping = True
            pids = list(self._running)
        for pid in pids:
            _kill_tree(pid)

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _tree_memory(pid: int) -> int:
    """Resident memory of a test run and everything it started, in bytes."""
    import psutil

    try:
        processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def _kill_tree(pid: int) -> None:
    """Kill a test run's process group and everything it started (some of it may have left the group)."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=10)


# ---- the command ---------------------------------------------------------------------

def run_all(runner: Runner, mutants: list[Mutant], target: Target, timeout: float, jobs: int) -> list[Outcome]:
    """Run `mutants` on `jobs` workers, printing each outcome; Ctrl-C stops the running tests at once."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    outcomes: list[Outcome] = []
    try:
        futures = [pool.submit(runner.run, m, target, timeout) for m in mutants]
        for n, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            outcome = future.result()
            outcomes.append(outcome)
            print(f"  [{n}/{len(mutants)}] {outcome.status:<8} {outcome.mutant.id:<20} "
                  f"{outcome.mutant.where} {outcome.mutant.description}", file=sys.stderr)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # nothing new starts...
        runner.stop()  # ...the running tests are killed...
        pool.shutdown(wait=True)  # ...so the workers end at once
        raise
    pool.shutdown()
    return outcomes


def select(mutants: list[Mutant], sample: int | None, seed: int, module: str) -> list[Mutant]:
    if sample is None or sample >= len(mutants):
        return mutants
    picked = random.Random(f"{seed}:{module}").sample(mutants, sample)
    return sorted(picked, key=lambda m: (m.start, m.end, m.id))


def _label(test: str) -> str:
    """`tests/slots_test.py::test_x` -> `slots_test::test_x`."""
    path, sep, node = test.partition("::")
    return Path(path).stem + sep + node


def _table(rows: list[dict[str, object]]) -> str:
    lines = ["| module | tests per mutant | mutants | killed | equivalent | score |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| `{row['path']}` | {row['tests']} | {row['mutants']} | {row['killed']} | "
                     f"{row['equivalent']} | {row['score']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS), help="module to mutate (repeatable)")
    parser.add_argument("--sample", type=int, metavar="N", help="run a fixed-seed sample of N mutants per module")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"sample seed (default {DEFAULT_SEED})")
    parser.add_argument("--id", action="append", default=[], metavar="ID", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--show", metavar="ID", help="print one mutant as a diff and exit")
    parser.add_argument("--jobs", type=int, default=MAX_JOBS, choices=range(1, MAX_JOBS + 1))
    parser.add_argument("--timeout", type=float, help="seconds per mutant (default: 3x the unmutated run + 30)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every outcome to FILE")
    parser.add_argument("--allowlist", type=Path, default=ALLOWLIST)
    args = parser.parse_args(argv)

    allowlist = read_allowlist(args.allowlist)
    modules = args.module or list(TARGETS)
    plan: list[tuple[str, Target, list[Mutant], list[Mutant], int]] = []
    for name in modules:
        target = TARGETS[name]
        source = (REPO / target.path).read_text()
        every = generate(name, target, source)
        shown = next((m for m in every if m.id == args.show), None)
        if shown is not None:
            sys.stdout.writelines(difflib.unified_diff(
                source.splitlines(keepends=True), shown.apply(source).splitlines(keepends=True),
                f"a/{target.path}", f"b/{target.path}"))
            return 0
        reasons = {m.id: equivalent_of(m, allowlist) for m in every}
        live = [m for m in every if reasons[m.id] is None and (not args.id or m.id in args.id)]
        chosen = select(live, args.sample, args.seed, name)
        plan.append((name, target, every, chosen, len(every) - len([m for m in every if reasons[m.id] is None])))
        if args.list:
            picked = {m.id for m in chosen}
            for mutant in every:
                mark = "equivalent" if reasons[mutant.id] else ("run" if mutant.id in picked else "not run")
                print(f"{mutant.id:<20} {mutant.where:<32} {mutant.operator:<11} {mutant.description}  [{mark}]")
    if args.show:
        print(f"error: no mutant {args.show}", file=sys.stderr)
        return 2
    if args.list:
        return 0

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # `kill PID` stops the runs and cleans up like Ctrl-C
    runner = Runner(REPO, jobs=args.jobs)
    rows: list[dict[str, object]] = []
    report: list[dict[str, object]] = []
    try:
        runner.check_copy_is_loaded()
        for name, target, every, chosen, equivalent in plan:
            tests = runner.tests(runner.snapshot, target)
            base = runner.baseline(target)
            timeout = args.timeout or 3 * base + 30
            selection = " ".join(tests) + (f" -k {target.keyword!r}" if target.keyword else "")
            print(f"{name}: {len(chosen)} of {len(every) - equivalent} mutants ({equivalent} equivalent), "
                  f"tests {selection}: {base:.1f} s unmutated, timeout {timeout:.0f} s", file=sys.stderr)
            outcomes = run_all(runner, chosen, target, timeout, args.jobs)
            outcomes.sort(key=lambda o: (o.mutant.start, o.mutant.end, o.mutant.id))
            killed = sum(1 for o in outcomes if o.status != "survived")
            sampled = len(chosen) < len(every) - equivalent
            how = "chosen by --id" if args.id else f"sample, seed {args.seed}"
            count = f"{len(chosen)} of {len(every) - equivalent} ({how})" if sampled else str(len(chosen))
            score = f"{100 * killed / len(chosen):.1f} %" if chosen else "n/a"
            named = ", ".join(_label(t) for t in tests) + (f" (-k '{target.keyword}')" if target.keyword else "")
            rows.append({"path": target.path, "tests": named, "mutants": count,
                         "killed": killed, "equivalent": equivalent, "score": score})
            report.extend({"id": o.mutant.id, "where": o.mutant.where, "operator": o.mutant.operator,
                           "mutation": o.mutant.description, "line": o.mutant.line_text, "status": o.status,
                           "seconds": round(o.seconds, 2), "detail": o.detail} for o in outcomes)
            survivors = [o for o in outcomes if o.status == "survived"]
            print(f"\n{name}: {killed}/{len(chosen)} killed, score {score}")
            for o in survivors:
                print(f"  survived {o.mutant.id:<20} {o.mutant.where:<34} {o.mutant.description}\n"
                      f"           | {o.mutant.line_text}")
            sys.stdout.flush()
            if args.json:  # after each module, so an interrupted run keeps what it measured
                args.json.write_text(json.dumps({"seed": args.seed, "sample": args.sample, "rows": rows,
                                                 "outcomes": report}, indent=1) + "\n")
    except KeyboardInterrupt:
        runner.stop()
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        runner.close()
    print()
    print(_table(rows))
    for entry in allowlist:
        if entry.used == 0 and (entry.module is None or entry.module in modules) \
                and (entry.id is None or entry.id.split(":")[0] in modules):
            print(f"warning: allowlist entry matches no mutant: {entry.id or entry.line!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
