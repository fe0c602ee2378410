"""The run log as history: each build's real peak (sampled, or the kernel's accounting when the
run is too short to sample), predictions from it, the run report, and admission driven by it
with real cargo builds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import RunAgent, agent_command, wait_for, write_tree

from cargo_agent import report


def _record(key: dict[str, object], peak: int, **extra: object) -> str:
    return json.dumps({"command": ["build"], "exit_code": 0, "peak_rss": peak, "key": key, **extra}) + "\n"


KEY = {"workspace": "/ws", "subcommand": "build", "profile": "default", "packages": ["alpha"]}


def test_command_key_names_workspace_subcommand_profile_and_package_set() -> None:
    key = report.command_key("/ws", "build", [("--package", "b"), ("--release", None), ("--package", "a"),
                                              ("--jobs", "4")])
    assert key == {"workspace": "/ws", "subcommand": "build", "profile": "release", "packages": ["a", "b"]}
    assert report.command_key("/ws", "test", [("--profile", "ci"), ("--release", None), ("--workspace", None),
                                              ("--exclude", "x")])["profile"] == "ci"
    assert report.command_key(None, "test", [("--workspace", None), ("--exclude", "x")])["packages"] == \
        ["!x", "--workspace"]


def test_prediction_is_the_highest_of_the_last_runs_of_the_same_command(tmp_path: Path) -> None:
    other = {**KEY, "packages": ["beta"]}
    lines = [_record(KEY, 900 << 20)]  # older than the last five: forgotten
    lines += [_record(KEY, mib << 20) for mib in (100, 300, 200, 250, 150)]
    lines += [_record(other, 5 << 30), _record({**KEY, "workspace": "/elsewhere"}, 7 << 30),
              _record(KEY, 8 << 30, nested=True), "not json\n", '["a list"]\n', _record(KEY, -5),
              json.dumps({"key": KEY, "peak_rss": "many"}) + "\n"]
    (tmp_path / "runs.jsonl").write_text("".join(lines))
    prediction = report.predict(tmp_path, KEY, 4 << 30)
    assert prediction.peak == 300 << 20 and prediction.runs == 5 and prediction.source.startswith("history")
    unknown = report.predict(tmp_path, {**KEY, "subcommand": "test"}, 4 << 30)
    assert unknown.peak == 4 << 30 and unknown.source.startswith("per_build_memory")
    assert report.learned_peak(tmp_path) == 7 << 30
    assert report.learned_peak(tmp_path, typical=True) == 300 << 20  # the median of 8 peaks


def test_the_rotated_log_still_counts(tmp_path: Path) -> None:
    (tmp_path / "runs.jsonl.1").write_text(_record(KEY, 123 << 20))
    (tmp_path / "runs.jsonl").write_text(_record({**KEY, "packages": []}, 1 << 20))
    assert report.predict(tmp_path, KEY, 1).peak == 123 << 20


def test_a_full_log_is_read_from_its_end(tmp_path: Path) -> None:
    """A log at its 1 MiB cap plus its rotated half: the newest records decide, across the two
    files, and a line cut where the reading stops is never taken for a record."""
    old = _record(KEY, 2 << 30)
    filler = _record({**KEY, "workspace": "/other"}, 1 << 20)
    (tmp_path / "runs.jsonl.1").write_text(old * 3 + filler * (900_000 // len(filler)) + _record(KEY, 40 << 20) * 2)
    (tmp_path / "runs.jsonl").write_text(filler * ((1 << 20) // len(filler) - 4) + _record(KEY, 30 << 20) * 3)
    prediction = report.predict(tmp_path, KEY, 1)
    assert (prediction.peak, prediction.runs) == (40 << 20, 5)  # three in the log, two in the rotated half
    assert [r.peak for r in report.recent(tmp_path, 4)] == [1 << 20] + [30 << 20] * 3


def test_a_planted_log_is_skipped_and_the_rotated_half_still_read(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text(_record(KEY, 9 << 30))
    (tmp_path / "runs.jsonl").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "runs.jsonl.1").write_text(_record(KEY, 123 << 20))
    assert report.predict(tmp_path, KEY, 1).peak == 123 << 20
    assert [r.peak for r in report.recent(tmp_path)] == [123 << 20]


def test_command_key_edges_profile_packages_and_missing_names() -> None:
    key = report.command_key(None, None, [("--profile", ""), ("--package", ""), ("--exclude", ""),
                                          ("--package", "b"), ("--package", "b"), ("--all", None)])
    assert key == {"workspace": "", "subcommand": "", "profile": "default", "packages": ["--workspace", "b"]}
    assert report.command_key("/ws", "build", [("--release", None)])["profile"] == "release"
    assert report.command_key("/ws", "build", [("--profile", "ci"), ("--release", None)])["profile"] == "ci"
    assert report.command_key("/ws", "build", [("--release", None), ("--profile", "ci")])["profile"] == "ci"
    assert report.command_key("/ws", "build", [("--jobs", "3"), ("--features", "x")])["packages"] == []


def test_a_prediction_counts_only_runs_of_exactly_this_command(tmp_path: Path) -> None:
    lines = [_record(KEY, 200 << 20), _record(KEY, 100 << 20),
             _record({**KEY, "profile": "release"}, 9 << 30),  # same workspace and subcommand, other profile
             _record({**KEY, "packages": []}, 9 << 30),
             json.dumps({"key": "not a dict", "peak_rss": 9 << 30, "workspace": "/ws", "x": "build"}) + "\n",
             _record(KEY, 0), _record(KEY, 1 << 62)]  # no plausible peak
    (tmp_path / "runs.jsonl").write_text("".join(lines))
    prediction = report.predict(tmp_path, KEY, 4 << 30)
    assert (prediction.peak, prediction.runs) == (200 << 20, 2)
    assert prediction.source == "history: highest peak of the last 2 runs of this command"
    assert prediction.as_json() == {"peak": 200 << 20, "source": prediction.source, "runs": 2}
    wider = report.predict(tmp_path, {"workspace": "/ws", "subcommand": "build"}, 1)  # a key of fewer fields
    assert wider.peak == 9 << 30 and wider.runs == 4


def test_a_prediction_is_the_highest_of_exactly_the_last_five(tmp_path: Path) -> None:
    lines = [_record(KEY, 7 << 20)] + [_record(KEY, mib << 20) for mib in (1, 2, 3, 4, 5)]
    (tmp_path / "runs.jsonl").write_text("".join(lines))
    assert report.predict(tmp_path, KEY, 1).peak == 5 << 20  # the sixth newest (7 MiB) is not looked at
    (tmp_path / "runs.jsonl").write_text("".join(lines[1:]))
    assert (report.predict(tmp_path, KEY, 1).peak, report.predict(tmp_path, KEY, 1).runs) == (5 << 20, 5)


def test_without_history_the_prediction_is_the_default_and_says_so(tmp_path: Path) -> None:
    prediction = report.predict(tmp_path, KEY, 3 << 30)
    assert (prediction.peak, prediction.runs) == (3 << 30, 0)
    assert prediction.source == "per_build_memory (no history for this command)"


def test_learned_peaks_look_at_the_last_50_records_of_their_own_log(tmp_path: Path) -> None:
    (tmp_path / "runs.jsonl").write_text(_record(KEY, 900 << 20) + "".join(_record(KEY, 10 << 20) for _ in range(50)))
    assert report.learned_peak(tmp_path) == 10 << 20  # the 51st newest is forgotten
    assert report.learned_peak(tmp_path, report.LINKS) is None
    (tmp_path / "links.jsonl").write_text("".join(_record({}, mib << 20) for mib in (30, 10, 20)))
    assert report.learned_peak(tmp_path, report.LINKS) == 30 << 20
    assert report.learned_peak(tmp_path, report.LINKS, typical=True) == 20 << 20  # the median of three
    (tmp_path / "links.jsonl").write_text(_record({}, 5 << 20) + _record({}, 6 << 20) + _record({}, 0))
    assert report.learned_peak(tmp_path, report.LINKS, typical=True) == 6 << 20  # the upper median of two
    (tmp_path / "links.jsonl").write_text(_record({}, 5 << 20) + _record({}, 50 << 20, nested=True))
    assert report.learned_peak(tmp_path, report.LINKS) == 5 << 20  # a nested run is not a build of its own


def _tiny(root: Path) -> Path:
    return write_tree(root, {"Cargo.toml": '[package]\nname = "tiny"\nversion = "0.1.0"\nedition = "2021"\n',
                             "src/main.rs": "fn main() {}\n"})


def test_a_short_run_reports_a_real_peak_and_names_its_source(tmp_path: Path, run_agent: RunAgent,
                                                               agent_env: dict[str, str]) -> None:
    root = _tiny(tmp_path / "tiny")
    env = {**agent_env, "CARGO_TARGET_DIR": str(tmp_path / "t"), "CARGO_AGENT_REPORT": "1"}
    first = run_agent("build", cwd=root, env=env)
    assert first.returncode == 0, first.stderr
    again = run_agent("build", cwd=root, env=env)  # nothing to do: far shorter than a sampling period
    line = again.stderr.strip().splitlines()[-1]
    assert "peak memory 0 MiB" not in line and "peak RSS" not in line
    assert f"({report.SOURCE_KERNEL}; predicted" in line or f"({report.SOURCE_SAMPLED}; predicted" in line
    records = report.recent(Path(env["CARGO_AGENT_LOCK_DIR"]), 5)
    assert all(r.peak and r.peak > 1 << 20 for r in records)
    assert records[-1].number("predicted_peak") == records[-2].peak  # predicted from the first run
    assert (records[0].text("prediction_source") or "").startswith("per_build_memory")
    assert (records[-1].text("prediction_source") or "").startswith("history")


def test_dry_run_shows_the_prediction_and_its_source(tmp_path: Path, run_agent: RunAgent,
                                                     agent_env: dict[str, str]) -> None:
    root = _tiny(tmp_path / "tiny")
    plan = json.loads(run_agent("--dry-run", "--json", "build", cwd=root).stdout)
    assert plan["memory"]["prediction"]["peak"] == 4 << 30
    assert plan["memory"]["prediction"]["source"].startswith("per_build_memory")
    lock_dir = Path(agent_env["CARGO_AGENT_LOCK_DIR"])
    lock_dir.mkdir(mode=0o700)
    (lock_dir / "runs.jsonl").write_text(_record(plan["memory"]["prediction"]["key"], 700 << 20))
    text = run_agent("--dry-run", "build", cwd=root).stdout
    assert "predicted: peak 700 MiB (history: highest peak of the last 1 runs of this command)" in text
    limit_line = next(line for line in text.splitlines() if line.startswith("limit:"))
    assert "MiB in force" in limit_line and ("MemTotal" in limit_line or "cgroup" in limit_line)


def test_auto_slots_and_link_slots_use_learned_figures(tmp_path: Path, run_agent: RunAgent,
                                                       agent_env: dict[str, str]) -> None:
    root = _tiny(tmp_path / "tiny")
    lock_dir = Path(agent_env["CARGO_AGENT_LOCK_DIR"])
    lock_dir.mkdir(mode=0o700)
    (lock_dir / "runs.jsonl").write_text(_record(KEY, 1 << 30))
    (lock_dir / "links.jsonl").write_text(json.dumps({"peak_rss": 256 << 20}) + "\n")
    text = run_agent("--dry-run", "build", cwd=root).stdout
    assert "1.00G per build (median of recent runs)" in text
    assert "256M per link (learned from recent links)" in text


def test_auto_slots_follow_what_the_run_log_learns(tmp_path: Path, run_agent: RunAgent,
                                                   fake_cargo_env: dict[str, str], virtual_ws: Path) -> None:
    lock_dir = Path(fake_cargo_env["CARGO_AGENT_LOCK_DIR"])
    lock_dir.mkdir(mode=0o700)

    def planned() -> dict[str, object]:
        plan = run_agent("--dry-run", "--json", "build", "-p", "alpha", cwd=virtual_ws, env=fake_cargo_env)
        return dict(json.loads(plan.stdout)["slots"])

    (lock_dir / "runs.jsonl").write_text(_record(KEY, 1 << 20) * 3)  # small builds: as many as cores
    small = planned()
    (lock_dir / "runs.jsonl").write_text(_record(KEY, 1 << 50) * 3)  # builds that would fill any host
    big = planned()
    assert big["ceiling"] == 1 and "per build (median of recent runs)" in str(big["formula"])
    assert int(str(small["ceiling"])) >= 1 and "0.00G per build (median of recent runs)" in str(small["formula"])


# ---- history drives admission (real cargo) ---------------------------------------------

def _blocking_ws(root: Path, go: Path) -> Path:
    """alpha's build script waits for the file `go`; beta and gamma build at once."""
    files = {"Cargo.toml": '[workspace]\nresolver = "2"\nmembers = ["alpha", "beta", "gamma"]\n'}
    for name in ("alpha", "beta", "gamma"):
        files[f"{name}/Cargo.toml"] = f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n'
        files[f"{name}/src/lib.rs"] = "pub fn f() {}\n"
    files["alpha/build.rs"] = ("fn main() {\n"
                               f'    while !std::path::Path::new("{go}").exists() {{\n'
                               "        std::thread::sleep(std::time::Duration::from_millis(50));\n    }\n}\n")
    return write_tree(root, files)


