"""Run ``llmtraffic serve``: bind the port, serve until SIGINT or SIGTERM, write the log.

``open_port`` binds before anything else, so a taken port is a clear error (exit 2) and not a
traceback from inside the web server. The session's results folder is written like a run's:
into a hidden partial folder under ``FolderLock``, renamed into place when the session ends
(Ctrl-C, SIGTERM or ``stop()``), with the attempts still in flight ended as timeouts first.
``ServerThread`` runs the same server in a background thread, for tests and notebooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from llmtraffic.config.scenario import Scenario
from llmtraffic.errors import LLMTrafficError
from llmtraffic.results.folders import FolderLock, atomic_folder, check_target, check_writable
from llmtraffic.runner import check_replaceable
from llmtraffic.serve.app import build_app
from llmtraffic.serve.log import SessionLog
from llmtraffic.serve.model import ProviderModel, check_servable

DEFAULT_PORT = 8400


class PortInUseError(LLMTrafficError):
    """The port to serve on is taken (exit 2)."""


def open_port(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port), or ``PortInUseError`` naming
    the port and the fix."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"--port {port}: port {port} on {host} is already in use (another server "
                f"listens there, perhaps an earlier llmtraffic serve); stop it, or pass "
                f"--port with a free port (--port 0 picks one and prints it)"
            ) from None
        raise PortInUseError(
            f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); pass --host "
            "and --port of an address of this machine"
        ) from None
    sock.listen(128)
    return sock


class _Server:
    """uvicorn's server, with this module's signal handling: SIGINT and SIGTERM end the
    session cleanly (uvicorn's own handler re-raises the signal after shutdown, which would
    make a normal stop look like a crash)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.server.capture_signals = self._capture_signals  # type: ignore[method-assign]
        self.signal: int | None = None

    @contextlib.contextmanager
    def _capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(sig: int, frame: Any) -> None:
            self.signal = sig
            self.server.should_exit = True

        old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Ask the server to stop (from any thread)."""
        self.server.should_exit = True


class Session:
    """One served session: the model, its log and the server, for ``run``."""

    def __init__(
        self,
        scenario: Scenario,
        folder: Path,
        sock: socket.socket,
        *,
        speedup: float = 1.0,
        seed: int | None = None,
        wait_for_traffic: bool = False,
    ) -> None:
        self.scenario = scenario
        self.folder = folder
        self.sock = sock
        self.speedup = speedup
        self.wait_for_traffic = wait_for_traffic
        self.seed = scenario.run.seed if seed is None else seed
        self.summary: dict[str, Any] = {}
        self._server: _Server | None = None
        self.started = threading.Event()
        self.model: ProviderModel | None = None

    @property
    def port(self) -> int:
        """The port served on."""
        return int(self.sock.getsockname()[1])

    def stop(self) -> None:
        """End the session (from any thread): the log is written as the server stops."""
        if self._server is not None:
            self._server.stop()

    async def run(self, partial: Path) -> dict[str, Any]:
        """Serve until stopped, then end what is in flight and write the log into
        ``partial``; return the summary."""
        log = SessionLog(partial, self.scenario, self.seed, self.speedup)
        model = ProviderModel(
            self.scenario,
            speedup=self.speedup,
            seed=self.seed,
            on_attempt=log.attempt,
            wait_for_traffic=self.wait_for_traffic,
        )
        self.model = model
        model.start()
        wall0 = time.perf_counter()
        self._server = _Server(build_app(model))
        ready = asyncio.get_running_loop().create_task(self._signal_started())
        try:
            await self._server.server.serve(sockets=[self.sock])
        finally:
            ready.cancel()
            # Attempts the clients still wait for end here: the provider sees the hang-up.
            model.cancel_all()
            model.close()
            end = model.kernel.now
            self.summary = log.close(end, time.perf_counter() - wall0, model.recorder.events)
        return self.summary

    async def _signal_started(self) -> None:
        server = self._server
        while server is not None and not server.server.started:
            await asyncio.sleep(0.01)
        self.started.set()

    @property
    def stopped_by(self) -> int | None:
        """The signal that ended the session, if one did."""
        return None if self._server is None else self._server.signal


def serve(
    scenario: Scenario,
    out: Path,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    speedup: float = 1.0,
    seed: int | None = None,
    force: bool = False,
    wait_for_traffic: bool = False,
    on_ready: Callable[[Session], None] | None = None,
) -> Session:
    """Serve ``scenario``'s providers on ``host:port`` until SIGINT or SIGTERM (or
    ``Session.stop``), writing the session's results folder ``out``; return the session.
    ``wait_for_traffic``: simulated time starts at the first request, not now."""
    check_servable(scenario)  # before any folder or port is touched
    check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    check_writable(out.parent)
    sock = open_port(host, port)
    session = Session(
        scenario, out, sock, speedup=speedup, seed=seed, wait_for_traffic=wait_for_traffic
    )
    try:
        with FolderLock(out):
            check_replaceable(out, force)
            with atomic_folder(out) as partial:

                async def main() -> None:
                    if on_ready is not None:
                        loop = asyncio.get_running_loop()
                        waiter = loop.run_in_executor(None, session.started.wait)
                        waiter.add_done_callback(lambda _: on_ready(session))
                    await session.run(partial)

                asyncio.run(main())
    finally:
        sock.close()
    return session


class ServerThread:
    """``serve`` in a background thread on a free port, for tests and notebooks.

    Use::

        with ServerThread(scenario, out) as server:
            client = openai.AsyncOpenAI(base_url=server.base_url("llm"), api_key="x")
        # leaving the block stops the server and writes the session's folder

    ``summary`` holds the session's summary after the block.
    """

    def __init__(
        self,
        scenario: Scenario,
        out: Path,
        *,
        speedup: float = 1.0,
        seed: int | None = None,
        host: str = "127.0.0.1",
        wait_for_traffic: bool = False,
    ) -> None:
        self.scenario = scenario
        self.out = out
        self.wait_for_traffic = wait_for_traffic
        self.speedup = speedup
        self.seed = seed
        self.host = host
        self.session: Session | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="llmtraffic-serve", daemon=True)

    def _main(self) -> None:
        try:
            serve(
                self.scenario,
                self.out,
                host=self.host,
                port=0,
                speedup=self.speedup,
                seed=self.seed,
                force=True,
                wait_for_traffic=self.wait_for_traffic,
                on_ready=self._on_ready,
            )
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def _on_ready(self, session: Session) -> None:
        self.session = session
        self._ready.set()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self.error is not None:
            raise self.error
        if self.session is None:
            raise RuntimeError("llmtraffic serve did not start within 30 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server and wait until its folder is written."""
        if self.session is not None:
            self.session.stop()
        self._thread.join(60)
        if self.error is not None:
            raise self.error

    @property
    def port(self) -> int:
        """The port the server listens on."""
        assert self.session is not None
        return self.session.port

    @property
    def summary(self) -> dict[str, Any]:
        """The session's summary (after ``stop``)."""
        assert self.session is not None
        return self.session.summary

    def base_url(self, provider: str, api: str = "openai") -> str:
        """The ``base_url`` an SDK client of ``api`` (openai or anthropic) takes."""
        root = f"http://{self.host}:{self.port}/{provider}"
        return root if api == "anthropic" else root + "/v1"
