"""cargo-agent-lint over every file kind, tricky cases included."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, crate, nest, write_tree

from cargo_agent import lint

FENCE = "```"

# (file name, content, expected codes in order)
CASES = [
    # Markdown fences
    ("a.md", f"{FENCE}sh\ncargo build\n{FENCE}\n", ["CA001"]),
    ("a.md", f"{FENCE}bash\ncargo test\n{FENCE}\n", ["CA001", "CA002"]),
    ("a.md", f"{FENCE}shell\ncargo-agent test\n{FENCE}\n", ["CA002"]),
    ("a.md", f"{FENCE}\ncargo check -p x\n{FENCE}\n", ["CA001"]),
    ("a.md", f"{FENCE}console\n$ cargo build -p x\nCompiling x\n{FENCE}\n", ["CA001"]),
    ("a.md", f"{FENCE}console\ncargo build is output here\n{FENCE}\n", []),
    ("a.md", f"{FENCE}rust\nlet cargo = \"cargo test\";\n{FENCE}\n", []),
    ("a.md", f"{FENCE}toml\n[alias]\nt = \"cargo test\"\n{FENCE}\n", []),
    ("a.md", "Run `cargo test -p x` to test.\n", ["CA001"]),
    ("a.md", "Run `cargo-agent test -p x` to test.\n", []),
    ("a.md", "Prose about cargo test without code spans.\n", []),
    ("a.md", "Use `cargo fmt` and `cargo metadata`.\n", []),
    ("a.md", f"{FENCE}sh\ncargo-agent build --all-targets\n{FENCE}\n", ["CA003"]),
    ("a.md", f"{FENCE}sh\ncargo-agent check -p x --all-features --tests\n{FENCE}\n", ["CA004"]),
    ("a.md", f"{FENCE}sh\ncargo-agent b --lib --bins --tests --benches --examples -p x\n{FENCE}\n", ["CA003"]),
    ("a.md", f"{FENCE}sh\n# cargo-agent: allow\ncargo build\n{FENCE}\n", []),
    ("a.md", f"{FENCE}sh\ncargo test  # cargo-agent: allow CA001\n{FENCE}\n", ["CA002"]),
    ("a.md", "<!-- cargo-agent: allow -->\n`cargo test`\n", []),
    ("a.md", f"{FENCE}sh\ncargo-agent test -p x -- --all-targets\n{FENCE}\n", []),
    ("a.md", f"{FENCE}sh\ncargo-agent test --workspace -p x\n{FENCE}\n", ["CA002"]),
    ("a.md", f"{FENCE}sh\ncargo-agent test --manifest-path crates/x/Cargo.toml\n{FENCE}\n", []),
    # shell scripts
    ("build.sh", "#!/bin/sh\nset -e\ncargo build --release\n", ["CA001"]),
    ("run", "#!/usr/bin/env bash\ncargo test -p a\n", ["CA001"]),
    ("s.sh", "env RUSTFLAGS=-Dwarnings cargo test -p a\n", ["CA001"]),
    ("s.sh", "RUST_LOG=debug CARGO_TERM_COLOR=always cargo run -p a\n", ["CA001"]),
    ("s.sh", "sudo -E cargo install --path .\n", ["CA001"]),
    ("s.sh", "cd x && cargo build; echo done | tee log\n", ["CA001"]),
    ("s.sh", "ls crates | xargs -n1 cargo test -p\n", ["CA001"]),
    ("s.sh", "echo $(cargo build -q)\n", ["CA001"]),
    ("s.sh", "cargo \\\n  test \\\n  --workspace\n", ["CA001", "CA002"]),
    ("s.sh", "cargo +nightly build -p a\n", ["CA001"]),
    ("s.sh", "my-cargo build\n", []),
    ("s.sh", "cargo-agent test -p a\n", []),
    ("s.sh", "cargo fmt --all && cargo metadata --no-deps && cargo --version\n", []),
    ("s.sh", "echo 'use cargo-agent'  # not cargo build\n", []),
    ("s.sh", "timeout 600 cargo build -p a\n", ["CA001"]),
    ("s.sh", "/usr/bin/cargo build\n", ["CA001"]),
    ("s.sh", "cargo agent test\n", ["CA002"]),
    # Makefile and justfile
    ("Makefile", "test:\n\tcargo test -p a\n\t@cargo-agent build\n", ["CA001"]),
    ("Makefile", "all:\n\t-cargo clippy --all-targets\n", ["CA001", "CA003"]),
    ("justfile", "test:\n    cargo-agent test\n", ["CA002"]),
    # Dockerfile
    ("Dockerfile", "FROM rust\nRUN cargo build --release\nRUN echo cargo build\n", ["CA001"]),
    ("Dockerfile", "FROM rust\nRUN --mount=type=cache,target=/x apt-get update && \\\n"
                   "    cargo test -p a\n", ["CA001"]),
    # CI YAML
    ("ci.yml", "steps:\n  - run: cargo test -p a\n  - name: cargo build\n", ["CA001"]),
    ("ci.yml", "steps:\n  - run: |\n      cargo-agent build -p a\n      cargo-agent test\n  - uses: x\n", ["CA002"]),
    ("ci.yaml", "jobs:\n  x:\n    steps:\n      - run: \"cargo-agent check --all-targets\"\n", ["CA003"]),
    # not scanned
    ("notes.txt", "cargo build\n", []),
    ("main.rs", "// cargo build\n", []),
]


@pytest.mark.parametrize(("name", "content", "codes"), CASES, ids=[f"{c[0]}:{c[1][:40]!r}" for c in CASES])
def test_lint_cases(tmp_path: Path, name: str, content: str, codes: list[str]) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert [f.code for f in lint.lint_file(path)] == codes


def test_position_points_at_the_cargo_word(tmp_path: Path) -> None:
    path = tmp_path / "s.sh"
    path.write_text("echo hi\nFOO=1 cargo build\n")
    [finding] = lint.lint_file(path)
    assert (finding.line, finding.col) == (2, 7)
    assert finding.render() == f"{path}:2:7: CA001 " + finding.message


def test_single_package_root_allows_unscoped_test(tmp_path: Path) -> None:
    write_tree(tmp_path / "solo", {**crate("solo"), "docs/howto.md": f"{FENCE}sh\ncargo-agent test\n{FENCE}\n"})
    assert lint.lint_file(tmp_path / "solo" / "docs" / "howto.md") == []
    write_tree(tmp_path / "ws", {"Cargo.toml": '[workspace]\nmembers = ["a", "b"]\n', **nest("a", crate("a")),
                                 **nest("b", crate("b")), "x.md": f"{FENCE}sh\ncargo-agent test\n{FENCE}\n"})
    assert [f.code for f in lint.lint_file(tmp_path / "ws" / "x.md")] == ["CA002"]


def test_fix_rewrites_only_what_is_safe(tmp_path: Path) -> None:
    path = tmp_path / "s.sh"
    path.write_text("cargo build -p a && cargo test\ncargo check --all-targets\ncargo fmt\n")
    assert lint.main(["--fix", str(path)]) == 1
    assert path.read_text() == "cargo-agent build -p a && cargo test\ncargo check --all-targets\ncargo fmt\n"


def test_named_files_of_unknown_kind_are_not_linted(tmp_path: Path) -> None:
    license_file = tmp_path / "LICENSE"
    license_file.write_text("You may cargo build this.\n")
    script = tmp_path / "run"
    script.write_text("#!/bin/sh\ncargo build\n")
    assert lint.main([str(license_file)]) == 0
    assert lint.main([str(script)]) == 1


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = tmp_path / "clean.sh"
    clean.write_text("cargo-agent build -p a\n")
    assert lint.main([str(clean)]) == 0
    assert lint.main([str(tmp_path / "missing")]) == 2
    assert lint.main(["--bogus"]) == 2
    dirty = tmp_path / "dirty.md"
    dirty.write_text("`cargo build`\n")
    assert lint.main([str(tmp_path)]) == 1
    assert "dirty.md:1:2: CA001" in capsys.readouterr().out


def test_project_readme_and_docs_lint_clean() -> None:
    assert lint.main([str(REPO / "README.md"), str(REPO / "docs"), str(REPO / "examples")]) == 0


@pytest.mark.skipif(shutil.which("pre-commit") is None, reason="pre-commit is a test dependency")
def test_pre_commit_try_repo_fails_on_a_bad_markdown_file(tmp_path: Path) -> None:
    repo = tmp_path / "user-repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "HOWTO.md").write_text(f"# How\n\n{FENCE}sh\ncargo test\n{FENCE}\n")
    (repo / "justfile").write_text("build:\n    cargo build\n")
    (repo / "LICENSE").write_text("Permission is granted to cargo build ...\n")
    subprocess.run(["git", "add", "HOWTO.md", "justfile", "LICENSE"], cwd=repo, check=True)
    hook_home = tmp_path / "hook-repo"
    shutil.copytree(REPO, hook_home, ignore=shutil.ignore_patterns(".git", "*.egg-info", "__pycache__", "target",
                                                                  ".pytest_cache", ".mypy_cache", ".ruff_cache"))
    subprocess.run(["git", "init", "-q"], cwd=hook_home, check=True)
    subprocess.run(["git", "add", "-A"], cwd=hook_home, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "hook"],
                   cwd=hook_home, check=True)
    env = {"PRE_COMMIT_HOME": str(tmp_path / "pc-home"), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
           "HOME": str(tmp_path)}
    result = subprocess.run(["pre-commit", "try-repo", str(hook_home), "cargo-agent-lint", "--all-files"],
                            cwd=repo, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "HOWTO.md:4:1: CA001" in result.stdout
    assert "justfile:2:5: CA001" in result.stdout
    assert "LICENSE" not in result.stdout
