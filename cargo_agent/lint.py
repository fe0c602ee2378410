"""cargo-agent-lint: find commands in docs and scripts that run cargo directly, or that the
policy would refuse even through cargo-agent.

Rules (stable codes):
  CA001 bare-cargo          a compiling `cargo ...` command; use `cargo-agent ...`
  CA002 unscoped-test       `test`/`bench`/`nextest run` without -p/--manifest-path (unless the
                            nearest Cargo.toml above the file is a single-package root)
  CA003 all-targets         `--all-targets` (or the five target flags together)
  CA004 all-features-tests  `--all-features` with `--tests`

Scans Markdown fences (sh, bash, shell, console with `$ ` prompts, zsh, unlabelled) and
inline code spans, shell scripts, Makefiles, justfiles, Dockerfile RUN lines and CI YAML
`run:` steps. Suppress with `cargo-agent: allow [CODE...]` on the line or the line before.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cargo_agent import argv as argv_model
from cargo_agent.errors import CargoAgentError, UsageError
from cargo_agent.policy import SPELLED_OUT_ALL_TARGETS

RULES = {
    "CA001": "bare-cargo",
    "CA002": "unscoped-test",
    "CA003": "all-targets",
    "CA004": "all-features-tests",
}
SHELL_FENCES = {"", "sh", "bash", "shell", "console", "zsh", "shell-session", "terminal"}
SEPARATORS = re.compile(r"&&|\|\||[;|&()`]|\$\(")
WRAPPERS = {"sudo", "env", "time", "nice", "nohup", "exec", "command", "xargs", "timeout", "ionice", "stdbuf"}
SKIP_DIRS = {".git", "target", "node_modules", ".venv", "venv", "__pycache__", ".mypy_cache", ".ruff_cache",
             ".pytest_cache", ".hypothesis"}
ALLOW = re.compile(r"cargo-agent:\s*allow\b((?:\s+CA\d{3})*)")


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    col: int
    code: str
    message: str
    fixable: bool = False

    def render(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message}"


@dataclass(frozen=True)
class CommandLine:
    line: int  # 1-based line of the text
    offset: int  # column (0-based) in that line where `text` starts
    text: str


# ---- extracting shell command lines from each kind of file ---------------------------

def _joined(lines: list[tuple[int, int, str]]) -> Iterator[CommandLine]:
    """Join backslash continuations; report the first line's position."""
    pending: tuple[int, int, str] | None = None
    for number, offset, text in lines:
        if pending is not None:
            pending = (pending[0], pending[1], pending[2] + " " + text.strip())
        else:
            pending = (number, offset, text)
        if pending[2].rstrip().endswith("\\"):
            pending = (pending[0], pending[1], pending[2].rstrip()[:-1])
            continue
        yield CommandLine(*pending)
        pending = None
    if pending is not None:
        yield CommandLine(*pending)


