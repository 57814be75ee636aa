"""Shared helpers for the test suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types


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


def get_weather(city: str) -> dict[str, str]:
    """Returns the weather for a city (a tool for agent tests)."""
    return {"forecast": f"sunny in {city}"}
