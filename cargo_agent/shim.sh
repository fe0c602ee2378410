#!/bin/sh
# cargo-agent-shim: a `cargo` for PATH that runs every cargo command through cargo-agent.
# cargo-agent finds the real cargo past this file: it skips any file carrying the marker above,
# so there is no recursion even when this directory is on PATH twice.
# `cargo-agent --install-shim DIR` writes the absolute path of the cargo-agent that made it
# below, so agents whose PATH lacks cargo-agent's venv still reach it; CARGO_AGENT_BIN overrides.
agent="${CARGO_AGENT_BIN:-@CARGO_AGENT_BIN@}"
case "$agent" in @*@) agent="" ;; esac
if [ -z "$agent" ]; then
    agent=$(command -v cargo-agent 2>/dev/null) || agent=""
fi
if [ -z "$agent" ] || [ ! -x "$agent" ]; then
    echo "error: cargo-agent is not installed, and the cargo shim at $0 runs cargo only through it" >&2
    echo "help: install cargo-agent (see its README), set CARGO_AGENT_BIN to it, or take $(dirname "$0") off PATH" >&2
    exit 127
fi
if [ -n "${CARGO_AGENT_SHIM_ACTIVE:-}" ]; then
    # cargo-agent clears this: set here means a shim ran a shim (CARGO_AGENT_BIN names one).
    echo "error: the cargo shim at $0 was started by a cargo shim: $agent is not cargo-agent" >&2
    echo "help: set CARGO_AGENT_BIN to the cargo-agent executable, not to a cargo shim" >&2
    exit 127
fi
CARGO_AGENT_SHIM_ACTIVE=1
CARGO_AGENT_INVOKED_AS=cargo
export CARGO_AGENT_SHIM_ACTIVE CARGO_AGENT_INVOKED_AS
exec "$agent" "$@"
