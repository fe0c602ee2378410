"""Where cargo starts and what a command selects: unit cases, then a property test that
compares the gate's selection with the packages real cargo compiles tests for."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import RunAgent, crate, nest, write_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cargo_agent import argv, build, policy, workspace


@pytest.mark.parametrize(("spec", "name"), [
    ("alpha", "alpha"), ("alpha@0.1.0", "alpha"), ("alpha:0.1.0", "alpha"), ("my-crate@1", "my-crate"),
    ("path+file:///x/crates/alpha#0.1.0", "alpha"), ("path+file:///x/crates/dir#alpha@0.1.0", "alpha"),
    ("https://github.com/rust-lang/crates.io-index#regex@1.4.3", "regex"),
    ("registry+https://github.com/rust-lang/crates.io-index#serde", "serde"),
])
def test_spec_name(spec: str, name: str) -> None:
    assert workspace.spec_name(spec) == name


@pytest.mark.parametrize(("spec", "glob"), [("a*", True), ("a?", True), ("[ab]", True), ("a]", True),
                                            ("alpha", False), ("alpha@1", False)])
def test_glob_is_what_cargo_calls_a_glob(spec: str, glob: bool) -> None:
    assert workspace.is_glob(spec) is glob


def test_match_packages_globs_members_and_names_anything(virtual_ws: Path) -> None:
    location = workspace.locate(virtual_ws, None)
    assert location is not None
    ws = location.workspace
    assert workspace.match_packages(ws, ["*"]) == ["alpha", "beta", "gamma"]
    assert workspace.match_packages(ws, ["[!a]*", "beta"]) == ["beta", "gamma"]
    assert workspace.match_packages(ws, ["alpha", "alpha@0.1.0", "alph?"]) == ["alpha"]
    assert workspace.match_packages(ws, ["serde"]) == ["serde"]  # a dependency: one package all the same
    assert workspace.match_packages(ws, ["z*"]) == []


def test_default_members_apply_at_the_root_only(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "ws", {
        "Cargo.toml": '[workspace]\nmembers = ["c/*"]\ndefault-members = ["c/b", "c/c"]\n',
        **nest("c/a", crate("a")), **nest("c/b", crate("b")), **nest("c/c", crate("c"))})

    def chosen(cwd: Path, manifest: str | None = None) -> list[str]:
        location = workspace.locate(cwd, manifest)
        assert location is not None
        return workspace.selection(location, [], False, []).packages

    assert chosen(root) == ["b", "c"]
    assert chosen(root / "c") == ["b", "c"]  # no Cargo.toml in c/: the root's
    assert chosen(root / "c" / "a") == ["a"]
    assert chosen(root, "Cargo.toml") == ["b", "c"]
    assert chosen(root, "c/a/Cargo.toml") == ["a"]


def test_excluded_and_path_dependency_members(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "ws", {
        "Cargo.toml": '[workspace]\nmembers = ["c/*"]\nexclude = ["c/out"]\n',
        **nest("c/a", crate("a", 'inner = { path = "../../inner" }')), **nest("c/out", crate("out")),
        **nest("inner", crate("inner"))})
    location = workspace.locate(root, None)
    assert location is not None
    assert sorted(location.workspace.member_names) == ["a", "inner"]
    outside = workspace.locate(root / "c" / "out", None)
    assert outside is not None and outside.workspace.member_names == ["out"]


# ---- the property: the gate's selection is what cargo compiles --------------------------------

# A generated workspace: names share prefixes so globs bite; one member only through a path
# dependency, one excluded, default-members set; and a second workspace whose root is a package.
VIRTUAL = {
    "Cargo.toml": '[workspace]\nresolver = "2"\nmembers = ["crates/*", "tools/cli"]\nexclude = ["crates/skip"]\n'
                  'default-members = ["crates/app", "tools/cli"]\n',
    **nest("crates/app", crate("app", 'core = { path = "../core" }')),
    **nest("crates/app-extra", crate("app-extra")),
    **nest("crates/core", crate("core", 'util = { path = "../../util" }')),
    **nest("crates/core-io", crate("core-io")),
    **nest("util", crate("util")),
    **nest("tools/cli", crate("cli")),
    **nest("crates/skip", {**crate("skip"), "Cargo.toml": crate("skip")["Cargo.toml"] + "[workspace]\n"}),
}
ROOTED = {
    **crate("top", 'sub-a = { path = "sub/a" }'),
    **nest("sub/a", crate("sub-a")), **nest("sub/b", crate("sub-b")),
}
ROOTED["Cargo.toml"] += '\n[workspace]\nmembers = ["sub/*"]\n'
LAYOUTS = {
    "virtual": (VIRTUAL, ["app", "app-extra", "core", "core-io", "util", "cli"],
                [".", "crates", "crates/app", "crates/core-io", "tools/cli"],
                ["Cargo.toml", "crates/core/Cargo.toml", "util/Cargo.toml"]),
    "rooted": (ROOTED, ["top", "sub-a", "sub-b"], [".", "sub", "sub/b", "src"], ["Cargo.toml", "sub/a/Cargo.toml"]),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("generated")
    return {name: write_tree(base / name, files) for name, (files, _, _, _) in LAYOUTS.items()}


def _cargo_env(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CARGO_AGENT_", "CARGO_BUILD_", "CARGO_TARGET_", "CARGO_ALIAS_"))}
    env["CARGO_TARGET_DIR"] = str(base / "target")  # shared: after the first run, nothing recompiles
    env["CARGO_AGENT_CONFIG"] = str(base / "no-host-config.toml")
    env["XDG_CONFIG_HOME"] = str(base / "xdg")
    return env


def _compiled_tests(root: Path, cwd: Path, args: list[str], env: dict[str, str]) -> set[str] | None:
    """Packages cargo builds test targets of, for `cargo test --no-run <args>`; None if cargo refuses."""
    result = subprocess.run(["cargo", "test", "--no-run", "--message-format=json", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        return None
    names = set()
    for line in result.stdout.splitlines():
        message = json.loads(line) if line.startswith("{") else {}
        if message.get("reason") == "compiler-artifact" and message["profile"]["test"]:
            manifest = message["manifest_path"]
            names.add(_name_of(manifest))
    return names


def _name_of(manifest: str) -> str:
    for line in Path(manifest).read_text().splitlines():
        if line.startswith("name = "):
            return line.split('"')[1]
    raise AssertionError(manifest)


def _specs(names: list[str]) -> st.SearchStrategy[str]:
    globs = ["*", "app*", "core*", "*-*", "[ac]*", "c?i", "sub-*", "t*", "*o*"]
    usable = [g for g in globs if any(__import__("fnmatch").fnmatchcase(n, g) for n in names)]
    return st.one_of(st.sampled_from(names), st.sampled_from(usable),
                     st.sampled_from(names).map(lambda n: n + "@0.1.0"))


@st.composite
def selections(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    _, names, dirs, manifests = LAYOUTS[layout]
    cwd = draw(st.sampled_from(dirs))
    args: list[str] = []
    spelling = st.sampled_from(["-p {}", "-p{}", "--package {}", "--package={}"])
    for spec in draw(st.lists(_specs(names), max_size=3, unique=True)):
        args += draw(spelling).format(spec).split(" ", 1)
    if draw(st.booleans()):
        args.append(draw(st.sampled_from(["--workspace", "--all"])))
        for spec in draw(st.lists(_specs(names), max_size=2, unique=True)):
            args += ["--exclude", spec]
    if draw(st.integers(0, 3)) == 0:
        args += ["--manifest-path", draw(st.sampled_from(manifests))]
    return layout, cwd, args


@given(selections())
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_gate_counts_what_cargo_compiles(generated: dict[str, Path], selection: tuple[str, str, list[str]]) -> None:
    layout, subdir, args = selection
    root = generated[layout]
    cwd = (root / subdir).resolve()
    if args.count("--manifest-path"):
        at = args.index("--manifest-path") + 1
        args = [*args[:at], str(root / args[at]), *args[at + 1:]]
    env = _cargo_env(root.parent)
    cargo = _compiled_tests(root, cwd, args, env)
    decided = build.decide(argv.parse(["test", "--no-run", *args]), cwd, env)
    chosen = policy.selected(decided.command, decided.location)
    assert chosen is not None and not chosen.open
    if cargo is None:  # cargo refused (everything excluded; a glob twice, in two spellings): it builds nothing
        return
    assert set(chosen.packages) == cargo, (args, chosen.how)
    assert len(chosen.packages) == len(cargo)
    refused = not decided.decision.allowed
    assert refused == (len(cargo) > 1), decided.decision.reason
    if refused:
        assert str(len(cargo)) in decided.decision.reason
        assert all(name in decided.decision.reason for name in sorted(cargo)[:8])


# ---- which member the caller works on, for a refusal's `help: run instead:` (real git, real CLI) ----

def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@example.invalid", "HOME": str(root), "PATH": "/usr/bin:/bin"})


def _committed(root: Path) -> Path:
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "start")
    return root


def _fix(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    return next(line for line in result.stderr.splitlines() if line.startswith("help: run instead: "))


def test_the_hint_names_the_member_containing_the_working_directory(virtual_ws: Path, run_agent: RunAgent) -> None:
    assert _fix(run_agent("test", "--workspace", cwd=virtual_ws / "crates" / "gamma" / "src")) == \
        "help: run instead: cargo-agent test -p gamma"


def test_the_hint_names_the_members_with_uncommitted_changes(virtual_ws: Path, run_agent: RunAgent) -> None:
    root = _committed(virtual_ws)
    (root / "crates" / "gamma" / "src" / "lib.rs").write_text("pub fn changed() {}\n")
    (root / "crates" / "beta" / "src" / "new.rs").write_text("// untracked\n")
    result = run_agent("test", cwd=root)
    assert _fix(result) == "help: run instead: cargo-agent test -p beta"  # one package per run (max_packages)
    assert "help: you also changed gamma: test each the same way, with its own -p" in result.stderr
    wider = run_agent("test", cwd=root, extra_env={"CARGO_AGENT_MAX_PACKAGES": "2"})
    assert _fix(wider) == "help: run instead: cargo-agent test -p beta -p gamma"


def test_the_hint_follows_a_staged_rename(virtual_ws: Path, run_agent: RunAgent) -> None:
    root = _committed(virtual_ws)
    _git(root, "mv", "crates/beta/src/lib.rs", "crates/beta/src/renamed.rs")
    assert _fix(run_agent("test", cwd=root)) == "help: run instead: cargo-agent test -p beta"


def test_without_a_clue_the_hint_is_a_placeholder_and_the_list(virtual_ws: Path, run_agent: RunAgent) -> None:
    result = run_agent("test", cwd=_committed(virtual_ws))
    assert _fix(result) == "help: run instead: cargo-agent test -p <package>"
    assert "note: workspace members: alpha, beta, gamma" in result.stderr


def test_outside_git_without_a_member_directory_the_hint_is_a_placeholder(virtual_ws: Path,
                                                                          run_agent: RunAgent) -> None:
    assert _fix(run_agent("test", cwd=virtual_ws)) == "help: run instead: cargo-agent test -p <package>"


def test_member_for_dir_picks_the_innermost_member(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "nested", {
        "Cargo.toml": '[workspace]\nmembers = ["outer", "outer/inner"]\n',
        **nest("outer", crate("outer")), **nest("outer/inner", crate("inner"))})
    location = workspace.locate(root, None)
    assert location is not None
    found = workspace.member_for_dir(location.workspace, str(root / "outer" / "inner" / "src"))
    assert found is not None and found.name == "inner"
    found = workspace.member_for_dir(location.workspace, str(root / "outer" / "src"))
    assert found is not None and found.name == "outer"
    assert workspace.member_for_dir(location.workspace, str(root)) is None
