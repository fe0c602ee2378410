"""The `signal` module for the compiling path: its C core, without the enum layer `signal.py`
puts over it (importing `enum` costs more than a millisecond on every build). The calls and
constants are the same; handlers and masks come back as plain ints. Where the core is not
importable on its own, the standard module is used."""

TYPE_CHECKING = False
if TYPE_CHECKING:  # the checker reads the standard module's types: the same names
    import signal
else:
    try:
        import _signal as signal
    except ImportError:  # another Python: the standard module
        import signal

__all__ = ["signal"]
