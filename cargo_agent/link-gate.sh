#!/bin/sh
# The linker that rustc runs under cargo-agent (installed by cargo_agent/linkgate.py, with the
# Python and the package root filled in): it takes a host-wide link slot, then runs the real
# linker with the arguments unchanged.
exec @PYTHON@ -s -c 'import sys; sys.path.insert(0, sys.argv[1]); from cargo_agent.linkgate import main; sys.exit(main(sys.argv[2:]))' @ROOT@ "$@"
