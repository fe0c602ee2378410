"""cargo-agent-lint (filled in with the sandbox-integration work)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    sys.stderr.write("error: cargo-agent-lint is not available yet\n")
    return 2
