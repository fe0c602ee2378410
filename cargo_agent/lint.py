"""cargo-agent-lint: find commands in docs and scripts that run cargo directly, or that the
policy would refuse even through cargo-agent.

Rules (stable codes):
  CA001 bare-cargo          a compiling `cargo ...` command; use `cargo-agent ...`
  CA002 unscoped-test       the gate's rule unscoped-test: a test run selecting more than
                            max_packages packages of the workspace the file lives in
  CA003 all-targets         the gate's rule all-targets
  CA004 all-features-tests  the gate's rule all-features-tests
CA002-CA004 are the policy's own rules (cargo_agent/policy.py), judged as the gate judges
them from the workspace root with the repo's aliases and metadata; with no Cargo.toml around,
a test run without a `-p` (or with a `-p` glob, or `--workspace`) counts as unscoped.

Scans Markdown fences (sh, bash, shell, console with `$ ` prompts, zsh, unlabelled) and
inline code spans, shell scripts, Makefiles, justfiles, Dockerfile RUN lines and CI YAML
`run:` steps. Commands are found by shell grammar: after `;`, `&&`, `|`, reserved words
(`if`, `then`, `do`, `!`, `{` ...), assignments, redirections, command-running wrappers
(`sudo -u x`, `env -u X`, `nice -n 10`, `timeout 60`, `xargs -n1`, `sh -c '...'` ...), inside
`$(...)` and backticks, and through `"$CARGO"`. `--fix` rewrites only a plain `cargo` word
whose only finding is CA001, never under a wrapper that changes user (sudo, doas, su ...).
Suppress with `cargo-agent: allow [CODE...]` on the line or the line before.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cargo_agent import argv as argv_model
from cargo_agent import cargoconfig, config, policy, workspace
from cargo_agent.errors import CargoAgentError, UsageError

# The codes: CA001 is the lint's own; the others are the policy's rules (policy.RULES).
RULES = {"CA001": "bare-cargo", **{rule.code: rule.name for rule in policy.RULES}}
SHELL_FENCES = {"", "sh", "bash", "shell", "console", "zsh", "shell-session", "terminal"}
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
    make: bool = False  # a Makefile recipe: `$(VAR)` is a make variable, `$$` the shell's `$`


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
                elif block and block[-1][2].rstrip().endswith("\\"):  # console: output, or a command continued
                    block.append((number, 0, line))
            else:
                block.append((number, 0, line))
            continue
        for span in re.finditer(r"(?<!`)`([^`\n]+)`(?!`)", line):
            yield CommandLine(number, span.start(1), span.group(1))


def shell_commands(text: str) -> Iterator[CommandLine]:
    yield from _joined([(n, 0, line) for n, line in enumerate(text.splitlines(), start=1)])


def makefile_commands(text: str, make: bool = True) -> Iterator[CommandLine]:
    lines = [(n, 0, line) for n, line in enumerate(text.splitlines(), start=1)
             if line.startswith(("\t", "    ", "  ")) and line.strip()]
    for command in _joined(lines):
        body = command.text.lstrip()
        lead = len(command.text) - len(body)
        body_stripped = body.lstrip("@-+")
        yield CommandLine(command.line, command.offset + lead + len(body) - len(body_stripped), body_stripped,
                          make)


def justfile_commands(text: str) -> Iterator[CommandLine]:
    """Recipe lines like a Makefile's, but run by a plain shell: `$(...)` is a command."""
    return makefile_commands(text, make=False)


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
        return "justfile"
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
              "justfile": justfile_commands,
              "dockerfile": dockerfile_commands, "yaml": yaml_commands}


# ---- shell grammar ----------------------------------------------------------------------

class Word:
    __slots__ = ("literal", "start", "text")

    def __init__(self, text: str, start: int, literal: bool) -> None:
        self.text = text  # quotes and escapes removed; expansions kept as written
        self.start = start  # offset of its first character in the scanned text
        self.literal = literal  # written exactly as `text`: no quotes, escapes or expansions

    def __repr__(self) -> str:
        return f"Word({self.text!r}, {self.start})"


