"""Where cargo would start, and which workspace and packages that means, read with tomllib.

Mirrors cargo's rules closely enough for the policy gate: `--manifest-path`, else the
nearest Cargo.toml walking up from the working dir (after `-C`); the workspace root is that
manifest if it has `[workspace]`, else `package.workspace`, else the nearest ancestor with
`[workspace]` that lists the package as a member (glob `members`, `exclude`, and path
dependencies inside the workspace dir). No `cargo metadata`: it costs a second per call.
"""

from __future__ import annotations

import os

from cargo_agent.errors import UsageError
from cargo_agent.tomlfile import read_toml

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Paths are plain strings, normalised with os.path: this module is on the compiling path, where
# importing pathlib (and dataclasses) costs more than reading the manifests.
MANIFEST = "Cargo.toml"
_join, _norm, _dirname, _isfile = os.path.join, os.path.normpath, os.path.dirname, os.path.isfile


class Package:
    __slots__ = ("manifest", "name")

    def __init__(self, name: str, manifest: str) -> None:
        self.name = name
        self.manifest = manifest

    @property
    def directory(self) -> str:
        return _dirname(self.manifest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Package) and (self.name, self.manifest) == (other.name, other.manifest)

    def __hash__(self) -> int:
        return hash((self.name, self.manifest))

    def __repr__(self) -> str:
        return f"Package({self.name!r}, {self.manifest!r})"


class Workspace:
    __slots__ = ("default_members", "members", "root_data", "root_manifest")

    def __init__(self, root_manifest: str, root_data: dict[str, Any], members: list[Package] | None = None,
                 default_members: list[Package] | None = None) -> None:
        self.root_manifest = root_manifest
        self.root_data = root_data
        self.members = members if members is not None else []
        self.default_members = default_members

    @property
    def root(self) -> str:
        return _dirname(self.root_manifest)

    @property
    def member_names(self) -> list[str]:
        return [p.name for p in self.members]


class Location:
    __slots__ = ("cwd", "manifest", "workspace")

    def __init__(self, manifest: str, workspace: Workspace, cwd: str | None = None) -> None:
        self.manifest = manifest  # the manifest cargo starts from
        self.workspace = workspace
        self.cwd = cwd  # the working dir (after -C), set by build.decide, for `focus_members`

    @property
    def package(self) -> Package | None:
        """The package whose manifest cargo starts from; None at a virtual root."""
        return next((p for p in self.workspace.members if p.manifest == self.manifest), None)


def _read_manifest(path: str) -> dict[str, Any]:
    data = read_toml(path)
    assert data is not None
    package = data.get("package")
    if package is not None and not isinstance(package, dict):
        raise UsageError(f"malformed manifest {path}: `package` is not a table")
    workspace = data.get("workspace")
    if workspace is not None and not isinstance(workspace, dict):
        raise UsageError(f"malformed manifest {path}: `workspace` is not a table")
    return data


def _package_name(path: str, data: dict[str, Any]) -> str:
    name = data.get("package", {}).get("name")
    if not isinstance(name, str) or not name:
        raise UsageError(f"malformed manifest {path}: `package.name` is missing or not a string")
    return name


def _parents(path: str) -> list[str]:
    """The ancestors of an absolute, normalised path, nearest first (like Path.parents)."""
    found: list[str] = []
    while True:
        parent = _dirname(path)
        if parent == path:
            return found
        found.append(parent)
        path = parent


