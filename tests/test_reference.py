"""docs/reference.md is the schema's own account of every key: regenerated, it must not change.

When this fails after a schema change, run
``python -m llmtraffic.config.reference > docs/reference.md`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

from llmtraffic.config.reference import reference_markdown, sections, undocumented
from llmtraffic.config.scenario import Scenario

DOC = Path(__file__).resolve().parents[1] / "docs" / "reference.md"


def test_the_reference_page_matches_the_schema() -> None:
    assert DOC.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/reference.md is out of date: "
        "python -m llmtraffic.config.reference > docs/reference.md"
    )


def test_every_key_has_a_description() -> None:
    missing = undocumented()
    assert not missing, f"describe these keys (Field(description=...)): {sorted(missing)}"


def test_every_section_of_a_scenario_is_in_the_reference() -> None:
    text = reference_markdown()
    paths = {s.path for s in sections(Scenario)}
    assert {"run", "providers.<name>", "features.<name>.arrivals", "policies.<name>.retry"} <= paths
    for path in paths - {""}:
        assert f"## `{path}`" in text, path
