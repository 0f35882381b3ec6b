"""JSON in and out for summaries, configs and manifests: NaN becomes null and infinity the
string "inf", so files are strict JSON and configs read back with the same meaning."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from llmtraffic.errors import LLMTrafficError


class ResultFileError(LLMTrafficError, ValueError):
    """A results file (JSON or Parquet) exists but cannot be read: truncated, corrupted or not
    written by llmtraffic. A ``ValueError`` too, so that code that skips unreadable runs (the
    resume of an experiment) keeps treating it as "not done"."""


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` with NaN as None and +-infinity as "inf" / "-inf"."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return json_safe(obj.item())
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write strict JSON (indented, keys in insertion order), atomically via a temp file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Read a JSON file written by ``write_json``.

    A missing file raises ``FileNotFoundError`` (callers say what the file is for); a file that
    is not JSON (truncated by a full disk, a copy cut short, a hand edit) raises
    ``ResultFileError`` naming it and the place where it stops making sense.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ResultFileError(
            f"{path} is not a JSON file written by llmtraffic (byte {exc.start} is not UTF-8): "
            f"{RERUN_HINT}"
        ) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise ResultFileError(
            f"{path} is not valid JSON, truncated or corrupted ({exc.msg}: {where}); {RERUN_HINT}"
        ) from None


RERUN_HINT = "restore it from a copy, or run the config again to write the results anew"
"""What to do about a results file that is missing or unreadable."""
