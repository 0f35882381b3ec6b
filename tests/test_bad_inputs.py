"""The bad-input corpus: every case in ``tests/bad_inputs/`` gets its exit code and message.

Each case is data (see ``tests/bad_inputs/README.md``): a command line, the files it reads, the
exit code it must give and phrases its message must contain. A new field or command adds its bad
values here. The runner also fails a case that prints a traceback, runs longer than
``HANG_SECONDS`` (reported as a hang), leaves a path named in ``absent`` or removes one in ``kept``.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llmtraffic.cli import main

CORPUS = Path(__file__).parent / "bad_inputs"
BASE = tomllib.loads((CORPUS / "base.toml").read_text(encoding="utf-8"))
HANG_SECONDS = 30
KEYS = {"about", "args", "exit", "phrases", "hidden", "files", "config", "absent", "kept", "bytes"}


def cases() -> list[Path]:
    """Every case file, area by area."""
    return sorted(p for p in CORPUS.rglob("*.toml") if p.parent != CORPUS)


def toml_value(value: Any) -> str:
    """``value`` as an inline TOML value (floats keep inf and nan, which JSON cannot write)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int | str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def config_text(changes: dict[str, Any]) -> str:
    """``base.toml`` with dotted-key changes, as TOML text (one top-level key per line)."""
    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = raw
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value == "DELETE":
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in raw.items())


@contextmanager
def time_limit(seconds: int, what: str) -> Iterator[None]:
    """Fail with "hang" when the body runs longer than ``seconds`` (SIGALRM, main thread)."""

    def expire(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"{what}: still running after {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def flat(text: str) -> str:
    return " ".join(text.split()).lower()


@pytest.mark.parametrize("path", cases(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_bad_input(
    path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = tomllib.loads(path.read_text(encoding="utf-8"))
    assert set(case) <= KEYS, f"{path.name}: unknown keys {sorted(set(case) - KEYS)}"
    assert case.get("about"), f"{path.name}: say what the case is about"
    folder = tmp_path / "case"
    folder.mkdir()
    for name, text in case.get("files", {}).items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text.lstrip("\n"), encoding="utf-8")
    for name, hexed in case.get("bytes", {}).items():
        (folder / name).write_bytes(bytes.fromhex(hexed))
    if "config" in case:
        (folder / "config.toml").write_text(config_text(case["config"]), encoding="utf-8")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("COLUMNS", "200")

    with time_limit(HANG_SECONDS, path.name):
        try:
            code = main(case["args"])
        except SystemExit as exc:  # argparse exits by itself on bad arguments
            code = exc.code if isinstance(exc.code, int) else 2
    out = capsys.readouterr()
    text = flat(out.out + "\n" + out.err)

    assert "traceback" not in text, f"{path.name} printed a traceback:\n{out.err}"
    assert code == case["exit"], f"{path.name}: exit {code}, expected {case['exit']}\n{out.err}"
    for phrase in case.get("phrases", []):
        assert flat(phrase) in text, f"{path.name}: {phrase!r} not in the message:\n{out.err}"
    for secret in case.get("hidden", []):
        assert flat(secret) not in text, f"{path.name}: {secret!r} must not be shown:\n{out.err}"
    for name in case.get("absent", []):
        assert not (folder / name).exists(), f"{path.name}: {name} exists afterwards"
    for name in case.get("kept", []):
        assert (folder / name).exists(), f"{path.name}: {name} was removed"


def test_the_corpus_covers_every_area() -> None:
    areas = {p.parent.name for p in cases()}
    assert {"config", "traces", "cli", "security"} <= areas, areas
