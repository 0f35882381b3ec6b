"""``llmtraffic serve``: a scenario's providers over HTTP, for testing real client code.

The same provider model as the simulator (rate limits with ``retry-after``, serving slots and
queue, errors, mid-stream failures, latency, incidents, billing), answering OpenAI Chat
Completions and Responses and Anthropic Messages requests in wall-clock time divided by a
speedup, and logging every attempt in the ``attempts.parquet`` schema (docs/serve.md).
Needs the ``serve`` extra (Starlette and uvicorn): ``pip install 'llmtraffic[serve]'``.
"""
