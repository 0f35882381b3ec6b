"""Find the commands and Python snippets the documentation shows, and run them in a scratch copy.

What counts as a command (the rule ``tests/test_docs_commands.py`` applies):

- The documents are README.md, docs/*.md, experiments/README.md and the module docstrings of
  ``llmtraffic.testing`` and its pytest plugin (their examples are the ones users copy). The
  notebooks run in tests/test_notebooks.py.
- A fenced block tagged ``sh``, ``bash``, ``shell`` or ``console`` holds shell commands. In a
  ``console`` block only the lines starting with ``$ `` are commands (the rest is output); in
  the others every line is one, except blank lines and ``#`` comment lines, and a line ending
  in ``\\`` continues on the next. Each command runs on its own through ``bash -c``.
- A fenced block tagged ``python`` is a snippet. One whose first line is a comment naming a
  ``.py`` file (``# mypackage/policies.py``) is a file the reader is asked to write: it is
  written at that path in the scratch folder before anything runs, and the test imports it.
  One that defines ``test_`` functions runs under pytest; any other runs as a script.
- Blocks with any other tag or none (``toml`` excerpts, printed output, usage synopses) are
  not run, nor is code inline in prose (``llmtraffic run`` there names a command; a command to
  copy is shown in a block).
- An HTML comment right before a block (blank lines between are allowed) changes what is
  expected of it: ``<!-- doc-test: exit 1 -->`` (every command of the block must exit 1, as the
  text next to it says), ``<!-- doc-test: skip REASON -->`` (the block is not run: only for
  commands that cannot run here, the reason says why) or ``<!-- doc-test: skip "PREFIX"
  REASON -->`` (only the block's commands that start with PREFIX are skipped).
- Everything else must exit 0.

Where they run: a fresh temporary folder per document, holding a copy of experiments/ (commands
may write baselines there) and of examples/, ``.venv`` as a link to the environment running
the tests (the project's .venv) and ``tests`` as a link to its tests; that bin/ is first on
PATH, as in an activated environment.
Nothing is written into the repository: ``runs/`` and ``reports/`` land in the scratch folder.
The commands of one document run in order in one folder (a later one may read what an earlier
one wrote), so running one command runs the ones before it in its document first.
experiments/README.md runs in the README's folder, after it (``SAME_FOLDER_AS``: it repeats
the README's tour of the outage study), and a command it shows word for word as the README
did (comments and a ``.venv/bin/`` prefix aside) counts with the README's result.

``make demo`` runs the demo target's recipe from the Makefile (the environment exists already).

Scaled down (``SCALE``): the long experiments are shortened in the scratch copy of their file
(fewer replications, a shorter run), so every command and snippet that reads the file runs
the smaller version; each edit names the exact line it replaces and fails when the line is gone.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
# The environment running the tests (.venv, or .venv-compiled under `make test-compiled`):
# the scratch folder's `.venv` points at it and its bin/ comes first on PATH.
VENV = Path(sys.prefix)

DOCUMENTS: tuple[str, ...] = (
    "README.md",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")),
    "experiments/README.md",
    "src/llmtraffic/testing/__init__.py",
    "src/llmtraffic/testing/pytest_plugin.py",
)

SHELL_TAGS = frozenset({"sh", "bash", "shell", "console"})

# The scratch copy of a long experiment gets these line edits (old line -> new line): every
# command and snippet that reads the file runs the shortened version. A study's figures are in
# experiments/README.md; here only "it runs and exits as documented" is tested.
SCALE: dict[str, list[tuple[str, str]]] = {
    # 8 points x 3 replications of 40 minutes -> 8 x 1 of 20 minutes (incidents end at 13 min).
    "experiments/outage-storm.toml": [
        ('duration = "40m"', 'duration = "20m"'),
        ("replications = 3", "replications = 1"),
    ],
    # 4 scenarios x 3 replications -> x 1 (the 20 minutes stay: a shorter run cannot judge
    # recovery, and the "not metastable" check would fail on purpose).
    "experiments/ci.toml": [("replications = 3", "replications = 1")],
    "experiments/cost-amplification.toml": [("replications = 3", "replications = 1")],
    "experiments/tier-sizing.toml": [("replications = 3", "replications = 1")],
    "experiments/feature-expansion.toml": [("replications = 2", "replications = 1")],
    # Issue 15's studies: 54, 21 and 12 runs -> one replication of shorter traffic each.
    "experiments/agent-caching.toml": [
        ('duration = "1h"', 'duration = "5m"'),
        ("replications = 3", "replications = 1"),
    ],
    "experiments/cascade.toml": [
        ('duration = "1h"', 'duration = "5m"'),
        ("replications = 3", "replications = 1"),
    ],
    "experiments/five-features.toml": [
        ('duration = "10m"', 'duration = "1m"'),
        ("replications = 3", "replications = 1"),
    ],
}

# Documents whose commands run in the folder of another, after its own: experiments/README.md
# repeats the README's tour of the outage study, whose results it then finds done.
SAME_FOLDER_AS: dict[str, str] = {"experiments/README.md": "README.md"}


def chain_of(doc: str) -> str:
    """The document whose scratch folder (and run order) ``doc``'s commands share."""
    return SAME_FOLDER_AS.get(doc, doc)