def test_a_command_whose_recorded_peak_does_not_fit_waits_while_a_smaller_one_is_admitted(
        tmp_path: Path, agent_env: dict[str, str], run_agent: RunAgent, reap: list[int]) -> None:
    go = tmp_path / "go"
    ws = _blocking_ws(tmp_path / "ws", go)
    memory = tmp_path / "memory"
    memory.write_text("40")  # worse than the real reading; the hook can do no other
    env = {**agent_env, "CARGO_AGENT_MEMORY_SOURCE": str(memory), "CARGO_AGENT_SLOTS": "3",
           "CARGO_AGENT_PRESSURE_HIGH": "off"}
    lock_dir = Path(env["CARGO_AGENT_LOCK_DIR"])

    def key(package: str) -> dict[str, object]:
        plan = run_agent("--dry-run", "--json", "build", "-p", package, cwd=ws, env=env)
        return dict(json.loads(plan.stdout)["memory"]["prediction"]["key"])

    limit = json.loads(run_agent("--dry-run", "--json", "build", "-p", "alpha", cwd=ws,
                                 env=env).stdout)["memory"]["limit"]["bytes"]
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    (lock_dir / "runs.jsonl").write_text(_record(key("alpha"), 1 << 20) + _record(key("beta"), limit // 2)
                                         + _record(key("gamma"), 1 << 20))

    def start(package: str) -> tuple[subprocess.Popen[str], Path]:
        err = tmp_path / f"{package}.err"
        with err.open("w") as handle:
            proc = subprocess.Popen(agent_command("build", "-p", package), cwd=ws, stderr=handle, text=True,
                                    env={**env, "CARGO_TARGET_DIR": str(tmp_path / f"t-{package}")})
        reap.append(proc.pid)
        return proc, err

    holder, _ = start("alpha")  # a running build whose build script waits for `go`
    wait_for(lambda: len(list(lock_dir.glob("slot-*.json"))) == 1, 60)
    big, big_err = start("beta")  # recorded at half the limit: 40% + 50% > mem_high 85%
    wait_for(lambda: "does not fit" in big_err.read_text(), 60)
    assert "predicted peak" in big_err.read_text()
    status = json.loads(run_agent("--status", "--json", cwd=ws, env=env).stdout)
    assert [q["command"] for q in status["queue"]] == [["build", "-p", "beta"]]
    assert status["queue"][0]["predicted"] == limit // 2
    small, _ = start("gamma")  # queued behind the big one, and small: admitted meanwhile
    assert small.wait(120) == 0
    assert big.poll() is None and not (tmp_path / "t-beta" / "debug").exists()
    go.touch()  # the running build ends; with nothing else running, the big one starts
    assert holder.wait(120) == 0
    assert big.wait(120) == 0, big_err.read_text()
    records = report.recent(lock_dir, 10)
    beta = [r for r in records if r.command == ["build", "-p", "beta"]]
    assert beta and beta[-1].number("predicted_peak") == limit // 2
