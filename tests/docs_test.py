"""Generated docs match the tables in code."""

from __future__ import annotations

import pytest

from cargo_agent import docs


@pytest.mark.parametrize("name", sorted(docs.GENERATED))
def test_generated_doc_is_up_to_date(name: str) -> None:
    assert (docs.DOCS / name).read_text() == docs.GENERATED[name](), \
        f"docs/{name} is stale: run python -m cargo_agent.docs"


def test_every_setting_env_var_is_documented() -> None:
    from cargo_agent.config import SETTINGS

    text = (docs.DOCS / "configuration.md").read_text()
    assert all(f"`{s.env}`" in text for s in SETTINGS)


ERROR_TYPES = {"UsageError", "ConfigError", "LockDirError", "RefusedError", "CargoNotFoundError",
               "SlotWaitTimeoutError", "CargoAgentError"}


def _template(node: object) -> str | None:
    """A message literal with its placeholders as `…`; None when it is not a literal."""
    import ast

    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _template(node.left)  # `f"... " + rest`: the literal head is what a user sees first
    return None


def _messages() -> list[str]:
    import ast

    found = []
    for path in sorted(docs.DOCS.parent.joinpath("cargo_agent").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ERROR_TYPES:
                text = _template(node.args[0]) if node.args else None
                if text:
                    found.append(text.strip())
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "write" \
                    and node.args and (text := _template(node.args[0])) and text.startswith(("error: ", "warning: ")):
                found.append(text.split(": ", 1)[1].strip())
    return found


def test_every_error_message_is_in_the_errors_doc() -> None:
    text = (docs.DOCS / "errors.md").read_text().replace("\\`", "`")
    messages = _messages()
    assert len(messages) > 40
    missing = []
    for message in messages:
        head = message.split("\n")[0]
        # A message may end in a detail the table shows as `…`; compare up to its last placeholder-free part.
        probe = head if head in text else head.rsplit("…", 1)[0] + "…"
        if probe not in text:
            missing.append(head)
    assert not missing, "add these to docs/errors.md: " + "; ".join(missing)


def _readme_commands() -> list[str]:
    text = (docs.DOCS.parent / "README.md").read_text()
    try_it = text.split("## Try it", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0].strip() for block in try_it.split("```sh\n")[1:]]


def test_readme_try_it_is_two_one_line_commands_in_a_venv_and_ci_runs_the_second_first() -> None:
    commands = _readme_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands), commands
    assert all(c.startswith("python3 -m venv ") for c in commands)  # PEP 668 Pythons refuse a bare pip
    ci = [line for line in (docs.DOCS.parent / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci[0] == commands[1]


def test_no_doc_tells_to_install_an_unpublished_package() -> None:
    repo = docs.DOCS.parent
    paths = [repo / "README.md", *sorted(docs.DOCS.glob("*.md")), repo / "cargo_agent" / "shim.sh"]
    for path in paths:
        assert "pip install cargo-agent" not in path.read_text(), path