def normalized(command: str) -> str:
    """A shell command without its comment and with ``.venv/bin/`` dropped from its program:
    the same command for a reader, whichever way a page spells it."""
    import shlex

    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return command
    return shlex.join(w.removeprefix(".venv/bin/") for w in words)


# Seconds one command may take before it counts as a hang.
TIMEOUT = 120

Kind = Literal["shell", "python", "pytest", "file"]


@dataclass(frozen=True)
class Snippet:
    """One command or Python snippet of a document, with what it must give."""

    doc: str
    line: int
    kind: Kind
    text: str
    exit_code: int = 0
    skip: str | None = None
    path: str | None = None  # where a "file" snippet is written
    env: tuple[tuple[str, str], ...] = ()  # extra environment (a workflow's env block)
    name: str = ""  # told apart from another snippet of the same line

    @property
    def id(self) -> str:
        """``doc:line``: where to find it."""
        return f"{self.doc}:{self.line}{f' ({self.name})' if self.name else ''}"


@dataclass(frozen=True)
class _Block:
    line: int  # 1-based line of the first line of the block's body
    tag: str
    body: list[str]
    directive: str  # the doc-test comment before the fence, "" when none


_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)")
_DIRECTIVE = re.compile(r"<!--\s*doc-test:\s*(.*?)\s*-->")


