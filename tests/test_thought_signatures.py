"""Thought signatures when the model changes inside a conversation.

The real ``google.adk.models.Gemini`` client against the fake Gemini server,
which issues and checks signatures for ``gemini-3...`` models as Google
documents them. Runs under the google-genai transport named by
ROUTED_LLM_GENAI_TRANSPORT (httpx or aiohttp).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.models import Gemini
from google.adk.plugins.base_plugin import BasePlugin
from google.adk.runners import Runner
from google.adk.sessions.sqlite_session_service import SqliteSessionService
from google.genai import types

from routed_llm import RoutedLlm, RoutingPlugin
from routed_llm.signatures import BYPASS_SIGNATURE
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, get_weather, in_order, make_request, run_agent, texts
from tests.fake_servers import BYPASS_SIGNATURE as BYPASS_ON_THE_WIRE
from tests.fake_servers import Error, FakeGemini, FunctionCall, Parallel, Recorded, Text
from tests.test_provider_gemini import gemini, genai_transport  # noqa: F401 - an autouse fixture.

GEMINI_3 = "gemini-3-pro-preview"


@pytest.fixture
def server_a():
    fake = FakeGemini().start()
    yield fake
    fake.stop()


@pytest.fixture
def server_b():
    fake = FakeGemini().start()
    yield fake
    fake.stop()


def weather_agent(routed: RoutedLlm) -> LlmAgent:
    return LlmAgent(name="assistant", model=routed, tools=[get_weather])


def call_signatures(request: Recorded) -> list[str | None]:
    """The signature sent on each function-call part of a recorded request, in order."""
    return [
        part.get("thoughtSignature")
        for content in request.body["contents"]
        for part in content.get("parts", [])
        if "functionCall" in part
    ]


def all_signatures(request: Recorded) -> list[str]:
    return [
        part["thoughtSignature"]
        for content in request.body["contents"]
        for part in content.get("parts", [])
        if "thoughtSignature" in part
    ]


def two_regions(server_a: FakeGemini, server_b: FakeGemini) -> dict[str, Gemini]:
    """The same Gemini 3 model in two places: each one's signatures are void at the other."""
    return {"a": gemini(server_a.url, GEMINI_3), "b": gemini(server_b.url, GEMINI_3)}


@pytest.mark.parametrize("streaming", [False, True])
async def test_failover_mid_tool_loop_sends_the_bypass_instead_of_the_other_keys_signature(
    server_a, server_b, streaming
):
    server_a.script(GEMINI_3, FunctionCall("get_weather", {"city": "Paris"}), Error(503, "UNAVAILABLE"))
    server_b.script(GEMINI_3, Text("Sunny in Paris."))
    routed = RoutedLlm(models=two_regions(server_a, server_b), router=FallbackStrategy(["a", "b"]))

    events, _ = await run_agent(weather_agent(routed), "Weather in Paris?", streaming=streaming)

    assert texts(events)[-1] == "Sunny in Paris."
    assert call_signatures(server_b.calls_to(GEMINI_3)[0]) == [BYPASS_ON_THE_WIRE]


async def test_the_session_keeps_the_signatures_the_models_issued(server_a, server_b):
    server_a.script(GEMINI_3, FunctionCall("get_weather", {"city": "Paris"}), Error(503, "UNAVAILABLE"))
    server_b.script(GEMINI_3, Text("Sunny in Paris."))
    routed = RoutedLlm(models=two_regions(server_a, server_b), router=FallbackStrategy(["a", "b"]))

    _, stored = await run_agent(weather_agent(routed), "Weather in Paris?")

    signatures = [
        part.thought_signature
        for event in stored
        for part in (event.content.parts or ())
        if part.function_call
    ]
    assert signatures == [base64.urlsafe_b64decode(server_a.issued[0])]


async def test_recovering_primary_gets_its_own_signatures_back_byte_for_byte(server_a, server_b):
    server_a.script(
        GEMINI_3,
        FunctionCall("get_weather", {"city": "Paris"}),
        Error(503, "UNAVAILABLE"),
        Text("Sunny in both."),
    )
    server_b.script(GEMINI_3, FunctionCall("get_weather", {"city": "London"}))
    routed = RoutedLlm(models=two_regions(server_a, server_b), router=FallbackStrategy(["a", "b"]))

    events, _ = await run_agent(weather_agent(routed), "Weather in Paris and London?")

    assert texts(events)[-1] == "Sunny in both."
    last = server_a.calls_to(GEMINI_3)[-1]
    assert call_signatures(last) == [server_a.issued[0], BYPASS_ON_THE_WIRE]


