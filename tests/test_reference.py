"""docs/reference.md is the schema's own account of every key: regenerated, it must not change.

When this fails after a schema change, run
``python -m llmtraffic.config.reference > docs/reference.md`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

from llmtraffic.config.reference import reference_markdown, sections, undocumented
from llmtraffic.config.scenario import Scenario

DOC = Path(__file__).resolve().parents[1] / "docs" / "reference.md"

# Keys without a description when the reference was introduced (issue 13). The list may only
# shrink: a new key comes with its description.
KNOWN_UNDOCUMENTED = set(
    [
        "features.<name>.arrivals.peak_hour",
        "features.<name>.arrivals.peak_to_trough",
        "features.<name>.trace.model_value",
        "providers.<name>.incidents.duration",
        "providers.<name>.incidents.error_rate",
        "providers.<name>.incidents.factor",
        "providers.<name>.incidents.midstream_rate",
        "providers.<name>.incidents.remaining",
        "providers.<name>.incidents.status",
        "providers.<name>.service.high",
        "providers.<name>.service.low",
        "providers.<name>.service.mean",
        "providers.<name>.service.median",
        "providers.<name>.service.p99",
        "providers.<name>.service.value",
    ]
)


def test_the_reference_page_matches_the_schema() -> None:
    assert DOC.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/reference.md is out of date: "
        "python -m llmtraffic.config.reference > docs/reference.md"
    )


def test_every_new_key_has_a_description() -> None:
    missing = set(undocumented()) - KNOWN_UNDOCUMENTED
    assert not missing, f"describe these keys (Field(description=...)): {sorted(missing)}"


def test_every_section_of_a_scenario_is_in_the_reference() -> None:
    text = reference_markdown()
    paths = {s.path for s in sections(Scenario)}
    assert {"run", "providers.<name>", "features.<name>.arrivals", "policies.<name>.retry"} <= paths
    for path in paths - {""}:
        assert f"## `{path}`" in text, path
