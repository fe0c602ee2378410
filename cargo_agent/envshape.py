"""Every change cargo-agent makes to cargo's environment and arguments, and why.

cargo-agent decides how much cargo may use, never what it builds:
- jobs: how many compile jobs run is decided by the build's jobserver (tokens.py), which cargo
  obeys over every `-j` source. A `-j`/`--jobs`, `CARGO_BUILD_JOBS` or `build.jobs` above the
  build's token cap is still lowered to it, because cargo hands that number to build scripts
  (`NUM_JOBS`, which some pass to `make -j`); a lower user value is kept and caps the tokens;
- test threads: `RUST_TEST_THREADS`, `NEXTEST_TEST_THREADS` and a libtest `--test-threads` after
  `--` capped, never raised;
- rustc wrappers (sccache) and an optional per-checkout CARGO_HOME.
Env vars are used throughout because cargo *joins* them with the config files' values.
Links (the link gate and lld/mold's thread cap) are linkgate.py's: it adds them through a
RUSTC_WRAPPER, so that no rustflags, and so no fingerprint, change.
"""

from __future__ import annotations

import os

from cargo_agent import locations
from cargo_agent.argv import CargoCommand, Option
from cargo_agent.cargoconfig import CargoConfig
from cargo_agent.config import Config
from cargo_agent.errors import UsageError
from cargo_agent.host import cores
from cargo_agent.records import dataclass, field

TYPE_CHECKING = False  # collections.abc only for the checker: this module is on the compiling path
if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass
class Change:
    name: str  # `env NAME` or `arg NAME`
    before: str | None
    after: str | None
    why: str


@dataclass
class Shaped:
    env: dict[str, str]
    argv: list[str]  # the cargo command line (without the program)
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    jobs: int = 1
    jobs_option: tuple[int, int] | None = None  # (index, span) of a rewritten -j in argv

    def set_env(self, name: str, value: str, why: str) -> None:
        before = self.env.get(name)
        if before != value:
            self.env[name] = value
            self.changes.append(Change(f"env {name}", before, value, why))

    def with_jobs(self, jobs: int) -> Shaped:
        """A copy with a lower jobs cap, for a retry after a transient failure."""
        argv = list(self.argv)
        env = dict(self.env)
        if self.jobs_option is not None:
            index, span = self.jobs_option
            argv[index:index + span] = [f"--jobs={jobs}"]
        else:
            env["CARGO_BUILD_JOBS"] = str(jobs)
        return Shaped(env, argv, list(self.changes), list(self.notes), jobs,
                      (self.jobs_option[0], 1) if self.jobs_option else None)


def jobs_cap(config: Config, cpus: int) -> int:
    """The most jobs (CPU tokens) one build may have: `jobs`, at most the host's `cpus` tokens."""
    return max(1, min(int(config["jobs"] or cpus), cpus))


def test_threads_cap(config: Config) -> int:
    return int(config["test_threads"] or min(cores(), 8))


def link_threads_cap(config: Config) -> int:
    return int(config["link_threads"] or min(cores(), 8))


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def shape(command: CargoCommand, cargo_config: CargoConfig, config: Config, env: Mapping[str, str],
          cpus: int) -> Shaped:
    """`cpus`: the host's CPU tokens (tokens.Pool.count)."""
    tokens = command.tokens[1:] if command.toolchain else list(command.tokens)
    shaped = Shaped(dict(env), tokens)
    offset = -1 if command.toolchain else 0
    _shape_jobs(shaped, command, cargo_config, config, cpus, offset)
    _shape_test_threads(shaped, config)
    _shape_test_threads_arg(shaped, command, config)
    _shape_rustc_wrapper(shaped, cargo_config, config)
    return shaped


def _shape_jobs(shaped: Shaped, command: CargoCommand, cargo_config: CargoConfig, config: Config,
                cpus: int, offset: int) -> None:
    cap = jobs_cap(config, cpus)
    why_cap = (f"jobs capped at {cap}: the build runs on at most {cap} of the host's {cpus} CPU tokens "
               "through its jobserver, and build scripts get this number as NUM_JOBS")
    shaped.jobs = cap
    nextest = (command.resolved or "").startswith("nextest")
    names = ("--build-jobs",) if nextest else ("--jobs",)
    options = [o for o in command.parsed.options if o.name in names]
    if options:
        option = options[-1]
        value = _int_or_none(option.value)
        if value is not None and 1 <= value <= cap:
            shaped.jobs = value
            return
        _rewrite_option(shaped, command, option, f"{names[0]}={cap}", offset, why_cap)
        return
    source, raw = "CARGO_BUILD_JOBS", shaped.env.get("CARGO_BUILD_JOBS")
    if raw is None and cargo_config.get("build.jobs") is not None:
        source, raw = "build.jobs", str(cargo_config.get("build.jobs"))
    value = _int_or_none(raw)
    if value is not None and 1 <= value <= cap:
        shaped.jobs = value
        return
    if raw is None and cap >= cores():
        return  # cargo's default (the CPUs it may use) is within the cap already
    why = why_cap + (f" (was {raw} from {source})" if raw is not None else "")
    shaped.set_env("CARGO_BUILD_JOBS", str(cap), why)