class _Scanner:
    """Splits shell text into simple commands (lists of words) the way a POSIX shell tokenizes
    it: quotes, escapes, comments, control operators, redirections (dropped), and commands
    nested in `$(...)`, backticks and `<(...)`, which are simple commands of their own.
    In Makefile recipes `$(VAR)`/`${VAR}` are make variables and `$$` is a shell `$`."""

    MAX_DEPTH = 64  # nested `$(`, backticks, `<(`: deeper ones are read as plain text

    def __init__(self, text: str, make: bool) -> None:
        self.text = text
        self.make = make
        self.commands: list[list[Word]] = []
        self.depth = 0

    def scan(self, i: int, stop: str | None) -> int:
        if self.depth >= self.MAX_DEPTH:
            end = self.text.find(stop, i) if stop is not None else -1
            return len(self.text) if end < 0 else end + 1
        self.depth += 1
        try:
            return self._scan(i, stop)
        finally:
            self.depth -= 1

    def _scan(self, i: int, stop: str | None) -> int:
        text, n = self.text, len(self.text)
        words: list[Word] = []
        chars: list[str] = []
        start, literal, redirect_target = -1, True, False

        def end_word() -> None:
            nonlocal chars, start, literal, redirect_target
            if start >= 0:
                if redirect_target:
                    redirect_target = False
                else:
                    words.append(Word("".join(chars), start, literal))
            chars, start, literal = [], -1, True

        def end_command() -> None:
            end_word()
            if words:
                self.commands.append(list(words))
                words.clear()

        while i < n:
            c = text[i]
            if stop is not None and c == stop:
                end_command()
                return i + 1
            if start < 0 and c not in " \t\n#;&|()<>":
                start = i
            if c in " \t":
                end_word()
                i += 1
            elif c == "\n":
                end_command()
                i += 1
            elif c == "#" and start < 0:
                while i < n and text[i] != "\n":
                    i += 1
            elif c == "\\":
                if text[i + 1:i + 2] == "\n":
                    i += 2
                    continue
                chars.append(text[i + 1:i + 2])
                literal = False
                i += 2
            elif c == "'":
                close = text.find("'", i + 1)
                close = n if close < 0 else close
                chars.append(text[i + 1:close])
                literal = False
                i = close + 1
            elif c == '"':
                literal = False
                i = self._double(i + 1, chars)
            elif c == "$":
                literal = False
                i = self._dollar(i, chars)
            elif c == "`":
                literal = False
                i = self.scan(i + 1, "`")
                chars.append("`...`")
            elif c in "<>" and text[i + 1:i + 2] == "(":  # process substitution
                if start < 0:
                    start = i
                literal = False
                i = self.scan(i + 2, ")")
                chars.append("<(...)")
            elif c in "<>" or (c == "&" and text[i + 1:i + 2] == ">"):
                if start >= 0 and "".join(chars).isdigit():  # `2>`: the fd number is not a word
                    chars, start, literal = [], -1, True
                end_word()
                i += 1
                while i < n and text[i] in "<>&|-":
                    i += 1
                redirect_target = text[i - 1] != "-"  # `2>&-` closes the fd: no target follows
            elif c in ";&|":
                end_command()
                while i < n and text[i] in ";&|":
                    i += 1
            elif c == "(" and start >= 0 and chars and chars[-1].endswith("="):  # `a=(x y)`: an array
                close = text.find(")", i)
                close = n if close < 0 else close
                chars.append(text[i:close + 1])
                i = close + 1
            elif c in "()":
                end_command()
                i += 1
            else:
                chars.append(c)
                i += 1
        end_command()
        return n

    def _double(self, i: int, chars: list[str]) -> int:
        """Inside double quotes from `i`; the index after the closing quote."""
        text, n = self.text, len(self.text)
        while i < n and text[i] != '"':
            c = text[i]
            if c == "\\" and text[i + 1:i + 2] in ('"', "\\", "$", "`", "\n"):
                chars.append(text[i + 1])
                i += 2
            elif c == "$":
                i = self._dollar(i, chars)
            elif c == "`":
                i = self.scan(i + 1, "`")
                chars.append("`...`")
            else:
                chars.append(c)
                i += 1
        return i + 1

    def _dollar(self, i: int, chars: list[str]) -> int:
        text = self.text
        if self.make:
            if text[i + 1:i + 2] == "$":
                i += 1  # `$$` is the shell's `$`
            elif text[i + 1:i + 2] in ("(", "{"):
                close = _matching(text, i + 1)
                chars.append(text[i:close + 1])
                return close + 1
        if text[i + 1:i + 3] == "((":  # arithmetic
            close = _matching(text, i + 1)
            chars.append(text[i:close + 1])
            return close + 1
        if text[i + 1:i + 2] == "(":
            end = self.scan(i + 2, ")")
            chars.append("$(...)")
            return end
        if text[i + 1:i + 2] == "{":
            close = _matching(text, i + 1)
            chars.append(text[i:close + 1])
            return close + 1
        chars.append("$")
        return i + 1


