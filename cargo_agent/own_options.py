"""cargo-agent's own options, parsed with click (never on the fast path).

None of them is a cargo global option, so `cargo-agent --version` and `cargo --help` through
the shim still reach cargo.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from cargo_agent.errors import UsageError

Action = Callable[[list[str], dict[str, str]], int]


@dataclass
class OwnOptions:
    dry_run: bool = False
    json: bool = False
    action: Action | None = None


@click.command(context_settings={"help_option_names": ["--agent-help"]}, add_help_option=True)
@click.option("--dry-run", is_flag=True,
              help="Print the decision, toolchain, slots, env changes and argv; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output for --dry-run and --status.")
@click.option("--status", is_flag=True, help="Show slots, holders, the queue, memory and recent runs.")
@click.option("--doctor", is_flag=True, help="Check the set-up: real cargo, rustup, lock dir, config.")
@click.option("--install-shim", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write the `cargo` PATH shim into DIR and print the PATH line to use.")
@click.option("--agent-version", is_flag=True, help="Print cargo-agent's version.")
def _command(dry_run: bool, as_json: bool, status: bool, doctor: bool, install_shim: Path | None,
             agent_version: bool) -> OwnOptions:
    options = OwnOptions(dry_run=dry_run, json=as_json)
    if status:
        options.action = lambda rest, env: show_status(env, as_json)
    elif doctor:
        options.action = lambda rest, env: run_doctor(env)
    elif install_shim is not None:
        directory = install_shim
        options.action = lambda rest, env: install_shim_into(directory)
    elif agent_version:
        from cargo_agent import __version__

        options.action = lambda rest, env: (print(f"cargo-agent {__version__}"), 0)[1]
    return options


def parse(own: list[str]) -> OwnOptions:
    try:
        result = _command.main(own, prog_name="cargo-agent", standalone_mode=False)
    except click.exceptions.Exit as done:  # --agent-help printed
        raise SystemExit(done.exit_code) from None
    except click.ClickException as err:
        raise UsageError(err.format_message()) from None
    if not isinstance(result, OwnOptions):
        raise SystemExit(0)
    return result


def _slot_settings(env: dict[str, str]):  # type: ignore[no-untyped-def]
    from cargo_agent import config, slots

    return slots.resolve(config.load(env), env, create=False)


def show_status(env: dict[str, str], as_json: bool) -> int:
    import psutil

    from cargo_agent import memory, report, slots

    settings = _slot_settings(env)
    now = time.time()
    held = []
    for holder in slots.holders(settings):
        pid = holder.get("pid")
        rss = 0
        alive = False
        if isinstance(pid, int):
            try:
                process = psutil.Process(pid)
                alive = True
                rss = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
            except psutil.Error:
                pass
        held.append({**holder, "age_seconds": slots.age(holder.get("admitted"), now), "rss": rss,
                     "wrapper_alive": alive})
    queue = [{**q, "waiting_seconds": slots.age(q.get("queued"), now)} for q in slots.queue_entries(settings)]
    reading = memory.read(env)
    data = {
        "slots": settings.ceiling, "usable": settings.count, "lock_dir": str(settings.lock_dir),
        "formula": settings.formula, "holders": held, "queue": queue,
        "memory": {"used_percent": round(reading.used_percent, 1), "source": reading.source,
                   "mem_high": settings.mem_high, "mem_kill": settings.mem_kill},
        "recent": report.recent(settings.lock_dir, 5),
    }
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"slots: {len(held)}/{settings.ceiling} busy (lock dir {settings.lock_dir})")
    for h in held:
        state = "" if h["wrapper_alive"] else " [wrapper gone; build still holds the slot]"
        command = slots.shown_command(h.get("command"))
        print(f"  slot {h.get('slot')}: pid {h.get('pid')} {h.get('user', '?')} `{command}`"
              f" in {h.get('cwd', '?')}, {h['age_seconds']}s, RSS {int(str(h['rss'])) >> 20} MiB{state}")
    print(f"queue: {len(queue)} waiting")
    for position, q in enumerate(queue, start=1):
        print(f"  {position}. pid {q.get('pid')} `{slots.shown_command(q.get('command'))}` "
              f"waiting {q['waiting_seconds']}s")
    mem_kill = "off" if settings.mem_kill is None else f"{settings.mem_kill:g}%"
    print(f"memory: {reading.used_percent:.0f}% used ({reading.source}); "
          f"mem_high {settings.mem_high:g}%, mem_kill {mem_kill}")
    recent = report.recent(settings.lock_dir, 5)
    if recent:
        print("recent runs:")
        for record in recent:
            print(f"  exit {record.get('exit_code')} in {record.get('wall_seconds')}s "
                  f"(waited {record.get('slot_wait_seconds')}s): {slots.shown_command(record.get('command'))}")
    return 0


def run_doctor(env: dict[str, str]) -> int:
    from cargo_agent import config, realcargo, slots, toolchain

    problems = 0
    checks: list[tuple[str, Callable[[], str]]] = [
        ("config", lambda: (config.load(env), "ok")[1]),
        ("real cargo", lambda: realcargo.find(env, env.get("CARGO_AGENT_CARGO"))),
        ("rustup", lambda: toolchain.which("rustup", env) or "not found (+toolchain will not work)"),
        ("lock dir", lambda: str(slots.resolve(config.load(env), env).lock_dir)),
    ]
    for name, check in checks:
        try:
            print(f"{name}: {check()}")
        except UsageError as err:
            problems += 1
            print(f"{name}: error: {err}")
        except Exception as err:  # noqa: BLE001 - doctor reports, it does not crash
            problems += 1
            print(f"{name}: error: {err}")
    return 0 if problems == 0 else 1


SHIM_SOURCE = Path(__file__).with_name("shim.sh")


def install_shim_into(directory: Path) -> int:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "cargo"
        tmp = directory / f".cargo.{os.getpid()}"
        tmp.write_text(SHIM_SOURCE.read_text())
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRUSR)
        os.replace(tmp, target)
    except OSError as err:
        raise UsageError(f"cannot write the shim into {directory}: {err.strerror}") from None
    print(f"wrote {target}")
    print(f'export PATH="{directory.resolve()}:$PATH"')
    sys.stdout.flush()
    return 0
