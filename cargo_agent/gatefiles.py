"""The link gate's scripts in the user's cache dir: the sh RUSTC_WRAPPER and the gate, filled in
with this Python and this package, in a directory named by their content (written once, then
only checked). Kept apart from linkgate.py, which works in the lock dir: nothing here touches a
lock dir, and nothing there writes outside lockdir."""

from __future__ import annotations

import os
import sys

from cargo_agent.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


def _sh_quote(text: str) -> str:
    """One shell word for `text` (what shlex.quote gives for a word that needs quoting; shlex
    itself is not imported on the compiling path)."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _blake2b(data: bytes, digest_size: int) -> Any:
    """hashlib's blake2b without importing hashlib, which loads OpenSSL: a few milliseconds on
    every build, for one small digest."""
    try:
        from _blake2 import blake2b
    except ImportError:  # a Python built without the module: hashlib still has one
        from hashlib import blake2b
    return blake2b(data, digest_size=digest_size)


def install(env: Mapping[str, str], package: str, wrapper_name: str, gate_name: str) -> str:
    """A private directory holding the wrapper, the gate and the gate's per-linker-name
    symlinks for this Python and this package; written once, then only checked."""
    from cargo_agent import locations

    with open(os.path.join(package, "rustc-wrapper.sh")) as handle:
        wrapper = handle.read()
    with open(os.path.join(package, "link-gate.sh")) as handle:
        gate = handle.read()
    gate = gate.replace("@PYTHON@", _sh_quote(sys.executable))
    gate = gate.replace("@ROOT@", _sh_quote(os.path.dirname(package)))
    digest = _blake2b((wrapper + "\0" + gate).encode(), digest_size=8).hexdigest()
    directory = os.path.join(locations.cache_dir(env), "linkgate", digest)
    if all(os.path.exists(os.path.join(directory, name)) for name in (wrapper_name, gate_name, "cc")):
        return directory
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for name, text in ((wrapper_name, wrapper), (gate_name, gate)):
            tmp = os.path.join(directory, f".{name}.{os.getpid()}")
            with open(tmp, "w") as handle:
                handle.write(text)
            os.chmod(tmp, 0o755)
            os.replace(tmp, os.path.join(directory, name))
        try:
            os.symlink(gate_name, os.path.join(directory, "cc"))
        except FileExistsError:
            pass
    except OSError as err:
        raise UsageError(f"cannot write the link gate into {directory}: {(err.strerror or str(err)).lower()}",
                         help=("cargo-agent keeps it under XDG_CACHE_HOME: make that writable",)) from None
    return directory
