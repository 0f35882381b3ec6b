"""Clients of closed-loop features (sessions, agent tasks): each tells its session driver when
a request ends, so that the driver sends the session's next turn.

Every request ends exactly once, in ``Client.finish`` or, on the common first-try success,
in ``Client._finish_first_try``; these subclasses add the notice after either. Features
without sessions keep the plain clients, so their path is unchanged. One subclass per client
kind (plain, layered, hedged, routed), because mypyc compiles single inheritance only.
"""

from __future__ import annotations

from typing import Protocol

from llmtraffic.client.client import Client
from llmtraffic.client.hedging import HedgedClient
from llmtraffic.client.layers import LayeredClient
from llmtraffic.client.routing import RoutedClient
from llmtraffic.engine.entities import OK, Attempt, Request


class SessionHook(Protocol):
    """What a closed-loop client tells: a request (a turn) ended with its outcome."""

    def ended(self, req: Request, outcome: str, now: float) -> None:
        """``req`` reached its one terminal ``outcome`` at ``now``. A hedged client may tell
        twice for one request (its first-try path ends through ``finish``): the hook
        ignores a request it has already seen end."""


class SessionClient(Client):
    """The plain client of a closed-loop feature."""

    hook: SessionHook  # set by the session driver before the run starts

    def finish(self, req: Request, outcome: str, now: float) -> None:
        """End ``req`` (``Client.finish``), then tell the session driver."""
        super().finish(req, outcome, now)
        self.hook.ended(req, outcome, now)

    def _finish_first_try(self, req: Request, att: Attempt, now: float) -> None:
        super()._finish_first_try(req, att, now)
        self.hook.ended(req, OK, now)


class SessionLayeredClient(LayeredClient):
    """The client with retry layers, of a closed-loop feature."""

    hook: SessionHook

    def finish(self, req: Request, outcome: str, now: float) -> None:
        """End ``req`` (``LayeredClient.finish``), then tell the session driver."""
        super().finish(req, outcome, now)
        self.hook.ended(req, outcome, now)

    def _finish_first_try(self, req: Request, att: Attempt, now: float) -> None:
        super()._finish_first_try(req, att, now)
        self.hook.ended(req, OK, now)


class SessionHedgedClient(HedgedClient):
    """The hedging client of a closed-loop feature."""

    hook: SessionHook

    def finish(self, req: Request, outcome: str, now: float) -> None:
        """End ``req`` (``HedgedClient.finish``), then tell the session driver."""
        super().finish(req, outcome, now)
        self.hook.ended(req, outcome, now)

    def _finish_first_try(self, req: Request, att: Attempt, now: float) -> None:
        super()._finish_first_try(req, att, now)
        self.hook.ended(req, OK, now)


class SessionRoutedClient(RoutedClient):
    """The client routing across deployments, of a closed-loop feature."""

    hook: SessionHook

    def finish(self, req: Request, outcome: str, now: float) -> None:
        """End ``req`` (``RoutedClient.finish``), then tell the session driver."""
        super().finish(req, outcome, now)
        self.hook.ended(req, outcome, now)

    def _finish_first_try(self, req: Request, att: Attempt, now: float) -> None:
        super()._finish_first_try(req, att, now)
        self.hook.ended(req, OK, now)
