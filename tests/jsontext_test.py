"""jsontext against the standard json package: the same text out, the same values in, the
same refusals."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from cargo_agent import jsontext

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20)


def _same(a: object, b: object) -> bool:
    """Equal, NaN included (NaN != NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_dumps_writes_what_json_writes_and_loads_reads_it_back(value: object) -> None:
    assert jsontext.dumps(value) == json.dumps(value)
    assert jsontext.dumps(value, compact=True) == json.dumps(value, separators=(",", ":"))
    assert _same(jsontext.loads(jsontext.dumps(value)), value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=' \t\n\r{}[]",:0123456789.eE+-truefalsnIiyNa\\u\x00\x1f', max_size=24))
def test_loads_accepts_and_refuses_what_json_does(text: str) -> None:
    try:
        expected: object = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            jsontext.loads(text)
        return
    except RecursionError:
        return
    assert _same(jsontext.loads(text), expected)


@pytest.mark.parametrize("text", ["", " ", "{", '{"a": }', "[1,]", "1 2", "nul", '"\x01"', '{"a":1}x', "\ufeff{}"])
def test_malformed_text_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        jsontext.loads(text)


def test_a_value_json_cannot_write_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsontext.dumps({"when": object()})


@pytest.mark.parametrize("text", ["{", '{"a": }', "[1,]", "nul", '"\x01"', "", "1 2"])
def test_malformed_text_is_a_value_error_in_a_process_without_json(text: str) -> None:
    """The C scanner needs json.decoder imported to word its errors: without it, still a ValueError."""
    probe = ("import sys\nfrom cargo_agent import jsontext\n"
             f"try:\n    jsontext.loads({text!r})\nexcept ValueError:\n    print('ValueError')\n")
    result = subprocess.run([sys.executable, "-S", "-c", probe], cwd=REPO, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO)})
    assert result.stdout.strip() == "ValueError", result.stderr


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "x"])
def test_nesting_past_the_recursion_limit_is_a_value_error(text: str) -> None:
    """json raises RecursionError there; every reader of these texts reads hostile files (a
    record planted in a shared lock dir) and catches ValueError: a traceback otherwise."""
    with pytest.raises(RecursionError):
        json.loads(text)
    with pytest.raises(ValueError, match="nested too deep"):
        jsontext.loads(text)


def test_it_imports_neither_json_nor_re() -> None:
    probe = ("import sys\nfrom cargo_agent import jsontext\n"
             "assert jsontext.loads(jsontext.dumps({'a': [1, 2.5, None, 'x']})) == {'a': [1, 2.5, None, 'x']}\n"
             "print(sorted(m for m in ('json', 're', 'enum') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-S", "-c", probe], cwd=REPO, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO)}, check=True).stdout
    assert out.strip() == "[]"
