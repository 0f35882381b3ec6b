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


def test_the_experiment_tables_are_in_the_reference_with_pointers() -> None:
    """An experiment file's [experiment], [sweep] and [[check]] are listed with their keys,
    and point to docs/experiments.md and docs/ci.md, whose sections the links name."""
    import re

    from llmtraffic.checks.spec import Check
    from llmtraffic.experiment.spec import ExperimentSettings

    text = reference_markdown()
    docs = DOC.parent
    for title, model in (("[experiment]", ExperimentSettings), ("[[check]]", Check)):
        section = text[text.index(f"## `{title}`") :].split("\n## ", 1)[0]
        for key in model.model_fields:
            assert f"| `{key}` |" in section, (title, key)
    assert "## `[sweep]`" in text
    links = re.findall(r"\]\((\w+\.md)#([\w-]+)\)", text)
    assert {page for page, _ in links} == {"experiments.md", "ci.md"}
    for page, anchor in links:
        # GitHub's anchor of a heading: lower case, backticks and brackets dropped, dashes.
        headings = re.findall(r"^#+ (.+)$", (docs / page).read_text(encoding="utf-8"), re.M)
        anchors = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
        assert anchor in anchors, (page, anchor)
