"""JSON in and out on the compiling path, through the C scanner and encoder that the standard
`json` package itself runs, without importing the package: `json` brings `re`, `enum` and
`functools` with it, several milliseconds on every build. `dumps` gives what `json.dumps`
gives (with its default or its compact separators) and `loads` reads what `json.loads` reads
from a str (text nested past the recursion limit is a ValueError here, a RecursionError
there); tests/jsontext_test.py holds them against each other. A Python without those C
parts gets the `json` package itself.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no runtime typing import: this module is on the compiling path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

WHITESPACE = " \t\n\r"  # what json skips around a document
_CODECS: dict[str, Any] = {}  # "scan", "normal", "compact": made once per process


class _DecoderSettings:
    """What the C scanner reads from a `json.JSONDecoder`: the defaults of `json.loads`."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


def _unserializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _codecs() -> dict[str, Any]:
    if not _CODECS:
        try:
            from _json import encode_basestring_ascii, make_encoder, make_scanner

            # The arguments json.JSONEncoder passes: markers (None: no cycle check, our records
            # hold none), default, string encoder, indent, separators, sort_keys, skipkeys, allow_nan.
            _CODECS["normal"] = make_encoder(None, _unserializable, encode_basestring_ascii, None, ": ", ", ",
                                             False, False, True)
            _CODECS["compact"] = make_encoder(None, _unserializable, encode_basestring_ascii, None, ":", ",",
                                              False, False, True)
            _CODECS["scan"] = make_scanner(_DecoderSettings())  # type: ignore[arg-type]  # duck-typed, as in C
        except (ImportError, TypeError, AttributeError):  # no C accelerator, or another signature
            import json

            _CODECS["normal"] = _chunked(json.dumps)
            _CODECS["compact"] = _chunked(lambda value: json.dumps(value, separators=(",", ":")))
            _CODECS["scan"] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set in __init__
    return _CODECS


def _chunked(dump: Callable[[object], str]) -> Callable[[object, int], tuple[str]]:
    return lambda value, _level: (dump(value),)


def dumps(value: object, compact: bool = False) -> str:
    """`json.dumps(value)`, or with `separators=(",", ":")` when `compact`."""
    return "".join(_codecs()["compact" if compact else "normal"](value, 0))


def loads(text: str) -> Any:
    """`json.loads(text)`; malformed text raises ValueError, and so does text nested past the
    recursion limit (json raises RecursionError there): every caller reads files anybody of a
    shared lock dir's group may have written, and catches ValueError."""
    start = len(text) - len(text.lstrip(WHITESPACE))
    try:
        value, end = _codecs()["scan"](text, start)
    except RecursionError:
        raise ValueError("nested too deep") from None
    except (StopIteration, SystemError):
        # Malformed. The C scanner words most errors with json.decoder's exception class, which
        # it looks up only among modules already imported (else: SystemError); json itself
        # then reads the text again and raises the error (a ValueError).
        import json

        return json.loads(text)
    if text[end:].strip(WHITESPACE):
        raise ValueError(f"Extra data: char {end}")
    return value
