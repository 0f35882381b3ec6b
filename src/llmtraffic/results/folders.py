"""Results folders: which folders are ours, a lock while one is written, and atomic writes.

- A *results folder* is one llmtraffic wrote: a run's (its ``manifest.json`` says
  ``"kind": "llmtraffic-run"``) or an experiment's (``experiment.json``, or a manifest of kind
  ``"llmtraffic-experiment"``). ``--force`` replaces those and nothing else.
- While a folder is written its writer holds a lock: a hidden ``.<name>.lock`` file beside it,
  locked with ``flock`` and holding the writer's pid, host, start time and command. A second
  writer is refused with those details; a lock whose process died is released by the kernel
  and taken over by the next writer.
- A folder is written into a hidden ``.<name>.partial-<pid>`` folder beside the target and
  renamed into place only when complete, so that an interrupted or crashed write never leaves
  a folder that looks finished (and a replaced folder is never half old, half new). Partial
  and old folders left by processes that are no longer alive are removed by the next writer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmtraffic.errors import OutputError

RUN_KIND = "llmtraffic-run"
EXPERIMENT_KIND = "llmtraffic-experiment"


class FolderLockedError(OutputError):
    """Another process is writing the results folder (the message names it: pid, host, start)."""


def results_kind(folder: Path) -> str | None:
    """``"run"`` or ``"experiment"`` for a results folder llmtraffic wrote, else None.

    Recognised by what only we write: a manifest of our kind, or an experiment's
    ``experiment.json`` (written before its manifest, so an experiment interrupted at once is
    still recognised).
    """
    kind = _json_kind(folder / "manifest.json")
    if kind == RUN_KIND:
        return "run"
    if kind == EXPERIMENT_KIND or _json_kind(folder / "experiment.json") == EXPERIMENT_KIND:
        return "experiment"
    return None


def _json_kind(path: Path) -> str | None:
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def describe(folder: Path, limit: int = 4) -> str:
    """A few of a folder's entries, for messages that say what is there."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "?"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_target(folder: Path, flag: str = "--out") -> None:
    """Refuse targets that cannot be a results folder's own place: the current folder (``''``
    or ``.``) or one of its parents (replacing it would pull the floor from under the
    command), and the root of the file system."""
    here = Path.cwd().resolve()
    target = folder.resolve()
    if target == here or target in here.parents or target.parent == target:
        raise OutputError(
            f"{flag} {str(folder)!r} is the current folder or one of its parents; a results "
            f"folder needs a name of its own: give a subfolder, such as {flag} runs/NAME"
        )


def check_writable(parent: Path, flag: str = "--out") -> None:
    """Refuse early (before any run starts) a parent folder this process cannot write into."""
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"{flag}: cannot write into the folder {parent} (permission denied); choose "
            f"another {flag}"
        )


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this machine (another user's included)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def remove_stale_partials(final: Path) -> list[Path]:
    """Remove the hidden ``.<name>.partial-<pid>`` and ``.<name>.old-<pid>`` folders beside
    ``final`` whose process is no longer alive (killed mid-write); those of live processes
    are never touched. Returns what was removed."""
    removed = []
    for kind in ("partial", "old"):
        for path in final.parent.glob(f".{_glob_escape(final.name)}.{kind}-*"):
            pid_text = path.name.rsplit("-", 1)[-1]
            if not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if pid != os.getpid() and pid_alive(pid):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _glob_escape(name: str) -> str:
    """``name`` with glob metacharacters taken literally."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


class FolderLock:
    """An exclusive lock on writing one results folder: the file ``.<name>.lock`` beside it.

    Use as a context manager. The lock is an ``flock`` on the file, so the kernel releases it
    when the holder dies however it dies (a stale lock is simply taken over); the file holds
    the holder's pid, host, start time and command, for the message another writer gets.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder.parent / f".{self.folder.name}.lock"
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise ``FolderLockedError`` naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: a pid file instead
            self._acquire_pid_file()
            return
        while True:
            fd = self._open(os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise FolderLockedError(self._busy(holder)) from None
            # The previous holder unlinks the file as it releases it: if we locked a file that
            # is no longer at our path, the lock protects nothing; open the path again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder_info()).encode())
        self._fd = fd

    def release(self) -> None:
        """Give the lock up and remove its file (first, so that nobody locks a removed file
        and believes it holds the lock: ``acquire`` checks)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def _open(self, flags: int) -> int:
        try:
            return os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise OutputError(
                f"cannot write into the folder {self.folder.parent} ({exc.strerror}); choose "
                "another --out"
            ) from None

    def _busy(self, holder: dict[str, Any]) -> str:
        who = (
            f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since "
            f"{holder.get('started_utc', '?')}"
        )
        command = holder.get("command")
        if command:
            who += f": {command}"
        return (
            f"{self.folder} is being written by another llmtraffic process ({who}); wait for "
            "it to finish, stop it, or choose another --out"
        )

    def _acquire_pid_file(self) -> None:  # pragma: no cover - not POSIX
        for _ in range(2):
            try:
                fd = self._open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
            except OutputError:
                if not self.path.exists():
                    raise
                fd = self._open(os.O_RDONLY)
                holder = _read_holder(fd)
                os.close(fd)
                stale = holder.get("host") == socket.gethostname() and not pid_alive(
                    int(holder.get("pid", 0))
                )
                if not stale:
                    raise FolderLockedError(self._busy(holder)) from None
                self.path.unlink(missing_ok=True)
                continue
            os.write(fd, json.dumps(holder_info()).encode())
            self._fd = fd
            return
        raise FolderLockedError(self._busy({}))


def holder_info() -> dict[str, Any]:
    """Who holds a lock: this process's pid, host, start time and command line."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["llmtraffic", *sys.argv[1:]])[:300],
    }


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield an empty hidden folder to write into; on success it replaces ``final`` (an old
    ``final`` is moved aside first and removed after), on any exception it is removed.
    ``final.parent`` must exist. Stale partial folders of dead processes are removed first;
    hold ``FolderLock(final)`` around this so that no live writer's folder is among them."""
    remove_stale_partials(final)
    partial = final.parent / f".{final.name}.partial-{os.getpid()}"
    try:
        partial.mkdir()
    except OSError as exc:
        raise OutputError(
            f"cannot create a folder in {final.parent} ({exc.strerror}); choose another --out"
        ) from None
    try:
        yield partial
        if final.exists():
            trash = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, trash)
            os.replace(partial, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