def markdown_commands(text: str) -> Iterator[CommandLine]:
    fence: str | None = None
    language = ""
    block: list[tuple[int, int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        match = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", line)
        if fence is None and match:
            fence, language, block = match.group(2), match.group(3).lower(), []
            continue
        if fence is not None:
            if stripped.startswith(fence[:3]) and stripped.strip("`~") == "":
                if language in SHELL_FENCES:
                    yield from _joined(block)
                fence = None
                continue
            if language == "console" or (language in SHELL_FENCES and stripped.startswith("$ ")):
                prompt = re.match(r"^(\s*)[$#] ", line)
                if prompt:
                    block.append((number, prompt.end(), line[prompt.end():]))
                elif language != "console":
                    block.append((number, 0, line))
                elif block and block[-1][2].rstrip().endswith("\\"):
                    block.append((number, 0, line))
            else:
                block.append((number, 0, line))
            continue
        for span in re.finditer(r"(?<!`)`([^`\n]+)`(?!`)", line):
            yield CommandLine(number, span.start(1), span.group(1))


def shell_commands(text: str) -> Iterator[CommandLine]:
    yield from _joined([(n, 0, line) for n, line in enumerate(text.splitlines(), start=1)])


def makefile_commands(text: str) -> Iterator[CommandLine]:
    lines = [(n, 0, line) for n, line in enumerate(text.splitlines(), start=1)
             if line.startswith(("\t", "    ", "  ")) and line.strip()]
    for command in _joined(lines):
        body = command.text.lstrip()
        lead = len(command.text) - len(body)
        body_stripped = body.lstrip("@-+")
        yield CommandLine(command.line, command.offset + lead + len(body) - len(body_stripped), body_stripped)


def dockerfile_commands(text: str) -> Iterator[CommandLine]:
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        match = re.match(r"^\s*RUN\s+(?:--\S+\s+)*", line, re.I)
        if match:
            group = [(number + 1, match.end(), line[match.end():])]
            while group[-1][2].rstrip().endswith("\\") and number + 1 < len(lines):
                number += 1
                group.append((number + 1, 0, lines[number]))
            yield from _joined(group)
        number += 1


def yaml_commands(text: str) -> Iterator[CommandLine]:
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        match = re.match(r"^(\s*)(?:-\s+)?run:\s*(.*)$", line)
        if match:
            rest = match.group(2)
            if rest.strip() in ("|", ">", "|-", ">-", "|+", ">+"):
                indent = None
                block = []
                while number + 1 < len(lines):
                    nxt = lines[number + 1]
                    if nxt.strip() and indent is None:
                        indent = len(nxt) - len(nxt.lstrip())
                    if nxt.strip() and indent is not None and len(nxt) - len(nxt.lstrip()) < indent:
                        break
                    number += 1
                    block.append((number + 1, 0, nxt))
                yield from _joined(block)
            elif rest.strip():
                value = rest.strip()
                start = line.index(value)
                if value[:1] in "'\"" and value[-1:] == value[:1]:
                    value, start = value[1:-1], start + 1
                yield CommandLine(number + 1, start, value)
        number += 1


def kind_of(path: Path) -> str | None:
    name = path.name.lower()
    suffix = path.suffix.lower()
    if suffix in (".md", ".markdown"):
        return "markdown"
    if suffix in (".sh", ".bash", ".zsh"):
        return "shell"
    if name in ("makefile", "gnumakefile") or suffix == ".mk":
        return "makefile"
    if name in ("justfile", ".justfile") or suffix == ".just":
        return "makefile"
    if name == "dockerfile" or name.startswith("dockerfile.") or suffix == ".dockerfile":
        return "dockerfile"
    if suffix in (".yml", ".yaml"):
        return "yaml"
    if not suffix:
        try:
            with path.open("rb") as handle:
                head = handle.readline(200)
        except OSError:
            return None
        if re.match(rb"#!.*\b(sh|bash|zsh|dash|ksh)\b", head):
            return "shell"
    return None


EXTRACTORS = {"markdown": markdown_commands, "shell": shell_commands, "makefile": makefile_commands,
              "dockerfile": dockerfile_commands, "yaml": yaml_commands}


# ---- judging one command line ---------------------------------------------------------

def _strip_comment(text: str) -> str:
    match = re.search(r"(^|\s)#", text)
    return text[:match.start()] if match else text


def _segments(text: str) -> Iterator[tuple[int, str]]:
    start = 0
    for match in SEPARATORS.finditer(text):
        yield start, text[start:match.start()]
        start = match.end()
    yield start, text[start:]


def _words(segment: str) -> list[str]:
    try:
        return shlex.split(segment)
    except ValueError:
        return segment.split()


def _cargo_position(words: list[str]) -> int | None:
    """Index of the cargo/cargo-agent word after env assignments and wrappers, if any."""
    i = 0
    while i < len(words):
        word = words[i]
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):
            i += 1
        elif os.path.basename(word) in WRAPPERS:
            i += 1
            while i < len(words) and (words[i].startswith("-") or re.match(r"^[A-Za-z_]\w*=", words[i])
                                      or (os.path.basename(words[i - 1]) == "timeout" and words[i][:1].isdigit())):
                i += 1
        else:
            break
    if i < len(words) and os.path.basename(words[i]) in ("cargo", "cargo-agent"):
        return i
    return None


def single_package_root(path: Path) -> bool:
    from cargo_agent import workspace

    try:
        location = workspace.locate(path.parent.resolve(), None)
    except CargoAgentError:
        return False
    return location is not None and len(location.workspace.members) == 1


def judge(command: CommandLine, path: Path, single_root: bool) -> Iterator[Finding]:
    text = _strip_comment(command.text)
    for start, segment in _segments(text):
        words = _words(segment)
        at = _cargo_position(words)
        if at is None:
            continue
        program = os.path.basename(words[at])
        column = command.offset + start + segment.find(words[at]) + 1
        rest = words[at + 1:]
        if program == "cargo" and rest[:1] == ["agent"]:  # `cargo agent ...` is cargo-agent
            program, rest = "cargo-agent", rest[1:]
        try:
            parsed = argv_model.parse(rest)
            parsed = argv_model.expand_aliases(parsed, lambda name: None)
        except UsageError:
            continue
        if not parsed.compiles:
            continue
        options = parsed.parsed
        flags = {o.name for o in options.options}
        problems: list[Finding] = []
        all_targets = "--all-targets" in flags or all(f in flags for f in SPELLED_OUT_ALL_TARGETS)
        scoped = (options.has("--package") and not options.has("--workspace", "--all")) \
            or options.has("--manifest-path") or (single_root and not options.has("--workspace", "--all"))
        if parsed.resolved in ("test", "bench", "nextest run") and not scoped:
            problems.append(Finding(path, command.line, column, "CA002",
                                    f"unscoped-test: `{parsed.resolved}` without -p/--manifest-path compiles "
                                    "the whole workspace; add -p <package>"))
        if all_targets:
            problems.append(Finding(path, command.line, column, "CA003",
                                    "all-targets: compiles every target; name the ones you need (--lib, --tests)"))
        if "--all-features" in flags and ("--tests" in flags or all_targets):
            problems.append(Finding(path, command.line, column, "CA004",
                                    "all-features-tests: --all-features with --tests; name the features instead"))
        if program == "cargo":
            problems.insert(0, Finding(path, command.line, column, "CA001",
                                       f"bare-cargo: `cargo {parsed.subcommand}` runs without build slots or "
                                       f"limits; use `cargo-agent {parsed.subcommand}`",
                                       fixable=len(problems) == 0))
        yield from problems


def _allowed(lines: list[str], finding: Finding) -> bool:
    for number in (finding.line, finding.line - 1):
        if 1 <= number <= len(lines):
            match = ALLOW.search(lines[number - 1])
            if match:
                codes = match.group(1).split()
                if not codes or finding.code in codes:
                    return True
    return False


def lint_file(path: Path, kind: str | None = None) -> list[Finding]:
    kind = kind or kind_of(path)
    if kind is None:
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    lines = text.splitlines()
    single = single_package_root(path)
    findings = [f for command in EXTRACTORS[kind](text) for f in judge(command, path, single)]
    return [f for f in findings if not _allowed(lines, f)]


def fix_file(path: Path, findings: list[Finding]) -> int:
    """Rewrite `cargo` to `cargo-agent` where that is all that is wrong. Returns fixes made."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    fixable = sorted({(f.line, f.col) for f in findings if f.fixable}, reverse=True)
    blocked = {(f.line, f.col) for f in findings if f.code != "CA001"}
    done = 0
    for line, col in fixable:
        if (line, col) in blocked:
            continue
        text = lines[line - 1]
        start = col - 1
        if text[start:start + 5] == "cargo" and text[start + 5:start + 6] in (" ", "\t", "\n", ""):
            lines[line - 1] = text[:start] + "cargo-agent" + text[start + 5:]
            done += 1
    if done:
        path.write_text("".join(lines), encoding="utf-8")
    return done


def iter_files(paths: Sequence[str]) -> Iterator[Path]:
    """Every file named, and every file under the directories named."""
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            yield path
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
                for name in sorted(files):
                    yield Path(root) / name
        else:
            raise UsageError(f"no such file or directory: {raw}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    fix = False
    paths: list[str] = []
    for arg in args:
        if arg == "--fix":
            fix = True
        elif arg in ("-h", "--help"):
            print("usage: cargo-agent-lint [--fix] [PATH...]\n\n" + (__doc__ or "").strip())
            return 0
        elif arg.startswith("-") and arg != "-":
            sys.stderr.write(f"error: unknown option '{arg}' (accepted: --fix, --help)\n")
            return 2
        else:
            paths.append(arg)
    try:
        findings: list[Finding] = []
        for path in iter_files(paths or ["."]):
            kind = kind_of(path)  # by name and shebang, named on the command line or not
            found = lint_file(path, kind)
            if fix and found:
                fix_file(path, found)
                found = lint_file(path, kind)
            findings += found
    except UsageError as err:
        sys.stderr.write(err.render() + "\n")
        return 2
    for finding in findings:
        print(finding.render())
    return 1 if findings else 0