async def test_scripted_model_hands_an_unsigned_tool_loop_to_gemini_3(server_a):
    call = types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}))
    local = ScriptedLlm(model="local", script=[call, ConnectionError("device busy")])
    server_a.script(GEMINI_3, Text("Sunny in Paris."))
    routed = RoutedLlm(
        models={"local": local, "cloud": gemini(server_a.url, GEMINI_3)}, router=in_order(["local", "cloud"])
    )

    events, _ = await run_agent(weather_agent(routed), "Weather in Paris?")

    assert texts(events)[-1] == "Sunny in Paris."
    assert call_signatures(server_a.calls_to(GEMINI_3)[0]) == [BYPASS_ON_THE_WIRE]


async def test_ab_arms_alternating_per_call_each_keep_their_own_signatures(server_a, server_b):
    server_a.script(
        GEMINI_3,
        FunctionCall("get_weather", {"city": "Paris"}),
        FunctionCall("get_weather", {"city": "Rome"}),
    )
    server_b.script(GEMINI_3, FunctionCall("get_weather", {"city": "London"}), Text("Sunny everywhere."))
    arms = itertools.cycle(["a", "b"])

    def alternate(models: Mapping[str, Any], llm_request: Any, error_context: Any) -> str | None:
        return None if error_context else next(arms)

    routed = RoutedLlm(models=two_regions(server_a, server_b), router=alternate)

    events, _ = await run_agent(weather_agent(routed), "Weather in Paris, London and Rome?")

    assert texts(events)[-1] == "Sunny everywhere."
    assert call_signatures(server_b.calls_to(GEMINI_3)[-1]) == [
        BYPASS_ON_THE_WIRE,
        server_b.issued[0],
        BYPASS_ON_THE_WIRE,
    ]


async def test_parallel_calls_get_the_bypass_on_the_first_call_only(server_a, server_b):
    server_a.script(
        GEMINI_3,
        Parallel(
            FunctionCall("get_weather", {"city": "Paris"}), FunctionCall("get_weather", {"city": "Rome"})
        ),
        Error(503, "UNAVAILABLE"),
    )
    server_b.script(GEMINI_3, Text("Sunny in both."))
    routed = RoutedLlm(models=two_regions(server_a, server_b), router=FallbackStrategy(["a", "b"]))

    events, _ = await run_agent(weather_agent(routed), "Weather in Paris and Rome?")

    assert texts(events)[-1] == "Sunny in both."
    assert call_signatures(server_b.calls_to(GEMINI_3)[0]) == [BYPASS_ON_THE_WIRE, None]


async def run_turn(
    db: Path, routed: RoutedLlm, text: str, *, session_id: str | None, plugins: list[BasePlugin]
) -> tuple[str, list[str]]:
    """One user turn through a runner on a stored session, as a fresh process would run it."""
    runner = Runner(
        app=App(name="test_app", root_agent=weather_agent(routed), plugins=plugins),
        session_service=SqliteSessionService(str(db)),
    )
    if session_id is None:
        session = await runner.session_service.create_session(app_name="test_app", user_id="user")
        session_id = session.id
    events = [
        event
        async for event in runner.run_async(
            user_id="user",
            session_id=session_id,
            new_message=types.Content(role="user", parts=[types.Part(text=text)]),
        )
    ]
    return session_id, texts(events)


async def test_a_process_that_saw_nothing_reads_who_signed_from_the_stored_session(
    server_a, server_b, tmp_path
):
    db = tmp_path / "sessions.db"
    server_a.script(GEMINI_3, FunctionCall("get_weather", {"city": "Paris"}), Text("Sunny in Paris."))
    server_b.script(GEMINI_3, Text("Rome is sunny too."))
    first = RoutedLlm(models=two_regions(server_a, server_b), router=FallbackStrategy(["a", "b"]))
    session_id, _ = await run_turn(db, first, "Weather in Paris?", session_id=None, plugins=[RoutingPlugin()])
    restarted = RoutedLlm(models=two_regions(server_a, server_b), router=FallbackStrategy(["b", "a"]))

    _, answer = await run_turn(db, restarted, "And Rome?", session_id=session_id, plugins=[RoutingPlugin()])

    assert answer[-1] == "Rome is sunny too."
    assert all_signatures(server_b.calls_to(GEMINI_3)[0]) == []


async def test_the_router_sees_the_signatures_as_adk_built_them_on_every_ask():
    signed = types.Part(
        function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}),
        thought_signature=b"sig-a",
    )
    a = ScriptedLlm(model=GEMINI_3, script=[signed, ConnectionError("down")])
    b = ScriptedLlm(model=GEMINI_3, script=["Sunny."])
    seen: list[list[bytes | None]] = []
    order = in_order(["a", "b"])

    def router(models: Mapping[str, Any], llm_request: Any, error_context: Any) -> str | None:
        seen.append([part.thought_signature for c in llm_request.contents for part in c.parts or ()])
        return order(models, llm_request, error_context)

    routed = RoutedLlm(models={"a": a, "b": b}, router=router)
    first = await collect(routed.generate_content_async(make_request("Weather?")))
    request = make_request("Weather?")
    request.contents += [first[0].content, function_answer("get_weather")]

    await collect(routed.generate_content_async(request))

    assert seen[-2:] == [[None, b"sig-a", None], [None, b"sig-a", None]]
    assert b.calls[0].contents[1].parts[0].thought_signature == BYPASS_SIGNATURE


