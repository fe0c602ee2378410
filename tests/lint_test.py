"""cargo-agent-lint over every file kind, tricky cases included."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import REPO, crate, nest, write_tree
from hypothesis import given, settings
from hypothesis import strategies as st

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
    ("s.sh", "cargo +nightly agent check -p a\n", []),
    ("s.sh", "cargo +nightly agent test\n", ["CA002"]),
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
    # shell grammar: reserved words and compound commands
    ("s.sh", "if cargo test -p a; then cargo build; fi\n", ["CA001", "CA001"]),
    ("s.sh", "if ! cargo test; then exit 1; fi\n", ["CA001", "CA002"]),
    ("s.sh", "while cargo test -p a; do sleep 1; done\n", ["CA001"]),
    ("s.sh", "until cargo check -p a\ndo cargo build; done\n", ["CA001", "CA001"]),
    ("s.sh", "for c in a b; do cargo test -p $c; done\n", ["CA001"]),
    ("s.sh", "{ cargo build; } 2>&1\n", ["CA001"]),
    ("s.sh", "! cargo build\n", ["CA001"]),
    ("s.sh", "(cd x && cargo build)\n", ["CA001"]),
    ("s.sh", "case $1 in b) cargo build ;; esac\n", ["CA001"]),
    ("s.sh", "f() { cargo build; }\n", ["CA001"]),
    ("s.sh", ">build.log 2>&1 cargo build\n", ["CA001"]),
    ("s.sh", "x=\"$(cargo build -q)\"\n", ["CA001"]),
    ("s.sh", "diff <(cargo build) expected\n", ["CA001"]),
    # ... behind command-running wrappers and their options
    ("s.sh", "sudo -u builder cargo build\n", ["CA001"]),
    ("s.sh", "nice -n 10 cargo build\n", ["CA001"]),
    ("s.sh", "env -u FOO -C /src cargo build\n", ["CA001"]),
    ("s.sh", "timeout -s KILL 60 cargo test\n", ["CA001", "CA002"]),
    ("s.sh", "ionice -c 3 stdbuf -o L taskset -c 0 cargo build\n", ["CA001"]),
    ("s.sh", "flock -w 10 /tmp/lock cargo build\n", ["CA001"]),
    ("s.sh", "rustup run nightly cargo build\n", ["CA001"]),
    ("s.sh", "sh -c 'cargo test'\n", ["CA001", "CA002"]),
    ("s.sh", "bash -lc \"cd x && cargo build\"\n", ["CA001"]),
    ("s.sh", "command -v cargo && echo have cargo\n", []),
    # ... through $CARGO
    ("s.sh", "\"$CARGO\" build\n", ["CA001"]),
    ("s.sh", "${CARGO} test\n", ["CA001", "CA002"]),
    ("s.sh", "${CARGO:-cargo} build -p a\n", ["CA001"]),
    ("Makefile", "b:\n\t$(CARGO) build\n\techo $$(cargo build -q)\n", ["CA001", "CA001"]),
    ("justfile", "b:\n    echo $(cargo build -q)\n", ["CA001"]),
    # not commands: quoted text, comments
    ("s.sh", "echo \"a; cargo build\" 'cargo test' # cargo test\n", []),
    ("s.sh", "git commit -m 'cargo build && cargo test'\n", []),
    # what -p really selects, and the other rules' wider spellings
    ("s.sh", "cargo-agent test -p 'x*'\n", ["CA002"]),
    ("s.sh", "cargo-agent test -p a -p b\n", ["CA002"]),
    ("s.sh", "cargo-agent test -p a -p a@0.1.0\n", []),
    ("s.sh", "cargo-agent test --manifest-path Cargo.toml\n", ["CA002"]),
    ("s.sh", "cargo-agent nextest list\n", ["CA002"]),
    ("s.sh", "cargo-agent miri test\n", ["CA002"]),
    ("s.sh", "cargo-agent build -p a --lib --bin '*' --test '*' --bench '*' --example '*'\n", ["CA003"]),
    ("s.sh", "cargo-agent check -p a --all-features --test '*'\n", ["CA004"]),
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


def test_fix_never_rewrites_what_it_cannot_be_sure_of(tmp_path: Path) -> None:
    path = tmp_path / "s.sh"
    original = ("sudo cargo build -p a\n\"$CARGO\" build -p a\nbash -c 'cargo build -p a'\n/usr/bin/cargo build\n"
                "\\cargo build\ndoas -u x cargo build\nxargs cargo test -p x -p y\n")
    path.write_text(original)
    assert lint.main(["--fix", str(path)]) == 1
    assert path.read_text() == original


def test_fix_rewrites_cargo_in_command_position(tmp_path: Path) -> None:
    path = tmp_path / "s.sh"
    path.write_text("if cargo build -p a; then nice -n 5 cargo check -p a; fi  # cargo test\n"
                    "echo \"cargo build\" && { cargo doc; }\n")
    assert lint.main(["--fix", str(path)]) == 0
    assert path.read_text() == ("if cargo-agent build -p a; then nice -n 5 cargo-agent check -p a; fi  # cargo test\n"
                                "echo \"cargo build\" && { cargo-agent doc; }\n")


def test_manifest_path_at_a_virtual_root_is_not_scoping(virtual_ws: Path) -> None:
    doc = virtual_ws / "docs" / "howto.md"
    doc.parent.mkdir()
    doc.write_text(f"{FENCE}sh\ncargo-agent test --manifest-path Cargo.toml\n"
                   "cargo-agent test --manifest-path crates/alpha/Cargo.toml\n"
                   "cargo-agent test -p 'a*'\ncargo-agent test -p '*'\ncargo-agent test --workspace --exclude '[bg]*'\n"
                   f"{FENCE}\n")
    assert [(f.line, f.code) for f in lint.lint_file(doc)] == [(2, "CA002"), (5, "CA002")]


def test_repo_aliases_and_metadata_count(virtual_ws: Path) -> None:
    write_tree(virtual_ws, {".cargo/config.toml": 'include = ["aliases.toml"]\n',
                            ".cargo/aliases.toml": '[alias]\nt = "test -p alpha"\nwt = "test --workspace"\n'})
    doc = virtual_ws / "README.md"
    doc.write_text(f"{FENCE}sh\ncargo-agent t\ncargo-agent wt\ncargo-agent test -p alpha -p beta\n{FENCE}\n")
    assert [(f.line, f.code) for f in lint.lint_file(doc)] == [(3, "CA002"), (4, "CA002")]
    manifest = virtual_ws / "Cargo.toml"
    manifest.write_text(manifest.read_text() + "\n[workspace.metadata.cargo-agent]\nmax-packages = 2\n")
    assert [(f.line, f.code) for f in lint.lint_file(doc)] == [(3, "CA002")]


def test_messages_come_from_the_policy_table(tmp_path: Path) -> None:
    from cargo_agent import policy

    path = tmp_path / "s.sh"
    path.write_text("cargo-agent build --all-targets\n")
    [finding] = lint.lint_file(path)
    rule = policy.RULE["all-targets"]
    assert finding.code == rule.code and finding.message.endswith(rule.fix) and rule.name in finding.message
    assert set(lint.RULES) == {"CA001", *(r.code for r in policy.RULES)}


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


# ---- generated shell grammar ------------------------------------------------------------

LEAD_INS = ["if", "then", "else", "elif", "do", "while", "until", "!", "{", "time", "time -p", "exec", "command"]
ASSIGNMENTS = ["FOO=1", "A_B='x y'", 'RUSTFLAGS="-D warnings"', "X=$(date)", "ARR=(a b)"]
REDIRECTIONS = [">log", "2>&1", "</dev/null", "2> err.txt", "&>all.log", ">>log"]
WRAPPER_FORMS = [
    "sudo", "sudo -u bob", "sudo -E -H", "sudo -u bob -g wheel --", "sudo --user=bob", "doas -u x", "env", "env -i",
    "env -u FOO", "env -u FOO BAR=1", "env -C /tmp", "nice", "nice -n 10", "nice -n10", "nice --adjustment=5",
    "nice -5", "nohup", "timeout 60", "timeout -s KILL 60", "timeout --signal=TERM -k 5 60", "timeout -- 60",
    "ionice -c 3", "ionice -c2 -n7", "stdbuf -oL", "stdbuf -o L -e L", "xargs", "xargs -n1", "xargs -I {}",
    "xargs -0 -P 4", "exec -a name", "chrt -i 0", "taskset -c 0,1", "taskset 0x3", "setsid", "setsid -w",
    "flock /tmp/lock", "flock -w 10 /tmp/lock", "unbuffer", "numactl -C 0", "prlimit --as=4000000000",
    "systemd-run --user --scope -p MemoryMax=4G", "watch -n 5", "cgexec -g memory:x", "rustup run stable",
    "rustup run --install nightly", "eatmydata", "chronic", "strace -f -o /tmp/t", "/usr/bin/env -u X",
]
CARGO_WORDS = ["cargo", "/usr/bin/cargo", "~/.cargo/bin/cargo", '"$CARGO"', "${CARGO}", "$CARGO", "\\cargo", "'cargo'",
               '"${CARGO:-cargo}"']
CONTEXTS = [("", ""), ("echo hi; ", ""), ("true && ", ""), ("false || ", ""), ("ls | ", ""), ("( ", " )"),
            ("x=$(", ")"), ("x=`", "`"), ('echo "$(', ')"'), ("diff <(", ") b"), ("", " | tee log"), ("", " &"),
            ("", "; echo done"), ("", "  # a comment"), ("f() { ", "; }"), ("case $x in a) ", " ;; esac"),
            ("sh -c ", "QUOTED"), ("bash -ec ", "DOUBLE-QUOTED"), ("su -c ", "QUOTED")]


def _double_quoted(text: str) -> str:
    return '"' + "".join("\\" + c if c in '"\\$`' else c for c in text) + '"'


@st.composite
def command_lines(draw: st.DrawFn) -> tuple[str, bool]:
    """A line with `cargo test` in command position somewhere, and whether it has a `-p`."""
    words = draw(st.lists(st.sampled_from(LEAD_INS), max_size=2))
    for _ in range(draw(st.integers(0, 3))):
        words.append(draw(st.one_of(st.sampled_from(ASSIGNMENTS), st.sampled_from(REDIRECTIONS),
                                    st.sampled_from(WRAPPER_FORMS))))
    scoped = draw(st.booleans())
    words += [draw(st.sampled_from(CARGO_WORDS)), "test", *(["-p", "a"] if scoped else [])]
    before, after = draw(st.sampled_from(CONTEXTS))
    inner = " ".join(words)
    if after == "QUOTED":  # a whole command line as one argument, quoted as a shell would need it
        return before + shlex.quote(inner), scoped
    if after == "DOUBLE-QUOTED":
        return before + _double_quoted(inner), scoped
    return before + inner + after, scoped


@given(command_lines())
@settings(max_examples=400, deadline=None)
def test_generated_command_lines_are_found(case: tuple[str, bool]) -> None:
    line, scoped = case
    found = list(lint.invocations(line))
    assert [f.args for f in found] == [["test", "-p", "a"] if scoped else ["test"]], line
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "s.sh"
        path.write_text(line + "\n")
        codes = [f.code for f in lint.lint_file(path)]
    assert codes == (["CA001"] if scoped else ["CA001", "CA002"]), line


@given(st.sampled_from([*CARGO_WORDS, "cargo-agent"]), st.sampled_from(["echo '{}' test", 'echo "{} test"',
                                                                       "# {} test", "echo x # {} test",
                                                                       "git commit -m '{} test'", "command -v {}",
                                                                       "printf '%s' \"$({} --version)\""]))
@settings(max_examples=100, deadline=None)
def test_cargo_outside_command_position_is_not_found(cargo: str, template: str) -> None:
    line = template.format(cargo.replace("'", "").replace('"', ""))
    assert [f.args for f in lint.invocations(line) if f.args[:1] == ["test"]] == [], line


@given(st.sampled_from(WRAPPER_FORMS + LEAD_INS), st.sampled_from(["", "echo x; ", "true && "]))
@settings(max_examples=100, deadline=None)
def test_fix_points_at_the_cargo_word(prefix: str, before: str) -> None:
    line = f"{before}{prefix} cargo build -p a"
    [found] = list(lint.invocations(line))
    assert line[found.word.start:].startswith("cargo build")


@pytest.mark.parametrize("hostile", ["$(" * 5000 + "cargo build", "`" * 5001 + " cargo build", "<(" * 3000,
                                     "sh -c " + "'sh -c \"" * 200 + "cargo build", "${" * 4000, '"' + "$(" * 4000],
                         ids=["subst", "backticks", "process-subst", "sh-c-tower", "braces", "quoted-subst"])
def test_hostile_nesting_neither_recurses_nor_hangs(tmp_path: Path, hostile: str) -> None:
    path = tmp_path / "s.sh"
    path.write_text(hostile + "\n")
    for finding in lint.lint_file(path):
        assert finding.code in lint.RULES


# ---- the shell scanner's words (issue 18: survivors of the mutation check) -------------------

@pytest.mark.parametrize(("text", "commands"), [
    # a process substitution is part of the word it starts or continues, from that word's start
    ("a<(cargo tree) x", [[("cargo", 3), ("tree", 9)], [("a<(...)", 0), ("x", 15)]]),
    # `&>` and `2>` redirect: the target is not a word, and the command goes on after it
    ("cargo test &>log --lib", [[("cargo", 0), ("test", 6), ("--lib", 17)]]),
    ("cargo test 2>err --lib", [[("cargo", 0), ("test", 6), ("--lib", 17)]]),
    # an array assignment is one word, written out
    ("a=(x y) cargo test", [[("a=(x y)", 0), ("cargo", 8), ("test", 14)]]),
])
def test_scanner_words_and_their_offsets(text: str, commands: list[list[tuple[str, int]]]) -> None:
    assert [[(w.text, w.start) for w in c] for c in lint.simple_commands(text)] == commands


@pytest.mark.parametrize(("text", "args"), [
    ('nix-shell -p rustc --run "cargo test -p a"', ["test", "-p", "a"]),
    ('nix-shell --command "cargo build"', ["build"]),
    ('script -c "cargo test"', ["test"]),
    ('script --command "cargo check"', ["check"]),
    ('nix-shell --run="cargo test -p a" x', ["test", "-p", "a"]),  # the value attached with `=`
    ('script --command="cargo check"', ["check"]),
])
def test_cargo_inside_a_wrappers_command_string_is_found(text: str, args: list[str]) -> None:
    found = list(lint.invocations(text))
    assert [(i.program, i.args, i.nested) for i in found] == [("cargo", args, True)]


def test_a_continued_line_is_joined_with_one_space() -> None:
    [command] = lint.shell_commands("cargo test\\\n  --workspace\n")
    assert (command.line, command.offset, command.text) == (1, 0, "cargo test --workspace")


def test_the_command_string_of_sh_c_is_its_first_argument_not_the_last() -> None:
    """`bash -c 'cmd' name`: `name` is $0 of the command string, not a command."""
    assert [(i.program, i.args) for i in lint.invocations('bash -c "cargo test" name')] == [("cargo", ["test"])]


def test_a_file_that_is_not_text_has_no_findings(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_bytes(b"```sh\ncargo test \xff\xfe\n```\n")
    assert lint.lint_file(path) == []