def _matching(text: str, i: int) -> int:
    """Index of the bracket closing the one at `i` (or the last index)."""
    pairs = {"(": ")", "{": "}"}
    opening, closing = text[i], pairs[text[i]]
    depth = 0
    for j in range(i, len(text)):
        if text[j] == opening:
            depth += 1
        elif text[j] == closing:
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


def simple_commands(text: str, make: bool = False) -> list[list[Word]]:
    scanner = _Scanner(text, make)
    scanner.scan(0, None)
    return scanner.commands


# Words after which the next word is again in command position.
RESERVED = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "esac",
                      "coproc"})
# Clauses that are not commands: `for x in ...`, `case x in`, `[[ ... ]]`.
NOT_COMMANDS = frozenset({"for", "select", "case", "in", "[[", "]]", ";;"})


class Wrapper:
    """A program that runs a command given as its arguments, after its own options."""

    __slots__ = (
        "inert",
        "long_values",
        "positionals",
        "privileged",
        "short_values",
        "string_options",
        "subcommand",
    )

    def __init__(self, short_values: str = "", long_values: tuple[str, ...] = (), positionals: int = 0,
                 privileged: bool = False, string_options: tuple[str, ...] = (), inert: tuple[str, ...] = (),
                 subcommand: str = "") -> None:
        self.short_values = short_values  # short options that take a value
        self.long_values = long_values  # long options that take a value
        self.positionals = positionals  # arguments before the command (`timeout 60 ...`)
        self.privileged = privileged  # runs it as someone else, with another PATH: no --fix
        self.string_options = string_options  # options whose value is a whole command line
        self.inert = inert  # options after which nothing runs (`command -v`)
        self.subcommand = subcommand  # the word that must come first (`rustup run`)


_SHELL = Wrapper("o", ("rcfile", "init-file"), string_options=("-c",))
WRAPPERS: dict[str, Wrapper] = {
    "sudo": Wrapper("ugCDhprtTU", ("user", "group", "close-from", "chdir", "host", "prompt", "role", "type",
                                   "command-timeout", "other-user"), privileged=True),
    "doas": Wrapper("uC", privileged=True),
    "runuser": Wrapper("ugG", ("user", "group", "supp-group"), privileged=True, string_options=("-c", "--command")),
    "su": Wrapper("gGs", ("group", "supp-group", "shell"), privileged=True, string_options=("-c", "--command")),
    "chroot": Wrapper("", ("userspec", "groups"), 1, privileged=True),
    "env": Wrapper("uC", ("unset", "chdir"), string_options=("-S", "--split-string")),
    "nice": Wrapper("n", ("adjustment",)),
    "nohup": Wrapper(),
    "time": Wrapper("fo", ("format", "output")),
    "timeout": Wrapper("sk", ("signal", "kill-after"), 1),
    "gtimeout": Wrapper("sk", ("signal", "kill-after"), 1),
    "ionice": Wrapper("cnp", ("class", "classdata", "pid")),
    "stdbuf": Wrapper("ioe", ("input", "output", "error")),
    "xargs": Wrapper("nIPLdaEs", ("max-args", "replace", "max-procs", "max-lines", "delimiter", "arg-file", "eof",
                                  "max-chars", "process-slot-var")),
    "exec": Wrapper("a"),
    "command": Wrapper(inert=("-v", "-V")),
    "builtin": Wrapper(),
    "chrt": Wrapper("TPD", ("sched-runtime", "sched-period", "sched-deadline"), 1),
    "taskset": Wrapper("", ("cpu-list",), 1),
    "setsid": Wrapper(),
    "flock": Wrapper("wE", ("timeout", "wait", "conflict-exit-code"), 1, string_options=("-c", "--command")),
    "unbuffer": Wrapper(),
    "numactl": Wrapper("CNmpiP", ("physcpubind", "cpunodebind", "membind", "preferred", "interleave",
                                  "preferred-many")),
    "prlimit": Wrapper("p", ("pid",)),
    "cgexec": Wrapper("g"),
    "systemd-run": Wrapper("pEMuH", ("unit", "property", "slice", "uid", "gid", "nice", "working-directory",
                                     "setenv", "description", "machine", "host", "on-calendar")),
    "watch": Wrapper("n", ("interval",)),
    "caffeinate": Wrapper("tw"),
    "faketime": Wrapper("", (), 1),
    "cpulimit": Wrapper("lpe", ("limit", "pid", "exe")),
    "eatmydata": Wrapper(),
    "chronic": Wrapper(),
    "catchsegv": Wrapper(),
    "strace": Wrapper("oepsuEabIOSX", ("output",)),
    "unshare": Wrapper("SGRw", ("setuid", "setgid", "root", "wd")),
    "script": Wrapper("", (), string_options=("-c", "--command")),
    "nix-shell": Wrapper("pAI", ("packages", "attr"), string_options=("--run", "--command")),
    "rustup": Wrapper("", (), 1, subcommand="run"),
    "sh": _SHELL, "bash": _SHELL, "dash": _SHELL, "zsh": _SHELL, "ksh": _SHELL,
}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
_CARGO_VARIABLE = re.compile(r"^\$(CARGO|\{CARGO(:?[-=+?][^}]*)?\}|\(CARGO\))$")


