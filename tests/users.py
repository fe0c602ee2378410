"""Real unprivileged users and groups for tests, and running commands as them.

The suite runs as root (as CI does here). `Accounts` creates users and groups with
groupadd/useradd and removes them afterwards; `run_as` runs a command with the real uid, gid
and supplementary groups of one of them (`setpriv`). Where this interpreter lives below a
directory other users cannot enter (pyenv under a 0700 /root), the command runs in a private
mount namespace in which only the trees it needs are made reachable: a tmpfs over the closed
directory with the needed subtrees bind-mounted back. Nothing outside that namespace changes.
`in_namespace` does the same for root commands that need a mount of their own (a tiny tmpfs,
an overlay over /etc): the mounts vanish with the namespace, whatever happens to the test.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The toolchains (rustup proxies and their home) stay usable for a user: read-only, they are root's.
CARGO = shutil.which("cargo")
RUSTUP_HOME = os.environ.get("RUSTUP_HOME") or os.path.expanduser("~/.rustup")


class Account:
    def __init__(self, name: str) -> None:
        import pwd

        entry = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir)

    def __repr__(self) -> str:
        return f"Account({self.name})"


def _admin(*command: str) -> None:
    """useradd and friends, retried while another process holds the passwd/group lock."""
    for attempt in range(50):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0:
            return
        if "lock" not in result.stderr.lower() or attempt == 49:
            raise AssertionError(f"{shlex.join(command)} failed: {result.stderr.strip()}")
        time.sleep(0.1)


class Accounts:
    """Users and groups made for one test session; names carry the pid so runs never collide."""

    def __init__(self, tag: str) -> None:
        self.prefix = f"ca{os.getpid() % 100000}{tag}"
        self.users: list[str] = []
        self.groups: list[str] = []
        self.homes = Path(tempfile.mkdtemp(prefix="cargo-agent-homes-", dir="/tmp"))
        self.homes.chmod(0o755)

    def group(self, role: str) -> str:
        name = f"{self.prefix}{role}"
        _admin("groupadd", name)
        self.groups.append(name)
        return name

    def user(self, role: str, groups: Sequence[str] = ()) -> Account:
        name = f"{self.prefix}{role}"
        home = self.homes / name
        _admin("useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", "--user-group",
               *(["--groups", ",".join(groups)] if groups else []), name)
        self.users.append(name)
        self.groups.append(name)  # the user's own group, removed with the user
        account = Account(name)
        home.mkdir(mode=0o700)
        os.chown(home, account.uid, account.gid)
        return account

    def remove(self) -> None:
        for name in self.users:
            _admin("userdel", name)
        for name in self.groups:
            if subprocess.run(["getent", "group", name], capture_output=True).returncode == 0:
                _admin("groupdel", name)
        shutil.rmtree(self.homes, ignore_errors=True)


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("creating users and groups needs root (CI runs the suite as root)")


def open_dir(prefix: str) -> Path:
    """A fresh directory every user can enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def _closed_ancestors() -> dict[str, set[str]]:
    """{directory others cannot enter: {its children on the way to what a child process needs}}."""
    import click
    import filelock
    import psutil

    needed = {os.path.realpath(sys.executable), sys.prefix, sys.base_prefix, str(REPO), RUSTUP_HOME,
              *(os.path.dirname(os.path.realpath(m.__file__ or "")) for m in (click, filelock, psutil)),
              *([os.path.dirname(CARGO)] if CARGO else [])}
    closed: dict[str, set[str]] = {}
    for path in needed:
        parts = Path(os.path.realpath(path)).parts
        for depth in range(1, len(parts)):
            ancestor = os.path.join(*parts[:depth])
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                closed.setdefault(ancestor, set()).add(os.path.join(ancestor, parts[depth]))
                break
    return closed


_STAGE: list[Path] = []


def _namespace_script(closed: dict[str, set[str]]) -> str:
    """sh that makes each closed directory enterable in this mount namespace only."""
    if not _STAGE:
        _STAGE.append(Path(tempfile.mkdtemp(prefix="cargo-agent-stage-", dir="/tmp")))
    lines = ["set -e"]
    index = 0
    for ancestor, children in sorted(closed.items()):
        staged = []
        for child in sorted(children):
            stage = _STAGE[0] / str(index)
            stage.mkdir(exist_ok=True)
            index += 1
            lines.append(f"mount --bind {shlex.quote(child)} {shlex.quote(str(stage))}")
            staged.append((child, stage))
        lines.append(f"mount -t tmpfs -o mode=0755,size=1m tmpfs {shlex.quote(ancestor)}")
        for child, stage in staged:
            lines.append(f"mkdir -p {shlex.quote(child)}")
            lines.append(f"mount --bind {shlex.quote(str(stage))} {shlex.quote(child)}")
    return "\n".join(lines)


def user_env(account: Account, env: dict[str, str]) -> dict[str, str]:
    """`env` for `account`: its own HOME, and PATH/PYTHONPATH that reach this interpreter and checkout."""
    full = dict(env)
    full.update(HOME=str(account.home), USER=account.name, LOGNAME=account.name, RUSTUP_HOME=RUSTUP_HOME,
                CARGO_HOME=str(account.home / ".cargo"),
                PATH=os.pathsep.join([os.path.dirname(sys.executable), *env.get("PATH", os.defpath).split(os.pathsep)]),
                PYTHONPATH=str(REPO))
    full.pop("XDG_RUNTIME_DIR", None)
    return full


def command_as(account: Account | None, argv: Sequence[str], setup: str = "") -> list[str]:
    """argv run as `account` (None: as root), after `setup` (sh, run as root), in a private mount
    namespace when one is needed."""
    closed = _closed_ancestors() if account is not None else {}
    switch = ["setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--init-groups", "--"] \
        if account is not None else []
    if not closed and not setup:
        return [*switch, *argv]
    script = "\n".join(filter(None, [_namespace_script(closed), setup, 'exec "$@"']))
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", *switch, *argv]


def run_as(account: Account | None, argv: Sequence[str], cwd: Path, env: dict[str, str], timeout: float = 120,
           setup: str = "", input: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = user_env(account, env) if account is not None else env
    return subprocess.run(command_as(account, argv, setup), cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, input=input)


def popen_as(account: Account | None, argv: Sequence[str], cwd: Path, env: dict[str, str],
             **kwargs: object) -> subprocess.Popen[str]:
    full_env = user_env(account, env) if account is not None else env
    return subprocess.Popen(command_as(account, argv), cwd=cwd, env=full_env, text=True, **kwargs)  # type: ignore[call-overload]


def cleanup_stage() -> None:
    for stage in _STAGE:
        shutil.rmtree(stage, ignore_errors=True)
    _STAGE.clear()


def accounts_fixture(tag: str) -> object:
    """A module-scoped `accounts` fixture; `tag` keeps each module's user names apart."""

    @pytest.fixture(scope="module")
    def accounts() -> Iterator[Accounts]:
        need_root()
        made = Accounts(tag)
        try:
            yield made
        finally:
            made.remove()
            cleanup_stage()

    return accounts
