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
