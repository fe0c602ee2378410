"""`cargo-agent --status`: slots, holders, the queue, CPU tokens, memory and recent runs."""

from __future__ import annotations

import json
import time

from cargo_agent import config, host, lockdir, report, slots, tokens


def run(env: dict[str, str], as_json: bool) -> int:
    import psutil

    loaded = config.load(env)
    settings = slots.resolve(loaded, env, create=False)
    pool = tokens.resolve(loaded, settings.lock_dir, settings.shared)
    held_tokens, token_waiters = tokens.held_by(pool), tokens.waiting(pool)
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
                     "wrapper_alive": alive, "tokens": held_tokens.get(holder.pid or -1, 0),
                     "waiting_for_token": holder.pid in token_waiters})
    queue = [{**q.as_json(), "waiting_seconds": slots.age(q.queued, now)} for q in slots.queue_entries(settings)]
    reading = host.read(env)
    recent = report.recent(settings.lock_dir, 5)
    data = {
        "slots": settings.ceiling, "usable": settings.count, "lock_dir": str(settings.lock_dir),
        "formula": settings.formula, "holders": held, "queue": queue,
        "cpu": {"tokens": pool.count, "formula": pool.formula, "held": sum(held_tokens.values()),
                "by_pid": [{"pid": pid, "tokens": n} for pid, n in sorted(held_tokens.items())],
                "waiting": token_waiters},
        "memory": {"used_percent": round(reading.used_percent, 1), "source": reading.source,
                   "mem_high": settings.mem_high, "mem_kill": settings.mem_kill},
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
        cpu = " [waiting for a CPU token]" if h["waiting_for_token"] else f", {h['tokens']} CPU tokens"
        print(f"  slot {h.get('slot')}: pid {h.get('pid')} {safe(str(h.get('user', '?')))} `{command}`"
              f" in {safe(str(h.get('cwd', '?')))}, {h['age_seconds']}s, RSS {int(str(h['rss'])) >> 20} MiB"
              f"{cpu}{state}")
    print(f"queue: {len(queue)} waiting")
    for position, q in enumerate(queue, start=1):
        command = safe(" ".join(q.get("command", [])))  # type: ignore[arg-type]
        print(f"  {position}. pid {q.get('pid')} `{command}` waiting {q['waiting_seconds']}s")
    print(f"cpu tokens: {sum(held_tokens.values())}/{pool.count} held, {len(token_waiters)} builds waiting "
          f"for a token (C = {pool.formula})")
    slot_pids = {h.get("pid") for h in held}
    for pid, count in sorted(held_tokens.items()):
        if pid not in slot_pids:
            print(f"  pid {pid} (a nested build, or a build whose slot record is gone): {count} CPU tokens")
    mem_kill = "off" if settings.mem_kill is None else f"{settings.mem_kill:g}%"
    print(f"memory: {reading.used_percent:.0f}% used ({reading.source}); "
          f"mem_high {settings.mem_high:g}%, mem_kill {mem_kill}")
    if recent:
        print("recent runs:")
        for record in recent:
            print(f"  exit {record.exit_code} in {record.number('wall_seconds')}s "
                  f"(waited {record.number('slot_wait_seconds')}s): {record.shown_command}")
    return 0
