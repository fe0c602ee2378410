"""rustc facts: the `cfg(...)` evaluator (used to apply `target.'cfg(..)'` config tables), checked
by hand and against rustc's own `cfg!` on this host."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cargo_agent import rustcinfo

FACTS = ['target_os="linux"', 'target_arch="x86_64"', "unix", 'target_pointer_width="64"', "debug_assertions"]


@pytest.mark.parametrize(("expression", "expected"), [
    ("cfg(unix)", True),
    ("cfg(windows)", False),
    ('cfg(target_os = "linux")', True),
    ('cfg(target_os="macos")', False),
    ('cfg(all(unix, target_arch = "x86_64"))', True),
    ('cfg(all(unix, target_arch = "aarch64"))', False),
    ("cfg(all())", True),
    ("cfg(any())", False),
    ("cfg(any(windows, unix))", True),
    ("cfg(any(windows, target_os = \"macos\"))", False),
    ("cfg(not(windows))", True),
    ("cfg(not(unix))", False),
    ('cfg(all(not(windows), any(target_pointer_width = "32", target_pointer_width = "64")))', True),
    ('cfg(not(all(unix, not(debug_assertions))))', True),
])
def test_cfg_expressions_evaluate_like_rustc(expression: str, expected: bool) -> None:
    assert rustcinfo.cfg_matches(expression, FACTS) is expected


@pytest.mark.parametrize("malformed", ["unix", "cfg(", "cfg(all(unix", "cfg()", "", "cfg unix"])
def test_a_malformed_cfg_expression_matches_nothing(malformed: str) -> None:
    assert rustcinfo.cfg_matches(malformed, FACTS) is False


def test_a_quoted_value_is_compared_whole() -> None:
    assert rustcinfo.cfg_matches('cfg(target_os = "linux gnu")', FACTS) is False
    assert rustcinfo.cfg_matches('cfg(target_os = "linux gnu")', [*FACTS, 'target_os="linux gnu"']) is True


EXPRESSIONS = ["unix", "windows", 'target_os = "linux"', 'all(unix, target_arch = "x86_64")', "any()", "all()",
               'not(target_env = "musl")', 'any(target_family = "wasm", all(unix, not(target_os = "macos")))',
               'target_has_atomic = "64"', 'all(target_endian = "little", target_pointer_width = "64")']


def test_cfg_evaluation_agrees_with_rustc_on_this_host(tmp_path: Path) -> None:
    env = dict(os.environ)
    facts = rustcinfo.cfg(env, rustcinfo.info(env).host)
    program = tmp_path / "probe.rs"
    program.write_text("fn main() {\n" + "".join(f'    println!("{{}}", cfg!({e}));\n' for e in EXPRESSIONS) + "}\n")
    subprocess.run(["rustc", "--edition", "2021", "-o", str(tmp_path / "probe"), str(program)], check=True,
                   capture_output=True)
    answers = subprocess.run([str(tmp_path / "probe")], check=True, capture_output=True, text=True).stdout.split()
    assert answers == [str(rustcinfo.cfg_matches(f"cfg({e})", facts)).lower() for e in EXPRESSIONS]
