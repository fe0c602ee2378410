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


def test_a_settled_file_is_served_from_the_cache_without_tomllib(tmp_path: Path, cache_env: dict[str, str]) -> None:
    manifest = tmp_path / "Cargo.toml"
    _settled(manifest, '[package]\nname = "alpha"\n')
    assert _probe(manifest, cache_env) == ["alpha", "True"]
    assert _probe(manifest, cache_env) == ["alpha", "False"]


def test_a_rewrite_with_the_same_size_and_mtime_is_parsed_again(tmp_path: Path, cache_env: dict[str, str]) -> None:
    manifest = tmp_path / "Cargo.toml"
    _settled(manifest, '[package]\nname = "alpha"\n')
    assert _probe(manifest, cache_env)[0] == "alpha"
    before = manifest.stat()
    manifest.write_text('[package]\nname = "gamma"\n')  # same size
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