class Invocation:
    """A cargo or cargo-agent command found in shell text."""

    __slots__ = ("args", "fixable", "nested", "program", "word")

    def __init__(self, program: str, word: Word, args: list[str], fixable: bool, nested: bool) -> None:
        self.program = program  # "cargo" or "cargo-agent"
        self.word = word
        self.args = args
        self.fixable = fixable  # `--fix` may rewrite the word to cargo-agent
        self.nested = nested  # found in a command string (`sh -c '...'`): the column is approximate


def _program_name(word: Word) -> str | None:
    base = os.path.basename(word.text)
    if base in ("cargo", "cargo-agent"):
        return base
    if _CARGO_VARIABLE.match(word.text):
        return "cargo"
    return None


def _skip_options(words: list[Word], i: int, wrapper: Wrapper) -> tuple[int, Word | None, bool]:
    """Past a wrapper's options from words[i]: (index of the command, the word holding a whole
    command line or None, whether nothing runs at all)."""
    if wrapper.subcommand:
        if i >= len(words) or words[i].text != wrapper.subcommand:
            return len(words), None, True
        i += 1
    while i < len(words):
        text = words[i].text
        if text == "--":
            return i + 1 + wrapper.positionals, None, False
        if text in wrapper.inert:
            return i, None, True
        if text.startswith("--") and len(text) > 2:
            name, eq, _ = text.partition("=")
            if name in wrapper.string_options:
                if eq:
                    return len(words), Word(text.split("=", 1)[1], words[i].start, False), False
                return len(words), (words[i + 1] if i + 1 < len(words) else None), False
            i += 1 if eq or name[2:] not in wrapper.long_values else 2
        elif text.startswith("-"):  # a lone `-` too: `env -` empties the environment, `su -` logs in
            letters = text[1:]
            if any(f"-{letter}" in wrapper.string_options for letter in letters):
                rest = [w for w in words[i + 1:] if not w.text.startswith("-")]
                return len(words), (rest[0] if rest else None), False
            i += 1
            for pos, letter in enumerate(letters):
                if letter in wrapper.short_values:
                    if pos == len(letters) - 1:
                        i += 1  # the value is the next word
                    break
        elif _ASSIGNMENT.match(text):
            i += 1
        else:
            i += wrapper.positionals
            if i < len(words) and words[i].text in wrapper.string_options:  # `flock FILE -c CMD`
                return len(words), (words[i + 1] if i + 1 < len(words) else None), False
            return i, None, False
    return i, None, False


