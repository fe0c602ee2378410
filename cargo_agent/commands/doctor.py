"""`cargo-agent --doctor`: check the set-up (config, real cargo, rustup, lock dir)."""

from __future__ import annotations

from collections.abc import Callable

from cargo_agent import config, passthrough, slots, toolchain
from cargo_agent.errors import CargoAgentError


def run(env: dict[str, str]) -> int:
    problems = 0
    checks: list[tuple[str, Callable[[], str]]] = [
        ("config", lambda: (config.load(env), "ok")[1]),
        ("real cargo", lambda: passthrough.real_cargo(env)),
        ("rustup", lambda: toolchain.which("rustup", env) or "not found (+toolchain will not work)"),
        ("lock dir", lambda: str(slots.resolve(config.load(env), env).lock_dir)),
    ]
    for name, check in checks:
        try:
            print(f"{name}: {check()}")
        except CargoAgentError as err:
            problems += 1
            print(f"{name}: error: {err}")
        except Exception as err:  # noqa: BLE001 - doctor reports, it does not crash
            problems += 1
            print(f"{name}: error: {err}")
    return 0 if problems == 0 else 1
