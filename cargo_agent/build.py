"""The full path for a compiling command: aliases, workspace, config, policy, toolchain,
env shaping, a slot, the supervised run, the report. `--dry-run` stops before the slot."""

from __future__ import annotations

import os
import sys
import time

from cargo_agent import argv as argv_model
from cargo_agent import (
    cargoconfig,
    envshape,
    linkgate,
    passthrough,
    policy,
    report,
    slots,
    supervise,
    tokens,
    workspace,
)
from cargo_agent import config as settings
from cargo_agent.errors import EXIT_USAGE
from cargo_agent.records import dataclass

TYPE_CHECKING = False  # collections.abc only for the checker: this module is on the compiling path
if TYPE_CHECKING:
    from collections.abc import Callable

INVOKED_AS_ENV = "CARGO_AGENT_INVOKED_AS"  # set by the shim: refusal hints then say `cargo ...`


def _alias_lookup(cargo_config: cargoconfig.CargoConfig, env: dict[str, str]) -> argv_model.AliasLookup:
    return lambda name: cargo_config.alias(name, env)


@dataclass
class Decided:
    command: argv_model.CargoCommand
    cargo_config: cargoconfig.CargoConfig
    location: workspace.Location | None
    config: settings.Config
    decision: policy.Decision


def decide(command: argv_model.CargoCommand, cwd_path: str | os.PathLike[str], env: dict[str, str]) -> Decided:
    """Aliases, workspace, config and the policy decision: everything before side effects."""
    cwd = os.fspath(cwd_path)
    cargo_config = cargoconfig.load(cwd, env, command.global_configs)
    command = argv_model.expand_aliases(command, _alias_lookup(cargo_config, env))
    location = workspace.locate(cwd, command.manifest_path) if command.compiles else None
    root_data = location.workspace.root_data if location else None
    if command.compiles:  # a config that cannot be used stops a compiling command (fail closed)
        config = settings.load(env, root_data, location.workspace.root_manifest if location else None)
    else:
        config = passthrough.settings_for_non_compiling(env)
    program = env.get(INVOKED_AS_ENV) or "cargo-agent"
    if location is not None:
        location.cwd = cwd  # a refusal's fix names the member the caller works in
    decision = policy.evaluate(command, location, config, program)
    if command.configs != command.global_configs:  # --config after the subcommand counts too
        cargo_config = cargoconfig.load(cwd, env, command.configs)
    return Decided(command, cargo_config, location, config, decision)


def run(command: argv_model.CargoCommand, cwd_text: str, env: dict[str, str], dry_run: bool = False,
        as_json: bool = False) -> int:
    decided = decide(command, cwd_text, env)
    command, cargo_config, location, config, decision = (
        decided.command, decided.cargo_config, decided.location, decided.config, decided.decision)
    if not command.compiles:
        cargo = passthrough.find_cargo(env, config["cargo"])
        if not dry_run:
            return passthrough.exec_cargo(command, cwd_text, env, cargo)
        from cargo_agent.commands import plan

        plan.show_passthrough(command, passthrough.pin(command, cwd_text, dict(env)), cargo, as_json)
        return 0
    if not decision.allowed and not dry_run:
        raise decision.error()
    if not dry_run:  # --dry-run shows every clamp in its settings section
        for line in config.clamp_warnings():
            sys.stderr.write(line + "\n")
    child_env = dict(env)
    chosen = passthrough.pin(command, cwd_text, child_env)
    slot_settings = slots.resolve(config, env, create=not dry_run)
    pool = tokens.resolve(config, slot_settings.lock_dir, slot_settings.shared)
    shaped = envshape.shape(command, cargo_config, config, child_env, pool.count)
    if config["isolate_cargo_home"] and location is not None:
        envshape.isolate_cargo_home(shaped, location.workspace.root)
    limit_as = None if _exempt_from_limit(command, config, env) else config["limit_as"]
    memory = _memory_plan(command, location, config, slot_settings, env)
    notes = linkgate.install(shaped, cargo_config, config, slot_settings.lock_dir, slot_settings.shared,
                             int(str(memory["link_slots"]["count"])), limit_as, cwd_text)
    cargo = passthrough.find_cargo(env, config["cargo"])
    if dry_run:
        from cargo_agent.commands import plan

        plan.show(command, decision, chosen, slot_settings, shaped, cargo, limit_as, config, env, as_json, memory, pool)
        return 0 if decision.allowed else EXIT_USAGE
    for note in notes:
        sys.stderr.write(f"note: cargo-agent: {note}\n")
    return _execute(command, cwd_text, env, config, slot_settings, shaped, cargo, limit_as, memory, pool)