def invocations(text: str, make: bool = False, nested: int = 0, privileged: bool = False) -> Iterator[Invocation]:
    """Every cargo / cargo-agent command in shell `text`, wherever it stands in command position:
    after assignments and redirections, reserved words, and command-running wrappers. `nested`
    counts the `sh -c '...'` strings around `text` (bounded: a hostile file cannot recurse deep)."""
    if nested > 8:
        return
    for words in simple_commands(text, make):
        i, under_privilege = 0, privileged
        while i < len(words):
            word = words[i].text
            if word in RESERVED:
                i += 1
            elif word in NOT_COMMANDS:
                i = len(words)
            elif word == "function":
                i += 2
            elif _ASSIGNMENT.match(word):
                i += 1
            elif os.path.basename(word) in WRAPPERS:
                wrapper = WRAPPERS[os.path.basename(word)]
                under_privilege = under_privilege or wrapper.privileged
                i, holder, inert = _skip_options(words, i + 1, wrapper)
                if inert:
                    i = len(words)
                elif holder is not None:
                    for found in invocations(holder.text, False, nested + 1, under_privilege):
                        found.word = Word(found.word.text, holder.start, False)
                        yield found
            else:
                break
        if i >= len(words):
            continue
        program = _program_name(words[i])
        if program is None:
            continue
        fixable = words[i].literal and words[i].text == "cargo" and not under_privilege and not nested
        yield Invocation(program, words[i], [w.text for w in words[i + 1:]], fixable, bool(nested))


# ---- judging one command line ---------------------------------------------------------

class Context:
    """What a file's commands are judged against, read once per file and only when needed:
    the workspace the file lives in (commands in docs run from its root), the repo's cargo
    aliases (its `.cargo/config.toml` files, not this machine's), and the settings the gate
    would use there with no environment: defaults and the repo's metadata."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ready = False
        self.root = path.parent
        self.location: workspace.Location | None = None
        self.config: config.Config = config.merge([])
        self.cargo_config: cargoconfig.CargoConfig | None = None

    def _load(self) -> None:
        if self._ready:
            return
        self._ready = True
        try:
            found = workspace.locate(self.path.parent.resolve(), None)
        except CargoAgentError:
            found = None
        if found is not None:
            self.root = Path(found.workspace.root)
            self.location = workspace.locate(self.root, None)
            try:
                self.config = config.merge([config.repo_layer(found.workspace.root_data,
                                                              found.workspace.root_manifest)])
            except CargoAgentError:
                pass
        try:
            self.cargo_config = cargoconfig.load(self.root, {}, home=False)
        except CargoAgentError:
            self.cargo_config = None

    def lookup(self, name: str) -> list[str] | None:
        self._load()
        return self.cargo_config.alias(name, {}) if self.cargo_config is not None else None

    def locate(self, command: argv_model.CargoCommand) -> workspace.Location | None:
        self._load()
        cwd = self.root / command.directory if command.directory else self.root
        manifest = command.manifest_path
        if manifest is None and not command.directory:
            return self.location
        for base in (cwd, self.path.parent):
            try:
                location = workspace.locate(base.resolve(), manifest)
            except CargoAgentError:
                continue
            if location is not None:
                return location
        return None


def judge(command: CommandLine, path: Path, context: Context) -> Iterator[Finding]:
    for found in invocations(command.text, command.make):
        column = command.offset + found.word.start + 1
        program, rest = found.program, found.args
        if program == "cargo" and rest[:1] == ["agent"]:  # `cargo agent ...` is cargo-agent
            program, rest = "cargo-agent", rest[1:]
        elif program == "cargo" and rest[:1] and rest[0].startswith("+") and rest[1:2] == ["agent"]:
            program, rest = "cargo-agent", [rest[0], *rest[2:]]  # `cargo +nightly agent ...` too
        try:
            parsed = argv_model.parse(rest)
            parsed = argv_model.expand_aliases(parsed, context.lookup)
        except UsageError:
            continue
        if not parsed.compiles:
            continue
        problems = [Finding(path, command.line, column, v.rule.code, f"{v.rule.name}: {v.detail}; {v.rule.fix}")
                    for v in policy.check(parsed, context.locate(parsed), context.config, guess=True)
                    if not context.config[v.rule.setting]]
        if program == "cargo":
            problems.insert(0, Finding(path, command.line, column, "CA001",
                                       f"bare-cargo: `{found.word.text} {parsed.subcommand}` runs without build "
                                       f"slots or limits; use `cargo-agent {parsed.subcommand}`",
                                       fixable=found.fixable and not problems))
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
    context = Context(path)
    findings = [f for command in EXTRACTORS[kind](text) for f in judge(command, path, context)]
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
                    if os.path.isfile(os.path.join(root, name)):  # not a FIFO or a device: reading one blocks
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