def _within(path: str, directory: str) -> bool:
    """`path` is `directory` or below it."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def find_manifest(start: str) -> str | None:
    for directory in [start, *_parents(start)]:
        candidate = _join(directory, MANIFEST)
        if _isfile(candidate):
            return candidate
    return None


def _string_list(data: dict[str, Any], key: str, path: str) -> list[str]:
    value = data.get("workspace", {}).get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"malformed manifest {path}: `workspace.{key}` is not a list of strings")
    return value


def _expand(root: str, patterns: list[str]) -> list[str]:
    dirs: list[str] = []
    for pattern in patterns:
        parent, _, last = pattern.rstrip("/").rpartition("/")
        if last == "*" and not is_glob(parent):
            # `crates/*`, the usual pattern: what glob would list (no hidden entries), without
            # importing glob, fnmatch and re on every compiling call.
            try:
                matches = sorted(os.path.join(parent, e) if parent else e
                                 for e in os.listdir(_join(root, parent)) if not e.startswith("."))
            except OSError:
                matches = []
        elif is_glob(pattern):
            import glob

            matches = sorted(glob.glob(pattern, root_dir=root))
        else:
            matches = [pattern]
        for match in matches:
            directory = _norm(_join(root, match))
            if _isfile(_join(directory, MANIFEST)) and directory not in dirs:
                dirs.append(directory)
    return dirs


def _path_dependencies(directory: str, data: dict[str, Any]) -> list[str]:
    tables: list[Any] = [data.get(k, {}) for k in ("dependencies", "dev-dependencies", "build-dependencies")]
    for target in data.get("target", {}).values() if isinstance(data.get("target"), dict) else []:
        if isinstance(target, dict):
            tables += [target.get(k, {}) for k in ("dependencies", "dev-dependencies", "build-dependencies")]
    found: list[str] = []
    for table in tables:
        if not isinstance(table, dict):
            continue
        for spec in table.values():
            if isinstance(spec, dict) and isinstance(spec.get("path"), str):
                found.append(_norm(_join(directory, spec["path"])))
    return found


def load_workspace(root_manifest: str, root_data: dict[str, Any]) -> Workspace:
    root = _dirname(root_manifest)
    excluded = [_norm(_join(root, e)) for e in _string_list(root_data, "exclude", root_manifest)]
    workspace = Workspace(root_manifest, root_data)
    queue = _expand(root, _string_list(root_data, "members", root_manifest))
    if "package" in root_data:
        queue.insert(0, root)
    seen: set[str] = set()
    while queue:
        directory = queue.pop(0)
        if directory in seen or any(_within(directory, e) for e in excluded):
            continue
        seen.add(directory)
        manifest = _join(directory, MANIFEST)
        data = root_data if manifest == root_manifest else _read_manifest(manifest)
        if "package" not in data:
            continue
        workspace.members.append(Package(_package_name(manifest, data), manifest))
        queue += [d for d in _path_dependencies(directory, data)
                  if _within(d, root) and _isfile(_join(d, MANIFEST))]
    defaults = root_data.get("workspace", {}).get("default-members")
    if defaults is not None:
        default_dirs = _expand(root, _string_list(root_data, "default-members", root_manifest))
        workspace.default_members = [p for p in workspace.members if p.directory in default_dirs]
    return workspace


def _is_member(workspace: Workspace, manifest: str) -> bool:
    return any(p.manifest == manifest for p in workspace.members)


def locate(cwd: str | os.PathLike[str], manifest_path: str | None) -> Location | None:
    """The manifest and workspace cargo would use; None when there is no Cargo.toml at all.
    `cwd` is absolute."""
    cwd = _norm(os.fspath(cwd))
    if manifest_path is not None:
        manifest = _norm(_join(cwd, manifest_path))
        if not _isfile(manifest):
            raise UsageError(f"manifest path `{manifest_path}` does not exist")
    else:
        found = find_manifest(cwd)
        if found is None:
            return None
        manifest = found
    data = _read_manifest(manifest)
    if "workspace" in data:
        return Location(manifest, load_workspace(manifest, data))
    pointer = data.get("package", {}).get("workspace")
    candidates: list[str] = []
    if isinstance(pointer, str):
        candidates = [_norm(_join(_dirname(manifest), pointer, MANIFEST))]
    else:
        candidates = [_join(d, MANIFEST) for d in _parents(_dirname(manifest)) if _isfile(_join(d, MANIFEST))]
    for candidate in candidates:
        root_data = _read_manifest(candidate)
        if "workspace" not in root_data:
            continue
        workspace = load_workspace(candidate, root_data)
        if _is_member(workspace, manifest):
            return Location(manifest, workspace)
        break  # the nearest workspace does not claim it: a package of its own
    standalone = Workspace(manifest, data, [Package(_package_name(manifest, data), manifest)])
    return Location(manifest, standalone)


def is_glob(spec: str) -> bool:
    """cargo reads a `-p`/`--exclude` value as a glob pattern when it holds any of `*?[]`."""
    return any(c in spec for c in "*?[]")


def spec_name(spec: str) -> str:
    """The package name in a package ID spec: `name`, `name@1.2`, `name:1.2`, or a URL form
    (`path+file:///x/name#1.2`, `https://host/index#name@1.2`)."""
    url, hash_mark, fragment = spec.partition("#")
    if "://" in url:
        if hash_mark and fragment and not fragment[0].isdigit():
            return _cut_version(fragment)
        return url.rstrip("/").rsplit("/", 1)[-1]
    return _cut_version(spec)


def _cut_version(text: str) -> str:
    for mark in ("@", ":"):
        text = text.split(mark, 1)[0]
    return text


def match_packages(workspace: Workspace, specs: list[str]) -> list[str]:
    """Package names a list of `-p` specs selects, as cargo does: a glob matches workspace
    members only; any other spec names one package (a member or a dependency)."""
    names: list[str] = []
    for spec in specs:
        if is_glob(spec):
            import fnmatch

            names += [n for n in workspace.member_names if fnmatch.fnmatchcase(n, spec) and n not in names]
        elif spec_name(spec) not in names:
            names.append(spec_name(spec))
    return names


class Selection:
    __slots__ = ("how", "open", "packages")

    def __init__(self, packages: list[str], how: str, open: bool = False) -> None:
        self.packages = packages
        self.how = how  # why this is the selection, for messages
        self.open = open  # may hold more packages than `packages` (a workspace nobody could read)


def selection(location: Location, packages: list[str], workspace_flag: bool,
              excludes: list[str]) -> Selection:
    """Which packages a command selects, following cargo's rules for package selection:
    `--workspace`/`--all` (minus `--exclude`, globs too) wins over `-p`; then `-p`; then, at the
    workspace root, `default-members`; then the package cargo starts from; at a virtual root,
    every member. (`--exclude` without `--workspace` is an error in cargo: not modelled.)"""
    workspace = location.workspace
    if workspace_flag:
        excluded = set(match_packages(workspace, excludes))
        how = "--workspace" + (" minus --exclude" if excludes else "")
        return Selection([n for n in workspace.member_names if n not in excluded], how)
    if packages:
        return Selection(match_packages(workspace, packages), "-p")
    package = location.package
    at_root = location.manifest == workspace.root_manifest
    if at_root and workspace.default_members is not None:
        return Selection([p.name for p in workspace.default_members], "default-members")
    if package is not None:
        return Selection([package.name], "the package at " + _dirname(location.manifest))
    return Selection(workspace.member_names, "all members of the virtual workspace")


# ---- which members the caller is working on (for a refusal's fix) ------------------------------

def member_for_dir(workspace: Workspace, directory: str) -> Package | None:
    """The member whose directory contains `directory` (the innermost one, for nested members);
    None at a virtual root or outside every member."""
    directory = os.path.realpath(directory)
    best: Package | None = None
    for package in workspace.members:
        root = os.path.realpath(package.directory)
        if _within(directory, root) and (best is None or len(root) > len(os.path.realpath(best.directory))):
            best = package
    return best


def changed_paths(directory: str) -> list[str] | None:
    """Files with uncommitted changes (`git status`: staged, unstaged, untracked) in the git
    checkout around `directory`; None when it is not a git checkout or git cannot tell."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", "-C", directory, *args], capture_output=True, text=True, timeout=10,
                                    env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout if result.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    status = git("status", "--porcelain=v1", "-z", "--untracked-files=all") if top else None
    if top is None or status is None:
        return None
    paths, entries = [], status.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.append(_join(top.strip(), entry[3:]))
        if entry[0] in "RC":  # a rename or copy: the next entry is the old path
            i += 1
    return paths


def changed_members(workspace: Workspace, directory: str) -> list[Package]:
    """Members with uncommitted changes, in member order (each file counts for the innermost
    member containing it)."""
    found: list[Package] = []
    for path in changed_paths(directory) or []:
        package = member_for_dir(workspace, _dirname(path))
        if package is not None and package not in found:
            found.append(package)
    return [p for p in workspace.members if p in found]


def focus_members(location: Location) -> list[str]:
    """The packages the caller is working on: the member containing the working directory;
    otherwise the members with uncommitted changes (git); otherwise none (the caller must say)."""
    here = member_for_dir(location.workspace, location.cwd or _dirname(location.manifest))
    if here is not None:
        return [here.name]
    return [p.name for p in changed_members(location.workspace, location.workspace.root)]
