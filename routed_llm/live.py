"""Live connections: the route record on every received response, and session resumption.

A live session that is resumed (``session_resumption.handle`` set on the
request) must reconnect to the model that opened it: a resumption handle
means nothing to another model. :class:`LiveOwners` remembers which key
opened the session on each request object, as ADK's ``FallbackModel`` does.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from google.adk.models.base_llm import BaseLlm
from google.adk.models.base_llm_connection import BaseLlmConnection
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types
from typing_extensions import override

from routed_llm.routing import RoutedCall

__all__ = ["LiveOwners", "RoutedConnection", "resumption_handle"]


def resumption_handle(llm_request: LlmRequest) -> str | None:
    """The live session-resumption handle the request carries, if any (an empty one is none)."""
    config = llm_request.live_connect_config
    resumption = config.session_resumption if config is not None else None
    return (resumption.handle or None) if resumption is not None else None


class LiveOwners:
    """Which key opened the live session of each request object.

    ADK's live flow builds one request per ``run_live`` and reuses it for
    every reconnect, so the request object identifies the session. Entries
    are held weakly and vanish with their request.
    """

    def __init__(self) -> None:
        self._owners: dict[int, tuple[weakref.ref[LlmRequest], str]] = {}

    def remember(self, llm_request: LlmRequest, key: str) -> None:
        """Records that ``key`` opened the session of ``llm_request``."""
        request_id = id(llm_request)
        owners = self._owners

        def forget(_: object) -> None:
            owners.pop(request_id, None)

        owners[request_id] = (weakref.ref(llm_request, forget), key)

    def owner(self, llm_request: LlmRequest, models: Mapping[str, BaseLlm], own_name: str) -> str | None:
        """The key a resumed session must reconnect to.

        Args:
            llm_request: The request carrying a resumption handle.
            models: The routed models by key.
            own_name: The routed model's own name.

        Returns:
            The owning key; None when the request names the routed model
            itself (a fresh run carrying a handle: the router's first pick
            takes it).

        Raises:
            ValueError: If the owner cannot be identified.
        """
        entry = self._owners.get(id(llm_request))
        if entry is not None and entry[0]() is llm_request:
            return entry[1]
        name = llm_request.model
        if name == own_name:
            return None
        named = [key for key, model in models.items() if model.model == name]
        if len(named) == 1:
            return named[0]
        found = f"{len(named)} keys ({', '.join(map(repr, named))}) share it" if named else "no key serves it"
        raise ValueError(
            f"Cannot resume a live session: the request carries a session-resumption handle and names "
            f"the model {name!r}, but {found}, and this RoutedLlm did not open the session on this "
            "request. A handle is only meaningful to the model that issued it. Clear the handle to "
            "start a fresh session, or give each key a distinct model name."
        )


class RoutedConnection(BaseLlmConnection):
    """A live connection of the model the router picked, recording the route.

    Sends go straight to the model's connection; every response received is
    a copy stamped with ``custom_metadata["routed_llm"]``, as
    :meth:`RoutedLlm.generate_content_async` stamps its responses. Every
    other attribute and method is the model's connection's own: reading,
    calling or setting one through this connection reaches it, as if ADK's
    ``FallbackModel`` had handed that connection back itself. Only
    ``isinstance`` tells them apart: for that, use :attr:`connection`.

    Args:
        connection: The chosen model's open connection.
        route: The route record for its responses.
    """

    _OWN = frozenset({"_connection", "_route"})
    _connection: BaseLlmConnection
    _route: dict[str, Any]

    def __init__(self, connection: BaseLlmConnection, route: dict[str, Any]) -> None:
        object.__setattr__(self, "_connection", connection)
        object.__setattr__(self, "_route", route)

    def __getattr__(self, name: str) -> Any:
        """The model's connection's own attribute ``name`` (called only for names this class lacks)."""
        if name in RoutedConnection._OWN:  # Not set yet: no connection to ask.
            raise AttributeError(name)
        return getattr(self._connection, name)

    def __setattr__(self, name: str, value: Any) -> None:
        """Sets ``name`` on the model's connection, where a read of it would go."""
        if name in RoutedConnection._OWN or hasattr(type(self), name):
            object.__setattr__(self, name, value)
        else:
            setattr(self._connection, name, value)

    @property
    def connection(self) -> BaseLlmConnection:
        """The chosen model's own connection."""
        return self._connection

    @override
    async def send_history(self, history: list[types.Content]) -> None:
        """Sends the conversation history to the model."""
        await self._connection.send_history(history)

    @override
    async def send_content(self, content: types.Content) -> None:
        """Sends a user content to the model."""
        await self._connection.send_content(content)

    async def _send_content(self, content: types.Content, *, partial: bool = False) -> None:
        """Sends content, passing ADK's partial-turn flag on to the model's connection."""
        await self._connection._send_content(content, partial=partial)

    @override
    async def send_realtime(self, blob: types.Blob) -> None:
        """Sends a chunk of audio or a frame of video to the model."""
        await self._connection.send_realtime(blob)

    @override
    async def receive(self) -> AsyncGenerator[LlmResponse, None]:
        """Yields the model's responses, each stamped with the route."""
        responses = self._connection.receive()
        try:
            async for response in responses:
                yield RoutedCall.stamp(response, self._route)
        finally:
            await responses.aclose()

    @override
    async def close(self) -> None:
        """Closes the model's connection."""
        await self._connection.close()
