"""docs/records.md documents exactly the columns of the record schemas, in order, with types."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmtraffic.engine.entities import ATTEMPT_STATUSES, REQUEST_OUTCOMES
from llmtraffic.results.schema import TABLES

DOC = Path(__file__).resolve().parents[1] / "docs" / "records.md"


def documented_columns(table: str) -> list[tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"\n## {table}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \| ([a-z0-9]+) \|", section, flags=re.MULTILINE)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_records_doc_matches_schema(table: str) -> None:
    schema = TABLES[table]
    # Arrow prints float64 as "double"; the docs use the numpy / pandas name.
    names = {"double": "float64"}
    expected = [(f.name, names.get(str(f.type), str(f.type))) for f in schema]
    assert documented_columns(table) == expected


@pytest.mark.parametrize("doc", ["records.md", "metrics.md"])
def test_every_outcome_and_status_is_documented(doc: str) -> None:
    text = (DOC.parent / doc).read_text(encoding="utf-8")
    missing = [name for name in (*REQUEST_OUTCOMES, *ATTEMPT_STATUSES) if f"`{name}`" not in text]
    assert not missing, f"docs/{doc} does not name {missing}"
