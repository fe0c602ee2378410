"""The mutation check's own mutator and runner (bench/mutation.py), on a tiny module."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
from conftest import write_tree

from bench import mutation

TINY = textwrap.dedent('''\
    """A tiny module: "docstrings" are not mutated."""

    from __future__ import annotations

    LIMIT = 3


    def allowed(n: int, name: str = "guest") -> bool:
        """Whether `n` is under the limit."""
        if not name:
            return False
        return n < LIMIT and name != "root"


    def sign(n: int) -> str:
        if n > 0:
            result = "positive"
        elif n == 0:
            result = "zero"
        else:
            result = "negative"
        return result
''')
TARGET = mutation.Target("tiny.py", ("tiny_test.py",))


def mutants_of(source: str = TINY) -> list[mutation.Mutant]:
    return mutation.generate("tiny", TARGET, source)


def one(mutants: list[mutation.Mutant], line_text: str, description: str) -> mutation.Mutant:
    found = [m for m in mutants if m.line_text == line_text and m.description == description]
    assert len(found) == 1, [(m.line_text, m.description) for m in mutants]
    return found[0]


def test_comparison_flip_is_generated_and_applied_in_place() -> None:
    mutant = one(mutants_of(), 'return n < LIMIT and name != "root"', "`<` -> `<=`")
    assert (mutant.operator, mutant.line, mutant.col) == ("cmp", 12, 11)
    assert mutant.where == "tiny.py:12:12"
    mutated = mutant.apply(TINY)
    assert mutated.splitlines()[11] == '    return (n <= LIMIT) and name != "root"'
    assert [a for a, b in zip(TINY.splitlines(), mutated.splitlines(), strict=True) if a != b] == [
        '    return n < LIMIT and name != "root"']


@pytest.mark.parametrize(("line_text", "description", "expected"), [
    ('return n < LIMIT and name != "root"', "`and` -> `or`", '    return (n < LIMIT or name != \'root\')'),
    ('return n < LIMIT and name != "root"', "`!=` -> `==`", '    return n < LIMIT and (name == \'root\')'),
    ('return n < LIMIT and name != "root"', "`'root'` -> `''`", '    return n < LIMIT and name != (\'\')'),
    ("if not name:", "drop `not` in `not name`", "    if (name):"),
    ("return False", "`False` -> `True`", "        return (True)"),
    ("LIMIT = 3", "`3` -> `4`", "LIMIT = (4)"),
    ("LIMIT = 3", "`3` -> `2`", "LIMIT = (2)"),
    ("if n > 0:", "`0` -> `-1`", "    if n > (-1):"),
    ("return False", "delete `return False`", "        pass"),
    ("return result", "`return result` -> `return None`", "    return None"),
    ("elif n == 0:", "delete `if n == 0:`", "    else: pass"),
    ('def allowed(n: int, name: str = "guest") -> bool:', "`'guest'` -> `''`",
     "def allowed(n: int, name: str = ('')) -> bool:"),
])
def test_each_operator_changes_only_its_node(line_text: str, description: str, expected: str) -> None:
    mutant = one(mutants_of(), line_text, description)
    changed = [b for a, b in zip(TINY.splitlines(), mutant.apply(TINY).splitlines(), strict=False) if a != b]
    assert changed[0] == expected


def test_docstrings_annotations_imports_and_a_functions_last_return_are_not_mutated() -> None:
    mutants = mutants_of()
    assert not [m for m in mutants if "docstring" in m.description or "Whether" in m.description]
    assert not [m for m in mutants if "'int'" in m.description or "'bool'" in m.description]
    assert not [m for m in mutants if "__future__" in m.line_text]
    assert not [m for m in mutants if m.description in ("delete `return result`",
                                                         "delete `return n < LIMIT and name != 'root'`")]


def test_every_mutant_parses_and_differs_from_the_original() -> None:
    original = ast.dump(ast.parse(TINY))
    for mutant in mutants_of():
        assert ast.dump(ast.parse(mutant.apply(TINY))) != original, mutant


def test_ids_are_unique_and_survive_an_unrelated_edit_above() -> None:
    before = mutants_of()
    assert len({m.id for m in before}) == len(before)
    assert all(m.id.startswith("tiny:") for m in before)
    edited = TINY.replace("LIMIT = 3\n", "LIMIT = 3\nOTHER = 'x'\n\n")
    after = {(m.line_text, m.description): m.id for m in mutants_of(edited)}
    assert all(after[(m.line_text, m.description)] == m.id for m in before)
    assert [m.id for m in mutants_of()] == [m.id for m in before]


def test_ids_change_when_the_mutated_line_changes() -> None:
    old = one(mutants_of(), "LIMIT = 3", "`3` -> `4`")
    new = one(mutants_of(TINY.replace("LIMIT = 3", "LIMIT = 3  # noqa")), "LIMIT = 3  # noqa", "`3` -> `4`")
    assert old.id != new.id


def test_only_limits_mutants_to_the_named_functions() -> None:
    mutants = mutation.generate("tiny", mutation.Target("tiny.py", (), only=("sign",)), TINY)
    assert mutants and all(m.line > 13 for m in mutants)


def test_allowlist_entries_match_by_id_or_by_line_and_mutation(tmp_path: Path) -> None:
    mutants = mutants_of()
    by_id = one(mutants, "LIMIT = 3", "`3` -> `4`")
    allowlist = tmp_path / "equivalent.toml"
    allowlist.write_text(f'[[equivalent]]\nid = "{by_id.id}"\nreason = "r1"\n\n'
                         '[[equivalent]]\nmodule = "tiny"\nline = "if not name:"\nreason = "r2"\n\n'
                         '[[equivalent]]\nmodule = "tiny"\nline = "return result"\nmutation = "None"\nreason = "r3"\n')
    entries = mutation.read_allowlist(allowlist)
    matched = {m.id: e.reason for m in mutants if (e := mutation.equivalent_of(m, entries))}
    assert matched[by_id.id] == "r1"
    assert {m.description for m in mutants if matched.get(m.id) == "r2"} == {
        "drop `not` in `not name`", "delete `if not name:`"}
    assert [m.line_text for m in mutants if matched.get(m.id) == "r3"] == ["return result"]
    assert len(matched) == 4


def test_allowlist_entry_without_a_reason_is_refused(tmp_path: Path) -> None:
    allowlist = tmp_path / "equivalent.toml"
    allowlist.write_text('[[equivalent]]\nid = "tiny:00000000"\n')
    with pytest.raises(SystemExit, match="needs a reason"):
        mutation.read_allowlist(allowlist)


def test_sample_is_fixed_by_the_seed() -> None:
    mutants = mutants_of()
    first = mutation.select(mutants, 5, 18, "tiny")
    assert first == mutation.select(mutants, 5, 18, "tiny") and len(first) == 5
    assert [m.start for m in first] == sorted(m.start for m in first)
    assert mutation.select(mutants, None, 18, "tiny") == mutants


@pytest.mark.timeout(180)
def test_runner_kills_survives_and_times_out_in_a_copy_never_the_tree(tmp_path: Path) -> None:
    source = TINY + textwrap.dedent('''

        def countdown(n: int) -> int:
            steps = 0
            while n > 0:
                n -= 1
                steps += 1
            return steps
    ''')
    repo = write_tree(tmp_path / "repo", {
        "tiny.py": source,
        # The check runs in a subprocess, as cargo-agent's tests do: it must load the mutant too.
        "tiny_test.py": """
            import subprocess, sys

            def test_limit_in_a_subprocess():
                code = "import tiny; assert tiny.allowed(2) and not tiny.allowed(3)"
                assert subprocess.run([sys.executable, "-c", code]).returncode == 0

            def test_countdown():
                assert 0 <= __import__("tiny").countdown(2)
        """,
    })
    mutants = mutants_of(source)
    kill = one(mutants, 'return n < LIMIT and name != "root"', "`<` -> `<=`")
    survive = one(mutants, 'result = "positive"', "`'positive'` -> `''`")  # sign() is not tested
    loop = one(mutants, "n -= 1", "delete `n -= 1`")
    runner = mutation.Runner(repo, jobs=1)
    try:
        outcomes = {o.mutant.id: o for o in (runner.run(m, TARGET, timeout=5) for m in (kill, survive, loop))}
    finally:
        runner.close()
    assert outcomes[kill.id].status == "killed" and "test_limit_in_a_subprocess" in outcomes[kill.id].detail
    assert outcomes[survive.id].status == "survived"
    assert outcomes[loop.id].status == "timeout"
    assert (repo / "tiny.py").read_text() == source
    assert not runner.work.exists()


@pytest.mark.timeout(120)
def test_a_mutant_that_eats_memory_is_killed_before_the_host_runs_out(tmp_path: Path) -> None:
    source = TINY + textwrap.dedent('''

        def collect(n: int) -> list[int]:
            found = []
            while n > 0:
                found.append(n)
                n -= 1
            return found
    ''')
    repo = write_tree(tmp_path / "repo", {
        "tiny.py": source,
        "tiny_test.py": """
            def test_collect():
                assert __import__("tiny").collect(3) == [3, 2, 1]
        """,
    })
    grow = one(mutants_of(source), "n -= 1", "delete `n -= 1`")  # appends for ever
    runner = mutation.Runner(repo, jobs=1, memory_cap=200 << 20)
    try:
        outcome = runner.run(grow, TARGET, timeout=60)
    finally:
        runner.close()
    assert outcome.status == "killed" and outcome.detail == "its tests held more than 200 MiB"
    assert outcome.seconds < 60
