"""The versioned schemas of the four record tables (documented in docs/records.md).

Changing a column here is a schema change: bump ``SCHEMA_VERSION`` and update the docs; a test
pins these lists against the documentation.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 3

REQUESTS = pa.schema(
    [
        ("request_id", pa.int64()),
        ("feature", pa.string()),
        ("arrival_time", pa.float64()),
        ("end_time", pa.float64()),
        ("outcome", pa.string()),
        ("attempts", pa.int32()),
        ("final_provider", pa.string()),
        ("final_model", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("billed_cost", pa.float64()),
        ("useful_cost", pa.float64()),
        ("baseline_cost", pa.float64()),
        ("latency", pa.float64()),
    ]
)

ATTEMPTS = pa.schema(
    [
        ("request_id", pa.int64()),
        ("attempt", pa.int32()),
        ("feature", pa.string()),
        ("provider", pa.string()),
        ("model", pa.string()),
        ("send_time", pa.float64()),
        ("start_time", pa.float64()),
        ("end_time", pa.float64()),
        ("status", pa.string()),
        ("http_status", pa.int32()),
        ("retry_after", pa.float64()),
        ("queue_wait", pa.float64()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cost", pa.float64()),
        ("wait_before", pa.float64()),
        ("ttft", pa.float64()),
        ("tpot", pa.float64()),
    ]
)

EVENTS = pa.schema(
    [
        ("time", pa.float64()),
        ("kind", pa.string()),
        ("feature", pa.string()),
        ("provider", pa.string()),
        ("detail", pa.string()),
        ("value", pa.float64()),
    ]
)

TIMESERIES = pa.schema(
    [
        ("time", pa.float64()),
        ("arrivals", pa.int64()),
        ("attempts", pa.int64()),
        ("retries", pa.int64()),
        ("ok", pa.int64()),
        ("rate_limited", pa.int64()),
        ("server_error", pa.int64()),
        ("overloaded", pa.int64()),
        ("timeout", pa.int64()),
        ("midstream_error", pa.int64()),
        ("quota_exhausted", pa.int64()),
        ("context_length_exceeded", pa.int64()),
        ("requests_ok", pa.int64()),
        ("requests_failed", pa.int64()),
        ("arrived_ok", pa.int64()),
        ("arrived_done", pa.int64()),
        ("billed_cost", pa.float64()),
        ("wasted_cost", pa.float64()),
        ("in_flight", pa.float64()),
        ("busy_slots", pa.float64()),
        ("queue_length", pa.float64()),
        ("breakers_open", pa.float64()),
        ("rate_limit_headroom", pa.float64()),
        ("budget_level", pa.float64()),
    ]
)

SIMPLE = pa.schema(
    [
        ("request_id", pa.int64()),
        ("feature", pa.string()),
        ("provider", pa.string()),
        ("model", pa.string()),
        ("arrival", pa.float64()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cost", pa.float64()),
        ("baseline", pa.float64()),
        ("ttft", pa.float64()),
        ("tpot", pa.float64()),
    ]
)
"""Internal, not a table: a request that succeeded on its first attempt, one row standing for
its requests row and its attempts row (the common case, recorded at half the cost)."""

TABLES: dict[str, pa.Schema] = {
    "requests": REQUESTS,
    "attempts": ATTEMPTS,
    "events": EVENTS,
    "timeseries": TIMESERIES,
}
