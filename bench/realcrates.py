"""A real-crate fixture for the CPU and memory benches: a workspace of agent-like member crates that
depend on real crates from Debian's `librust-*-dev` packages, built offline through a `directory`
source replacement (crates.io is out of reach on the build hosts this is measured on).

The dependency set is chosen for what a storm of builds has to schedule:
- build scripts: libc, proc-macro2, syn, serde, serde_json, anyhow, thiserror, typenum, num-traits,
  memchr, crc32fast, indexmap, semver, log, plus one in every member;
- proc macros: serde_derive and thiserror-impl (over syn 1, quote, proc-macro2);
- one heavy compile: regex with regex-syntax and aho-corasick;
- links: the first members have a binary, every member has an integration test.

Debian (bookworm) ships older versions than crates.io (regex 1.7, syn 1, serde 1.0.152), one per
crate, so the requirements below are plain caret requirements at those versions and the lock file
is generated afresh (`cargo generate-lockfile --offline`) in every generated workspace.

    python -m bench.realcrates DIR [--members K]   # install if needed, generate, print versions
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REGISTRY = Path("/usr/share/cargo/registry")

# Debian packages; apt pulls in their dependencies (regex-syntax, unicode-ident, backtrace, ...).
PACKAGES = (
    "librust-libc-dev", "librust-proc-macro2-dev", "librust-quote-dev", "librust-syn-dev",
    "librust-serde-dev", "librust-serde-derive-dev", "librust-serde-json-dev", "librust-anyhow-dev",
    "librust-thiserror-dev", "librust-typenum-dev", "librust-regex-dev", "librust-aho-corasick-dev",
    "librust-num-traits-dev", "librust-memchr-dev", "librust-once-cell-dev", "librust-log-dev",
    "librust-crc32fast-dev", "librust-semver-dev", "librust-indexmap-dev",
)

# What every member depends on, as written into its Cargo.toml.
DEPENDENCIES = {
    "anyhow": '"1.0.69"',
    "thiserror": '"1.0.38"',
    "serde": '{ version = "1.0.152", features = ["derive"] }',
    "serde_json": '"1.0.87"',
    "regex": '"1.7.1"',
    "libc": '"0.2.139"',
    "typenum": '"1.16"',
    "num-traits": '"0.2.15"',
    "once_cell": '"1.17"',
    "log": '"0.4.17"',
    "crc32fast": '"1.3"',
    "indexmap": '"1.9"',
    "semver": '"1.0.14"',
}

CARGO_CONFIG = f"""\
# Offline: crates come from Debian's librust-*-dev packages.
[source.crates-io]
replace-with = "debian"

[source.debian]
directory = "{REGISTRY}"

[net]
offline = true
"""


class Unavailable(Exception):
    """The fixture cannot be set up on this host; the message says why (one line)."""


_updated = False


def _missing_packages(packages: Sequence[str]) -> list[str]:
    if shutil.which("dpkg-query") is None:
        raise Unavailable("dpkg-query not found: the real-crate fixture needs Debian's librust-*-dev packages")
    out = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Status} ${Package}\n", *packages],
                         capture_output=True, text=True, check=False).stdout
    installed = {line.split()[1] for line in out.splitlines() if line.startswith("installed ")}
    return [p for p in packages if p not in installed]


def ensure_installed(packages: Sequence[str] = PACKAGES, log: Callable[[str], None] | None = None) -> float:
    """Install the crate sources with apt where any are missing. Returns the seconds spent in apt
    (0.0 when everything was already there). Raises Unavailable, with the reason, where apt is
    missing, we are not root, or apt fails."""
    global _updated
    say = log or (lambda text: print(text, file=sys.stderr))
    missing = _missing_packages(packages)
    if not missing:
        return 0.0
    if shutil.which("apt-get") is None:
        raise Unavailable(f"apt-get not found; cannot install {' '.join(missing)}")
    if os.geteuid() != 0:
        raise Unavailable(f"not root; cannot apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for another apt run on the host instead of failing on its lock.
    lock_wait = ["-o", "DPkg::Lock::Timeout=600"]
    start = time.monotonic()
    steps: list[list[str]] = []
    if not _updated:
        steps.append(["apt-get", *lock_wait, "update", "-q"])
    steps.append(["apt-get", *lock_wait, "install", "-y", "-q", "--no-install-recommends", *missing])
    for step in steps:
        say(f"bench: {' '.join(step)}")
        done = subprocess.run(step, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise Unavailable(f"`{' '.join(step[:4])} ...` failed (exit {done.returncode}): {tail}")
        if step[3] == "update":
            _updated = True
    still = _missing_packages(packages)
    if still:
        raise Unavailable(f"apt-get install left {' '.join(still)} uninstalled")
    return time.monotonic() - start


def _member_manifest(index: int, members: int, bins: int) -> str:
    deps = "\n".join(f"{name} = {req}" for name, req in DEPENDENCIES.items())
    if index > 0:  # agent-like: every crate uses the workspace's shared core crate
        deps += '\nagent0 = { path = "../agent0" }'
    binary = f'\n[[bin]]\nname = "agent{index}-cli"\npath = "src/main.rs"\n' if index < bins else ""
    return (f'[package]\nname = "agent{index}"\nversion = "0.1.0"\nedition = "2021"\npublish = false\n'
            f'build = "build.rs"\n{binary}\n[dependencies]\n{deps}\n')


BUILD_RS = """\
// Generates a lookup table into OUT_DIR, as code-generating build scripts do.
use std::{env, fs, path::Path};