def _memory_plan(command: argv_model.CargoCommand, location: workspace.Location | None, config: settings.Config,
                 slot_settings: slots.SlotSettings, env: dict[str, str]) -> dict[str, dict[str, object]]:
    """The memory side of a build: the limit in force, the predicted peak, link slots."""
    from cargo_agent import host

    limit = host.in_force()
    key = report.command_key(location.workspace.root if location else None,
                             command.resolved, [(o.name, o.value) for o in command.parsed.options])
    prediction = report.predict(slot_settings.lock_dir, key, int(config["per_build_memory"]))
    count, formula = linkgate.slot_count(config, slot_settings.lock_dir, env)
    return {"limit": {"bytes": limit.limit, "used": limit.used, "source": limit.source},
            "prediction": {**prediction.as_json(), "key": key},
            "link_slots": {"count": count, "formula": formula},
            "pressure": {**host.pressure(env).as_json(), "pressure_high": config["pressure_high"],
                         "pressure_kill": config["pressure_kill"]}}


def _exempt_from_limit(command: argv_model.CargoCommand, config: settings.Config, env: dict[str, str]) -> bool:
    """Workloads that reserve huge address space by design run without RLIMIT_AS."""
    exempt = set(config["limit_as_exempt"])
    resolved = command.resolved or ""
    if resolved in exempt or resolved.split(" ", 1)[0] in exempt:  # `miri` covers `miri test`
        return True
    sanitizer = any(u.startswith("sanitizer") for u in command.unstable) or any(
        "sanitizer=" in (env.get(v) or "") for v in ("RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"))
    return "sanitizer" in exempt and sanitizer


