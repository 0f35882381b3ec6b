"""Every command and Python snippet the documentation shows runs, and exits as the text says.

Which blocks are commands, how a doc marks one it expects to fail or cannot run here
(``<!-- doc-test: exit 1 -->``, ``<!-- doc-test: skip REASON -->``), where they run (a
scratch folder per document with a copy of experiments/, the project's .venv/bin first on
PATH, nothing written into the repository) and how the long experiments are scaled down
(``SCALE``: fewer replications, shorter runs, in the scratch copy of their file): see the
docstring of tests/docs_commands.py. One test per command or snippet, named ``doc:line``;
a document's commands run in order, so a failure names the earlier ones that failed too.

The example CI workflow (examples/llmtraffic-ci.yml) is tested as far as it can be here: its
scripts parse, the files it names exist, and its battery step passes twice, first without a
baseline (writing one) and then against it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.docs_commands import (
    DOCUMENTS,
    ROOT,
    WORKFLOW,
    Runner,
    Snippet,
    _blocks,
    _parse_directive,
    _shell_commands,
    all_snippets,
    chain_of,
    extract,
    load_workflow,
    make_recipe,
    workflow_snippets,
    workflow_steps,
)

SNIPPETS: list[Snippet] = all_snippets()
WORKFLOW_SNIPPETS: list[Snippet] = workflow_snippets()
CHAINS: dict[str, list[Snippet]] = {}
for _s in SNIPPETS + WORKFLOW_SNIPPETS:
    CHAINS.setdefault(chain_of(_s.doc), []).append(_s)


# What the documented commands write (checked in the scratch folders), and the part of it a
# command run in the wrong folder would leave in the repository: experiments/ci-baseline.json
# and reports/ (runs/ is left out of that second check: `make demo` in the repository writes
# runs/quickstart, and another process may be running it).
WRITTEN = {
    "README.md": [
        "runs/quickstart/summary.json",
        "runs/naive/summary.json",
        "runs/outage-storm/experiment.json",
        "reports/llmtraffic.xml",
    ],
    "docs/ci.md": ["runs/check-ci/summary.csv", "experiments/ci-baseline.json"],
    "docs/experiments.md": ["runs/cost-amplification/report.html", "runs/storm/experiment.json"],
}
GUARDED = ("experiments/ci-baseline.json", "reports")


def _repo_state() -> dict[str, float]:
    """Modification times of what the commands write that the repository must not get."""
    state: dict[str, float] = {}
    for name in GUARDED:
        base = ROOT / name
        for p in [base, *(base.rglob("*") if base.is_dir() else [])]:
            if p.exists():
                state[str(p.relative_to(ROOT))] = p.stat().st_mtime
    return state


@pytest.fixture(scope="module")
def runner(request: pytest.FixtureRequest, repo_before: dict[str, float]) -> Iterator[Runner]:
    wanted = {
        item.callspec.params["snippet"].id
        for item in request.session.items
        if hasattr(item, "callspec") and "snippet" in item.callspec.params
    }
    if any(
        item.name.startswith(("test_nothing_written", "test_workflow_leaves"))
        for item in request.session.items
    ):
        wanted |= {s.id for s in WORKFLOW_SNIPPETS}
    r = Runner(CHAINS)
    r.start(wanted)
    yield r
    r.close()


@pytest.fixture(scope="module")
def repo_before() -> dict[str, float]:
    return _repo_state()


def _check(runner: Runner, snippet: Snippet) -> None:
    if snippet.skip:
        pytest.skip(snippet.skip)
    result = runner.result(snippet)
    assert result is not None
    if result.exit_code != snippet.exit_code:
        earlier = runner.earlier_failures(snippet)
        before = f"\nearlier commands of {snippet.doc} that failed: {earlier}" if earlier else ""
        pytest.fail(
            f"{snippet.id} exited {result.exit_code}, the doc says {snippet.exit_code} "
            f"({result.seconds:.1f} s){before}\n--- {snippet.kind}:\n{snippet.text}\n"
            f"--- output (last 4,000 characters):\n{result.output[-4000:]}",
            pytrace=False,
        )


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_documented_command_runs(snippet: Snippet, runner: Runner) -> None:
    _check(runner, snippet)


@pytest.mark.parametrize("snippet", WORKFLOW_SNIPPETS, ids=[s.id for s in WORKFLOW_SNIPPETS])
def test_workflow_step_runs(snippet: Snippet, runner: Runner) -> None:
    _check(runner, snippet)


def test_workflow_leaves_what_it_uploads(runner: Runner) -> None:
    for s in WORKFLOW_SNIPPETS:
        if not s.skip:
            result = runner.result(s)
            assert result is not None and result.exit_code == 0, s.id
    workspace = runner.workspaces[WORKFLOW].root
    workflow = load_workflow()
    steps = next(iter(workflow["jobs"].values()))["steps"]
    paths = [
        line.strip()
        for step in steps
        if "upload-artifact" in str(step.get("uses", ""))
        for line in step["with"]["path"].split("\n")
        if line.strip()
    ]
    junit = [
        step["with"]["report_paths"] for step in steps if "report_paths" in step.get("with", {})
    ]
    assert paths and junit
    missing = [p for p in [*paths, *junit] if not (workspace / p).exists()]
    assert not missing, f"the workflow uploads files its run did not write: {missing}"
    # The first run wrote the baseline; the second ran against it (its output says so).
    assert (workspace / workflow["env"]["BASELINE"]).exists()
    first, second = (runner.result(s) for s in WORKFLOW_SNIPPETS if not s.skip)
    assert first is not None and second is not None
    assert "No experiments/ci-baseline.json yet" in first.output
    assert "No experiments/ci-baseline.json yet" not in second.output


def test_workflow_is_a_template_that_parses() -> None:
    text = (ROOT / WORKFLOW).read_text(encoding="utf-8")
    workflow = load_workflow()
    for line, name, script in workflow_steps():
        proc = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert proc.returncode == 0, f"{WORKFLOW}:{line} ({name}): {proc.stderr}"
    # The one placeholder is stated where it is set, and nothing else points at a made-up host.
    install = workflow["env"]["LLMTRAFFIC"]
    assert "OWNER" in install and "replace" in text.split("LLMTRAFFIC:", 1)[1].split("\n", 1)[0]
    assert "your-org" not in text
    # Files of this project it names exist (those in experiments/, as the user copies them).
    for name in ("experiments/ci.toml",):
        assert name in text and (ROOT / name).exists()


def test_nothing_written_into_the_repository(runner: Runner, repo_before: dict[str, float]) -> None:
    for s in SNIPPETS + WORKFLOW_SNIPPETS:
        if s.id in runner.futures:
            runner.futures[s.id].exception(timeout=None)
    after = _repo_state()
    changed = sorted(k for k, v in after.items() if repo_before.get(k) != v)
    assert not changed, f"documented commands wrote into the repository: {changed}"
    for doc, paths in WRITTEN.items():
        if doc in runner.workspaces:
            root = runner.workspaces[doc].root
            missing = [p for p in paths if not (root / p).exists()]
            assert not missing, f"{doc}'s commands did not write {missing} in their folder"


# The rules of extraction, on small examples.


def test_shell_blocks_split_into_commands() -> None:
    text = (
        "<!-- doc-test: exit 1 -->\n\n```console\n$ llmtraffic run a.toml \\\n"
        "    --force\noutput line\n$ llmtraffic validate a.toml  # a comment\n```\n"
        "```sh\n# a comment line\nmake demo\n\nmake test\n```\n```toml\nx = 1\n```\n"
    )
    blocks = _blocks(text)
    assert [b.tag for b in blocks] == ["console", "sh", "toml"]
    assert blocks[0].directive == "exit 1"
    assert _shell_commands(blocks[0]) == [
        (4, "llmtraffic run a.toml --force"),
        (7, "llmtraffic validate a.toml  # a comment"),
    ]
    assert [c for _, c in _shell_commands(blocks[1])] == ["make demo", "make test"]


def test_directives() -> None:
    assert _parse_directive("") == (0, None, None)
    assert _parse_directive("exit 2") == (2, None, None)
    assert _parse_directive("skip needs the network") == (0, "needs the network", None)
    assert _parse_directive('skip "make test" runs the suite') == (0, "runs the suite", "make test")
    with pytest.raises(ValueError, match="unknown doc-test directive"):
        _parse_directive("exit one")


def test_every_document_is_read_and_skips_are_few() -> None:
    assert "README.md" in DOCUMENTS and "experiments/README.md" in DOCUMENTS
    assert "docs/ci.md" in DOCUMENTS
    for doc in ("README.md", "docs/ci.md", "docs/experiments.md", "experiments/README.md"):
        assert extract(doc), f"{doc} shows commands, and none was found"
    kinds = {s.kind for s in SNIPPETS}
    assert {"shell", "python", "pytest", "file"} <= kinds
    skipped = [s for s in SNIPPETS if s.skip]
    assert len(skipped) <= 4, [s.id for s in skipped]
    assert all(len(s.skip or "") > 15 for s in skipped), "a skip says why"


def test_make_demo_is_the_makefiles_recipe() -> None:
    assert make_recipe("demo") == [
        ".venv/bin/llmtraffic run experiments/quickstart.toml --out runs/quickstart --force"
    ]


def test_scratch_copies_are_scaled_down() -> None:
    from tests.docs_commands import SCALE, Workspace

    workspace = Workspace("README.md")
    try:
        for name, edits in SCALE.items():
            content = (workspace.root / name).read_text(encoding="utf-8")
            for _old, new in edits:
                assert new in content
    finally:
        workspace.close()