fn main() {
    let out = env::var("OUT_DIR").unwrap();
    let mut table = String::from("pub const TABLE: [u32; 256] = [");
    for i in 0u32..256 {
        let mut c = i;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
        table.push_str(&format!("{c}, "));
    }
    table.push_str("];\\n");
    fs::write(Path::new(&out).join("table.rs"), table).unwrap();
    println!("cargo:rerun-if-changed=build.rs");
}
"""


def _member_lib(index: int, weight: int) -> str:
    head = textwrap.dedent(f"""\
        //! agent{index}: records parsed from JSON, checked with regexes, hashed and versioned.
        use std::collections::BTreeMap;

        use indexmap::IndexMap;
        use num_traits::{{PrimInt, Unsigned}};
        use once_cell::sync::Lazy;
        use regex::Regex;
        use serde::{{Deserialize, Serialize}};
        use typenum::Unsigned as _;

        include!(concat!(env!("OUT_DIR"), "/table.rs"));

        #[derive(Debug, thiserror::Error)]
        pub enum AgentError {{
            #[error("bad record: {{0}}")]
            Bad(String),
            #[error(transparent)]
            Json(#[from] serde_json::Error),
            #[error(transparent)]
            Version(#[from] semver::Error),
        }}

        static NAME: Lazy<Regex> = Lazy::new(|| Regex::new(r"^[a-z][a-z0-9_-]{{0,63}}$").unwrap());
        static TAG: Lazy<Regex> = Lazy::new(|| Regex::new(r"(?i)\\b(?P<k>[\\p{{L}}_]+)=(?P<v>[^,;\\s]+)").unwrap());

        pub fn table_checksum() -> u32 {{
            TABLE.iter().fold(0u32, |a, b| a.wrapping_add(*b))
        }}

        pub fn crc(bytes: &[u8]) -> u32 {{
            crc32fast::hash(bytes)
        }}

        pub fn pid() -> i32 {{
            unsafe {{ libc::getpid() }}
        }}

        pub fn width() -> usize {{
            typenum::U{64 + index}::to_usize()
        }}

        pub fn popcount<T: PrimInt + Unsigned>(x: T) -> u32 {{
            x.count_ones()
        }}

        pub fn tags(text: &str) -> IndexMap<String, String> {{
            TAG.captures_iter(text).map(|c| (c["k"].to_string(), c["v"].to_string())).collect()
        }}

        pub fn version_ok(req: &str, version: &str) -> Result<bool, AgentError> {{
            Ok(semver::VersionReq::parse(req)?.matches(&semver::Version::parse(version)?))
        }}
        """)
    records = []
    for j in range(weight):
        records.append(textwrap.dedent(f"""\
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            pub struct Record{j} {{
                pub name: String,
                pub id: u64,
                pub score: f64,
                #[serde(default)]
                pub tags: Vec<String>,
                #[serde(default)]
                pub meta: BTreeMap<String, i64>,
                pub kind: Kind{j},
            }}

            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            #[serde(tag = "type", rename_all = "snake_case")]
            pub enum Kind{j} {{
                Plain,
                Weighted {{ weight: u32 }},
                Linked {{ to: Vec<u64>, note: Option<String> }},
            }}

            pub fn parse{j}(text: &str) -> anyhow::Result<Record{j}> {{
                let record: Record{j} = serde_json::from_str(text).map_err(AgentError::from)?;
                if !NAME.is_match(&record.name) {{
                    return Err(AgentError::Bad(record.name).into());
                }}
                log::debug!("parsed record{j} {{}}", record.id);
                Ok(record)
            }}

            pub fn render{j}(record: &Record{j}) -> String {{
                serde_json::to_string_pretty(record).unwrap()
            }}
            """))
    return head + "\n" + "\n".join(records)


def _member_main(index: int) -> str:
    return f"use agent{index} as agent;\n\n" + textwrap.dedent("""\
        fn main() -> anyhow::Result<()> {
            let text = std::env::args().nth(1).unwrap_or_else(|| {
                r#"{"name":"a","id":1,"score":0.5,"kind":{"type":"plain"}}"#.to_string()
            });
            let record = agent::parse0(&text)?;
            println!("{} {} {}", agent::render0(&record), agent::crc(text.as_bytes()), agent::pid());
            Ok(())
        }
        """)


def _member_test(index: int) -> str:
    return f"use agent{index} as agent;\n\n" + textwrap.dedent(f"""\
        #[test]
        fn round_trip() {{
            let text = r#"{{"name":"rec-1","id":7,"score":1.5,"tags":["x"],"kind":{{"type":"weighted","weight":3}}}}"#;
            let record = agent::parse0(text).unwrap();
            assert_eq!(agent::parse0(&agent::render0(&record)).unwrap(), record);
        }}

        #[test]
        fn helpers() {{
            assert_eq!(agent::width(), {64 + index});
            assert_eq!(agent::popcount(0b1011u32), 3);
            assert_eq!(agent::tags("a=1, b=2").len(), 2);
            assert!(agent::version_ok("^1.2", "1.4.0").unwrap());
            assert!(agent::parse0(r#"{{"name":"Bad Name","id":1,"score":0,"kind":{{"type":"plain"}}}}"#).is_err());
            assert_eq!(agent::TABLE[1], 0x7707_3096);
            assert_ne!(agent::table_checksum(), 0);
        }}
        """)


def generate(root: Path, members: int = 4, bins: int = 2, weight: int = 12, lock: bool = True) -> dict[str, str]:
    """Write the workspace into `root` (created if missing) and, with `lock`, generate its Cargo.lock
    offline. Returns the resolved {crate: version} of the registry crates (empty without `lock`).
    `weight` is the number of serde record types per member: the members' own compile cost."""
    if members < 1 or bins < 0 or weight < 1:
        raise ValueError(f"need members >= 1, bins >= 0, weight >= 1 (got {members}, {bins}, {weight})")
    root.mkdir(parents=True, exist_ok=True)
    names = ", ".join(f'"agent{i}"' for i in range(members))
    files = {
        "Cargo.toml": f'[workspace]\nresolver = "2"\nmembers = [{names}]\n',
        ".cargo/config.toml": CARGO_CONFIG,
    }
    for i in range(members):
        files[f"agent{i}/Cargo.toml"] = _member_manifest(i, members, bins)
        files[f"agent{i}/build.rs"] = BUILD_RS
        files[f"agent{i}/src/lib.rs"] = _member_lib(i, weight)
        files[f"agent{i}/tests/it.rs"] = _member_test(i)
        if i < bins:
            files[f"agent{i}/src/main.rs"] = _member_main(i)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return lock_workspace(root) if lock else {}


def lock_workspace(root: Path) -> dict[str, str]:
    """`cargo generate-lockfile --offline`; raises Unavailable with cargo's first error line."""
    done = subprocess.run([shutil.which("cargo") or "cargo", "generate-lockfile", "--offline"], cwd=root,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error")] or ["no output"]
        raise Unavailable(f"cargo generate-lockfile --offline failed in {root}: {errors[0]}")
    return locked_versions(root)


def locked_versions(root: Path) -> dict[str, str]:
    """{crate: version} of the non-workspace packages in root/Cargo.lock."""
    import tomllib

    with open(root / "Cargo.lock", "rb") as f:
        lock = tomllib.load(f)
    return {p["name"]: p["version"] for p in lock.get("package", []) if "source" in p}


def prepare(root: Path, members: int = 4, bins: int = 2, weight: int = 12,
            log: Callable[[str], None] | None = None) -> dict[str, object]:
    """ensure_installed + generate: what a bench calls. Raises Unavailable."""
    apt_seconds = ensure_installed(log=log)
    versions = generate(root, members, bins, weight)
    return {"root": str(root), "members": members, "bins": bins, "weight": weight,
            "apt_seconds": apt_seconds, "versions": versions}


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.realcrates", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--bins", type=int, default=2)
    parser.add_argument("--weight", type=int, default=12)
    args = parser.parse_args(argv)
    try:
        info = prepare(args.dir, args.members, args.bins, args.weight)
    except Unavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