def _rewrite_option(shaped: Shaped, command: CargoCommand, option: Option, replacement: str,
                    offset: int, why: str) -> None:
    """Replace one option in the argv; inside an alias expansion, pass the expansion instead."""
    alias_len = len(command.expanded_args) - len(command.args)
    assert command.subcommand_index is not None
    if option.index >= alias_len:
        start = command.subcommand_index + 1 + offset + option.index - alias_len
    else:
        trailing = ["--", *command.trailing] if command.trailing is not None else []
        prefix = shaped.argv[:command.subcommand_index + offset]
        shaped.argv = [*prefix, *command.expanded, *trailing]
        shaped.changes.append(Change("arg alias", command.subcommand, " ".join(command.expanded),
                                     "alias expanded so that an option inside it can be capped"))
        start = command.subcommand_index + offset + 1 + option.index
    before = " ".join(shaped.argv[start:start + option.span])
    shaped.argv[start:start + option.span] = [replacement]
    shaped.jobs_option = (start, 1)
    shaped.changes.append(Change("arg --jobs", before, replacement, why))


def _shape_test_threads(shaped: Shaped, config: Config) -> None:
    cap = test_threads_cap(config)
    for name in ("RUST_TEST_THREADS", "NEXTEST_TEST_THREADS"):
        raw = shaped.env.get(name)
        if raw is not None and raw.strip() != "num-cpus":
            value = _int_or_none(raw.strip())
            if value is None or value < 1:
                raise UsageError(f"invalid value '{raw}' for {name}: expected a whole number >= 1")
            if value <= cap:
                continue
        shaped.set_env(name, str(cap), f"test threads capped at {cap}" + (f" (was {raw})" if raw else ""))


def _shape_test_threads_arg(shaped: Shaped, command: CargoCommand, config: Config) -> None:
    """`cargo test -- --test-threads=N` beats RUST_TEST_THREADS: lower an N above the cap."""
    if command.resolved not in ("test", "bench") or not command.trailing:
        return
    cap = test_threads_cap(config)
    start = len(shaped.argv) - len(command.trailing)  # the trailing args always end the argv
    i = start
    while i < len(shaped.argv):
        word = shaped.argv[i]
        span, raw = 0, None
        if word.startswith("--test-threads="):
            span, raw = 1, word.split("=", 1)[1]
        elif word == "--test-threads" and i + 1 < len(shaped.argv):
            span, raw = 2, shaped.argv[i + 1]
        value = _int_or_none(raw.strip()) if raw is not None else None
        if value is not None and value > cap:
            before = " ".join(shaped.argv[i:i + span])
            shaped.argv[i:i + span] = [f"--test-threads={cap}"]
            shaped.changes.append(Change("arg --test-threads", before, f"--test-threads={cap}",
                                         f"test threads capped at {cap}"))
        i += max(1, span)


# ---- rustc wrapper and CARGO_HOME ----------------------------------------------------

def _shape_rustc_wrapper(shaped: Shaped, cargo_config: CargoConfig, config: Config) -> None:
    mode = config["rustc_wrapper"]
    if mode == "keep":
        return
    configured = cargo_config.get("build.rustc-wrapper")
    wrappers = [w for w in (shaped.env.get("RUSTC_WRAPPER"), shaped.env.get("CARGO_BUILD_RUSTC_WRAPPER"),
                            configured if isinstance(configured, str) else None) if w]
    if not wrappers:
        return
    if mode == "clear-sccache" and not any("sccache" in os.path.basename(w) for w in wrappers):
        return
    why = f"rustc wrapper {wrappers[0]} turned off (rustc_wrapper = {mode})"
    # An empty value is cargo's way to say "no wrapper", and beats build.rustc-wrapper in files.
    shaped.set_env("RUSTC_WRAPPER", "", why)
    shaped.set_env("CARGO_BUILD_RUSTC_WRAPPER", "", why)


def isolate_cargo_home(shaped: Shaped, workspace_root: str) -> None:
    """A CARGO_HOME of this checkout's own, seeded with the user's config and credentials, so
    agents in different checkouts do not queue on the shared package-cache lock."""
    import hashlib
    import shutil
    from pathlib import Path  # only with isolate_cargo_home on: off the usual compiling path

    original = Path(locations.cargo_home(shaped.env))
    digest = hashlib.sha256(str(workspace_root).encode()).hexdigest()[:16]
    home = Path(locations.cache_dir(shaped.env)) / "homes" / digest
    home.mkdir(parents=True, exist_ok=True)
    for name in ("config.toml", "config", "credentials.toml", "credentials"):
        source = original / name
        if source.is_file():
            target = home / name
            if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
                shutil.copy2(source, target)
    shaped.set_env("CARGO_HOME", str(home), f"per-checkout CARGO_HOME for {workspace_root}")
