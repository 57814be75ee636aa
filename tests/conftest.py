"""Shared helpers for the test suite."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio
from google.adk.agents import BaseAgent
from google.adk.agents.run_config import RunConfig, StreamingMode
from google.adk.apps import App
from google.adk.events import Event
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.plugins.base_plugin import BasePlugin
from google.adk.runners import InMemoryRunner
from google.genai import types

from tests.redis_server import RedisServer

ClientFactory = Callable[..., redis.asyncio.Redis]


def make_request(*texts: str) -> LlmRequest:
    """A request whose contents alternate user and model turns."""
    return LlmRequest(
        model="caller-model",
        contents=[
            types.Content(role="user" if index % 2 == 0 else "model", parts=[types.Part(text=text)])
            for index, text in enumerate(texts or ("hello",))
        ],
        config=types.GenerateContentConfig(temperature=0.5, labels={"team": "a"}),
    )


async def collect(responses: AsyncIterator[LlmResponse]) -> list[LlmResponse]:
    return [response async for response in responses]


def texts(responses: list[LlmResponse]) -> list[str]:
    return ["".join(part.text or "" for part in r.content.parts or []) for r in responses if r.content]


def in_order(order: list[str]):
    """A router that tries ``order``'s keys in turn; ``router.seen`` records each error context.

    ``order`` is read at every ask, so a test may change it between calls.
    """
    seen: list[object] = []

    def router(models, llm_request, error_context):
        seen.append(error_context)
        failed = error_context.failed_keys if error_context else frozenset()
        return next((key for key in order if key not in failed), None)

    router.seen = seen  # type: ignore[attr-defined]
    return router


def weather_round_trip() -> list[types.Content]:
    """A model turn calling ``get_weather`` and the user turn answering it."""
    call = types.FunctionCall(name="get_weather", args={"city": "Paris"})
    answer = types.FunctionResponse(name="get_weather", response={"forecast": "sunny"})
    return [
        types.Content(role="model", parts=[types.Part(function_call=call)]),
        types.Content(role="user", parts=[types.Part(function_response=answer)]),
    ]


def get_weather(city: str) -> dict[str, str]:
    """Returns the weather for a city (a tool for agent tests)."""
    return {"forecast": f"sunny in {city}"}


def make_runner(agent: BaseAgent, *, plugins: list[BasePlugin] | None = None) -> InMemoryRunner:
    """An in-memory runner for ``agent``, with plugins given through an ``App`` as ADK asks."""
    return InMemoryRunner(app=App(name="test_app", root_agent=agent, plugins=plugins or []))


async def run_agent(
    agent: BaseAgent,
    text: str,
    *,
    streaming: bool = False,
    plugins: list[BasePlugin] | None = None,
    user_id: str = "user",
    runner: InMemoryRunner | None = None,
    session_id: str | None = None,
) -> tuple[list[Event], list[Event]]:
    """Runs one user turn through ADK's InMemoryRunner.

    Returns:
        The events the run yielded, and the session's stored events after it.
    """
    runner = runner or make_runner(agent, plugins=plugins)
    if session_id is None:
        session = await runner.session_service.create_session(app_name="test_app", user_id=user_id)
        session_id = session.id
    config = RunConfig(streaming_mode=StreamingMode.SSE if streaming else StreamingMode.NONE)
    events = [
        event
        async for event in runner.run_async(
            user_id=user_id,
            session_id=session_id,
            new_message=types.Content(role="user", parts=[types.Part(text=text)]),
            run_config=config,
        )
    ]
    stored = await runner.session_service.get_session(
        app_name="test_app", user_id=user_id, session_id=session_id
    )
    assert stored is not None
    return events, stored.events


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free 127.0.0.1 port, for the whole session."""
    directory: Path = tmp_path_factory.mktemp("redis")
    server = RedisServer(directory).start()
    yield server
    server.stop()


@pytest.fixture
def namespace() -> str:
    """A store namespace of its own for each test."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def clients(redis_server: RedisServer) -> AsyncIterator[ClientFactory]:
    """Makes Redis clients (of the session's server by default) and closes them after the test."""
    made: list[redis.asyncio.Redis] = []

    def make(url: str | None = None) -> redis.asyncio.Redis:
        client = redis.asyncio.Redis.from_url(url or redis_server.url)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()
