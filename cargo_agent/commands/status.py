"""`cargo-agent --status`: slots, holders, the queue, CPU tokens, memory and recent runs.

It flags what an agent needs to act on: a holder whose build is stopped (Ctrl-Z, SIGSTOP: it
keeps its slot until continued), a waiter that is stopped (the queue skips it), and the
processes still holding a slot after their wrapper is gone."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from cargo_agent import config, host, linkgate, lockdir, report, slots, tokens
from cargo_agent.supervise import format_duration, format_size, proc_state


def _processes_holding(path: str) -> list[dict[str, object]]:
    """Processes with an open fd on `path` (the slot lock a build inherited). Reads /proc/*/fd,
    so it sees only processes we may inspect (our own, or all as root)."""
    import psutil

    found = []
    for pid in psutil.pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                    process = psutil.Process(pid)
                    found.append({"pid": pid, "name": process.name(), "state": process.status()})
                    break
            except (OSError, psutil.Error):
                continue
    return found


def _tree(pid: int) -> list[Any]:
    import psutil

    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return []


def _holder_data(holder: slots.Holder, settings: slots.SlotSettings, now: float) -> dict[str, object]:
    import psutil

    tree = _tree(holder.pid) if holder.pid is not None else []
    rss, stopped = 0, False
    for process in tree:
        try:
            rss += process.memory_info().rss
            stopped = stopped or process.status() == psutil.STATUS_STOPPED
        except psutil.Error:
            pass
    data: dict[str, object] = {**holder.as_json(), "age_seconds": slots.age(holder.admitted, now), "rss": rss,
                               "wrapper_alive": bool(tree), "stopped": stopped}
    if not tree:
        survivors = _processes_holding(os.path.realpath(os.path.join(settings.lock_dir, f"slot-{holder.slot}.lock")))
        data["survivors"] = survivors
        data["stopped"] = any(s["state"] == psutil.STATUS_STOPPED for s in survivors)
    return data


def _waiter_data(entry: slots.Holder, now: float) -> dict[str, object]:
    state = proc_state(entry.pid) if entry.pid is not None else "?"
    return {**entry.as_json(), "waiting_seconds": slots.age(entry.queued, now),
            "stopped": slots.is_stale(entry, now) or state in ("T", "t")}


def run(env: dict[str, str], as_json: bool) -> int:
    loaded = config.load(env)
    settings = slots.resolve(loaded, env, create=False)
    pool = tokens.resolve(loaded, settings.lock_dir, settings.shared)
    held_tokens, token_waiters = tokens.held_by(pool), tokens.waiting(pool)
    now = time.time()
    held = []
    for holder in slots.holders(settings):
        entry = _holder_data(holder, settings, now)
        entry["tokens"] = held_tokens.get(holder.pid or -1, 0)
        entry["waiting_for_token"] = holder.pid in token_waiters
        held.append(entry)
    queue = [_waiter_data(entry, now) for entry in slots.queue_entries(settings)]
    reading = host.read(env)
    pressure = host.pressure(env)
    held_back = None
    if settings.pressure_high is not None:
        if pressure.memory_some > settings.pressure_high:
            held_back = f"memory pressure {pressure.memory_some:.0f}% > pressure_high {settings.pressure_high:g}%"
        elif pressure.io_full > settings.pressure_high:
            held_back = f"I/O pressure {pressure.io_full:.0f}% > pressure_high {settings.pressure_high:g}%"
    if held_back is None and reading.used_percent > settings.mem_high:
        held_back = f"memory {reading.used_percent:.0f}% > mem_high {settings.mem_high:g}%"
    lock_dir = str(settings.lock_dir)
    link_count, link_formula = linkgate.slot_count(loaded, settings.lock_dir, env)
    linking = [{**h.as_json(), "age_seconds": slots.age(h.since, now)} for h in linkgate.holders(lock_dir)]
    link_waits = [{**w.as_json(), "waiting_seconds": slots.age(w.since, now)} for w in linkgate.waiters(lock_dir)]
    links = {"slots": link_count, "formula": link_formula, "holders": linking, "waiting": link_waits}
    recent = report.recent(settings.lock_dir, 5)
    data = {
        "slots": settings.ceiling, "usable": settings.count, "lock_dir": str(settings.lock_dir),
        "formula": settings.formula, "holders": held, "queue": queue,
        "cpu": {"tokens": pool.count, "formula": pool.formula, "held": sum(held_tokens.values()),
                "by_pid": [{"pid": pid, "tokens": n} for pid, n in sorted(held_tokens.items())],
                "waiting": token_waiters},
        "memory": {"used_percent": round(reading.used_percent, 1), "source": reading.source,
                   "limit": reading.total, "used": reading.used,
                   "mem_high": settings.mem_high, "mem_kill": settings.mem_kill},
        "pressure": {**pressure.as_json(), "pressure_high": settings.pressure_high,
                     "pressure_kill": settings.pressure_kill},
        "admission_held": held_back,
        "links": links,
        "recent": [record.data for record in recent],
    }
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    print("\n".join(render(data, settings)))
    return 0


def _seconds(value: object) -> str:
    return format_duration(float(value)) if isinstance(value, (int, float)) else "?"


def _command(entry: dict[str, object]) -> str:
    command = entry.get("command")
    return safe(" ".join(str(w) for w in command) if isinstance(command, list) else "?")


def safe(value: object) -> str:
    """Everything shown may come from another user's files (or process names): control
    characters are escaped (`lockdir.printable`), so none reaches this terminal."""
    return lockdir.printable(str(value))


def render(data: dict[str, Any], settings: slots.SlotSettings) -> list[str]:
    held, queue = data["holders"], data["queue"]
    you = (f"you may use all {settings.count}" if settings.count == settings.ceiling
           else f"you may use {settings.count} of them (CARGO_AGENT_SLOTS)")
    lines = [f"slots: {len(held)} of {settings.ceiling} busy on this host; {you} (lock dir {settings.lock_dir})"]
    for h in held:
        line = (f"  slot {h.get('slot')}: pid {h.get('pid')} {safe(h.get('user', '?'))} `{_command(h)}` "
                f"in {safe(h.get('cwd', '?'))}, for {_seconds(h.get('age_seconds'))}")
        if h["wrapper_alive"]:
            line += f", RSS {format_size(int(h['rss']))}"
        if h.get("waiting_for_token"):
            line += " [waiting for a CPU token]"
        elif "tokens" in h:
            line += f", {h['tokens']} CPU tokens"
        if h["stopped"]:
            line += " [stopped (Ctrl-Z or SIGSTOP): it keeps its slot until it is continued]"
        lines.append(line)
        if not h["wrapper_alive"]:
            survivors = h.get("survivors") or []
            if survivors:
                shown = ", ".join(f"pid {s['pid']} {safe(s['name'])} ({s['state']})" for s in survivors[:8])
                lines.append(f"    its wrapper is gone; still running and holding the slot: {shown}")
            else:
                lines.append("    its wrapper is gone; the processes holding the slot are not visible to you")
    lines.append(f"queue: {len(queue)} waiting")
    for position, q in enumerate(queue, start=1):
        usable = q.get("usable")
        scope = f", may use {usable} of {settings.ceiling} slots" if isinstance(usable, int) else ""
        flag = " [stopped: skipped by the queue until it continues]" if q["stopped"] else ""
        predicted = q.get("predicted")
        peak = f", predicted peak {format_size(predicted)}" if isinstance(predicted, int) else ""
        lines.append(f"  {position}. pid {q.get('pid')} `{_command(q)}` in {safe(q.get('cwd', '?'))}, "
                     f"waiting {_seconds(q.get('waiting_seconds'))}{scope}{peak}{flag}")
    cpu = data.get("cpu")
    if cpu:
        lines.append(f"cpu tokens: {cpu['held']}/{cpu['tokens']} held, {len(cpu['waiting'])} builds waiting "
                     f"for a token (C = {cpu['formula']})")
        slot_pids = {h.get("pid") for h in held}
        for item in cpu["by_pid"]:
            if item["pid"] not in slot_pids:
                lines.append(f"  pid {item['pid']} (a nested build, or a build whose slot record is gone): "
                             f"{item['tokens']} CPU tokens")
    memory = data["memory"]
    mem_kill = "off" if settings.mem_kill is None else f"{settings.mem_kill:g}%"
    limit = f" of {format_size(memory['limit'])}" if isinstance(memory.get("limit"), int) and memory["limit"] else ""
    lines.append(f"memory: {memory['used_percent']:.0f}% used{limit} ({memory['source']}); "
                 f"mem_high {settings.mem_high:g}%, mem_kill {mem_kill}")
    psi = data.get("pressure")
    if psi:
        high = psi.get("pressure_high")
        lines.append(f"pressure: memory some {psi['memory_some']:g}%, full {psi['memory_full']:g}%; I/O full "
                     f"{psi['io_full']:g}% ({psi['source']}); pressure_high {'off' if high is None else f'{high:g}%'}")
    if data.get("admission_held"):
        lines.append(f"admission held: {data['admission_held']}")
    links = data.get("links")
    if links:
        lines.append(f"links: {len(links['holders'])}/{links['slots']} link slots busy, "
                     f"{len(links['waiting'])} waiting")
        for h in links["holders"]:
            lines.append(f"  link slot {h.get('slot')}: pid {h.get('pid')} linking {safe(h.get('output', '?'))} "
                         f"for {_seconds(h.get('age_seconds'))} (build pid {h.get('build', '?')})")
        for w in links["waiting"]:
            lines.append(f"  waiting for a link slot: pid {w.get('pid')} {safe(w.get('output', '?'))} "
                         f"for {_seconds(w.get('waiting_seconds'))} (build pid {w.get('build', '?')})")
    if data["recent"]:
        lines.append("recent runs:")
        for record in data["recent"]:
            lines.append(f"  exit {record.get('exit_code')} after {_seconds(record.get('wall_seconds'))} "
                         f"(waited {_seconds(record.get('slot_wait_seconds'))}): `{_command(record)}` "
                         f"in {safe(record.get('cwd', '?'))}")
    return lines
