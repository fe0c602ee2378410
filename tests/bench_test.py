"""The bench's plumbing: where results go (a bench run leaves `git status` clean unless asked to
--save), section selection, the real-crate fixture and the storm harness's process sampling.
Nothing here times anything or runs a full bench."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import alive, wait_for

from bench import __main__ as bench
from bench import realcrates, storm

REPO = Path(__file__).resolve().parent.parent


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_default_output_is_ignored_by_git() -> None:
    for argv in ([], ["--quick"], ["--only", "storm", "--quick"]):
        out = bench.output_path(bench.parse_args(argv))
        assert out == bench.UNSAVED
        assert git(REPO, "check-ignore", "-q", str(out)).returncode == 0, f"{out} is not ignored"


def test_only_save_writes_the_tracked_results() -> None:
    out = bench.output_path(bench.parse_args(["--save"]))
    assert out == bench.SAVED
    assert git(REPO, "ls-files", "--error-unmatch", str(out)).returncode == 0


def test_out_names_any_path(tmp_path: Path) -> None:
    assert bench.output_path(bench.parse_args(["--out", str(tmp_path / "r.json")])) == tmp_path / "r.json"


@pytest.mark.parametrize("argv", [["--save", "--out", "x.json"], ["--only", "nope"], ["--only", "storm,nope"]])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert ("nope" in error and "storm" in error) if "nope" in argv[-1] else "--save" in error


def test_only_selects_sections_in_table_order_with_the_machine() -> None:
    assert bench.selected(bench.parse_args(["--only", "storm"])) == ["machine", "storm"]
    assert bench.selected(bench.parse_args(["--only", "makespan,handoff"])) == ["machine", "handoff", "makespan"]
    assert bench.selected(bench.parse_args(["--only", "handoff", "--only", "storm"])) == ["machine", "handoff",
                                                                                          "storm"]
    assert bench.selected(bench.parse_args([])) == list(bench.SECTIONS)


def test_save_with_only_keeps_the_other_saved_sections() -> None:
    previous = {"mode": "full", "modes": {"handoff": "full", "storm": "full"}, "handoff": {"old": 1},
                "storm": {"old": 2}}
    new = {"mode": "quick", "modes": {"storm": "quick"}, "machine": {"cores": 2}, "storm": {"new": 3}}
    combined = bench.merged(previous, new, ["machine", "storm"])
    assert combined["handoff"] == {"old": 1}
    assert combined["storm"] == {"new": 3}
    assert combined["machine"] == {"cores": 2}
    assert combined["modes"] == {"handoff": "full", "storm": "quick"}


def _checkout_copy(dest: Path) -> Path:
    """This checkout's files as git sees them (tracked and untracked-not-ignored), committed in a
    fresh repository, so `git status` there starts clean whatever state this worktree is in."""
    listed = git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "copy"]):
        assert git(dest, *args).returncode == 0
    assert git(dest, "status", "--porcelain").stdout == ""
    return dest


def test_a_bench_run_leaves_git_status_clean_and_save_updates_only_its_sections(tmp_path: Path) -> None:
    copy = _checkout_copy(tmp_path / "repo")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "machine"], cwd=copy, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "not tracked; --save to keep them" in run.stdout
    assert git(copy, "status", "--porcelain", "--untracked-files=all").stdout == ""
    written = json.loads((copy / "bench" / "out" / "results.json").read_text())
    assert written["machine"]["cores"] == os.cpu_count()

    saved_before = json.loads((copy / "bench" / "results.json").read_text())
    # A machine section that --save must replace (the tracked one may already equal this machine's).
    stale = {**saved_before, "machine": {"stale": True}}
    (copy / "bench" / "results.json").write_text(json.dumps(stale, indent=2) + "\n")
    assert git(copy, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "stale").returncode == 0
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "machine", "--save"], cwd=copy,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert git(copy, "status", "--porcelain").stdout.split() == ["M", "bench/results.json"]
    saved = json.loads((copy / "bench" / "results.json").read_text())
    assert saved["passthrough"] == saved_before["passthrough"]
    assert "cargo" in saved["machine"]


def test_realcrates_workspace_resolves_offline(tmp_path: Path) -> None:
    info = realcrates.prepare(tmp_path / "ws", members=2, bins=1, weight=1)
    versions = info["versions"]
    assert isinstance(versions, dict)
    for crate in ("regex", "serde", "serde_derive", "syn", "libc", "typenum", "anyhow"):
        assert crate in versions, f"{crate} missing from the lock file: {sorted(versions)}"
    assert (tmp_path / "ws" / "agent0" / "src" / "main.rs").exists()
    assert not (tmp_path / "ws" / "agent1" / "src" / "main.rs").exists()
    metadata = subprocess.run(["cargo", "metadata", "--offline", "--format-version", "1", "--no-deps"],
                              cwd=tmp_path / "ws", capture_output=True, text=True, check=True)
    assert sorted(p["name"] for p in json.loads(metadata.stdout)["packages"]) == ["agent0", "agent1"]


def test_realcrates_unresolvable_registry_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    realcrates.generate(root, members=1, lock=False)
    empty = tmp_path / "empty-registry"
    empty.mkdir()
    config = root / ".cargo" / "config.toml"
    config.write_text(config.read_text().replace(str(realcrates.REGISTRY), str(empty)))
    with pytest.raises(realcrates.Unavailable) as info:
        realcrates.lock_workspace(root)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("cargo generate-lockfile --offline failed")


def test_storm_counts_build_scripts_across_concurrent_builds(tmp_path: Path) -> None:
    """Two fake builds, each running two concurrent `build-script-build` processes (a renamed
    sleep: the comm a real build script has), in separate copies and target dirs."""
    tools = tmp_path / "tools"
    tools.mkdir()
    script = tools / "build-script-build"
    shutil.copy2(shutil.which("sleep") or "/bin/sleep", script)
    fake = tools / "fake-cargo"
    fake.write_text(f'#!/bin/sh\necho "$CARGO_TARGET_DIR $*" > seen\n{script} 1 & {script} 1 & wait\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    template = tmp_path / "template"
    template.mkdir()
    (template / "Cargo.toml").write_text("[workspace]\n")
    (template / "target").mkdir()  # never copied
    work = tmp_path / "work"
    work.mkdir()

    result = storm.storm(template, work, 2, [str(fake)], dict(os.environ), ["build", "--x"], keep=True)

    assert result["exit_codes"] == [0, 0]
    assert result["peak_build_scripts"] == 4
    assert result["peak_rustc"] == 0
    assert result["peak_jobs"] == 4
    assert result["peak_tree_rss_bytes"] > 0
    assert result["peak_host_used_bytes"] >= result["baseline_host_used_bytes"]
    assert result["makespan_seconds"] >= max(result["wall_seconds"])
    for i in range(2):
        copy = work / f"storm-{i}"
        assert (copy / "seen").read_text() == f"{copy / 'target'} build --x\n"
        assert not (copy / "target").exists()


def test_storm_reports_a_failed_build(tmp_path: Path) -> None:
    template = tmp_path / "template"
    template.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    result = storm.lone_build(template, work, ["sh", "-c", 'echo "error: it broke"; exit 3', "sh"], dict(os.environ))
    assert result["exit_codes"] == [3]
    assert result["first_failure"] == "error: it broke"
    assert isinstance(result["wall_seconds"], float)
    assert not (work / "lone-0").exists()


def test_tree_and_job_kinds() -> None:
    table = {1: ("init", "S", 0), 10: ("cargo", "S", 1), 11: ("rustc", "R", 10), 12: ("build-script-bu", "S", 10),
             13: ("cc", "S", 11), 20: ("rustc", "R", 1)}
    assert storm.tree([10, 99], table) == {10, 11, 12, 13}
    assert [storm.job_kind(table[p][0]) for p in (10, 11, 12)] == [None, "rustc", "build-script"]


def test_interrupted_storm_leaves_no_build_behind(tmp_path: Path, reap: list[int]) -> None:
    template = tmp_path / "template"
    template.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    driver = (f"from pathlib import Path; import os; from bench import storm\n"
              f"storm.storm(Path({str(template)!r}), Path({str(work)!r}), 2, "
              f"['sh', '-c', 'echo $$ > pid; exec sleep 600', 'sh'], dict(os.environ))\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stderr=subprocess.PIPE, text=True)
    reap.append(proc.pid)
    pidfiles = [work / f"storm-{i}" / "pid" for i in range(2)]
    wait_for(lambda: all(p.exists() and p.read_text().strip() for p in pidfiles))
    builds = [int(p.read_text()) for p in pidfiles]
    reap.extend(builds)
    os.kill(proc.pid, signal.SIGINT)  # the driver only, as a harness would: not the builds' group
    _, err = proc.communicate(timeout=60)
    assert "KeyboardInterrupt" in err
    wait_for(lambda: not any(alive(pid) for pid in builds), limit=30)
