"""Where record batches go: memory (tests, notebooks) or Parquet files written in batches.

The simulation only calls ``write``; the runner chooses the sink and owns any files, so a run
writes nothing unless it is given a file sink.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from llmtraffic.results.schema import TABLES


class RecordSink(Protocol):
    """Receives record batches of the tables named in ``results.schema.TABLES``."""

    def write(self, table: str, batch: pa.RecordBatch) -> None:
        """Take one batch of rows of ``table``."""

    def close(self) -> None:
        """Finish: no more batches will come."""


class MemorySink:
    """Keeps every batch in memory; ``table(name)`` gives the whole table."""

    def __init__(self) -> None:
        self._batches: dict[str, list[pa.RecordBatch]] = {name: [] for name in TABLES}

    def write(self, table: str, batch: pa.RecordBatch) -> None:
        """Keep the batch."""
        self._batches[table].append(batch)

    def close(self) -> None:
        """Nothing to finish."""

    def table(self, name: str) -> pa.Table:
        """All rows of table ``name`` (empty, with the right schema, when there are none)."""
        return pa.Table.from_batches(self._batches[name], schema=TABLES[name])


class ParquetSink:
    """Streams each table to ``<folder>/<table>.parquet`` as batches arrive."""

    def __init__(self, folder: str | Path, tables: tuple[str, ...] = tuple(TABLES)) -> None:
        self.folder = Path(folder)
        self._tables = tables
        self._writers: dict[str, pq.ParquetWriter] = {}

    def write(self, table: str, batch: pa.RecordBatch) -> None:
        """Append the batch to the table's file (opened on first use)."""
        if table not in self._tables:
            return
        writer = self._writers.get(table)
        if writer is None:
            writer = pq.ParquetWriter(self.folder / f"{table}.parquet", TABLES[table])
            self._writers[table] = writer
        writer.write_batch(batch)

    def close(self) -> None:
        """Close every file; tables that got no rows are written empty, with their schema."""
        for name in self._tables:
            if name not in self._writers:
                pq.write_table(TABLES[name].empty_table(), self.folder / f"{name}.parquet")
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
