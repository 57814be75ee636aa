"""RoutedLlm's router loop, through the public API with scripted models."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types

from routed_llm import ErrorContext, RoutedLlm, RoutingError, annotate_route
from routed_llm.testing import ScriptedLlm, Stream
from tests.conftest import collect, make_request, texts


def ordered(*keys: str):
    """A router that tries ``keys`` in order, recording every error context."""
    seen: list[ErrorContext | None] = []

    def router(models, llm_request, error_context):
        seen.append(error_context)
        remaining = [key for key in keys if error_context is None or key not in error_context.failed_keys]
        return remaining[0] if remaining else None

    router.seen = seen  # type: ignore[attr-defined]
    return router


async def test_first_pick_is_asked_with_no_error_context():
    router = ordered("a", "b")
    llm = RoutedLlm(models=[ScriptedLlm(model="a", script=["hi"]), ScriptedLlm(model="b")], router=router)

    await collect(llm.generate_content_async(make_request()))

    assert router.seen == [None]


async def test_chosen_model_answers():
    a, b = ScriptedLlm(model="a"), ScriptedLlm(model="b", script=["from b"])
    llm = RoutedLlm(models=[a, b], router=lambda models, request, ctx: "b")

    responses = await collect(llm.generate_content_async(make_request()))

    assert texts(responses) == ["from b"]
    assert a.calls == []


@pytest.mark.parametrize("stream", [True, False])
async def test_stream_flag_is_passed_to_the_delegate(stream):
    a = ScriptedLlm(model="a", script=["hi"])
    llm = RoutedLlm(models=[a], router=lambda *_: "a")

    await collect(llm.generate_content_async(make_request(), stream=stream))

    assert a.calls[0].stream is stream


async def test_async_router_is_awaited():
    async def router(models, llm_request, error_context):
        await asyncio.sleep(0)
        return "b"

    llm = RoutedLlm(models=[ScriptedLlm(model="a"), ScriptedLlm(model="b", script=["b"])], router=router)

    assert texts(await collect(llm.generate_content_async(make_request()))) == ["b"]


async def test_responses_are_yielded_as_they_arrive():
    gate = asyncio.Event()
    a = ScriptedLlm(model="a", script=[Stream(["one", "two"], wait=gate)])
    llm = RoutedLlm(models=[a], router=lambda *_: "a")
    responses = llm.generate_content_async(make_request(), stream=True)

    first = await anext(responses)  # Would hang if RoutedLlm buffered the turn.
    gate.set()
    rest = await collect(responses)

    assert texts([first]) == ["one"]
    assert texts(rest) == ["two", "onetwo"]


async def test_router_is_recalled_with_failed_key_after_pre_output_error():
    error = ConnectionError("primary down")
    router = ordered("a", "b")
    llm = RoutedLlm(
        models=[ScriptedLlm(model="a", script=[error]), ScriptedLlm(model="b", script=["from b"])],
        router=router,
    )

    responses = await collect(llm.generate_content_async(make_request()))

    assert texts(responses) == ["from b"]
    context = router.seen[1]
    assert context.failed_keys == frozenset({"a"})
    assert context.last_error is error


async def test_error_context_holds_every_failed_key_in_order():
    first, second = TimeoutError("a"), ConnectionError("b")
    router = ordered("a", "b", "c")
    llm = RoutedLlm(
        models=[
            ScriptedLlm(model="a", script=[first]),
            ScriptedLlm(model="b", script=[second]),
            ScriptedLlm(model="c", script=["c"]),
        ],
        router=router,
    )

    await collect(llm.generate_content_async(make_request()))

    context = router.seen[2]
    assert context.failed_keys == frozenset({"a", "b"})
    assert list(context.errors.items()) == [("a", first), ("b", second)]
    assert context.last_error is second
    assert context.last_key == "b"


async def test_error_raised_while_iterating_before_first_response_fails_over():
    a = ScriptedLlm(model="a", script=[Stream([], error=ConnectionError("reset"))])
    llm = RoutedLlm(models=[a, ScriptedLlm(model="b", script=["b"])], router=ordered("a", "b"))

    responses = await collect(llm.generate_content_async(make_request(), stream=True))

    assert texts(responses) == ["b"]


class _RaisesOnCall(BaseLlm):
    """A model whose generate_content_async raises before returning a generator."""

    def generate_content_async(self, llm_request: LlmRequest, stream: bool = False) -> Any:
        raise RuntimeError("cannot even start")


async def test_error_raised_by_calling_the_model_fails_over():
    llm = RoutedLlm(
        models=[_RaisesOnCall(model="a"), ScriptedLlm(model="b", script=["b"])], router=ordered("a", "b")
    )

    assert texts(await collect(llm.generate_content_async(make_request()))) == ["b"]


async def test_router_returning_none_after_failure_raises_the_same_error_object():
    error = ConnectionError("down")
    llm = RoutedLlm(
        models=[ScriptedLlm(model="a", script=[error]), ScriptedLlm(model="b")], router=ordered("a")
    )

    with pytest.raises(ConnectionError) as raised:
        await collect(llm.generate_content_async(make_request()))

    assert raised.value is error


async def test_router_returning_a_failed_key_stops_with_the_last_error():
    error = ConnectionError("down")
    a = ScriptedLlm(model="a", script=[error, "never used"])
    llm = RoutedLlm(models=[a, ScriptedLlm(model="b")], router=lambda *_: "a")

    with pytest.raises(ConnectionError) as raised:
        await collect(llm.generate_content_async(make_request()))

    assert raised.value is error
    assert len(a.calls) == 1


async def test_error_after_first_chunk_propagates_without_recalling_router():
    error = ConnectionError("stream broke")
    router = ordered("a", "b")
    b = ScriptedLlm(model="b", script=["b"])
    llm = RoutedLlm(models=[ScriptedLlm(model="a", script=[Stream(["par"], error=error)]), b], router=router)
    received: list[LlmResponse] = []

    async def consume() -> None:
        async for response in llm.generate_content_async(make_request(), stream=True):
            received.append(response)

    with pytest.raises(ConnectionError) as raised:
        await consume()

    assert raised.value is error
    assert texts(received) == ["par"]
    assert router.seen == [None]
    assert b.calls == []


@pytest.mark.parametrize("choice", [None, ""])
async def test_router_choosing_nothing_first_raises_routing_error_naming_keys(choice):
    llm = RoutedLlm(models=[ScriptedLlm(model="a"), ScriptedLlm(model="b")], router=lambda *_: choice)

    with pytest.raises(RoutingError, match="chose no model") as raised:
        await collect(llm.generate_content_async(make_request()))

    assert "'a', 'b'" in str(raised.value)
    assert raised.value.available == ("a", "b")


async def test_unknown_key_raises_routing_error_naming_key_and_available_keys():
    llm = RoutedLlm(models=[ScriptedLlm(model="a")], router=lambda *_: "nope")

    with pytest.raises(RoutingError, match=r"'nope'.*available keys: 'a'") as raised:
        await collect(llm.generate_content_async(make_request()))

    assert raised.value.key == "nope"


async def test_unknown_key_during_failover_chains_the_model_error_as_cause():
    error = ConnectionError("down")

    def router(models, llm_request, error_context):
        return "a" if error_context is None else "missing"

    llm = RoutedLlm(models=[ScriptedLlm(model="a", script=[error]), ScriptedLlm(model="b")], router=router)

    with pytest.raises(RoutingError) as raised:
        await collect(llm.generate_content_async(make_request()))

    assert raised.value.__cause__ is error


async def test_router_returning_a_non_string_raises_routing_error():
    llm = RoutedLlm(models=[ScriptedLlm(model="a")], router=lambda *_: 3)

    with pytest.raises(RoutingError, match=r"returned 3 \(int\)"):
        await collect(llm.generate_content_async(make_request()))


async def test_exception_raised_by_the_router_propagates_unchanged():
    error = LookupError("router bug")

    def router(models, llm_request, error_context):
        raise error

    llm = RoutedLlm(models=[ScriptedLlm(model="a")], router=router)

    with pytest.raises(LookupError) as raised:
        await collect(llm.generate_content_async(make_request()))

    assert raised.value is error


class _EditsThenFails(BaseLlm):
    """A model that edits every part of the request in place, then fails."""

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        llm_request.contents[0].parts[0].text = "EDITED"
        llm_request.contents[0].parts.append(types.Part(text="extra part"))
        llm_request.contents[0].role = "model"
        llm_request.contents.append(types.Content(role="user", parts=[types.Part(text="appended")]))
        llm_request.config.temperature = 2.0
        llm_request.config.labels["edited"] = "yes"
        llm_request.config.system_instruction = "injected"
        llm_request.live_connect_config.response_modalities = [types.Modality.AUDIO]
        llm_request.append_instructions(["dynamic"])
        llm_request._dynamic_instructions.append("private edit")
        llm_request.cache_config = None
        raise ConnectionError("failed after editing")
        yield  # pragma: no cover


async def test_next_attempt_sees_the_request_exactly_as_the_caller_passed_it():
    request = make_request("question", "answer", "follow-up")
    request._dynamic_instructions.append("original")
    expected = request.model_copy(deep=True)
    b = ScriptedLlm(model="b", script=["ok"])
    llm = RoutedLlm(models={"a": _EditsThenFails(model="a"), "b": b}, router=ordered("a", "b"))

    await collect(llm.generate_content_async(request))

    assert b.calls[0].contents == expected.contents
    assert b.calls[0].config == expected.config
    assert request.live_connect_config == expected.live_connect_config
    assert request._dynamic_instructions == ["original"]
    assert request.model_dump(exclude={"model"}) == expected.model_dump(exclude={"model"})


async def test_rollback_restores_the_callers_own_objects():
    request = make_request("question")
    part = request.contents[0].parts[0]
    llm = RoutedLlm(
        models={"a": _EditsThenFails(model="a"), "b": ScriptedLlm(model="b", script=["ok"])},
        router=ordered("a", "b"),
    )

    await collect(llm.generate_content_async(request))

    assert request.contents[0].parts[0] is part
    assert part.text == "question"


async def test_tools_dict_is_shared_not_copied():
    request = make_request()
    tool = object()
    request.tools_dict["lookup"] = tool  # type: ignore[assignment]
    seen: list[object] = []

    def record(llm_request: LlmRequest) -> str:
        seen.append(llm_request.tools_dict["lookup"])
        return "ok"

    llm = RoutedLlm(
        models={"a": _EditsThenFails(model="a"), "b": ScriptedLlm(model="b", script=record)},
        router=ordered("a", "b"),
    )

    await collect(llm.generate_content_async(request))

    assert seen == [tool]
    assert seen[0] is tool


async def test_each_attempt_sees_its_delegates_model_name():
    a = ScriptedLlm(model="gemini-a", script=[ConnectionError()])
    b = ScriptedLlm(model="gemini-b", script=["ok"])
    llm = RoutedLlm(models={"first": a, "second": b}, router=ordered("first", "second"))

    await collect(llm.generate_content_async(make_request()))

    assert [a.calls[0].model, b.calls[0].model] == ["gemini-a", "gemini-b"]


async def test_every_response_records_the_serving_key_model_and_failed_keys():
    llm = RoutedLlm(
        models={
            "primary": ScriptedLlm(model="model-a", script=[TimeoutError()]),
            "fallback": ScriptedLlm(model="model-b", script=[Stream(["x", "y"])]),
        },
        router=ordered("primary", "fallback"),
    )

    responses = await collect(llm.generate_content_async(make_request(), stream=True))

    assert [r.custom_metadata["routed_llm"] for r in responses] == [
        {
            "key": "fallback",
            "model": "model-b",
            "failed_keys": ["primary"],
            "errors": {"primary": "TimeoutError"},
            "attempts": 2,
        }
    ] * 3


async def test_metadata_set_by_the_delegate_is_kept():
    response = LlmResponse(
        content=types.Content(role="model", parts=[types.Part(text="x")]), custom_metadata={"trace": "t1"}
    )
    llm = RoutedLlm(models=[ScriptedLlm(model="a", script=[response])], router=lambda *_: "a")

    [out] = await collect(llm.generate_content_async(make_request()))

    assert out.custom_metadata["trace"] == "t1"
    assert out.custom_metadata["routed_llm"]["key"] == "a"


async def test_nested_routed_llm_keeps_the_inner_route():
    inner = RoutedLlm(
        models=[ScriptedLlm(model="leaf", script=["x"])], router=lambda *_: "leaf", model="inner"
    )
    outer = RoutedLlm(models={"nested": inner}, router=lambda *_: "nested")

    [out] = await collect(outer.generate_content_async(make_request()))

    route = out.custom_metadata["routed_llm"]
    assert (route["key"], route["inner"]["key"]) == ("nested", "leaf")


class _TracksClosing(BaseLlm):
    closed: bool = False

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        try:
            for index in range(100):
                yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=str(index))]))
        finally:
            self.closed = True


async def test_stopping_early_closes_the_delegate_stream():
    delegate = _TracksClosing(model="a")
    llm = RoutedLlm(models=[delegate], router=lambda *_: "a")
    responses = llm.generate_content_async(make_request(), stream=True)

    await anext(responses)
    await responses.aclose()

    assert delegate.closed


async def test_one_instance_serves_concurrent_calls_independently():
    gate = asyncio.Event()

    def router(models, llm_request, error_context):
        wanted = llm_request.contents[0].parts[0].text
        if error_context is None:
            return wanted
        return "steady" if "steady" not in error_context.failed_keys else None

    flaky = ScriptedLlm(model="flaky", script=[ConnectionError()])
    steady = ScriptedLlm(model="steady", script=lambda request: Stream(["s1", "s2"], wait=gate))
    llm = RoutedLlm(models=[flaky, steady], router=router)

    async def run(first_choice: str) -> list[LlmResponse]:
        return await collect(llm.generate_content_async(make_request(first_choice), stream=True))

    slow = asyncio.create_task(run("steady"))
    failing_over = asyncio.create_task(run("flaky"))
    await asyncio.sleep(0)
    gate.set()
    slow_responses, failover_responses = await asyncio.gather(slow, failing_over)

    assert slow_responses[-1].custom_metadata["routed_llm"]["failed_keys"] == []
    assert failover_responses[-1].custom_metadata["routed_llm"]["failed_keys"] == ["flaky"]


async def test_connect_uses_the_key_the_router_picks():
    a, b = ScriptedLlm(model="a"), ScriptedLlm(model="b", script=["live b"])
    llm = RoutedLlm(models=[a, b], router=lambda *_: "b")

    async with llm.connect(make_request()) as connection:
        responses = await collect(connection.receive())

    assert texts(responses) == ["live b"]


async def test_connect_fails_over_when_a_model_cannot_connect():
    router = ordered("a", "b")
    request = make_request("hi")
    a = ScriptedLlm(model="a", connect_error=ConnectionError("refused"))
    llm = RoutedLlm(models=[a, ScriptedLlm(model="b", script=["live b"])], router=router)

    async with llm.connect(request) as connection:
        responses = await collect(connection.receive())

    assert texts(responses) == ["live b"]
    assert router.seen[1].failed_keys == frozenset({"a"})
    assert request.model == "b"


async def test_connect_raises_the_last_error_when_the_router_stops():
    error = ConnectionError("refused")
    llm = RoutedLlm(models=[ScriptedLlm(model="a", connect_error=error)], router=ordered("a"))

    with pytest.raises(ConnectionError) as raised:
        async with llm.connect(make_request()):
            pass

    assert raised.value is error


async def test_error_inside_an_open_connection_is_never_switched():
    router = ordered("a", "b")
    llm = RoutedLlm(models=[ScriptedLlm(model="a"), ScriptedLlm(model="b")], router=router)

    with pytest.raises(ValueError, match="in session"):
        async with llm.connect(make_request()):
            raise ValueError("in session")

    assert router.seen == [None]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"models": {}}, ValueError, "is empty"),
        ({"models": []}, ValueError, "is empty"),
        (
            {"models": [ScriptedLlm(model="x"), ScriptedLlm(model="x")]},
            ValueError,
            "names the model 'x' twice",
        ),
        ({"models": {"a": 42}}, TypeError, "entry for 'a' is a int"),
        ({"models": [ScriptedLlm(model="x"), 42]}, TypeError, r"\[1\] is a int"),
        ({"models": {"": ScriptedLlm(model="x")}}, TypeError, "non-empty strings"),
        ({"models": "gemini-2.5-flash"}, TypeError, "mapping of key to model"),
        (
            {"models": {"a": "no-such-model-xyz"}},
            ValueError,
            "cannot resolve the model name 'no-such-model-xyz'",
        ),
        ({"models": [ScriptedLlm(model="x")], "router": "x"}, TypeError, "must be callable"),
    ],
)
def test_construction_rejects_bad_input_with_a_clear_message(kwargs, error, message):
    kwargs.setdefault("router", lambda *_: None)

    with pytest.raises(error, match=message):
        RoutedLlm(**kwargs)


def test_construction_rejects_unknown_keyword_arguments():
    with pytest.raises(TypeError, match="fallbacks"):
        RoutedLlm(models=[ScriptedLlm(model="x")], router=lambda *_: "x", fallbacks=["y"])  # type: ignore[call-arg]


def test_construction_rejects_a_router_declaring_unknown_keys():
    def router(models, llm_request, error_context):
        return "a"

    router.declared_keys = frozenset({"a", "ghost"})  # type: ignore[attr-defined]

    with pytest.raises(ValueError, match="'ghost'"):
        RoutedLlm(models=[ScriptedLlm(model="a")], router=router)


def test_model_names_resolve_through_the_registry_without_network():
    llm = RoutedLlm(models={"fast": "gemini-2.5-flash"}, router=lambda *_: "fast")

    assert llm.models["fast"].model == "gemini-2.5-flash"
    assert type(llm.models["fast"]).__name__ == "Gemini"


def test_sequence_entries_are_keyed_by_model_name():
    llm = RoutedLlm(models=[ScriptedLlm(model="a"), "gemini-2.5-pro"], router=lambda *_: "a")

    assert list(llm.models) == ["a", "gemini-2.5-pro"]


def test_display_name_defaults_to_keys_and_models_and_can_be_set():
    models = {"p": ScriptedLlm(model="m1"), "f": ScriptedLlm(model="m2")}

    assert RoutedLlm(models=models, router=lambda *_: "p").model == "RoutedLlm[p=m1, f=m2]"
    assert RoutedLlm(models=models, router=lambda *_: "p", model="assistant-model").model == "assistant-model"


class _Capable(ScriptedLlm):
    @property
    def capabilities(self):
        from google.adk.models._capabilities import LlmCapabilities

        return LlmCapabilities(output_schema_and_tools=True)


def test_capabilities_report_only_what_every_model_supports():
    both = RoutedLlm(models=[_Capable(model="a"), _Capable(model="b")], router=lambda *_: "a")
    one = RoutedLlm(models=[_Capable(model="a"), ScriptedLlm(model="b")], router=lambda *_: "a")

    assert both.capabilities.output_schema_and_tools is True
    assert one.capabilities.output_schema_and_tools is False


async def test_logs_one_debug_line_per_decision_and_one_warning_per_failover(caplog):
    caplog.set_level(logging.DEBUG, logger="routed_llm")
    llm = RoutedLlm(
        models=[ScriptedLlm(model="a", script=[ConnectionError("x")]), ScriptedLlm(model="b", script=["b"])],
        router=ordered("a", "b"),
    )

    await collect(llm.generate_content_async(make_request("SECRET PROMPT")))

    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("routed_llm")]
    assert [level for level, _ in records] == [logging.DEBUG, logging.WARNING]
    assert "'a'" in records[1][1]
    assert "ConnectionError" in records[1][1]
    assert not any("SECRET PROMPT" in message for _, message in records)


async def test_a_routers_annotations_land_in_every_responses_route():
    def router(models, llm_request, error_context):
        annotate_route(cohort="beta", version=2)
        return "a"

    llm = RoutedLlm(models=[ScriptedLlm(model="a", script=[Stream(["x", "y"])])], router=router)

    responses = await collect(llm.generate_content_async(make_request(), stream=True))

    assert [
        (r.custom_metadata["routed_llm"]["cohort"], r.custom_metadata["routed_llm"]["version"])
        for r in responses
    ] == [("beta", 2)] * 3


async def test_annotate_route_records_nothing_outside_a_routing_call():
    llm = RoutedLlm(models=[ScriptedLlm(model="a", script=["x"])], router=lambda *_: "a")
    before = annotate_route(cohort="beta")

    await collect(llm.generate_content_async(make_request()))

    assert (before, annotate_route(cohort="beta")) == (False, False)


def test_annotate_route_rejects_the_names_routed_llm_records_itself():
    with pytest.raises(ValueError, match=r"\['key'\]"):
        annotate_route(key="other")