def _execute(command: argv_model.CargoCommand, cwd: str, env: dict[str, str], config: settings.Config,
             slot_settings: slots.SlotSettings, shaped: envshape.Shaped, cargo: str,
             limit_as: int | None, memory: dict[str, dict[str, object]], pool: tokens.Pool) -> int:
    import resource

    started = time.monotonic()
    predicted = int(str(memory["prediction"]["peak"]))
    slot = slots.inherited_slot(env, slot_settings)
    if slot is None and linkgate.held_by_ancestor(slot_settings.lock_dir):
        # Below a link that holds a link slot: never wait for a build slot (the enclosing
        # build holds one), or links and builds could wait on each other.
        slot = slots.Slot(-1, -1, os.path.join(slot_settings.lock_dir, "slot-nested.lock"), slot_settings, nested=True)
    if slot is None:
        slot = slots.acquire(slot_settings, command.tokens, cwd, env, predicted)
    limit_as = _reachable_limit_as(limit_as)
    if not slot.nested:
        shaped.env[slots.SLOT_ENV] = slot.env_value()
    spec = supervise.RunSpec(cargo, shaped.argv, shaped.env, limit_as, config["timeout"], config["soft_timeout"],
                             config["kill_grace"], (slot.fd,) if slot.fd >= 0 else ())
    retries = 0
    guard = _memory_guard(slot_settings, env) if (slot_settings.mem_kill or slot_settings.pressure_kill) \
        and not slot.nested else None
    guard = slots.watching(slot, guard)  # also follows a lock dir that is removed or replaced
    cpu = None
    phases = _Phases(command, slot)
    try:
        cpu = phases.cpu = tokens.for_build(pool, slot.nested, env, slot_settings.wait_timeout)  # tokens.py
        while True:
            try:
                outcome = cpu.run(spec, shaped.jobs,
                                  lambda: supervise.run_once(spec, guard, phases.program_started))
            except supervise.SupervisorError as err:
                from cargo_agent.errors import UsageError

                raise UsageError(str(err)) from None
            signature = supervise.retryable(outcome, command.resolved)
            if signature is None or retries >= config["retries"]:
                break
            retries += 1
            shaped = shaped.with_jobs(max(1, shaped.jobs // 2))
            spec.argv, spec.env = shaped.argv, shaped.env
            sys.stderr.write(f"warning: cargo-agent: transient resource failure ({signature[:120]}); "
                             f"retrying with --jobs {shaped.jobs} (retry {retries} of {config['retries']})\n")
            time.sleep(supervise.backoff(retries - 1))
    finally:
        if cpu is not None:
            cpu.release()
        slot.release()
        released_at = slot.released_at or time.time()
    shown = phases.shown_command(env) if outcome.timed_out or outcome.memory_killed else ""
    if outcome.timed_out:
        _report_timeout(command, outcome, config, shown)
    elif outcome.memory_killed:
        running = f"; it was running {', '.join(outcome.running[:6])}" if outcome.running else ""
        sys.stderr.write(f"error: stopped by cargo-agent: host memory stayed above mem_kill "
                         f"{slot_settings.mem_kill or 100:g}% or full memory pressure above pressure_kill "
                         f"{slot_settings.pressure_kill or 100:g}%, and this was the most recently admitted "
                         f"of several builds (`{shown}`{running})\n"
                         "help: retry later; your build was not at fault\n"
                         "help: `cargo-agent --status` shows the builds holding the host's memory\n")
    hint = supervise.oom_hint(outcome, spec)
    if hint:
        sys.stderr.write(hint + "\n")
    kernel = max(outcome.kernel_peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
    peak, peak_source = (outcome.peak_rss, report.SOURCE_SAMPLED) if outcome.peak_rss >= kernel \
        else (kernel, report.SOURCE_KERNEL)
    record = {
        "time": time.time(), "command": command.tokens, "cwd": cwd, "exit_code": outcome.exit_code,
        "wall_seconds": round(time.monotonic() - started, 3), "slot_wait_seconds": round(slot.waited, 3),
        "slot": slot.index, "nested": slot.nested, "peak_rss": peak, "peak_source": peak_source,
        "predicted_peak": predicted, "prediction_source": memory["prediction"]["source"],
        "key": memory["prediction"]["key"], "retries": retries,
        "timed_out": outcome.timed_out, "pid": os.getpid(),
        "queued_at": slot.queued_at, "admitted_at": slot.admitted_at, "released_at": released_at,
        **(cpu.record() if cpu is not None else {}),
        "program_started": outcome.program_started,
    }
    if slot.in_its_lock_dir():  # not into whatever replaced a lock dir this build could not follow
        report.append(slot_settings.lock_dir, record, slot_settings.shared)
    if config["report"]:
        sys.stderr.write(report.summary(record) + "\n")
    return outcome.exit_code


class _Phases:
    """Which phase holds what. Build: the slot (and CPU tokens). Test run: still the slot, as
    tests use the cores and doctests compile. Run: once cargo starts the program, the slot is
    given back, and so are the CPU tokens; the program stays supervised (signals, timeout, no
    orphans)."""

    def __init__(self, command: argv_model.CargoCommand, slot: slots.Slot) -> None:
        self.command = command
        self.slot = slot
        self.cpu: tokens.BuildCpu | None = None

    def program_started(self) -> None:
        if self.command.resolved == "run":
            if self.cpu is not None:
                self.cpu.give_back()
            self.slot.release()  # at most once; nothing for a nested run

    def shown_command(self, env: dict[str, str]) -> str:
        import shlex

        program = env.get(INVOKED_AS_ENV) or "cargo-agent"
        return shlex.join([program, *self.command.tokens])


def _report_timeout(command: argv_model.CargoCommand, outcome: supervise.Outcome, config: settings.Config,
                    shown: str) -> None:
    limit = supervise.format_duration(config["timeout"] or 0)
    running = ", ".join(outcome.running[:6]) or "nothing"
    lines = [f"error: timed out after {limit}; stopped {outcome.stopped} processes of `{shown}` "
             f"(running: {running})"]
    if command.resolved == "run" and outcome.program_started:
        lines.append("help: the program started by `run` counts against the timeout too: for a long-running "
                     "program set CARGO_AGENT_TIMEOUT=none (or higher than " + limit + ")")
    elif command.resolved in ("test", "bench", "nextest run") and outcome.program_started:
        lines.append("help: a test did not finish: run the slow one alone with `-- <test name> --nocapture` "
                     "and fix or skip it")
        lines.append("help: do not retry unchanged: the same command will time out again")
    else:
        lines.append("help: if the build needs longer, set CARGO_AGENT_TIMEOUT above " + limit)
    sys.stderr.write("\n".join(lines) + "\n")


def _memory_guard(slot_settings: slots.SlotSettings, env: dict[str, str]) -> Callable[[], bool]:
    from cargo_agent import host

    over = {"count": 0}

    def check() -> bool:
        """True once memory has stayed above mem_kill, or full memory pressure above
        pressure_kill, for 4 readings (about a second) while this build was the most recently
        admitted of several (never the oldest: one build always makes progress). Counting only
        while newest means that after the newest build is stopped, the next one gets a second
        for memory to recover."""
        over_memory = slot_settings.mem_kill is not None and host.read(env).used_percent > slot_settings.mem_kill
        over_pressure = slot_settings.pressure_kill is not None and \
            host.pressure(env).memory_full > slot_settings.pressure_kill
        if not (over_memory or over_pressure) or slots.newest_holder_pid(slot_settings) != os.getpid():
            over["count"] = 0
            return False
        over["count"] += 1
        return over["count"] >= 4

    return check


def _reachable_limit_as(limit_as: int | None) -> int | None:
    """RLIMIT_AS as it can really be set: without privileges a build cannot go above the hard
    limit it inherits (`ulimit -v`), so it stays under that one, and says so."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard == resource.RLIM_INFINITY or os.geteuid() == 0 or (limit_as is not None and limit_as <= hard):
        return limit_as
    wanted = "unlimited" if limit_as is None else f"{limit_as >> 20}M"
    sys.stderr.write(f"note: cargo-agent: RLIMIT_AS stays at the inherited hard limit {hard >> 20}M "
                     f"(limit_as = {wanted}): raising it needs privileges\n")
    return hard
