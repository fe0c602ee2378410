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


# ---- issue 18: every entry of the lint's tables, and where each extractor says a command is ------

def findings_of(tmp_path: Path, name: str, content: str) -> list[tuple[int, int, str]]:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return [(f.line, f.col, f.code) for f in lint.lint_file(path)]


def test_the_rule_codes_and_names_are_the_documented_ones() -> None:
    assert lint.RULES == {"CA001": "bare-cargo", "CA002": "unscoped-test", "CA003": "all-targets",
                          "CA004": "all-features-tests"}


def test_only_a_bare_cargo_finding_is_fixable(tmp_path: Path) -> None:
    path = tmp_path / "s.sh"
    path.write_text("cargo build -p a\ncargo test\ncargo-agent test\nsudo cargo build -p a\n")
    assert [(f.line, f.code, f.fixable) for f in lint.lint_file(path)] == [
        (1, "CA001", True), (2, "CA001", False), (2, "CA002", False), (3, "CA002", False), (4, "CA001", False)]


def test_findings_and_command_lines_are_values() -> None:
    import dataclasses

    finding = lint.Finding(Path("a.md"), 1, 2, "CA001", "m")
    command = lint.CommandLine(1, 0, "cargo build")
    assert not finding.fixable and not command.make
    assert len({finding, lint.Finding(Path("a.md"), 1, 2, "CA001", "m")}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.line = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        command.text = "cargo test"  # type: ignore[misc]


@pytest.mark.parametrize("language", ["", "sh", "bash", "shell", "zsh", "shell-session", "terminal", "SH", "Bash"])
def test_every_shell_fence_language_is_scanned(tmp_path: Path, language: str) -> None:
    assert findings_of(tmp_path, "a.md", f"text\n{FENCE}{language}\ncargo build\n$ cargo check\n{FENCE}\n") == [
        (3, 1, "CA001"), (4, 3, "CA001")]


@pytest.mark.parametrize("language", ["console", "Console"])
def test_a_console_fence_reads_prompt_lines_and_their_continuations_only(tmp_path: Path, language: str) -> None:
    text = (f"{FENCE}{language}\n$ cargo build \\\n    -p a\n   Compiling a\ncargo build\n# cargo check\n"
            f"  $ cargo doc\n$ cargo \\\n  test -p a\n{FENCE}\n")
    assert findings_of(tmp_path, "a.md", text) == [(2, 3, "CA001"), (6, 3, "CA001"), (7, 5, "CA001"), (8, 3, "CA001")]


@pytest.mark.parametrize("language", ["rust", "toml", "text", "python", "makefile", "yaml"])
def test_other_fences_are_not_scanned(tmp_path: Path, language: str) -> None:
    assert findings_of(tmp_path, "a.md", f"{FENCE}{language}\ncargo build\n$ cargo build\n{FENCE}\n") == []


def test_fences_indented_tilde_and_longer_and_what_closes_them(tmp_path: Path) -> None:
    text = ("  ~~~sh\n  cargo build\n  ~~~\n"  # indented, with tildes
            "````bash\ncargo build\n```not a close\ncargo check\n``\n````\n"  # closed only by a bare fence
            "`cargo doc` after the fences\n")
    assert findings_of(tmp_path, "a.md", text) == [(2, 3, "CA001"), (5, 1, "CA001"), (7, 1, "CA001"),
                                                 (10, 2, "CA001")]


def test_an_unclosed_fence_is_not_scanned_and_hides_what_follows(tmp_path: Path) -> None:
    assert findings_of(tmp_path, "a.md", f"{FENCE}sh\ncargo build\n`cargo check`\n") == []


def test_inline_code_spans_and_their_columns(tmp_path: Path) -> None:
    text = "Run `cargo build -p a` or ``cargo check`` or `x` then `cargo doc`.\n"
    assert findings_of(tmp_path, "a.md", text) == [(1, 6, "CA001"), (1, 56, "CA001")]


def test_dockerfile_run_lines_flags_continuations_and_columns(tmp_path: Path) -> None:
    text = ("FROM rust\nrun  --mount=type=cache,target=/x --network=none  cargo build \\\n  && cargo test -p a\n"
            "RUN echo hi && \\\n    cargo doc\nCMD cargo build\n  RUN cargo check \\")
    # a continued command is reported on its first line, at its column in the joined text
    assert findings_of(tmp_path, "Dockerfile", text) == [(2, 51, "CA001"), (2, 67, "CA001"), (4, 17, "CA001"),
                                                         (7, 7, "CA001")]


@pytest.mark.parametrize("indicator", ["|", ">", "|-", ">-", "|+", ">+"])
def test_yaml_block_scalars_of_every_kind(tmp_path: Path, indicator: str) -> None:
    text = (f"steps:\n  - run: {indicator}\n      cargo build\n\n        cargo check \\\n        -p a\n"
            "    name: cargo build\n  - run: cargo doc\n")
    assert findings_of(tmp_path, "ci.yml", text) == [(3, 7, "CA001"), (5, 9, "CA001"), (8, 10, "CA001")]


def test_yaml_inline_run_values_plain_and_quoted(tmp_path: Path) -> None:
    text = "a:\n  run: 'cargo check'\n  run: \"cargo doc\"\n  x: cargo build\nrun:   cargo build -p a\nrun:\n"
    assert findings_of(tmp_path, "ci.yaml", text) == [(2, 9, "CA001"), (3, 9, "CA001"), (5, 8, "CA001")]


def test_makefile_recipes_prefixes_and_columns(tmp_path: Path) -> None:
    text = ("x:\n\t@-cargo build\n  cargo check\n    +cargo doc\n\ncargo build -p a\nall: ; echo\n"
            "X = cargo build\n")
    assert findings_of(tmp_path, "Makefile", text) == [(2, 4, "CA001"), (3, 3, "CA001"), (4, 6, "CA001")]
    assert findings_of(tmp_path, "justfile", text) == [(2, 4, "CA001"), (3, 3, "CA001"), (4, 6, "CA001")]


def test_make_variables_in_a_makefile_and_commands_in_a_justfile(tmp_path: Path) -> None:
    text = "b:\n\techo $(cargo build) ${cargo check} $$(cargo doc)\n"
    assert findings_of(tmp_path, "Makefile", text) == [(2, 40, "CA001")]
    assert findings_of(tmp_path, "justfile", "b:\n    echo $(cargo build) ${cargo check}\n") == [(2, 12, "CA001")]


@pytest.mark.parametrize(("name", "kind"), [
    ("a.md", "markdown"), ("A.MARKDOWN", "markdown"), ("b.sh", "shell"), ("b.bash", "shell"), ("b.zsh", "shell"),
    ("Makefile", "makefile"), ("makefile", "makefile"), ("GNUmakefile", "makefile"), ("rules.mk", "makefile"),
    ("justfile", "justfile"), (".justfile", "justfile"), ("build.just", "justfile"), ("Dockerfile", "dockerfile"),
    ("Dockerfile.dev", "dockerfile"), ("app.dockerfile", "dockerfile"), ("ci.yml", "yaml"), ("ci.YAML", "yaml"),
    ("notes.txt", None), ("main.rs", None), ("Cargo.toml", None), ("README", None),
])
def test_kind_by_name(tmp_path: Path, name: str, kind: str | None) -> None:
    path = tmp_path / name
    path.write_text("cargo build\n")
    assert lint.kind_of(path) == kind


@pytest.mark.parametrize(("head", "kind"), [
    ("#!/bin/sh", "shell"), ("#!/bin/bash -e", "shell"), ("#!/usr/bin/env zsh", "shell"), ("#!/bin/dash", "shell"),
    ("#!/bin/ksh", "shell"), ("#!/usr/bin/env python3", None), ("#!/bin/fish", None), ("# sh", None),
    ("#!/bin/bashful", None), ("x\n#!/bin/sh", None),
    ("#!" + " " * 191 + "/bin/sh", "shell"), ("#!" + " " * 192 + "/bin/sh", None),  # `sh` ends at byte 200, 201
])
def test_kind_by_shebang_in_the_first_200_bytes(tmp_path: Path, head: str, kind: str | None) -> None:
    path = tmp_path / "run"
    path.write_text(head + "\ncargo build\n")
    assert lint.kind_of(path) == kind
    assert lint.main([str(path)]) == (1 if kind else 0)


def test_a_file_without_suffix_that_cannot_be_read_has_no_kind(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    assert lint.kind_of(tmp_path / "run") is None
    assert lint.lint_file(tmp_path / "run") == []
    assert lint.lint_file(tmp_path / "run", "shell") == []


@pytest.mark.parametrize("skipped", [".git", "target", "node_modules", ".venv", "venv", "__pycache__", ".mypy_cache",
                                     ".ruff_cache", ".pytest_cache", ".hypothesis"])
def test_a_directory_walk_skips_build_and_tool_directories(tmp_path: Path, skipped: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tmp_path, {f"{skipped}/a.md": "`cargo build`\n", f"docs/{skipped}x/a.md": "`cargo build`\n",
                          "z.md": "`cargo build`\n"})
    assert lint.main([str(tmp_path)]) == 1
    message = "CA001 bare-cargo: `cargo build` runs without build slots or limits; use `cargo-agent build`"
    assert capsys.readouterr().out.splitlines() == [f"{tmp_path}/z.md:1:2: {message}",
                                                    f"{tmp_path}/docs/{skipped}x/a.md:1:2: {message}"]


def test_a_directory_walk_is_in_name_order(tmp_path: Path) -> None:
    write_tree(tmp_path, {name: "`cargo build`\n" for name in ["b.md", "a.md", "c/a.md", "a/z.md", "B.md"]})
    assert [str(p.relative_to(tmp_path)) for p in lint.iter_files([str(tmp_path)])] == [
        "B.md", "a.md", "b.md", "a/z.md", "c/a.md"]  # a directory's files, then its subdirectories


def test_the_bare_cargo_message_names_the_word_as_written(tmp_path: Path) -> None:
    path = tmp_path / "s.sh"
    path.write_text("/usr/bin/cargo build -p a\ncargo test -p a\n\"$CARGO\" check -p a\n")
    assert [f.message for f in lint.lint_file(path)] == [
        "bare-cargo: `/usr/bin/cargo build` runs without build slots or limits; use `cargo-agent build`",
        "bare-cargo: `cargo test` runs without build slots or limits; use `cargo-agent test`",
        "bare-cargo: `$CARGO check` runs without build slots or limits; use `cargo-agent check`"]


@pytest.mark.parametrize(("line", "codes"), [
    ("cargo test  # cargo-agent: allow", []),
    ("cargo test  # cargo-agent:allow CA002", ["CA001"]),
    ("cargo test  # cargo-agent: allow CA001 CA002", []),
    ("cargo test  # cargo-agent: allowed", ["CA001", "CA002"]),
    ("cargo test  # cargo-agent: allow CA1", []),  # not a code: the whole line is allowed
    ("cargo test  # cargo agent: allow", ["CA001", "CA002"]),
])
def test_allow_comments_and_their_codes(tmp_path: Path, line: str, codes: list[str]) -> None:
    assert [c for _, _, c in findings_of(tmp_path, "s.sh", line + "\n")] == codes


def test_an_allow_comment_covers_its_line_and_the_next_only(tmp_path: Path) -> None:
    text = "# cargo-agent: allow CA001\ncargo build\ncargo check\ncargo doc # cargo-agent: allow\n"
    assert findings_of(tmp_path, "s.sh", text) == [(3, 1, "CA001")]
    assert findings_of(tmp_path, "t.sh", "cargo build\n# cargo-agent: allow\n") == [(1, 1, "CA001")]


def test_fix_rewrites_every_cargo_of_a_line_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "s.sh"
    path.write_text("cargo build -p a && cargo\tcheck -p a; cargo doc\nx=1\n`cargo` build\ncargo\\\n build -p a\n")
    assert lint.main(["--fix", str(path)]) == 1  # the quoted and the continued one stay
    assert path.read_text() == ("cargo-agent build -p a && cargo-agent\tcheck -p a; cargo-agent doc\nx=1\n"
                                "`cargo` build\ncargo\\\n build -p a\n")


def test_fix_reports_how_many_it_made_and_leaves_a_clean_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s.sh"
    path.write_text("cargo build -p a\ncargo check -p a\n")
    assert lint.fix_file(path, lint.lint_file(path)) == 2
    assert path.read_text() == "cargo-agent build -p a\ncargo-agent check -p a\n"
    before = path.stat().st_mtime_ns
    assert lint.fix_file(path, lint.lint_file(path)) == 0
    assert path.stat().st_mtime_ns == before


def test_help_unknown_options_and_a_lone_dash(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert lint.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cargo-agent-lint [--fix] [PATH...]\n\ncargo-agent-lint: find commands")
    assert "CA004 all-features-tests" in out
    assert lint.main(["-h"]) == 0
    assert capsys.readouterr().out == out
    assert lint.main(["-x", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: unknown option '-x' (accepted: --fix, --help)\n"
    assert lint.main(["-"]) == 2
    assert capsys.readouterr().err == "error: no such file or directory: -\n"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.md").write_text("`cargo build`\n")
    monkeypatch.setattr(sys, "argv", ["cargo-agent-lint"])
    assert lint.main() == 1  # no path: the current directory
    assert capsys.readouterr().out.startswith("a.md:1:2: CA001")
    monkeypatch.setattr(sys, "argv", ["cargo-agent-lint", "--fix"])
    assert lint.main() == 0
    assert (tmp_path / "a.md").read_text() == "`cargo-agent build`\n"
    assert capsys.readouterr().out == ""


# Written from each tool's manual page, not copied from lint.WRAPPERS: the options that take a value
# (short letters, long names), the arguments before the command, and what the tool is.
WRAPPER_MANUALS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "sudo": ("ugCDhprtTU", ("user", "group", "close-from", "chdir", "host", "prompt", "role", "type",
                            "command-timeout", "other-user"), ""),
    "doas": ("uC", (), ""),
    "runuser": ("ugG", ("user", "group", "supp-group"), ""),
    "su": ("gGs", ("group", "supp-group", "shell"), ""),
    "chroot": ("", ("userspec", "groups"), "/srv/root"),
    "env": ("uC", ("unset", "chdir"), ""),
    "nice": ("n", ("adjustment",), ""),
    "nohup": ("", (), ""),
    "time": ("fo", ("format", "output"), ""),
    "timeout": ("sk", ("signal", "kill-after"), "60"),
    "gtimeout": ("sk", ("signal", "kill-after"), "60"),
    "ionice": ("cnp", ("class", "classdata", "pid"), ""),
    "stdbuf": ("ioe", ("input", "output", "error"), ""),
    "xargs": ("nIPLdaEs", ("max-args", "replace", "max-procs", "max-lines", "delimiter", "arg-file", "eof",
                           "max-chars", "process-slot-var"), ""),
    "exec": ("a", (), ""),
    "command": ("", (), ""),
    "builtin": ("", (), ""),
    "chrt": ("TPD", ("sched-runtime", "sched-period", "sched-deadline"), "10"),
    "taskset": ("", ("cpu-list",), "0x3"),
    "setsid": ("", (), ""),
    "flock": ("wE", ("timeout", "wait", "conflict-exit-code"), "/tmp/lock"),
    "unbuffer": ("", (), ""),
    "numactl": ("CNmpiP", ("physcpubind", "cpunodebind", "membind", "preferred", "interleave", "preferred-many"),
                ""),
    "prlimit": ("p", ("pid",), ""),
    "cgexec": ("g", (), ""),
    "systemd-run": ("pEMuH", ("unit", "property", "slice", "uid", "gid", "nice", "working-directory", "setenv",
                              "description", "machine", "host", "on-calendar"), ""),
    "watch": ("n", ("interval",), ""),
    "caffeinate": ("tw", (), ""),
    "faketime": ("", (), "@2000-01-01"),
    "cpulimit": ("lpe", ("limit", "pid", "exe"), ""),
    "eatmydata": ("", (), ""),
    "chronic": ("", (), ""),
    "catchsegv": ("", (), ""),
    "strace": ("oepsuEabIOSX", ("output",), ""),
    "unshare": ("SGRw", ("setuid", "setgid", "root", "wd"), ""),
    "script": ("", (), ""),
    "nix-shell": ("pAI", ("packages", "attr"), ""),
    "sh": ("o", ("rcfile", "init-file"), ""), "bash": ("o", ("rcfile", "init-file"), ""),
    "dash": ("o", ("rcfile", "init-file"), ""), "zsh": ("o", ("rcfile", "init-file"), ""),
    "ksh": ("o", ("rcfile", "init-file"), ""),
}
PRIVILEGED = {"sudo", "doas", "runuser", "su", "chroot"}


def _wrapped(name: str, options: str) -> str:
    lead, positional = ("run stable", "") if name == "rustup" else ("", WRAPPER_MANUALS[name][2])
    return " ".join(filter(None, [name, lead, options, positional, "cargo build -p a"]))


WRAPPED = [_wrapped(name, "") for name in WRAPPER_MANUALS] + ["rustup run stable cargo build -p a"]
WRAPPED += [_wrapped(name, f"-{letter} V") for name, (letters, _, _) in WRAPPER_MANUALS.items() for letter in letters]
WRAPPED += [_wrapped(name, f"--{option} V") for name, (_, options, _) in WRAPPER_MANUALS.items()
            for option in options]
WRAPPED += [_wrapped(name, f"--{option}=V") for name, (_, options, _) in WRAPPER_MANUALS.items()
            for option in options[:1]]


@pytest.mark.parametrize("line", WRAPPED)
def test_every_wrapper_and_every_option_that_takes_a_value(line: str) -> None:
    """`sudo -u V cargo build`: V is the option's value, not the command; cargo is found, under the
    wrapper, and --fix may rewrite it unless the wrapper runs it as another user."""
    name = line.split()[0]
    [found] = list(lint.invocations(line))
    assert (found.program, found.args, line[found.word.start:]) == ("cargo", ["build", "-p", "a"], "cargo build -p a")
    assert found.fixable == (name not in PRIVILEGED) and not found.nested


@pytest.mark.parametrize("line", [
    "sudo -Eu bob cargo build", "nice -n10 cargo build", "sudo -- cargo build", "timeout -- 60 cargo build",
    "env A=1 B=2 cargo build", "xargs -n1 -- cargo build", "env -i -- cargo build", "/usr/bin/env cargo build",
    "env - cargo build", "env - PATH=/bin cargo build", "sudo - cargo build",
])
def test_wrapper_option_clusters_attached_values_and_double_dash(line: str) -> None:
    assert [(i.args, line[i.word.start:]) for i in lint.invocations(line)] == [(["build"], "cargo build")]


@pytest.mark.parametrize("line", [
    "sudo -u", "nice -n", "sudo --user", "bash -c", "nix-shell --run", "env -u X", "rustup run", "rustup",
    "rustup show cargo build", "rustup cargo build", "command -v cargo build", "command -V cargo build",
    "timeout 60", "sudo -u bob", "flock /tmp/l -c",
])
def test_a_wrapper_with_nothing_to_run_runs_nothing(line: str) -> None:
    assert list(lint.invocations(line)) == []


@pytest.mark.parametrize(("line", "program"), [
    ("sh -c 'cargo build -p a'", "sh"), ("dash -c 'cargo build -p a'", "dash"), ("zsh -c 'cargo build -p a'", "zsh"),
    ("ksh -c 'cargo build -p a'", "ksh"), ("bash -ec 'cargo build -p a'", "bash"), ("su - -c 'cargo build -p a'", "su"),
    ("bash -o pipefail -c 'cargo build -p a'", "bash"), ("bash --rcfile x -c 'cargo build -p a'", "bash"),
    ("bash --init-file x -c 'cargo build -p a'", "bash"),
    ("su -c 'cargo build -p a' bob", "su"), ("su --command 'cargo build -p a' bob", "su"),
    ("su --command='cargo build -p a' bob", "su"), ("runuser -u bob -c 'cargo build -p a'", "runuser"),
    ("runuser --command 'cargo build -p a' bob", "runuser"), ("flock /tmp/l -c 'cargo build -p a'", "flock"),
    ("flock --command 'cargo build -p a' /tmp/l", "flock"), ("env -S 'cargo build -p a'", "env"),
    ("env --split-string 'cargo build -p a'", "env"), ("env --split-string='cargo build -p a'", "env"),
    ("script -c 'cargo build -p a' log", "script"), ("nix-shell --run 'cargo build -p a'", "nix-shell"),
    ("nix-shell --command 'cargo build -p a'", "nix-shell"),
])
def test_every_option_whose_value_is_a_command_line(line: str, program: str) -> None:
    [found] = list(lint.invocations(line))
    assert (found.program, found.args, found.nested, found.fixable) == ("cargo", ["build", "-p", "a"], True, False)


def test_a_command_string_reports_the_column_of_the_string(tmp_path: Path) -> None:
    assert findings_of(tmp_path, "s.sh", "echo; sh -c 'cargo build -p a'\n") == [(1, 13, "CA001")]
    assert findings_of(tmp_path, "t.sh", "su --command='cargo build -p a' x\n") == [(1, 4, "CA001")]


@pytest.mark.timeout(60)
def test_command_strings_nest_eight_deep_and_no_deeper() -> None:
    def tower(depth: int) -> str:
        line = "cargo build"
        for _ in range(depth):
            line = "sh -c " + shlex.quote(line)
        return line

    assert [i.args for i in lint.invocations(tower(8))] == [["build"]]
    assert list(lint.invocations(tower(9))) == []


@pytest.mark.parametrize("word", ["if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}",
                                  "esac", "coproc"])
def test_every_reserved_word_puts_the_next_word_in_command_position(word: str) -> None:
    assert [i.args for i in lint.invocations(f"{word} cargo build")] == [["build"]]


@pytest.mark.parametrize("word", ["for", "select", "case", "in", "[[", "]]", "';;'"])
def test_clauses_that_are_not_commands_run_nothing(word: str) -> None:
    assert list(lint.invocations(f"{word} cargo build")) == []


def test_a_function_keyword_and_its_name_are_not_the_command() -> None:
    assert [i.args for i in lint.invocations("function f { cargo build; }")] == [["build"]]
    assert [i.args for i in lint.invocations("function f cargo build")] == [["build"]]
    # the body is a compound command, read like any other
    assert [i.args for i in lint.invocations("function f if cargo build; then :; fi")] == [["build"]]
    assert list(lint.invocations("function f [[ cargo build ]]")) == []


@pytest.mark.parametrize(("word", "program"), [
    ("cargo", "cargo"), ("cargo-agent", "cargo-agent"), ("./bin/cargo-agent", "cargo-agent"), ("$CARGO", "cargo"),
    ("${CARGO}", "cargo"), ("${CARGO:-cargo}", "cargo"), ("${CARGO-cargo}", "cargo"), ("${CARGO:=cargo}", "cargo"),
    ("${CARGO+x}", "cargo"), ("${CARGO?unset}", "cargo"), ("$CARGO_HOME", None), ("${CARGO_HOME}", None),
    ("${CARGO#x}", None), ("cargos", None), ("xcargo", None), ("$(CARGO)", None),
])
def test_which_words_are_cargo(word: str, program: str | None) -> None:
    assert [i.program for i in lint.invocations(f"{word} build")] == ([program] if program else [])


def test_cargo_as_a_make_variable(tmp_path: Path) -> None:
    assert findings_of(tmp_path, "Makefile", "b:\n\t$(CARGO) build\n\t${CARGO} check\n") == [(2, 2, "CA001"),
                                                                                          (3, 2, "CA001")]


@pytest.mark.parametrize(("text", "literal"), [
    ("cargo", True), ("\\cargo", False), ("'cargo'", False), ('"cargo"', False), ("car'go'", False),
    ("$CARGO", False),
])
def test_only_a_plainly_written_word_is_literal(text: str, literal: bool) -> None:
    [[word, _]] = lint.simple_commands(text + " build")
    assert (word.text, word.literal) == ("cargo" if not text.startswith("$") else "$CARGO", literal)


def words_of(text: str, make: bool = False) -> list[list[tuple[str, int, bool]]]:
    return [[(w.text, w.start, w.literal) for w in command] for command in lint.simple_commands(text, make)]


@pytest.mark.parametrize(("text", "commands"), [
    # inside double quotes, a backslash escapes only " \ $ ` and a newline
    ('a "b\\"c\\$d\\`e\\\\f\\xg" h', [[("a", 0, True), ('b"c$d`e\\f\\xg', 2, False), ("h", 21, True)]]),
    ('"a\\\nb" c', [[("a\nb", 0, False), ("c", 7, True)]]),
    ("a\\ b c", [[("a b", 0, False), ("c", 5, True)]]),
    ("a 'b c' 'unclosed d", [[("a", 0, True), ("b c", 2, False), ("unclosed d", 8, False)]]),
    ('a "unclosed b', [[("a", 0, True), ("unclosed b", 2, False)]]),
    # expansions are kept as written and end no word
    ("x$((1 + (2))) y", [[("x$((1 + (2)))", 0, False), ("y", 14, True)]]),
    ("a ${b:-$(c)} d", [[("a", 0, True), ("${b:-$(c)}", 2, False), ("d", 13, True)]]),
    ("a ${b", [[("a", 0, True), ("${b", 2, False)]]),
    ("echo $ x$", [[("echo", 0, True), ("$", 5, False), ("x$", 7, False)]]),
    ('"$x" "$(a b)"', [[("a", 8, True), ("b", 10, True)], [("$x", 0, False), ("$(...)", 5, False)]]),
    ('"`a b`"', [[("a", 2, True), ("b", 4, True)], [("`...`", 0, False)]]),
    # a backslash-newline joins, a comment starts only a word, operators split commands
    ("a \\\nb", [[("a", 0, True), ("b", 2, True)]]),  # the word starts at the joining backslash
    ("a `b c` d", [[("b", 3, True), ("c", 5, True)], [("a", 0, True), ("`...`", 2, False), ("d", 8, True)]]),
    ("# a\nb # c\n#\nd", [[("b", 4, True)], [("d", 12, True)]]),
    ("a#b c # d\nx", [[("a#b", 0, True), ("c", 4, True)], [("x", 10, True)]]),
    ("x | y || z; w & v;;u", [[("x", 0, True)], [("y", 4, True)], [("z", 9, True)], [("w", 12, True)],
                             [("v", 16, True)], [("u", 19, True)]]),
    ("(a) b", [[("a", 1, True)], [("b", 4, True)]]),
    # redirections drop their target, and only it; `>&-` closes a descriptor: no target follows
    ("a >>log 2>&- b <&0 c &>>f d", [[("a", 0, True), ("b", 13, True), ("c", 19, True), ("d", 26, True)]]),
    ("a >&2 b 2>/dev/null c <<<x d", [[("a", 0, True), ("b", 6, True), ("c", 20, True), ("d", 27, True)]]),
    ("a12>x b", [[("a12", 0, True), ("b", 6, True)]]),
    ("12>x b", [[("b", 5, True)]]),
    ("a >(tee x) b", [[("tee", 4, True), ("x", 8, True)], [("a", 0, True), ("<(...)", 2, False), ("b", 11, True)]]),
    ("a=(x y", [[("a=(x y", 0, True)]]),
])
@pytest.mark.timeout(60)  # a scanner that stops advancing loops
def test_the_scanners_words(text: str, commands: list[list[tuple[str, int, bool]]]) -> None:
    assert words_of(text) == commands


@pytest.mark.timeout(60)
def test_the_scanner_in_a_makefile_recipe() -> None:
    assert words_of("a $$x $(VAR) ${V} $$(cmd) $$((1+2))", make=True) == [
        [("cmd", 21, True)],
        [("a", 0, True), ("$x", 2, False), ("$(VAR)", 6, False), ("${V}", 13, False), ("$(...)", 18, False),
         ("$((1+2))", 26, False)]]
    assert words_of("a $(VAR x", make=True) == [[("a", 0, True), ("$(VAR x", 2, False)]]
    assert words_of("a $(VAR x") == [[("VAR", 4, True), ("x", 8, True)], [("a", 0, True), ("$(...)", 2, False)]]


@pytest.mark.timeout(60)
def test_nesting_deeper_than_64_is_read_as_text() -> None:
    def nested(depth: int) -> list[list[str]]:
        return [[w.text for w in c] for c in lint.simple_commands("echo " + "$(" * depth + "cargo build" + ")" * depth)]

    assert nested(63)[0] == ["cargo", "build"]
    assert ["cargo", "build"] not in nested(64)


def test_a_doc_in_a_member_is_judged_from_the_workspace_root(virtual_ws: Path) -> None:
    manifest = virtual_ws / "Cargo.toml"
    manifest.write_text(manifest.read_text() + "\n[workspace.metadata.cargo-agent]\nallow-all-targets = true\n")
    doc = virtual_ws / "crates" / "alpha" / "README.md"
    doc.write_text(f"{FENCE}sh\n"
                   "cargo-agent test\n"  # 2: run from the root: every member
                   "cargo-agent -C crates/alpha test\n"  # 3: -C is relative to the root: alpha only
                   "cargo-agent test --manifest-path ../beta/Cargo.toml\n"  # 4: relative to the file's directory
                   "cargo-agent build --all-targets\n"  # 5: the repo's metadata turns the rule off
                   "cargo-agent test --manifest-path Cargo.toml\n"  # 6: the root's: every member
                   "cargo-agent -C crates test\n"  # 7: above every member: the whole workspace
                   "cargo-agent test --manifest-path nowhere/Cargo.toml\n"  # 8: names a package: scoped
                   f"{FENCE}\n")
    assert [(f.line, f.code) for f in lint.lint_file(doc)] == [(2, "CA002"), (6, "CA002"), (7, "CA002")]


def test_an_unreadable_workspace_or_cargo_config_is_judged_without_them(virtual_ws: Path) -> None:
    write_tree(virtual_ws, {".cargo/config.toml": '[alias]\ntt = "test -p alpha"\n'})
    doc = virtual_ws / "README.md"
    doc.write_text(f"{FENCE}sh\ncargo-agent tt\ncargo-agent test\n{FENCE}\n")
    assert [(f.line, f.code) for f in lint.lint_file(doc)] == [(3, "CA002")]
    (virtual_ws / ".cargo" / "config.toml").write_text("[alias\n")  # broken: no aliases known
    assert [(f.line, f.code) for f in lint.lint_file(doc)] == [(3, "CA002")]
    manifest = virtual_ws / "Cargo.toml"
    manifest.write_text(manifest.read_text() + "\n[workspace.metadata.cargo-agent]\nmax-packages = 'x'\n")
    assert [(f.line, f.code) for f in lint.lint_file(doc)] == [(3, "CA002")]  # bad metadata: the defaults
    manifest.write_text("[workspace\n")  # no workspace to read: a test run without -p is unscoped
    assert [(f.line, f.code) for f in lint.lint_file(doc)] == [(3, "CA002")]


def test_the_workspace_is_read_once_per_file_and_only_when_needed(virtual_ws: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from cargo_agent import cargoconfig

    loads: list[Path] = []
    real = cargoconfig.load
    monkeypatch.setattr(cargoconfig, "load", lambda root, *a, **k: loads.append(root) or real(root, *a, **k))
    doc = virtual_ws / "README.md"
    doc.write_text("no cargo command: `ls`, cargo build\n")
    assert lint.lint_file(doc) == [] and loads == []
    doc.write_text(f"{FENCE}sh\ncargo-agent test\ncargo-agent test -p alpha\ncargo-agent b\n{FENCE}\n")
    assert [f.code for f in lint.lint_file(doc)] == ["CA002"]
    assert loads == [virtual_ws]


def test_cargo_agent_spelled_as_a_cargo_subcommand(tmp_path: Path) -> None:
    text = ("cargo agent build --all-targets\ncargo +nightly agent build\ncargo +nightly agent test\n"
            "cargo +nightly build\ncargo agent\n")
    assert findings_of(tmp_path, "s.sh", text) == [(1, 1, "CA003"), (3, 1, "CA002"), (4, 1, "CA001")]


def test_a_command_line_cargo_would_refuse_is_not_judged(tmp_path: Path) -> None:
    assert findings_of(tmp_path, "s.sh", "cargo -C\ncargo --config\ncargo + build\ncargo-agent -C\ncargo build\n") == [
        (5, 1, "CA001")]


def test_continuations_join_every_line_and_a_trailing_backslash_ends_the_text() -> None:
    assert [(c.line, c.offset, c.text) for c in lint.shell_commands("a \\\nb \\\n\\\nc\nd \\")] == [
        (1, 0, "a  b   c"), (5, 0, "d ")]
    assert [(c.line, c.offset, c.text) for c in lint.markdown_commands(f"{FENCE}sh\n  cargo \\\n    -p a\n{FENCE}\n")
            ] == [(2, 0, "  cargo  -p a")]


def test_a_yaml_block_ends_at_the_first_line_indented_less(tmp_path: Path) -> None:
    text = "jobs:\n  a:\n    run: |\n      cargo build\n    \n      cargo check\n  b: x\n    cargo doc\n"
    assert findings_of(tmp_path, "ci.yml", text) == [(4, 7, "CA001"), (6, 7, "CA001")]
    assert findings_of(tmp_path, "ci.yaml", "run: |\n") == []
    assert findings_of(tmp_path, "c.yml", "- run: |-\n\n  cargo build\n") == [(3, 3, "CA001")]


def test_fix_leaves_a_cargo_on_a_continuation_line_alone(tmp_path: Path) -> None:
    """The finding of a continued command is on its first line, where that cargo is not: --fix must
    not write cargo-agent at the finding's column there."""
    path = tmp_path / "s.sh"
    original = "echo hi && \\\n  cargo build -p a\nRUN=1 \\\n cargo check -p a\n"
    path.write_text(original)
    assert [(f.line, f.col, f.fixable) for f in lint.lint_file(path)] == [(1, 13, True), (3, 8, True)]
    assert lint.main(["--fix", str(path)]) == 1
    assert path.read_text() == original


@pytest.mark.timeout(60)  # opening a FIFO blocks until a writer comes: a regression hangs
def test_a_directory_walk_never_opens_a_fifo_or_a_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    os.mkfifo(tmp_path / "run")  # no suffix: the kind would be read from its first line
    os.mkfifo(tmp_path / "x.md")
    (tmp_path / "null.sh").symlink_to("/dev/null")
    (tmp_path / "y.md").write_text("`cargo build`\n")
    (tmp_path / "z.md").symlink_to(tmp_path / "y.md")
    assert lint.main([str(tmp_path)]) == 1
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == [f"{tmp_path}/y.md",
                                                                                     f"{tmp_path}/z.md"]


@pytest.mark.timeout(60)
def test_the_depth_limit_counts_nesting_not_substitutions_side_by_side() -> None:
    line = "echo " + "$(true) " * 70 + "$(cargo build)"
    assert [i.args for i in lint.invocations(line)] == [["build"]]