def _blocks(text: str) -> list[_Block]:
    lines = text.split("\n")
    blocks: list[_Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, tag = m.group(1), m.group(2).lower()
        directive = ""
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0 and (d := _DIRECTIVE.search(lines[j])):
            directive = d.group(1)
        start = i + 1
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        blocks.append(_Block(start + 1, tag, body, directive))
        i += 1
    return blocks


def _parse_directive(directive: str) -> tuple[int, str | None, str | None]:
    """(exit code, skip reason, skip prefix) from a doc-test comment."""
    if not directive:
        return 0, None, None
    if m := re.fullmatch(r"exit\s+(\d+)", directive):
        return int(m.group(1)), None, None
    if m := re.fullmatch(r'skip\s+"([^"]+)"\s+(.+)', directive):
        return 0, m.group(2), m.group(1)
    if m := re.fullmatch(r"skip\s+(.+)", directive):
        return 0, m.group(1), None
    raise ValueError(f"unknown doc-test directive {directive!r}: use exit N or skip REASON")


def _shell_commands(block: _Block) -> list[tuple[int, str]]:
    """(line, command) pairs of a shell block, continuations joined."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    first = 0
    for offset, raw in enumerate(block.body):
        line = raw.rstrip()
        if not pending:
            if block.tag == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            first = block.line + offset
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        out.append((first, " ".join(p.strip() for p in pending)))
        pending = []
    if pending:
        raise ValueError(f"line {first}: a command ends with a backslash and nothing follows")
    return out


def _python_kind(body: str) -> tuple[Kind, str | None]:
    first = body.lstrip().split("\n", 1)[0]
    if m := re.fullmatch(r"#\s*([\w./-]+\.py)\s*", first):
        return "file", m.group(1)
    tree = ast.parse(body)
    defines_tests = any(
        isinstance(node, ast.FunctionDef) and node.name.startswith("test_") for node in tree.body
    )
    return ("pytest" if defines_tests else "python"), None


def _docstring_text(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False)
    return doc or ""


def extract(doc: str) -> list[Snippet]:
    """Every command and Python snippet of one document, in document order."""
    path = ROOT / doc
    text = _docstring_text(path) if path.suffix == ".py" else path.read_text(encoding="utf-8")
    # A docstring's lines are counted from its first line (the file's line 1 here).
    snippets: list[Snippet] = []
    for block in _blocks(text):
        exit_code, skip, prefix = _parse_directive(block.directive)
        if block.tag in SHELL_TAGS:
            for line, command in _shell_commands(block):
                reason = skip if prefix is None or command.startswith(prefix) else None
                snippets.append(Snippet(doc, line, "shell", command, exit_code, reason))
        elif block.tag == "python":
            body = "\n".join(block.body).strip("\n") + "\n"
            kind, file_path = _python_kind(body)
            snippets.append(Snippet(doc, block.line, kind, body, exit_code, skip, file_path))
    return snippets


_SNIPPETS_LOCK = threading.Lock()
_SNIPPETS: list[Snippet] | None = None


def all_snippets() -> list[Snippet]:
    """The snippets of every document, extracted once. Under a lock: the runner's threads ask
    for them as their workspaces start, and CPython 3.11.7's ``ast.parse`` is not safe in two
    threads at once ("SystemError: AST constructor recursion depth mismatch", cpython#106905)."""
    global _SNIPPETS
    with _SNIPPETS_LOCK:
        if _SNIPPETS is None:
            _SNIPPETS = [s for doc in DOCUMENTS for s in extract(doc)]
        return _SNIPPETS


WORKFLOW = "examples/llmtraffic-ci.yml"


def load_workflow() -> dict[str, Any]:
    """The example CI workflow, parsed (PyYAML comes with the dev extra's ``distributed``)."""
    import yaml  # type: ignore[import-untyped]

    data: dict[str, Any] = yaml.safe_load((ROOT / WORKFLOW).read_text(encoding="utf-8"))
    return data


def workflow_steps() -> list[tuple[int, str, str]]:
    """(line, step name, script) of every ``run:`` step of the example CI workflow."""
    lines = (ROOT / WORKFLOW).read_text(encoding="utf-8").split("\n")
    steps: list[tuple[int, str, str]] = []
    for job in load_workflow()["jobs"].values():
        for step in job["steps"]:
            if "run" in step:
                name = str(step.get("name", ""))
                line = next(i + 1 for i, x in enumerate(lines) if f"name: {name}" in x)
                steps.append((line, name, str(step["run"])))
    return steps


def workflow_snippets() -> list[Snippet]:
    """The example workflow's battery step, run as GitHub runs it (bash -e), twice: the first
    run has no baseline (it must pass and write one), the second compares with it. The install
    step needs the network and is not run (its llmtraffic is the project's .venv here)."""
    env = tuple((str(k), str(v)) for k, v in load_workflow()["env"].items())
    snippets: list[Snippet] = []
    for line, name, script in workflow_steps():
        text = "set -eo pipefail\n" + script
        if name.startswith("Install"):
            reason = "installs from the network; here the project's .venv stands for it"
            snippets.append(Snippet(WORKFLOW, line, "shell", text, skip=reason, env=env))
        else:
            for run in ("first run", "second run"):
                snippets.append(Snippet(WORKFLOW, line, "shell", text, env=env, name=run))
    return snippets


def make_recipe(target: str) -> list[str]:
    """The commands of a Makefile target's recipe, with ``$(BIN)`` spelled out."""
    lines = (ROOT / "Makefile").read_text(encoding="utf-8").split("\n")
    variables = {"VENV": ".venv", "BIN": ".venv/bin"}
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", line))
    recipe: list[str] = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        command = line[1:].lstrip("@")
        for name, value in variables.items():
            command = command.replace(f"$({name})", value)
        recipe.append(command)
    return recipe


@dataclass
class Result:
    """What one snippet gave."""

    exit_code: int
    output: str
    seconds: float


@dataclass
class Workspace:
    """A scratch folder for one document's commands, run in order."""

    doc: str
    root: Path = field(init=False)
    results: dict[str, Result] = field(default_factory=dict)
    # normalized command -> (document, result): a command another document of this folder
    # already ran word for word, on the same files, is not run again.
    seen: dict[str, tuple[str, Result]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="llmtraffic-doc-"))
        shutil.copytree(ROOT / "experiments", self.root / "experiments")
        # examples/ holds configs the docs run too (examples/routing.toml, sessions.toml).
        shutil.copytree(ROOT / "examples", self.root / "examples")
        for name, edits in SCALE.items():
            target = self.root / name
            content = target.read_text(encoding="utf-8")
            for old, new in edits:
                if content.count(old) != 1:
                    raise AssertionError(
                        f"SCALE in tests/docs_commands.py: {name} no longer has exactly one "
                        f"line {old!r}; update the edit"
                    )
                content = content.replace(old, new)
            target.write_text(content, encoding="utf-8")
        (self.root / ".venv").symlink_to(VENV)
        # docs/ci.md shows how to run this project's property tests from its root.
        (self.root / "tests").symlink_to(ROOT / "tests")
        # Files the docs ask the reader to write (any document's): a user's repository holds
        # them when a later page refers to them.
        for snippet in all_snippets():
            if snippet.kind == "file" and snippet.path is not None:
                target = self.root / snippet.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(snippet.text, encoding="utf-8")
                init = target.parent / "__init__.py"
                if target.parent != self.root and not init.exists():
                    init.write_text("", encoding="utf-8")

    def env(self, extra: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
        """The environment of an activated .venv in the scratch folder."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
        env.update(extra)
        env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(VENV)
        env["MPLBACKEND"] = "Agg"
        env.pop("PYTHONPATH", None)
        return env

    def run(self, snippet: Snippet) -> Result:
        """Run one snippet in the scratch folder (once: a second call gives the first result)."""
        if snippet.id in self.results:
            return self.results[snippet.id]
        key = normalized(snippet.text) if snippet.kind == "shell" else ""
        if key in self.seen and self.seen[key][0] != snippet.doc:
            self.results[snippet.id] = self.seen[key][1]
            return self.seen[key][1]
        if snippet.kind == "shell":
            command = snippet.text
            if re.fullmatch(r"make\s+demo\b.*", command):
                command = " && ".join(make_recipe("demo"))
            argv = ["bash", "-c", command]
        elif snippet.kind == "file":
            module = Path(snippet.path or "").with_suffix("").as_posix().replace("/", ".")
            argv = [str(VENV / "bin" / "python"), "-c", f"import {module}"]
        else:
            # Named after the document and line (pytest collects test_*.py files only).
            stem = re.sub(r"\W+", "_", f"doc_{snippet.doc}_{snippet.line}")
            script = self.root / f"{'test_' if snippet.kind == 'pytest' else ''}{stem}.py"
            script.write_text(snippet.text, encoding="utf-8")
            python = str(VENV / "bin" / "python")
            argv = (
                [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
                if snippet.kind == "pytest"
                else [python, script.name]
            )
        start = time.perf_counter()
        # A session of its own, so that a hang is ended with every process it started (an
        # experiment's workers), not only the shell.
        proc = subprocess.Popen(
            argv,
            cwd=self.root,
            env=self.env(snippet.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=TIMEOUT)
            result = Result(proc.returncode, output, 0.0)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            result = Result(-1, f"timed out after {TIMEOUT} s (a hang)\n{output}", 0.0)
        result.seconds = time.perf_counter() - start
        self.results[snippet.id] = result
        if key:
            self.seen.setdefault(key, (snippet.doc, result))
        return result

    def close(self) -> None:
        """Remove the scratch folder."""
        shutil.rmtree(self.root, ignore_errors=True)


class Runner:
    """Runs the chains of snippets (one per document, in document order, in its own scratch
    folder) on two threads, so that the documents' commands share the machine's two cores.

    ``start`` is told which snippets the session selected: a chain runs up to its last selected
    snippet (the earlier ones are its prerequisites) and no further.
    """

    def __init__(self, chains: dict[str, list[Snippet]], threads: int = 2) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        self.chains = chains
        self.workspaces: dict[str, Workspace] = {}
        self.futures: dict[str, Future[Result | None]] = {}
        self._pool = ThreadPoolExecutor(max_workers=threads)
        self._closing = False  # set when the session ends early (-x): start nothing more
        self._future_type = Future

    def start(self, wanted: set[str]) -> None:
        """Start every chain that holds a wanted snippet."""
        for doc, chain in self.chains.items():
            ids = [s.id for s in chain]
            last = max((i for i, x in enumerate(ids) if x in wanted), default=-1)
            if last < 0:
                continue
            todo = chain[: last + 1]
            for s in todo:
                self.futures[s.id] = self._future_type()
            self._pool.submit(self._run_chain, doc, todo)

    def _run_chain(self, doc: str, chain: list[Snippet]) -> None:
        try:
            workspace = self.workspaces[doc] = Workspace(doc)
        except BaseException as exc:
            for s in chain:
                self.futures[s.id].set_exception(exc)
            raise
        for s in chain:
            if self._closing:
                self.futures[s.id].cancel()
                continue
            if s.skip:
                self.futures[s.id].set_result(None)
                continue
            try:
                self.futures[s.id].set_result(workspace.run(s))
            except BaseException as exc:
                self.futures[s.id].set_exception(exc)

    def result(self, snippet: Snippet) -> Result | None:
        """What the snippet gave (None when skipped), once its chain got to it."""
        return self.futures[snippet.id].result(timeout=TIMEOUT * 20)

    def earlier_failures(self, snippet: Snippet) -> list[str]:
        """The snippets before this one in its chain that did not exit as documented."""
        failed: list[str] = []
        for s in self.chains[chain_of(snippet.doc)]:
            if s.id == snippet.id:
                break
            if s.id in self.futures:
                r = self.futures[s.id].result(timeout=TIMEOUT * 20)
                if r is not None and r.exit_code != s.exit_code:
                    failed.append(s.id)
        return failed

    def close(self) -> None:
        """Let the running commands end, start no other, and remove the scratch folders."""
        self._closing = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        for workspace in self.workspaces.values():
            workspace.close()
