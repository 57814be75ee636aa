"""A routed live connection is the chosen model's connection, plus a route record on what it receives.

ADK's ``FallbackModel`` hands back the model's own connection; ``RoutedLlm``
hands back a ``RoutedConnection`` that stamps received responses and lets
every other attribute and method of the model's connection through.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

import pytest
from google.adk.agents import LlmAgent
from google.adk.agents.live_request_queue import LiveRequestQueue
from google.adk.models.base_llm_connection import BaseLlmConnection
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types
from pydantic import PrivateAttr

from routed_llm import RoutedLlm
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, in_order, make_request, make_runner, texts

RECORD = "routed_llm"


class ProviderConnection(BaseLlmConnection):
    """A provider's live connection, with attributes and a method beyond ``BaseLlmConnection``'s."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.session_id = f"session-of-{model}"
        self.received: list[types.Content] = []
        self.tool_responses: list[str] = []
        self._answered = False
        self._asked = asyncio.Event()

    async def send_history(self, history: list[types.Content]) -> None:
        self.received.extend(history)

    async def send_content(self, content: types.Content) -> None:
        self.received.append(content)
        self._asked.set()

    async def send_realtime(self, blob: types.Blob) -> None:
        """Ignores realtime input."""

    async def send_tool_response(self, name: str) -> None:
        self.tool_responses.append(name)

    async def receive(self) -> AsyncGenerator[LlmResponse, None]:
        """Answers the first content sent, then ends: the session is over."""
        if self._answered:
            return
        await self._asked.wait()
        self._answered = True
        yield LlmResponse(
            content=types.Content(role="model", parts=[types.Part(text=f"live from {self.model}")]),
            turn_complete=True,
        )

    async def close(self) -> None:
        """Nothing to close."""


class ProviderLlm(ScriptedLlm):
    """A model whose live connections are ``ProviderConnection``s; ``opened`` lists them."""

    _opened: list[ProviderConnection] = PrivateAttr(default_factory=list)

    @property
    def opened(self) -> list[ProviderConnection]:
        return self._opened

    @asynccontextmanager
    async def connect(self, llm_request: LlmRequest) -> AsyncIterator[BaseLlmConnection]:
        connection = ProviderConnection(self.model)
        self._opened.append(connection)
        yield connection


def routed(*, down: bool = False) -> tuple[RoutedLlm, ProviderLlm]:
    """A RoutedLlm whose first pick 'a' (refusing to connect when ``down``) falls over to 'b'."""
    a = ScriptedLlm(model="model-a", connect_error=ConnectionError("refused") if down else None)
    b = ProviderLlm(model="model-b")
    order = ["a", "b"] if down else ["b"]
    return RoutedLlm(models={"a": a, "b": b}, router=in_order(order)), b


async def test_an_attribute_of_the_models_connection_reads_through_the_routed_connection():
    llm, _ = routed()

    async with llm.connect(make_request()) as connection:
        model, session_id = connection.model, connection.session_id

    assert (model, session_id) == ("model-b", "session-of-model-b")


async def test_a_method_only_the_models_connection_has_is_called_on_it():
    llm, b = routed()

    async with llm.connect(make_request()) as connection:
        await connection.send_tool_response("get_weather")

    assert b.opened[0].tool_responses == ["get_weather"]


async def test_setting_an_attribute_through_the_routed_connection_sets_it_on_the_models_connection():
    llm, b = routed()

    async with llm.connect(make_request()) as connection:
        connection.session_id = "renamed"

    assert b.opened[0].session_id == "renamed"


async def test_an_attribute_the_models_connection_lacks_is_an_attribute_error_naming_it():
    llm, _ = routed()

    async with llm.connect(make_request()) as connection:
        with pytest.raises(AttributeError, match="no_such_attribute"):
            _ = connection.no_such_attribute


async def test_after_failover_the_attributes_are_those_of_the_connection_that_serves():
    llm, b = routed(down=True)

    async with llm.connect(make_request()) as connection:
        model = connection.model
        served_by = connection.connection

    assert model == "model-b"
    assert served_by is b.opened[0]


async def test_received_responses_are_still_stamped_with_the_route():
    llm, _ = routed(down=True)

    async with llm.connect(make_request()) as connection:
        await connection.send_content(types.Content(role="user", parts=[types.Part(text="hi")]))
        responses = await collect(connection.receive())

    assert texts(responses) == ["live from model-b"]
    assert (
        responses[0].custom_metadata[RECORD]["key"],
        responses[0].custom_metadata[RECORD]["failed_keys"],
    ) == (
        "b",
        ["a"],
    )


async def test_run_live_through_a_runner_sends_to_and_receives_from_the_connection_that_serves():
    llm, b = routed(down=True)
    runner = make_runner(LlmAgent(name="assistant", model=llm))
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")
    queue = LiveRequestQueue()
    queue.send_content(types.Content(role="user", parts=[types.Part(text="hello live")]))
    queue.close()

    events = [
        event
        async for event in runner.run_live(user_id="user", session_id=session.id, live_request_queue=queue)
    ]

    model_events = [event for event in events if event.content and event.content.role == "model"]
    assert texts(model_events) == ["live from model-b"]
    assert model_events[0].custom_metadata[RECORD]["key"] == "b"
    assert [content.parts[0].text for content in b.opened[0].received] == ["hello live"]
