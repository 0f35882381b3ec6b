"""The client side of a served attempt: the object the provider model answers.

An ``Endpoint`` hands every outcome to ``attempt.client.on_response``; in a simulation that is a
feature's ``Client``, which then decides on retries. Under ``llmtraffic serve`` the retrying
client is the real application on the other side of the HTTP connection, so this client only
passes the outcome on (``deliver``) to the server, which answers the HTTP request. It is a
``Client`` so that the compiled engine, whose attempts hold a ``Client``, accepts it (mypyc
refuses other types); it is compiled with the engine for the same reason (setup.py).
"""

from __future__ import annotations

from collections.abc import Callable

from llmtraffic.client.client import Client
from llmtraffic.config.policy import Policy
from llmtraffic.config.workload import Feature
from llmtraffic.engine.entities import Attempt
from llmtraffic.engine.kernel import Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.provider.endpoint import Endpoint
from llmtraffic.results.recorder import Recorder


class ServeClient(Client):
    """Passes each outcome the provider model reaches to ``deliver``, and decides nothing."""

    def __init__(
        self,
        name: str,
        feature: Feature,
        chain: list[Endpoint],
        kernel: Kernel,
        streams: Streams,
        recorder: Recorder,
        deliver: Callable[[Attempt], None],
    ) -> None:
        # No timeouts, no gates: the application's own client does all of that over HTTP.
        super().__init__(name, feature, Policy(), chain, kernel, streams, recorder)
        self.deliver = deliver

    def on_response(self, att: Attempt) -> None:
        """The provider model's outcome of ``att`` is known now: hand it to the server."""
        self.deliver(att)
