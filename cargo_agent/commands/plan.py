"""The `--dry-run` view: what cargo-agent would do with a command, without doing it."""

from __future__ import annotations

import json
import shlex

from cargo_agent import argv as argv_model
from cargo_agent import config as settings
from cargo_agent import envshape, policy, slots, tokens, toolchain
from cargo_agent.supervise import format_duration, format_size


def _shown(value: str | None) -> str:
    return "unset" if value is None else shlex.quote(value) if value else "''"


def _assignment(name: str | None, value: str | None) -> str:
    return f"unset {name}" if value is None else f"{name}={_shown(value)}"


def show_passthrough(command: argv_model.CargoCommand, chosen: toolchain.Toolchain, cargo: str,
                     as_json: bool) -> None:
    """A command that compiles nothing goes straight to cargo: nothing of cargo-agent applies."""
    argv = [cargo, *command.tokens[1:]] if command.toolchain else [cargo, *command.tokens]
    if as_json:
        print(json.dumps({"decision": {"allowed": True, "rule": None, "reason": "compiles nothing", "fix": None},
                          "subcommand": command.resolved, "compiles": False, "applied": False,
                          "toolchain": {"name": chosen.name, "source": chosen.source}, "argv": argv}, indent=2))
        return
    print("\n".join([
        "decision:  allowed: it compiles nothing",
        "applied:   nothing: no slot, no caps, no limits, no supervision; cargo-agent execs cargo directly",
        f"toolchain: {chosen.name or '(rustup default)'} (from {chosen.source})",
        "argv:      " + shlex.join(argv)]))


def show(command: argv_model.CargoCommand, decision: policy.Decision, chosen: toolchain.Toolchain,
                slot_settings: slots.SlotSettings, shaped: envshape.Shaped, cargo: str, limit_as: int | None,
                config: settings.Config, env: dict[str, str], as_json: bool,
                memory: dict[str, dict[str, object]], pool: tokens.Pool) -> None:
    env_items: list[dict[str, str | None]] = [
        {"name": c.name.split(" ", 1)[1], "before": c.before, "after": c.after, "why": c.why}
        for c in shaped.changes if c.name.startswith("env ")]
    env_items += [{"name": n, "before": env.get(n), "after": shaped.env.get(n), "why": "toolchain pin"}
                  for n in ("RUSTUP_TOOLCHAIN", "RUSTUP_AUTO_INSTALL") if env.get(n) != shaped.env.get(n)]
    arg_items = [{"before": c.before, "after": c.after, "why": c.why} for c in shaped.changes
                 if c.name.startswith("arg ")]
    plan = {
        "decision": decision.as_json(),
        "subcommand": command.resolved,
        "aliases": command.alias_chain,
        "compiles": command.compiles,
        "toolchain": {"name": chosen.name, "source": chosen.source},
        "slots": {"count": slot_settings.count, "ceiling": slot_settings.ceiling, "formula": slot_settings.formula,
                  "lock_dir": str(slot_settings.lock_dir), "shared": slot_settings.shared,
                  "mem_high": slot_settings.mem_high, "mem_kill": slot_settings.mem_kill,
                  "wait_timeout": slot_settings.wait_timeout},
        "cpu": cpu_plan(pool, shaped),
        "memory": memory or {},
        "limits": {"limit_as": limit_as, "timeout": config["timeout"], "kill_grace": config["kill_grace"],
                   "retries": config["retries"]},
        "applied": True,
        "env": env_items,
        "args": arg_items,
        "notes": shaped.notes,
        "argv": [cargo, *shaped.argv],
        "settings": {s.key: {"value": config[s.key], "source": config.origins[s.key],
                             "clamped": ({"asked": config.clamped[s.key].asked,
                                          "asked_by": config.clamped[s.key].asked_by}
                                         if s.key in config.clamped else None)}
                     for s in settings.SETTINGS},
    }
    if as_json:
        print(json.dumps(plan, indent=2))
        return
    out = [f"decision:  {'allowed' if decision.allowed else 'refused (rule ' + str(decision.rule) + ')'}"]
    if not decision.allowed:
        out.append(f"  reason:  {decision.reason}")
        out.append(f"  fix:     {decision.fix}")
    out.append(f"toolchain: {chosen.name or '(rustup default)'} (from {chosen.source})")
    out.append(f"slots:     {slot_settings.count} of {slot_settings.ceiling} in {slot_settings.lock_dir}; "
               f"N = {slot_settings.formula}")
    cap = min(shaped.jobs, pool.count)
    out.append(f"cpu:       {cap} of {pool.count} CPU tokens at most: 1 taken before cargo starts, up to "
               f"{cap - 1} more lent through a private jobserver while free; C = {pool.formula}")
    out.append(f"memory:    wait above {slot_settings.mem_high:g}%, "
               f"kill guard {'off' if slot_settings.mem_kill is None else f'{slot_settings.mem_kill:g}%'}")
    if memory:
        limit, prediction, links = memory["limit"], memory["prediction"], memory["link_slots"]
        out.append(f"limit:     {_mib(limit['bytes'])} in force, {_mib(limit['used'])} used ({limit['source']})")
        out.append(f"predicted: peak {_mib(prediction['peak'])} ({prediction['source']})")
        out.append(f"links:     {links['count']} link slots; L = {links['formula']}")
        psi = memory["pressure"]
        out.append(f"pressure:  memory some {psi['memory_some']}%, full {psi['memory_full']}%; I/O full "
                   f"{psi['io_full']}% ({psi['source']}); hold above {psi['pressure_high'] or 'off'}%, "
                   f"kill guard above {psi['pressure_kill'] or 'off'}% full memory pressure")
    timeout = format_duration(config["timeout"]) if config["timeout"] else "none"
    out.append(f"limits:    RLIMIT_AS {format_size(limit_as) if limit_as else 'unlimited'}, timeout {timeout}")
    for item in env_items:
        out.append(f"env:       {_assignment(item['name'], item['after'])} "
                   f"(was {_shown(item['before'])}): {item['why']}")
    for item in arg_items:
        out.append(f"arg:       {item['before']} -> {item['after']}: {item['why']}")
    for note in shaped.notes:
        out.append(f"note:      {note}")
    # Where each value that is not a default came from, and what the host policy clamped.
    for setting in settings.SETTINGS:
        if config.origins[setting.key] != "default" or setting.key in config.clamped:
            out.append(f"setting:   {config.explain(setting.key)}")
    out.append("argv:      " + shlex.join([cargo, *shaped.argv]))
    print("\n".join(out))


def cpu_plan(pool: tokens.Pool, shaped: envshape.Shaped) -> dict[str, object]:
    """How the build gets CPU: its token cap, and why a user's larger -j cannot exceed it."""
    return {"tokens": pool.count, "formula": pool.formula, "build_cap": min(shaped.jobs, pool.count),
            "lock_dir": str(pool.lock_dir),
            "jobserver": "private pipe in CARGO_MAKEFLAGS; cargo obeys it over -j, build.jobs and CARGO_BUILD_JOBS"}


def _mib(value: object) -> str:
    return f"{int(str(value)) >> 20} MiB"
