"""`cargo-agent --status`: slots, holders, the queue, memory and recent runs."""

from __future__ import annotations

import json
import time

from cargo_agent import config, host, linkgate, lockdir, report, slots


def run(env: dict[str, str], as_json: bool) -> int:
    import psutil

    loaded = config.load(env)
    settings = slots.resolve(loaded, env, create=False)
    now = time.time()
    held = []
    for holder in slots.holders(settings):
        rss = 0
        alive = False
        if holder.pid is not None:
            try:
                process = psutil.Process(holder.pid)
                alive = True
                rss = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
            except psutil.Error:
                pass
        held.append({**holder.as_json(), "age_seconds": slots.age(holder.admitted, now), "rss": rss,
                     "wrapper_alive": alive})
    queue = [{**q.as_json(), "waiting_seconds": slots.age(q.queued, now)} for q in slots.queue_entries(settings)]
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
    # Everything below may come from another user's files: strings are escaped (`printable`),
    # so no control character reaches this terminal.
    safe = lockdir.printable
    print(f"slots: {len(held)}/{settings.ceiling} busy (lock dir {settings.lock_dir})")
    for h in held:
        state = "" if h["wrapper_alive"] else " [wrapper gone; build still holds the slot]"
        command = safe(" ".join(h.get("command", [])))  # type: ignore[arg-type]
        print(f"  slot {h.get('slot')}: pid {h.get('pid')} {safe(str(h.get('user', '?')))} `{command}`"
              f" in {safe(str(h.get('cwd', '?')))}, {h['age_seconds']}s, RSS {int(str(h['rss'])) >> 20} MiB{state}")
    print(f"queue: {len(queue)} waiting")
    for position, q in enumerate(queue, start=1):
        command = safe(" ".join(q.get("command", [])))  # type: ignore[arg-type]
        predicted = f", predicted peak {int(str(q['predicted'])) >> 20} MiB" if "predicted" in q else ""
        print(f"  {position}. pid {q.get('pid')} `{command}` waiting {q['waiting_seconds']}s{predicted}")
    mem_kill = "off" if settings.mem_kill is None else f"{settings.mem_kill:g}%"
    print(f"memory: {reading.used_percent:.0f}% used of {reading.total >> 20} MiB ({reading.source}); "
          f"mem_high {settings.mem_high:g}%, mem_kill {mem_kill}")
    print(f"pressure: memory some {pressure.memory_some:g}%, full {pressure.memory_full:g}%; I/O full "
          f"{pressure.io_full:g}% ({pressure.source}); pressure_high "
          f"{'off' if settings.pressure_high is None else f'{settings.pressure_high:g}%'}")
    if held_back:
        print(f"admission held: {held_back}")
    print(f"links: {len(linking)}/{link_count} link slots busy, {len(link_waits)} waiting")
    for h in linking:
        print(f"  link slot {h.get('slot')}: pid {h.get('pid')} linking {safe(str(h.get('output', '?')))} "
              f"for {h['age_seconds']}s (build pid {h.get('build', '?')})")
    for w in link_waits:
        print(f"  waiting for a link slot: pid {w.get('pid')} {safe(str(w.get('output', '?')))} "
              f"for {w['waiting_seconds']}s "
              f"(build pid {w.get('build', '?')})")
    if recent:
        print("recent runs:")
        for record in recent:
            print(f"  exit {record.exit_code} in {record.number('wall_seconds')}s "
                  f"(waited {record.number('slot_wait_seconds')}s): {record.shown_command}")
    return 0