async def test_a_signature_of_unknown_issuer_is_sent_unchanged():
    b = ScriptedLlm(model=GEMINI_3, script=["Sunny."])
    routed = RoutedLlm(models={"b": b}, router=lambda *_: "b")
    request = make_request("Weather?")
    call = types.FunctionCall(name="get_weather", args={"city": "Paris"})
    request.contents += [
        types.Content(
            role="model", parts=[types.Part(function_call=call, thought_signature=b"from elsewhere")]
        ),
        function_answer("get_weather"),
    ]

    await collect(routed.generate_content_async(request))

    assert b.calls[0].contents[1].parts[0].thought_signature == b"from elsewhere"


async def test_signatures_of_another_key_are_dropped_for_a_model_that_is_not_gemini():
    signed = types.Part(text="Thinking done.", thought_signature=b"sig-a")
    a = ScriptedLlm(model=GEMINI_3, script=[signed])
    other = ScriptedLlm(model="gpt-4o", script=["Hello again."])
    order = ["a"]
    routed = RoutedLlm(models={"a": a, "other": other}, router=in_order(order))
    first = await collect(routed.generate_content_async(make_request("Hi")))
    order[:] = ["other"]
    request = make_request("Hi")
    request.contents += [first[0].content, types.Content(role="user", parts=[types.Part(text="Again")])]

    await collect(routed.generate_content_async(request))

    assert other.calls[0].contents[1].parts[0].thought_signature is None
    assert other.calls[0].contents[1].parts[0].text == "Thinking done."


async def test_many_conversations_sharing_one_routed_llm_each_get_their_own_rewrite():
    def signed_call(llm_request: Any) -> types.Part:
        question = llm_request.contents[0].parts[0].text
        call = types.FunctionCall(name="get_weather", args={"city": question})
        return types.Part(function_call=call, thought_signature=f"a|{question}".encode())

    a = ScriptedLlm(
        model=GEMINI_3,
        script=lambda llm_request: (
            signed_call(llm_request) if len(llm_request.contents) == 1 else "a answered"
        ),
    )
    b = ScriptedLlm(model=GEMINI_3, script=lambda llm_request: "b answered")

    def router(models: Mapping[str, Any], llm_request: Any, error_context: Any) -> str:
        question = llm_request.contents[0].parts[0].text
        return "a" if len(llm_request.contents) == 1 or int(question) % 2 else "b"

    routed = RoutedLlm(models={"a": a, "b": b}, router=router)
    questions = [str(number) for number in range(40)]
    firsts = await asyncio.gather(
        *(collect(routed.generate_content_async(make_request(q))) for q in questions)
    )
    requests = []
    for question, first in zip(questions, firsts, strict=True):
        request = make_request(question)
        request.contents += [first[0].content, function_answer("get_weather")]
        requests.append(request)

    await asyncio.gather(*(collect(routed.generate_content_async(request)) for request in requests))

    sent = {
        call.contents[0].parts[0].text: call.contents[1].parts[0].thought_signature
        for call in [*a.calls, *b.calls]
        if len(call.contents) == 3
    }
    assert sent == {q: f"a|{q}".encode() if int(q) % 2 else BYPASS_SIGNATURE for q in questions}


async def test_another_keys_signature_on_inline_data_is_dropped_and_the_data_kept():
    image = types.Part(
        inline_data=types.Blob(mime_type="image/png", data=b"png bytes"), thought_signature=b"sig-a"
    )
    a = ScriptedLlm(model=GEMINI_3, script=[types.Content(role="model", parts=[image])])
    b = ScriptedLlm(model=GEMINI_3, script=["A cat."])
    order = ["a"]
    routed = RoutedLlm(models={"a": a, "b": b}, router=in_order(order))
    first = await collect(routed.generate_content_async(make_request("Draw a cat.")))
    order[:] = ["b"]
    request = make_request("Draw a cat.")
    request.contents += [first[0].content, types.Content(role="user", parts=[types.Part(text="What is it?")])]

    await collect(routed.generate_content_async(request))

    [sent] = b.calls[0].contents[1].parts
    assert (sent.thought_signature, sent.inline_data.data) == (None, b"png bytes")


def function_answer(name: str) -> types.Content:
    """The user turn answering a call of function ``name``."""
    response = types.FunctionResponse(name=name, response={"forecast": "sunny"})
    return types.Content(role="user", parts=[types.Part(function_response=response)])
