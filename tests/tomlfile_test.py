"""TOML reading: one-line errors, no hang on a FIFO, and a parse cache that never serves stale facts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cargo_agent import tomlfile
from cargo_agent.errors import UsageError


def _settled(path: Path, text: str) -> None:
    """Write a file whose timestamps are old enough to be cached."""
    path.write_text(text)
    old = time.time() - 60
    os.utime(path, (old, old))
    # ctime cannot be set back: wait until the file is older than the settling window.
    deadline = time.time() + tomlfile.SETTLED_SECONDS + 1
    while time.time() - path.stat().st_ctime <= tomlfile.SETTLED_SECONDS:
        assert time.time() < deadline + 5
        time.sleep(0.1)


@pytest.fixture
def cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setattr(tomlfile, "_CACHE", tomlfile._Cache())
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}


def _probe(path: Path, env: dict[str, str]) -> list[str]:
    """Read `path` in a fresh process; return what it parsed and whether tomllib was imported."""
    code = ("import sys\nfrom cargo_agent import tomlfile\n"
            f"data = tomlfile.read_toml({str(path)!r})\n"
            "print(data['package']['name'], 'tomllib' in sys.modules or 'tomli' in sys.modules)\n")
    repo = str(Path(tomlfile.__file__).resolve().parent.parent)
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env, "PYTHONPATH": repo},
                            capture_output=True, text=True, check=True)
    return result.stdout.split()


# An inline table is beyond the simple reader: these files need tomllib unless the cache serves them.
INLINE = '[package]\nname = "{}"\n[dependencies]\nx = {{ path = "x" }}\n'


def test_a_settled_file_is_served_from_the_cache_without_tomllib(tmp_path: Path, cache_env: dict[str, str]) -> None:
    manifest = tmp_path / "Cargo.toml"
    _settled(manifest, INLINE.format("alpha"))
    assert _probe(manifest, cache_env) == ["alpha", "True"]
    assert _probe(manifest, cache_env) == ["alpha", "False"]


def test_a_rewrite_with_the_same_size_and_mtime_is_parsed_again(tmp_path: Path, cache_env: dict[str, str]) -> None:
    manifest = tmp_path / "Cargo.toml"
    _settled(manifest, INLINE.format("alpha"))
    assert _probe(manifest, cache_env)[0] == "alpha"
    before = manifest.stat()
    manifest.write_text(INLINE.format("gamma"))  # same size
    os.utime(manifest, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime
    assert _probe(manifest, cache_env) == ["gamma", "True"]


def test_a_young_file_is_never_cached(tmp_path: Path, cache_env: dict[str, str]) -> None:
    manifest = tmp_path / "Cargo.toml"
    manifest.write_text('[package]\nname = "alpha"\n')
    assert tomlfile.read_toml(manifest, env=cache_env) == {"package": {"name": "alpha"}}
    assert not tomlfile._CACHE.entries


def test_a_damaged_cache_is_ignored(tmp_path: Path, cache_env: dict[str, str]) -> None:
    cache = Path(cache_env["XDG_CACHE_HOME"]) / "cargo-agent" / tomlfile.CACHE_NAME
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"\x00garbage")
    manifest = tmp_path / "Cargo.toml"
    manifest.write_text('[package]\nname = "alpha"\n')
    assert tomlfile.read_toml(manifest, env=cache_env) == {"package": {"name": "alpha"}}


def test_cached_tables_are_fresh_copies(tmp_path: Path, cache_env: dict[str, str]) -> None:
    manifest = tmp_path / "Cargo.toml"
    _settled(manifest, 'include = ["a.toml"]\n')
    first = tomlfile.read_toml(manifest, env=cache_env)
    assert first is not None
    first.pop("include")  # callers may consume what they read
    assert tomlfile.read_toml(manifest, env=cache_env) == {"include": ["a.toml"]}


def test_a_fifo_is_an_error_not_a_hang(tmp_path: Path, cache_env: dict[str, str]) -> None:
    fifo = tmp_path / "Cargo.toml"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="not a regular file"):
        tomlfile.read_toml(fifo, env=cache_env)


@pytest.mark.parametrize(("text", "message"), [("[package\n", "malformed TOML in"), ("name = \"\xff\"", None)])
def test_bad_toml_is_one_line(tmp_path: Path, cache_env: dict[str, str], text: str, message: str | None) -> None:
    path = tmp_path / "x.toml"
    if message is None:
        path.write_bytes(b"name = \"\xff\"\n")
        message = "not UTF-8 text"
    else:
        path.write_text(text)
    with pytest.raises(UsageError, match=message):
        tomlfile.read_toml(path, env=cache_env)


# ---- the simple reader agrees with tomllib wherever it answers ---------------------------------

import tomllib  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ATOMS = st.sampled_from(['"a b"', "'x\\y'", '""', '"it\'s"', '"x#y"', "1", "-0", "+7", "007", "1.5", "-0.25", "1.",
                          "1e5", "true", "false", "True", '"a\\"b"', '"""x"""', "[]", '["a", "b",]', '[ "a" , \'b\' ]',
                          '["a" "b"]', "[1, 2]", '{ path = "x" }', "1_000", "99999999999999999999", "inf"])
_KEYS = st.sampled_from(["a", "b", "lock_dir", "mem-high", "x.y", '"q"', "a b", "", "0"])
_LINE = st.one_of(
    st.builds(lambda k, v, c: f"{k} = {v}{c}", _KEYS, _ATOMS, st.sampled_from(["", " # note", "#", " x"])),
    st.builds(lambda k: f"[{k}]", _KEYS), st.sampled_from(["", "# comment", "[[a]]", "[ a ]", "\t", "a", "= 1"]))


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINE, max_size=6), st.sampled_from(["\n", "\r\n"]))
def test_the_simple_reader_answers_only_what_tomllib_answers(lines: list[str], newline: str) -> None:
    text = newline.join(lines) + newline
    simple = tomlfile.simple_table(text)
    if simple is None:
        return
    assert simple == tomllib.loads(text)
    assert [type(v) for v in simple.values()] == [type(v) for v in tomllib.loads(text).values()]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab =\"'[]#,.\n\r\t1-+x\\")), max_size=40))
def test_the_simple_reader_never_disagrees_on_arbitrary_text(text: str) -> None:
    simple = tomlfile.simple_table(text)
    if simple is None:
        return
    assert simple == tomllib.loads(text)


def test_a_typical_host_file_and_manifest_are_read_without_tomllib() -> None:
    assert tomlfile.simple_table('slots = 4\nlock_dir = "/var/lib/cargo-agent"  # shared\nmem_high = 85.5\n'
                                 'limit_as_exempt = ["fuzz", "miri"]\nallow_unscoped = false\n') is not None
    assert tomlfile.simple_table('[package]\nname = "alpha"\nversion = "0.1.0"\nedition = "2021"\n\n'
                                 "[dependencies]\n") == {
        "package": {"name": "alpha", "version": "0.1.0", "edition": "2021"}, "dependencies": {}}
